//! `identity-migrator plan`: reads the table and prints the SQL the migration
//! would run, in order. Changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::{Failure, connector_for, load_settings};
use crate::db::{Context, RetryCounter, RetryPolicy};
use crate::engine::Job;
use crate::engine::script::{ScriptInput, render, script};
use crate::engine::sql::{Dialect, ident};
use crate::engine::survey::survey;

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The IdentityMigration manifest.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// PostgreSQL URL to read the table from; replaces spec.target.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// SQL flavour to print: `dsql` or `postgres`; default: the target's.
    #[arg(long)]
    pub dialect: Option<Dialect>,
    /// Extra trusted CA certificates (PEM).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

pub async fn plan(args: PlanArgs) -> Result<(), Failure> {
    let (manifest, settings) = load_settings(&args.file, args.database_url.is_some())?;
    let connector = connector_for(&manifest.spec, args.database_url.as_deref(), args.ca_file.as_deref())?;
    let dialect = args.dialect.unwrap_or(connector.dialect());
    let job = Job {
        settings,
        // Preflight applies the rules of the dialect being planned for.
        dialect,
        connector: Arc::new(connector),
        retry_policy: RetryPolicy::default(),
        retries: Arc::new(RetryCounter::default()),
        approved: false,
        workloads: None,
    };
    let surveyed = survey(&job).await.map_err(Failure::from_engine)?;
    let s = &job.settings;
    let max_sql = &format!("SELECT max({})::bigint FROM {}", ident(&s.id_column), s.source);
    let max_id = job
        .session()
        .retry("read highest id", |c| async move {
            Ok(c.query_one(max_sql.as_str(), &[]).await.ctx("read highest id")?.get(0))
        })
        .await
        .map_err(|e| Failure::Migration(e.to_string()))?;
    let steps = script(&ScriptInput {
        shape: &surveyed.shape,
        settings: s,
        dialect,
        ranges: &surveyed.ranges,
        rows: surveyed.rows,
        batch_rows: surveyed.batch_rows,
        widest_row: surveyed.widest_row,
        max_id,
    });
    println!("-- identity-migrator plan for {} ({} dialect); nothing has been changed", s.source, dialect.as_str());
    println!("-- each statement is its own transaction unless BEGIN/COMMIT surround it");
    print!("{}", render(&steps));
    Ok(())
}

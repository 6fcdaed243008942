//! `identity-migrator plan`: reads the table and prints the SQL the migration
//! would run, in order. Changes nothing.

use clap::Args;

use super::{Failure, TargetArgs};
use crate::db::Dialect;
use crate::engine::Job;
use crate::engine::plan::script::{ScriptInput, render, script};
use crate::engine::steps::identity::read_max_id;
use crate::engine::steps::survey::survey;

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// SQL flavour to print: `dsql` or `postgres`; default: the target's.
    #[arg(long)]
    pub dialect: Option<Dialect>,
}

pub async fn plan(args: PlanArgs) -> Result<(), Failure> {
    let (_, settings, connector) = args.target.load()?;
    let dialect = args.dialect.unwrap_or(connector.dialect());
    // Preflight applies the rules of the dialect being planned for.
    let job = Job { dialect, ..Job::new(settings, connector) };
    let surveyed = survey(&job).await.map_err(Failure::from_engine)?;
    let s = &job.settings;
    let max_id = read_max_id(&mut job.session(), &s.source, &s.id_column)
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

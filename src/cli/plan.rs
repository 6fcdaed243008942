//! `identity-migrator plan`: reads the table and prints the SQL the migration
//! would run, in order. Changes nothing.

use clap::Args;

use super::{Failure, TargetArgs, connector_for, manifest};
use std::sync::Arc;

use crate::db::Dialect;
use crate::db::{RetryPolicy, Session};
use crate::engine::Job;
use crate::engine::error::EngineError;
use crate::engine::plan::changes::State;
use crate::engine::plan::changes::render::render as render_changes;
use crate::engine::plan::changes::ways::plan_changes;
use crate::engine::plan::script::{ScriptInput, render, script};
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::validate::InvalidInput;
use crate::engine::plan::window_cost::{slow_window, window_cost};
use crate::engine::steps::catalog::read_shape;
use crate::engine::steps::identity::read_max_id;
use crate::engine::steps::spec_check::check_spec_text;
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
    if manifest::holds_schema_migration(&args.target.file) {
        return super::schema::plan(&args.target, args.dialect);
    }
    if manifest::holds_table_migration(&args.target.file) {
        return plan_table(args).await;
    }
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
    // Auto copies on DSQL where the server refuses ADD IDENTITY in place.
    if s.strategy == crate::api::Strategy::Copy || dialect == Dialect::Dsql {
        say_window(&surveyed.shape, surveyed.rows, s.parallelism, s.change_tracking_column.is_some(), dialect, false);
    }
    print!("{}", render(&steps));
    Ok(())
}

/// `plan -f` of a TableMigration: per change in place or the rebuild, why,
/// and the SQL. Reads the table; changes nothing.
async fn plan_table(args: PlanArgs) -> Result<(), Failure> {
    let file = &args.target.file;
    let manifest = manifest::load_table(file).map_err(|e| Failure::Input(e.to_string()))?;
    let spec = &manifest.spec;
    let connector = connector_for(&spec.target, args.target.database_url.as_deref(), args.target.ca_file.as_deref())?;
    let dialect = args.dialect.unwrap_or(connector.dialect());
    let source = TableName::new(spec.schema.clone(), spec.table.clone());
    let shadow = source.sibling(format!("{}_new", spec.table));
    let mut session = Session::new(Arc::new(connector), RetryPolicy::default(), Arc::default());
    let table = &source;
    let shape = session
        .retry("read table", |c| async move { read_shape(&c, table).await })
        .await
        .map_err(|e| Failure::Migration(e.to_string()))?
        .ok_or_else(|| Failure::Input(format!("spec.table: table {source} does not exist")))?;
    let input = |e: InvalidInput| Failure::Input(format!("{}: {e}", file.display()));
    let planned = plan_changes(&shape, &source, &spec.changes, dialect, spec.strategy, None).map_err(input)?;
    check_spec_text(&mut session, &State::of(&shape), &spec.changes).await.map_err(|e| match e {
        EngineError::Invalid(e) => input(e),
        other => Failure::Migration(other.to_string()),
    })?;
    println!(
        "-- identity-migrator plan for {source} ({} dialect, {} changes); nothing has been changed",
        dialect.as_str(),
        spec.changes.len()
    );
    if planned.rebuild.is_some() {
        say_window(&shape, shape.estimated_rows.max(0), spec.copy.parallelism.max(1) as usize, false, dialect, true);
    }
    print!("{}", render_changes(&planned, &spec.changes, &source, &shadow, dialect).map_err(input)?);
    Ok(())
}

/// The cut-over window's estimate as the plan's comment lines, and the
/// warning the run would give.
fn say_window(shape: &TableShape, rows: i64, parallelism: usize, tracking: bool, dialect: Dialect, rebuild: bool) {
    let cost = window_cost(dialect, rows, parallelism, tracking);
    println!("-- the cut-over window {}", cost.describe());
    if let Some(warning) = slow_window(&cost, shape, rebuild) {
        println!("-- WARNING: {warning}");
    }
}

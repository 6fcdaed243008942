//! A rebuild step: the ALTERs a migration file makes that the target
//! refuses (or makes only under a long lock), as one `TableMigration` run by
//! the same engine, with its copy, verification, approval, windows and data
//! proof. Its status lives in the history row, so a kill resumes the rebuild
//! where it stopped.

use std::sync::Arc;

use super::exec::{InFlight, Ledger};
use super::history;
use crate::api::changes::Change;
use crate::api::schema::SchemaMigrationSpec;
use crate::api::{IdentityMigrationStatus, OldTableSpec, Strategy, TableMigrationSpec};
use crate::engine::error::StoreError;
use crate::engine::plan::shape::TableName;
use crate::engine::plan::validate::TargetSource;
use crate::engine::steps::table_key::table_settings;
use crate::engine::{EngineError, EngineEvent, Job, Migration, Outcome, StatusSink};

pub enum Ended {
    Done,
    /// Waits for `spec.cutover` (approval or window).
    AwaitingCutover,
    Stopped,
}

/// The TableMigration a rebuild step is.
pub fn table_spec(spec: &SchemaMigrationSpec, table: &TableName, changes: &[Change]) -> TableMigrationSpec {
    TableMigrationSpec {
        target: spec.target.clone(),
        strategy: Strategy::Auto,
        schema: table.schema.clone(),
        table: table.name.clone(),
        changes: changes.to_vec(),
        copy: Default::default(),
        cutover: spec.cutover.clone(),
        // ALTER TABLE leaves no old table behind; neither does a versioned migration.
        old_table: OldTableSpec { retain: false, ..Default::default() },
        suspend: false,
        rollback: false,
    }
}

/// Keeps the engine's status in the history row's `in_flight`.
struct HistorySink {
    connector: Arc<crate::db::Connector>,
    history: TableName,
    version: String,
    step: usize,
}

impl StatusSink for HistorySink {
    async fn save(&mut self, status: &IdentityMigrationStatus) -> Result<(), StoreError> {
        let value = serde_json::to_value(status).map_err(|e| StoreError::from(e.to_string()))?;
        let state = InFlight { step: self.step, rebuild: Some(value), ..Default::default() }.text();
        // Boxed: a connection's future is large, and every checkpoint of the
        // engine's phases would carry it on the worker's stack.
        Box::pin(async {
            let client = self.connector.connect().await.map_err(|e| StoreError::from(e.to_string()))?;
            history::progress(&client, &self.history, &self.version, self.step as i32, Some(&state))
                .await
                .map_err(|e| StoreError::from(e.to_string()))
        })
        .await
    }

    async fn event(&mut self, event: EngineEvent) {
        tracing::info!(reason = event.reason, message = %event.message, "rebuild");
    }
}

/// What a rebuild runs with: the runner's connection, spec and licences.
pub struct Context<'a> {
    pub connector: &'a Arc<crate::db::Connector>,
    pub spec: &'a SchemaMigrationSpec,
    pub approved: bool,
    pub control: &'a crate::engine::Control,
    pub leading: Option<&'a crate::engine::Licence>,
}

pub async fn run(
    runner: Context<'_>,
    ledger: &Ledger<'_>,
    table: &TableName,
    changes: &[Change],
    resumed: Option<&InFlight>,
) -> Result<Ended, Arc<EngineError>> {
    let spec = table_spec(runner.spec, table, changes);
    let settings = table_settings(&spec, runner.connector.clone(), TargetSource::Spec).await.map_err(Arc::new)?;
    let status: Option<IdentityMigrationStatus> =
        resumed.and_then(|r| r.rebuild.clone()).and_then(|v| serde_json::from_value(v).ok());
    let job = Job {
        approved: runner.approved,
        leading: runner.leading.cloned(),
        ..Job::shared(settings, runner.connector.clone())
    };
    let sink = HistorySink {
        connector: runner.connector.clone(),
        history: ledger.history.clone(),
        version: ledger.version.to_string(),
        step: ledger.step,
    };
    eprintln!("rebuilding {table} for {} change(s)", changes.len());
    // A task of its own, as the operator runs every engine: its phases need
    // a worker's whole stack, not what is left under the runner's frames.
    let engine = tokio::spawn(Migration::new(job, status, sink, runner.control.clone()).run());
    let (outcome, _status, _sink) = engine
        .await
        .map_err(|e| Arc::new(EngineError::from(crate::db::error::DbError::engine("rebuild", e.to_string()))))?;
    match outcome {
        Outcome::Completed => Ok(Ended::Done),
        Outcome::AwaitingApproval => Ok(Ended::AwaitingCutover),
        Outcome::Suspended | Outcome::Stopped => Ok(Ended::Stopped),
        Outcome::RolledBack => Ok(Ended::Done),
        Outcome::Failed(e) => Err(e),
    }
}

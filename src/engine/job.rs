//! What one run of the engine works with, and how it ends.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

use super::error::EngineError;
use super::licence::Licence;
use crate::db::Dialect;
use crate::db::{Connector, RetryCounter, RetryPolicy, Session};
use crate::engine::plan::changes::reshape::Reshape;
use crate::engine::plan::changes::reverse::Reverse;
use crate::engine::plan::changes::{Rebuild, State};
use crate::engine::plan::shape::TableName;
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::sql::RowStatements;
use crate::engine::plan::validate::{InvalidInput, Settings};
use crate::engine::steps::claim::{Claim, ClaimError};
use crate::engine::steps::quiesce::Workloads;

/// Fixed for the life of one engine run; shared with the workers.
pub struct Job {
    pub settings: Settings,
    pub dialect: Dialect,
    pub connector: Arc<Connector>,
    pub retry_policy: RetryPolicy,
    pub retries: Arc<RetryCounter>,
    /// `spec.cutover.approved` (or `run --approve-cutover`).
    pub approved: bool,
    /// How to quiesce workloads; only the operator has it.
    pub workloads: Option<Arc<dyn Workloads>>,
    /// The migration's Lease in the operator: its deadline, read before every change.
    pub leading: Option<Licence>,
    /// An approved cut-over whose window is closed: the engine keeps the
    /// shadow in step with one re-sync pass this often until the window
    /// opens (the operator). None: it stops, and resumes once it opens (`run`).
    pub resync_while_waiting: Option<std::time::Duration>,
    /// This engine's claim on the table, taken when the run starts.
    pub claim: Mutex<Option<Arc<Claim>>>,
    /// A TableMigration's rebuild: set once the engine has read the table.
    pub reshape: OnceLock<Arc<Reshape>>,
    /// The OID of the table a rebuild started from (`status.plan.originalOid`).
    pub original_oid: OnceLock<i64>,
    /// Set when a rolled-back rebuild rolls forward: its syncs keep what the
    /// new table's added columns had before the rollback.
    pub rolling_forward: std::sync::atomic::AtomicBool,
}

impl Job {
    /// A job in the target's dialect, with the default retry policy, not
    /// approved for cut-over, and no way to quiesce workloads.
    pub fn new(settings: Settings, connector: Connector) -> Self {
        Self::shared(settings, Arc::new(connector))
    }

    /// The same, on a connector already in use (one that read the table first).
    pub fn shared(settings: Settings, connector: Arc<Connector>) -> Self {
        Self {
            settings,
            dialect: connector.dialect(),
            connector,
            retry_policy: RetryPolicy::default(),
            retries: Arc::new(RetryCounter::default()),
            approved: false,
            workloads: None,
            leading: None,
            resync_while_waiting: None,
            claim: Mutex::new(None),
            reshape: OnceLock::new(),
            original_oid: OnceLock::new(),
            rolling_forward: Default::default(),
        }
    }

    /// Called before every statement that changes the schema: an engine that
    /// lost its claim on the table, or its migration's Lease, stops there.
    pub async fn before_change(&self) -> Result<(), EngineError> {
        if self.lease_lost() {
            return Err(ClaimError::LeaseLost { table: self.settings.source.clone() }.into());
        }
        let claim = self.claim.lock().expect("claim lock").clone();
        match claim {
            Some(claim) => Ok(claim.check().await?),
            None => Ok(()),
        }
    }

    /// Called before giving a table name back: only the claim counts. A
    /// Lease lost inside the window must not leave the name absent until
    /// another replica takes over, and while this engine holds the claim no
    /// other engine can touch the table, so it gives the name back first.
    pub async fn before_put_back(&self) -> Result<(), EngineError> {
        let claim = self.claim.lock().expect("claim lock").clone();
        match claim {
            Some(claim) => Ok(claim.check().await?),
            None => Ok(()),
        }
    }

    /// Whether the operator lost the migration's Lease: another replica may
    /// run it now, so this engine stops before its next change of any kind
    /// (batches included) and writes no status.
    pub fn lease_lost(&self) -> bool {
        self.leading.as_ref().is_some_and(|held| !held.holds())
    }

    /// Whether this engine may still write rows: its Lease (in the operator)
    /// and its claim on the table both hold, as far as can be told without a
    /// round trip. Checked before every batch.
    pub fn may_write(&self) -> bool {
        let claim = self.claim.lock().expect("claim lock").clone();
        !self.lease_lost() && claim.is_none_or(|c| c.is_fresh())
    }

    /// The OID of the table the rebuild started from, once known.
    pub fn original(&self) -> Option<i64> {
        self.original_oid.get().copied()
    }

    pub fn session(&self) -> Session {
        Session::new(self.connector.clone(), self.retry_policy, self.retries.clone())
    }

    /// Statements that move and compare rows from `source` into `target`,
    /// which have the table's columns; in a rebuild, rows into the new table
    /// come from the source through every change, and compare in the new shape.
    pub fn statements(&self, shape: &TableShape, source: &TableName, target: &TableName) -> RowStatements {
        let (id, generation) = (&self.settings.id_column, self.settings.generation);
        match self.reshape.get() {
            Some(r) if *target == self.settings.shadow => {
                if r.keeps_added(self.rolling_forward.load(std::sync::atomic::Ordering::Relaxed)) {
                    let rows = r.rows_keeping(source, target, id);
                    let mut statements = RowStatements::new(&rows, target, id, &r.target, self.dialect, generation);
                    statements.update_first = true;
                    statements
                } else {
                    RowStatements::new(&r.rows_of(source), target, id, &r.target, self.dialect, generation)
                }
            }
            _ => RowStatements::new(source, target, id, shape, self.dialect, generation),
        }
    }

    /// The row statements of a rollback after the cut-over, from the new table
    /// `new` into the old one `old` of shape `original`: the new rows through
    /// each change's inverse for a TableMigration, as they are for an identity.
    pub fn rollback_statements(
        &self,
        original: &TableShape,
        new: &TableName,
        old: &TableName,
    ) -> Result<RowStatements, InvalidInput> {
        let (id, generation) = (&self.settings.id_column, self.settings.generation);
        if self.settings.changes.is_empty() {
            return Ok(RowStatements::new(new, old, id, original, self.dialect, generation));
        }
        let reverse = Reverse::new(original, &self.settings.changes)?;
        let forward = Rebuild::new(State::of(original), &self.settings.changes, 0)?;
        let rows = reverse.rows_since_cutover(&forward, new, old, id);
        let mut statements = RowStatements::new(&rows, old, id, original, self.dialect, generation);
        statements.update_first = reverse.keeps_old_values();
        Ok(statements)
    }
}

/// What a front end asks of a running engine. It is honoured at the next
/// checkpoint: between batches, chunks and phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    Run,
    /// `spec.suspend`: stop at the next checkpoint; resume later from it.
    Suspend,
    /// Shut down (SIGTERM, lost leadership, deletion): same, without a condition change.
    Stop,
}

pub type Control = watch::Receiver<Directive>;

/// A control that is never changed (tests, `plan`).
pub fn always_run() -> (watch::Sender<Directive>, Control) {
    watch::channel(Directive::Run)
}

/// How an engine run ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    Completed,
    /// `spec.rollback`: the old table has the name again.
    RolledBack,
    /// Verified and waiting in AwaitingCutover for approval.
    AwaitingApproval,
    Suspended,
    Stopped,
    /// The phase failed; the error says whether a person must fix the input.
    Failed(Arc<EngineError>),
}

/// Outcomes are equal when they are the same kind, failures when they say the same.
impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Outcome::Failed(a), Outcome::Failed(b)) => a.to_string() == b.to_string(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for Outcome {}

/// After a phase's work: go on, or stop the engine with an outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Next,
    Halt(Outcome),
    /// The server refused to add the identity in place: the copy does it.
    FallBackToCopy,
}

/// Checks the control without waiting.
pub fn halted(control: &Control) -> Option<Outcome> {
    match *control.borrow() {
        Directive::Run => None,
        Directive::Suspend => Some(Outcome::Suspended),
        Directive::Stop => Some(Outcome::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DatabaseTarget;
    use crate::db::target::parse_postgres_url;
    use crate::engine::plan::validate::{TargetSource, validate_spec};
    use crate::engine::testing::spec_for;

    #[tokio::test]
    async fn an_engine_whose_operator_lost_the_lease_stops_before_its_next_change() {
        let settings = validate_spec(&spec_for("post_tag"), TargetSource::Spec).unwrap();
        let target = DatabaseTarget::Postgres(parse_postgres_url("postgres://u@127.0.0.1/db").unwrap());
        let (lease, leading) = Licence::channel(Some(std::time::Instant::now() + std::time::Duration::from_secs(60)));
        let job = Job { leading: Some(leading), ..Job::new(settings, Connector::new(target, None).unwrap()) };
        job.before_change().await.unwrap();
        assert!(!job.lease_lost());
        lease.send(None).unwrap();
        let err = job.before_change().await.unwrap_err();
        // Not taken back: another replica may hold the Lease now.
        assert!(!err.lost_claim(), "{err}");
        assert!(err.to_string().contains("lost the migration's lease"), "{err}");
        assert!(job.lease_lost());
    }
}

//! Runs a SchemaMigration's files against the database: one runner per
//! database (a claim on the history table, no advisory lock), the history
//! made and read (another tool's adopted once, a baseline recorded), drift
//! and order checked, approval asked by what the migrations do, then each
//! pending migration's steps from where the last run stopped.

use std::sync::Arc;
use std::time::Duration;

use super::exec::{self, InFlight, Ledger};
use super::files::{Version, VersionedFile};
use super::history::{self, Row, RowKind};
use super::rebuild;
use super::rules::{PlannedMigration, Refused, StepKind, plan_file, plan_hash};
use super::sql::{SqlError, Statement, on_parser_stack, statements};
use crate::api::schema::{ApprovalPolicy, SchemaMigrationSpec};
use crate::db::error::DbError;
use crate::db::{Connector, Dialect, RetryPolicy, Session};
use crate::engine::plan::shape::TableName;
use crate::engine::steps::claim::{Claim, ClaimError};
use crate::engine::{Control, Directive, EngineError, Licence};

/// How often a runner that finds the claim taken looks again.
const CLAIM_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("version {version} ({file}) was applied with another checksum: the applied file changed (Drifted)")]
    Drifted { version: String, file: String },
    #[error("version {version} ({file}) is older than the applied {head}: set spec.outOfOrder to apply it")]
    OutOfOrder { version: String, file: String, head: String },
    #[error("spec.targetVersion: {0} is not the version of any file")]
    UnknownTarget(String),
    #[error("{at}: {source}")]
    Step {
        at: String,
        #[source]
        source: DbError,
    },
    #[error("{at}: the table engine: {source}")]
    Rebuild {
        at: String,
        #[source]
        source: Arc<EngineError>,
    },
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Claim(Box<ClaimError>),
}

impl From<ClaimError> for RunError {
    fn from(e: ClaimError) -> Self {
        RunError::Claim(Box::new(e))
    }
}

/// A migration's steps and the statements they come from.
pub type Planned = (PlannedMigration, Vec<Statement>);
/// A migration to apply, with its history row if an earlier run started it.
type Pending = (PlannedMigration, Vec<Statement>, Option<Row>);

impl RunError {
    /// A person must change the files or the spec.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            RunError::Sql(_)
                | RunError::Refused(_)
                | RunError::Drifted { .. }
                | RunError::OutOfOrder { .. }
                | RunError::UnknownTarget(_)
        ) || matches!(self, RunError::Rebuild { source, .. } if source.is_invalid_input())
    }
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum RunOutcome {
    /// Every migration up to the target version is applied.
    Done {
        applied: Vec<String>,
        current: Option<String>,
    },
    /// The policy wants a person to approve this plan first.
    AwaitingApproval {
        hash: String,
        why: String,
        pending: usize,
    },
    /// A rebuild waits for its cut-over's approval or window.
    AwaitingCutover {
        version: String,
    },
    Stopped,
}

/// Every file's steps on `dialect`, or the first statement that cannot run:
/// nothing runs unless every file plans.
pub fn plan_all(files: &[VersionedFile], dialect: Dialect) -> Result<Vec<Planned>, RunError> {
    on_parser_stack(|| plan_each(files, dialect))
}

fn plan_each(files: &[VersionedFile], dialect: Dialect) -> Result<Vec<Planned>, RunError> {
    files
        .iter()
        .map(|f| {
            let statements = statements(f)?;
            Ok((plan_file(f, &statements, dialect)?, statements))
        })
        .collect()
}

/// What a run reports as it goes (the operator writes it into the status).
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// The migrations to apply, in order.
    Pending(Vec<String>),
    /// Step `step` (1-based) of `steps` of `version` starts.
    Step {
        version: String,
        step: usize,
        steps: usize,
        kind: &'static str,
    },
    Applied(String),
    /// The step waits for a slot of its endpoint, every slot being held.
    WaitingForSlot {
        endpoint: String,
        limit: usize,
    },
    /// The step under way recorded a job id or a batch cursor.
    InFlight {
        version: String,
        job: Option<String>,
        cursor: Option<String>,
    },
}

/// What a step that loads the endpoint (a rebuild's copy, a backfill) waits
/// for before it starts: in the operator, a slot of the endpoint
/// (`maxConcurrentPerTarget`), held until the run ends. Answers false when
/// the run is to stop instead.
pub trait SlotGate: Send + Sync {
    fn enter(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>;
}

pub struct Runner {
    pub connector: Arc<Connector>,
    pub spec: SchemaMigrationSpec,
    /// `spec.cutover.approved` or `run --approve-cutover`: for the rebuilds.
    pub approved: bool,
    pub control: Control,
    /// The operator's Lease: read before every step (and by a rebuild's engine).
    pub leading: Option<Licence>,
    /// Where progress goes, if anywhere.
    pub report: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
    /// The endpoint's slot, if one is needed.
    pub slot: Option<Arc<dyn SlotGate>>,
}

impl Runner {
    fn tell(&self, progress: Progress) {
        if let Some(report) = &self.report {
            let _ = report.send(progress);
        }
    }

    /// Whether the run may go on: not told to stop, its Lease (if any) held.
    fn may_go_on(&self) -> bool {
        *self.control.borrow() == Directive::Run && self.leading.as_ref().is_none_or(Licence::holds)
    }

    fn history(&self) -> TableName {
        TableName::new(self.spec.history.schema.clone(), self.spec.history.table.clone())
    }

    fn session(&self) -> Session {
        Session::new(self.connector.clone(), RetryPolicy::default(), Arc::default())
    }

    /// Applies what is pending of `files`.
    pub async fn run(&self, files: &[VersionedFile]) -> Result<RunOutcome, RunError> {
        let dialect = self.connector.dialect();
        let planned = plan_all(files, dialect)?;
        let history = self.history();
        let Some(claim) = self.claim(&history).await? else { return Ok(RunOutcome::Stopped) };
        let result = self.run_claimed(files, &planned, &history).await;
        claim.release(&self.connector).await;
        result
    }

    /// Waits while another runner holds the claim.
    async fn claim(&self, history: &TableName) -> Result<Option<Claim>, RunError> {
        let mut said = false;
        loop {
            match Claim::take(&self.connector, history, self.connector.dialect()).await {
                Ok(claim) => return Ok(Some(claim)),
                Err(ClaimError::Taken { holder, .. }) => {
                    if !said {
                        tracing::info!(%holder, history = %history, "another runner applies migrations here; waiting");
                        eprintln!("another runner ({holder}) applies migrations to this database; waiting for it");
                        said = true;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            if *self.control.borrow() != Directive::Run {
                return Ok(None);
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    async fn run_claimed(
        &self,
        files: &[VersionedFile],
        planned: &[Planned],
        history: &TableName,
    ) -> Result<RunOutcome, RunError> {
        let mut session = self.session();
        let create = history::create_sql(history);
        let create = create.as_str();
        session
            .retry("create the history", |c| async move {
                c.batch_execute(create).await.map_err(|e| DbError::from_pg("create the history", &e))
            })
            .await?;
        let mut rows = session.retry("read the history", |c| async move { history::read(&c, history).await }).await?;
        if rows.is_empty() {
            self.adopt_or_baseline(&mut session, planned, history).await?;
            rows = session.retry("read the history", |c| async move { history::read(&c, history).await }).await?;
        }
        let pending = self.pending(files, planned, &rows)?;
        if pending.is_empty() {
            return Ok(RunOutcome::Done { applied: Vec::new(), current: current(&rows) });
        }
        let plans: Vec<PlannedMigration> = pending.iter().map(|(p, _, _)| p.clone()).collect();
        if let Some(why) = self.needs_approval(&plans) {
            let hash = plan_hash(&plans);
            if self.spec.policy.approved_plan_hash != hash {
                return Ok(RunOutcome::AwaitingApproval { hash, why, pending: plans.len() });
            }
        }
        self.tell(Progress::Pending(plans.iter().map(|p| p.version.clone()).collect()));
        let mut applied = Vec::new();
        for (m, statements, row) in pending {
            if !self.may_go_on() {
                return Ok(RunOutcome::Stopped);
            }
            match self.apply(&mut session, history, &m, &statements, row.as_ref()).await? {
                Some(outcome) => return Ok(outcome),
                None => {
                    self.tell(Progress::Applied(m.version.clone()));
                    applied.push(m.version.clone());
                }
            }
        }
        let rows = session.retry("read the history", |c| async move { history::read(&c, history).await }).await?;
        Ok(RunOutcome::Done { applied, current: current(&rows) })
    }

    /// A first run records what another tool applied, or the baseline.
    async fn adopt_or_baseline(
        &self,
        session: &mut Session,
        planned: &[Planned],
        history: &TableName,
    ) -> Result<(), RunError> {
        let schema = self.spec.history.schema.clone();
        let schema = schema.as_str();
        let foreign =
            session.retry("read other tools' history", |c| async move { history::foreign(&c, schema).await }).await?;
        let baseline = self.spec.baseline.as_ref().map(|b| Version::new(&b.version));
        for (m, _) in planned.iter().filter(|(m, _)| !m.repeatable) {
            let version = Version::new(&m.version);
            let kind = if foreign.as_ref().is_some_and(|f| f.applied(&version)) {
                RowKind::Adopted
            } else if baseline.as_ref().is_some_and(|b| version <= *b) {
                RowKind::Baseline
            } else {
                continue;
            };
            session.retry("record", |c| async move { history::start(&c, history, m, kind).await }).await?;
        }
        if let Some(f) = foreign {
            tracing::info!(tool = f.tool, table = %f.table, versions = f.versions.len(), "adopted another tool's history (read only)");
        }
        Ok(())
    }

    /// The migrations to apply, in order, with their history row if one was
    /// started; drift and order are checked first.
    fn pending(&self, files: &[VersionedFile], planned: &[Planned], rows: &[Row]) -> Result<Vec<Pending>, RunError> {
        let target = match self.spec.target_version.as_str() {
            "" => None,
            t => {
                if !files.iter().any(|f| f.version.text == t) {
                    return Err(RunError::UnknownTarget(t.to_string()));
                }
                Some(Version::new(t))
            }
        };
        let row_of = |v: &str| rows.iter().find(|r| r.version == v);
        let head =
            rows.iter().filter(|r| r.finished).map(|r| Version::new(&r.version)).filter(Version::is_numbered).max();
        let mut out = Vec::new();
        for (m, statements) in planned {
            let row = row_of(&m.version);
            if let Some(r) = row
                && r.finished
            {
                if r.compares_checksum() && r.checksum != m.checksum {
                    if m.repeatable {
                        out.push((m.clone(), statements.clone(), None));
                        continue;
                    }
                    return Err(RunError::Drifted { version: m.version.clone(), file: m.file.clone() });
                }
                continue;
            }
            let version = Version::new(&m.version);
            if !m.repeatable && target.as_ref().is_some_and(|t| version > *t) {
                continue;
            }
            if !m.repeatable
                && let Some(head) = &head
                && version < *head
                && row.is_none()
                && !self.spec.out_of_order
            {
                return Err(RunError::OutOfOrder {
                    version: m.version.clone(),
                    file: m.file.clone(),
                    head: head.text.clone(),
                });
            }
            out.push((m.clone(), statements.clone(), row.cloned()));
        }
        Ok(out)
    }

    fn needs_approval(&self, plans: &[PlannedMigration]) -> Option<String> {
        let rebuilds: Vec<&str> = plans.iter().filter(|p| p.rebuilds()).map(|p| p.version.as_str()).collect();
        let destructive: Vec<&str> = plans.iter().filter(|p| p.destructive).map(|p| p.version.as_str()).collect();
        match self.spec.policy.approval {
            ApprovalPolicy::Never => None,
            ApprovalPolicy::Always => Some("policy.approval is Always".into()),
            ApprovalPolicy::Rebuilds if !rebuilds.is_empty() => {
                Some(format!("rebuilds a table: {}", rebuilds.join(", ")))
            }
            ApprovalPolicy::Destructive if !destructive.is_empty() => {
                Some(format!("drops or deletes: {}", destructive.join(", ")))
            }
            _ => None,
        }
    }

    /// One migration from where its row says it got. Some: the run stops here.
    async fn apply(
        &self,
        session: &mut Session,
        history: &TableName,
        m: &PlannedMigration,
        statements: &[Statement],
        row: Option<&Row>,
    ) -> Result<Option<RunOutcome>, RunError> {
        let resume_at = match row {
            Some(r) if r.checksum == m.checksum && !r.finished => r.steps_applied.max(0) as usize,
            _ => {
                session
                    .retry(
                        "record the start",
                        |c| async move { history::start(&c, history, m, RowKind::Applied).await },
                    )
                    .await?;
                0
            }
        };
        let in_flight = row.and_then(|r| InFlight::parse(r.in_flight.as_deref()));
        if resume_at > 0 {
            tracing::info!(version = %m.version, step = resume_at + 1, "resuming the migration");
        }
        eprintln!("applying version {} ({}): {} steps", m.version, m.file, m.steps.len());
        for (n, step) in m.steps.iter().enumerate().skip(resume_at) {
            if !self.may_go_on() {
                return Ok(Some(RunOutcome::Stopped));
            }
            let kind = step.kind.name();
            self.tell(Progress::Step { version: m.version.clone(), step: n + 1, steps: m.steps.len(), kind });
            let loads = matches!(step.kind, StepKind::Rebuild { .. } | StepKind::Backfill { .. });
            if let Some(gate) = self.slot.as_ref().filter(|_| loads)
                && !gate.enter().await
            {
                return Ok(Some(RunOutcome::Stopped));
            }
            let watcher = |state: &InFlight| {
                let (job, cursor) = (state.job.clone(), state.cursor.clone());
                self.tell(Progress::InFlight { version: m.version.clone(), job, cursor });
            };
            let ledger = Ledger { history, version: &m.version, step: n, watcher: Some(&watcher) };
            let resumed = in_flight.as_ref().filter(|f| f.step == n);
            tracing::info!(version = %m.version, step = n + 1, kind = step.kind.name(), at = %step.at, "step");
            let dialect = self.connector.dialect();
            let result = match &step.kind {
                StepKind::Ddl { sql, creates } => exec::ddl(session, &ledger, sql, creates.as_ref(), resumed).await,
                StepKind::Index { sql, index } => exec::index(session, &ledger, dialect, sql, index, resumed).await,
                StepKind::Validate { sql, .. } => exec::validate(session, &ledger, dialect, sql, resumed).await,
                StepKind::Dml { sql } => exec::in_transaction(session, &ledger, std::slice::from_ref(sql)).await,
                StepKind::Transaction { sql } => exec::in_transaction(session, &ledger, sql).await,
                StepKind::Backfill { sql, table } => {
                    let tree = statements.iter().find(|s| s.at() == step.at).map(|s| s.tree.clone());
                    match tree {
                        Some(tree) => exec::backfill(session, &ledger, &tree, sql, table, resumed).await.map(|_| ()),
                        None => exec::in_transaction(session, &ledger, std::slice::from_ref(sql)).await,
                    }
                }
                StepKind::Rebuild { table, changes } => {
                    let context = rebuild::Context {
                        connector: &self.connector,
                        spec: &self.spec,
                        approved: self.approved,
                        control: &self.control,
                        leading: self.leading.as_ref(),
                    };
                    let done = rebuild::run(context, &ledger, table, changes, resumed).await;
                    match done {
                        Ok(rebuild::Ended::Done) => exec::Ledger::done(&ledger, session).await,
                        Ok(rebuild::Ended::AwaitingCutover) => {
                            return Ok(Some(RunOutcome::AwaitingCutover { version: m.version.clone() }));
                        }
                        Ok(rebuild::Ended::Stopped) => return Ok(Some(RunOutcome::Stopped)),
                        Err(source) => {
                            let message = source.to_string();
                            let _ = self.record_failure(session, history, m, &step.at, None, &message).await;
                            return Err(RunError::Rebuild { at: step.at.clone(), source });
                        }
                    }
                }
            };
            if let Err(source) = result {
                let _ = self
                    .record_failure(session, history, m, &step.at, source.sqlstate.as_deref(), &source.message)
                    .await;
                return Err(RunError::Step { at: step.at.clone(), source });
            }
        }
        let version = m.version.as_str();
        session.retry("record the end", |c| async move { history::finish(&c, history, version).await }).await?;
        eprintln!("applied version {}", m.version);
        Ok(None)
    }

    async fn record_failure(
        &self,
        session: &mut Session,
        history: &TableName,
        m: &PlannedMigration,
        at: &str,
        sqlstate: Option<&str>,
        message: &str,
    ) -> Result<(), DbError> {
        let version = m.version.as_str();
        session
            .retry(
                "record the failure",
                |c| async move { history::fail(&c, history, version, at, sqlstate, message).await },
            )
            .await
    }
}

/// The newest finished version.
fn current(rows: &[Row]) -> Option<String> {
    rows.iter()
        .filter(|r| r.finished)
        .map(|r| Version::new(&r.version))
        .filter(Version::is_numbered)
        .max()
        .map(|v| v.text)
}

//! The engine's driver: walks the phase machine from wherever the status (and
//! the catalog) say the migration stands, running each phase's work. The
//! operator and the `run` command both drive this; only their [`Reporter`] differs.

use std::sync::Arc;

use super::catalog;
use super::copy::copy_ranges;
use super::job::{Control, EngineError, Flow, Job, Outcome, halted};
use super::phase::{Gate, SwapState, may_proceed, next_phase, resume_phase, rollback_allowed, swap_state};
use super::plan::resync_batch_rows;
use super::rollback::{original_for_rollback, roll_back};
use super::shadow::{build_indexes, ensure_shadow_table};
use super::shape::TableShape;
use super::store::Reporter;
use super::survey::{Survey, survey};
use super::swap::{read_names, swap, window_text};
use super::tracker::{Tracker, now};
use super::tracking::TrackedStatements;
use super::validate::InvalidInput;
use super::verify::{Baseline, MAX_PASSES, verify_pass};
use crate::api::{Checkpoint, IdentityMigrationStatus, Phase, PlanStatus, Verification};

pub struct Migration<R: Reporter> {
    job: Arc<Job>,
    tracker: Tracker<R>,
    control: Control,
    /// The shadow's checksums from the last verification pass of this run.
    baseline: Option<Baseline>,
}

impl<R: Reporter> Migration<R> {
    pub fn new(job: Job, status: Option<IdentityMigrationStatus>, reporter: R, control: Control) -> Self {
        Self {
            job: Arc::new(job),
            tracker: Tracker::new(status.unwrap_or_default(), reporter),
            control,
            baseline: None,
        }
    }

    fn gate(&self) -> Gate {
        Gate { manual_approval: self.job.settings.manual_approval, approved: self.job.approved }
    }

    /// Runs until the migration completes, fails, waits for approval, or is
    /// told to stop. Returns the final status and the reporter.
    pub async fn run(mut self) -> (Outcome, IdentityMigrationStatus, R) {
        let outcome = self.drive().await;
        let (status, reporter) = self.tracker.into_parts();
        (outcome, status, reporter)
    }

    async fn drive(&mut self) -> Outcome {
        if self.tracker.status.started_at.is_none() {
            self.tracker.status.started_at = Some(now());
        }
        let mut phase = resume_phase(&self.tracker.status, self.job.settings.rollback);
        if self.job.settings.rollback && !rollback_allowed(&self.tracker.status) {
            let why = "applies only to a completed migration; delete the resource to abandon an unfinished one";
            let failed_in = resume_phase(&self.tracker.status, false);
            return self.failed(failed_in, InvalidInput::one("spec.rollback", why).into()).await;
        }
        match self.cutover_already_started(phase).await {
            Ok(true) => phase = Phase::Swapping,
            Ok(false) => {}
            Err(e) => return self.failed(phase, e).await,
        }
        loop {
            if phase == Phase::Completed {
                if self.tracker.status.phase != Phase::Completed {
                    let detail = self.completed_detail();
                    if let Err(e) = self.tracker.enter(Phase::Completed, detail).await {
                        return self.failed(Phase::Completed, e).await;
                    }
                }
                return Outcome::Completed;
            }
            if phase == Phase::RolledBack {
                if self.tracker.status.phase != Phase::RolledBack {
                    let detail = format!("{} is the original table again", self.job.settings.source);
                    if let Err(e) = self.tracker.enter(Phase::RolledBack, detail).await {
                        return self.failed(Phase::RolledBack, e).await;
                    }
                }
                return Outcome::RolledBack;
            }
            if phase.is_terminal() {
                return Outcome::Completed;
            }
            if let Some(outcome) = halted(&self.control) {
                return self.halt(outcome).await;
            }
            if !may_proceed(phase, self.gate()) {
                if self.tracker.status.phase != phase
                    && let Err(e) =
                        self.tracker.enter(phase, "verified; set spec.cutover.approved to cut over".into()).await
                {
                    return self.failed(phase, e).await;
                }
                if let Err(e) = self.tracker.pause(false).await {
                    return self.failed(phase, e).await;
                }
                return Outcome::AwaitingApproval;
            }
            let detail = self.phase_detail(phase);
            if let Err(e) = self.tracker.enter(phase, detail).await {
                return self.failed(phase, e).await;
            }
            match self.run_phase(phase).await {
                Ok(Flow::Next) => phase = next_phase(phase, self.gate()),
                Ok(Flow::Halt(outcome)) => return self.halt(outcome).await,
                Err(e) => return self.failed(phase, e).await,
            }
        }
    }

    async fn failed(&mut self, phase: Phase, err: EngineError) -> Outcome {
        self.tracker.fail(phase, &err).await;
        Outcome::Failed { invalid_input: matches!(err, EngineError::Invalid(_)), message: err.to_string() }
    }

    async fn halt(&mut self, outcome: Outcome) -> Outcome {
        if let Err(e) = self.tracker.pause(outcome == Outcome::Suspended).await {
            tracing::warn!(error = %e, "could not save the status when pausing");
        }
        outcome
    }

    /// A status that lags behind the database (a crash between a rename and
    /// its status write, or a lost status write) must not restart the copy:
    /// the catalog decides once a plan exists.
    async fn cutover_already_started(&self, phase: Phase) -> Result<bool, EngineError> {
        let settled = matches!(phase, Phase::Swapping | Phase::Completed | Phase::RollingBack | Phase::RolledBack);
        if self.tracker.status.plan.is_none() || settled {
            return Ok(false);
        }
        let names = read_names(&self.job.settings, &mut self.job.session()).await?;
        Ok(matches!(swap_state(names), SwapState::InWindow | SwapState::Swapped))
    }

    async fn run_phase(&mut self, phase: Phase) -> Result<Flow, EngineError> {
        match phase {
            Phase::Validating => self.validate().await,
            Phase::CreatingTarget => {
                let shape = self.original_shape().await?;
                ensure_shadow_table(&self.job, &mut self.job.session(), &shape).await?;
                Ok(Flow::Next)
            }
            Phase::Copying => self.copy().await,
            Phase::Verifying => self.verify().await,
            Phase::Swapping => {
                let shape = self.original_shape().await?;
                let widest = self.widest_row(&shape).await?;
                swap(&self.job, &shape, widest, self.baseline.take(), &mut self.tracker).await
            }
            Phase::RollingBack => {
                let Some(shape) = original_for_rollback(&self.job).await? else {
                    let why = if self.job.settings.retain_old {
                        "the original table is gone; there is nothing to roll back to"
                    } else {
                        "the old table was dropped at completion (oldTable.retain: false); there is nothing to roll back to"
                    };
                    return Err(InvalidInput::one("spec.rollback", why).into());
                };
                let widest = self.widest_row(&shape).await?;
                roll_back(&self.job, &shape, widest, &mut self.tracker).await
            }
            Phase::AwaitingCutover | Phase::Pending => Ok(Flow::Next),
            Phase::Completed | Phase::Failed | Phase::RolledBack => Ok(Flow::Next),
        }
    }

    /// The source's shape; during the cut-over window it goes by the old name.
    async fn original_shape(&self) -> Result<TableShape, EngineError> {
        let s = &self.job.settings;
        let mut session = self.job.session();
        for table in [&s.source, &s.old] {
            let shape = session.retry("read table", |c| async move { catalog::read_shape(&c, table).await }).await?;
            if let Some(shape) = shape
                && catalog_identity_free(&shape, &s.id_column)
            {
                return Ok(shape);
            }
        }
        Err(EngineError::Check(format!("neither {} nor {} holds the original table", s.source, s.old)))
    }

    async fn widest_row(&self, shape: &TableShape) -> Result<i64, EngineError> {
        let table = shape.table.clone().unwrap_or_else(|| self.job.settings.source.clone());
        let mut session = self.job.session();
        let table = &table;
        Ok(session.retry("sample rows", |c| async move { Ok(catalog::widest_row_bytes(&c, table).await) }).await?)
    }

    async fn validate(&mut self) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let Survey { shape, extent, rows, widest_row, batch_rows, ranges } = survey(&job).await?;
        tracing::info!(rows, ranges = ranges.len(), batch_rows, widest_row_bytes = widest_row, "planned the copy");
        let status = &mut self.tracker.status;
        status.plan = Some(PlanStatus {
            shadow_table: s.shadow.name.clone(),
            old_table: s.old.name.clone(),
            batch_rows,
            id_min: extent.map(|e| e.0),
            id_max: extent.map(|e| e.1),
            rows_estimated: rows,
            secondary_indexes: shape.secondary_indexes() as i64,
            dialect: job.dialect.as_str().to_string(),
        });
        status.checkpoint = Some(Checkpoint { ranges, caught_up_through: None, indexes_built: false });
        status.verification = None;
        status.identity = None;
        status.cutover = None;
        self.tracker.record_copy(0, 0, 0, false);
        Ok(Flow::Next)
    }

    async fn copy(&mut self) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let shape = self.original_shape().await?;
        let statements = job.statements(&shape, &s.source, &s.shadow);
        let Some(plan) = self.tracker.status.plan.as_ref() else {
            return Err(EngineError::Check("the status has no plan; the migration must start over".into()));
        };
        let batch_rows = plan.batch_rows;
        let ranges = self.tracker.status.checkpoint.as_ref().map_or(1, |c| c.ranges.len().max(1)) as i64;
        let rows_per_range = plan.rows_estimated / ranges;
        let flow =
            copy_ranges(&job, statements, batch_rows, rows_per_range, &mut self.tracker, &mut self.control).await?;
        if let Flow::Halt(outcome) = flow {
            return Ok(Flow::Halt(outcome));
        }
        let built = self.tracker.status.checkpoint.as_ref().is_some_and(|c| c.indexes_built);
        if !built {
            let count = build_indexes(&job, &mut job.session(), &shape).await?;
            if let Some(cp) = self.tracker.status.checkpoint.as_mut() {
                cp.indexes_built = true;
            }
            // Saved with the next phase change; a rebuild after a crash finds them valid.
            self.tracker.checkpoint(false).await?;
            tracing::info!(indexes = count, "secondary indexes built on the shadow table");
        }
        Ok(Flow::Next)
    }

    async fn verify(&mut self) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let shape = self.original_shape().await?;
        let statements = Arc::new(job.statements(&shape, &s.source, &s.shadow));
        let widest = self.widest_row(&shape).await?;
        let batch = resync_batch_rows(s, &shape, widest);
        let tracked = s
            .change_tracking_column
            .as_deref()
            .map(|tc| TrackedStatements::new(&s.source, &s.shadow, &s.id_column, &shape, tc));
        let mark_sql = tracked.as_ref().map(|t| t.mark.as_str());
        let mut unresolved = Vec::new();
        for _ in 0..MAX_PASSES {
            let (report, baseline) =
                verify_pass(&job, statements.clone(), batch, &self.control, self.baseline.as_ref(), mark_sql).await?;
            self.baseline = Some(baseline);
            if !report.complete {
                return Ok(Flow::Halt(halted(&self.control).unwrap_or(Outcome::Stopped)));
            }
            let v = self.tracker.status.verification.get_or_insert_with(Verification::default);
            v.passes += 1;
            v.source_rows = report.source_rows;
            v.target_rows = report.target_rows;
            v.mismatched_ranges = report.mismatched.len() as i64;
            v.rows_resynced += report.rows_resynced;
            v.unresolved = report.unresolved.iter().map(ToString::to_string).collect();
            tracing::info!(
                pass = v.passes,
                chunks = report.chunks,
                mismatched = report.mismatched.len(),
                resynced = report.rows_resynced,
                source_rows = report.source_rows,
                "verification pass"
            );
            if report.in_sync() {
                v.verified_through = self.tracker.status.plan.as_ref().and_then(|p| p.id_max);
                self.tracker.watch_retries(job.retries.get()).await;
                self.tracker.checkpoint(false).await?;
                return Ok(Flow::Next);
            }
            unresolved = v.unresolved.clone();
            self.tracker.checkpoint(false).await?;
        }
        // Rows there change faster than a pass: the window, with the table
        // renamed away, copies them; it fails if it cannot make them equal.
        let message = format!(
            "id ranges {} changed again during each of {MAX_PASSES} verification passes; the cut-over window will sync them",
            unresolved.join(", ")
        );
        self.tracker.event(true, "StillChanging", message).await;
        self.tracker.checkpoint(false).await?;
        Ok(Flow::Next)
    }

    fn phase_detail(&self, phase: Phase) -> String {
        let s = &self.job.settings;
        let plan = self.tracker.status.plan.as_ref();
        match phase {
            Phase::Validating => format!("checking the spec and {}", s.source),
            Phase::CreatingTarget => {
                format!("creating {} with a {:?} identity (CACHE {})", s.shadow, s.generation, s.cache)
            }
            Phase::Copying => match plan {
                Some(p) => format!(
                    "{} rows in {} ranges, {} workers, batches of up to {} rows",
                    p.rows_estimated,
                    self.tracker.status.checkpoint.as_ref().map_or(0, |c| c.ranges.len()),
                    s.parallelism,
                    p.batch_rows
                ),
                None => String::new(),
            },
            Phase::Verifying => format!("comparing {} and {} by id range", s.source, s.shadow),
            Phase::AwaitingCutover => "verified; approved".into(),
            Phase::Swapping => format!("renaming {} to {} and {} to {}", s.source, s.old.name, s.shadow, s.source.name),
            Phase::RollingBack => {
                format!("copying rows written since the cut-over into {} and renaming it back", s.old)
            }
            _ => String::new(),
        }
    }

    fn completed_detail(&self) -> String {
        let status = &self.tracker.status;
        let next = status.identity.as_ref().map(|i| i.next_value.to_string()).unwrap_or_else(|| "?".into());
        let window = window_text(status.cutover.as_ref().and_then(|c| c.window_millis));
        format!("{} generates its ids; next id {next}; cut-over window {window}", self.job.settings.source)
    }
}

/// The original table is the one whose id column is not (yet) an identity.
fn catalog_identity_free(shape: &TableShape, id: &str) -> bool {
    shape.column(id).is_some_and(|c| c.identity.is_none())
}

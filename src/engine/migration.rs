//! The engine's driver: walks the phase machine from wherever the status (and
//! the catalog) say the migration stands, running each phase's work. The
//! operator and the `run` command both drive this; only their [`StatusSink`] differs.

use std::sync::Arc;
use std::time::Duration;

use super::error::{CheckFailed, EngineError};
use super::job::{Control, Flow, Job, Outcome, halted};
use super::status_keeper::StatusKeeper;
use super::store::StatusSink;
use crate::api::now;
use crate::api::{
    CutoverStatus, IdentityMigrationStatus, Phase, Strategy, StrategyStatus, TakenStrategy, Verification,
};
use crate::engine::plan::batches::resync_batch_rows;
use crate::engine::plan::phase::{
    Gate, Stand, SwapState, Work, after, catalog_jump, fall_back_to_copy, may_proceed, needs_catalog_check, resume,
    rollback_allowed, swap_state,
};
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::validate::InvalidInput;
use crate::engine::plan::window::{self, WindowState};
use crate::engine::status_keeper::Pause;
use crate::engine::status_keeper::Save;
use crate::engine::steps::blockers::wait_out_blockers;
use crate::engine::steps::capture;
use crate::engine::steps::catalog;
use crate::engine::steps::catalog::read_names;
use crate::engine::steps::change_tracking::TrackedStatements;
use crate::engine::steps::claim::Claim;
use crate::engine::steps::fidelity::with_fidelity;
use crate::engine::steps::in_place::{InPlace, add_identity_in_place};
use crate::engine::steps::rebuild::{ensure_new_table, refuse_impossible};
use crate::engine::steps::rollback::{original_for_rollback, roll_back};
use crate::engine::steps::shadow::ensure_shadow_table;
use crate::engine::steps::swap::{disarm_capture, finish_swapped, swap};
use crate::engine::steps::verify::{Baseline, verify_pass};
use crate::engine::store::Severity;

mod changes;
mod copying;
mod cutover;
mod detail;
mod validating;
mod verifying;

/// Times a run claims its table again after losing the claim with a connection.
const MAX_RECLAIMS: u32 = 5;

/// Whether the run got a phase further since the last reclaim (in `before`).
fn moved(before: Option<Phase>, status: &crate::api::IdentityMigrationStatus) -> bool {
    before.is_some_and(|phase| phase != resume(status, false).phase())
}

pub struct Migration<R: StatusSink> {
    job: Arc<Job>,
    keeper: StatusKeeper<R>,
    control: Control,
    /// The shadow's checksums from the last verification pass of this run.
    baseline: Option<Baseline>,
    /// The capture armed before this run's copy wrote its first row: it
    /// verifies the copy unless taken off meanwhile.
    armed_before_copy: Option<capture::ArmedBeforeCopy>,
}

impl<R: StatusSink> Migration<R> {
    pub fn new(job: Job, status: Option<IdentityMigrationStatus>, sink: R, control: Control) -> Self {
        if let Some(oid) = status.as_ref().and_then(|s| s.plan.as_ref()).and_then(|p| p.original_oid) {
            let _ = job.original_oid.set(oid);
        }
        Self {
            job: Arc::new(job),
            keeper: StatusKeeper::new(status.unwrap_or_default(), sink),
            control,
            baseline: None,
            armed_before_copy: None,
        }
    }

    fn gate(&self) -> Gate {
        let in_place = self.keeper.status.strategy.as_ref().is_some_and(|s| s.taken == TakenStrategy::InPlace);
        let window = self.job.settings.window.as_ref();
        Gate {
            manual_approval: self.job.settings.manual_approval,
            approved: self.job.approved,
            windowed: window.is_some(),
            window_open: window.is_some_and(|w| window::state(w, jiff::Timestamp::now()) == WindowState::Open),
            in_place,
        }
    }

    /// Runs until the migration completes, fails, waits for approval, or is
    /// told to stop. Returns the final status and the sink.
    pub async fn run(mut self) -> (Outcome, IdentityMigrationStatus, R) {
        // Reclaims in a row without progress: a run that keeps moving on
        // (a phase further each time) is not given up for drops it survived.
        let mut reclaims = 0;
        let mut reclaimed_in = None;
        let outcome = loop {
            let outcome = match self.claim().await {
                Ok(()) => self.drive().await,
                Err(e) => {
                    let phase = resume(&self.keeper.status, false).phase();
                    self.failed(phase, e).await
                }
            };
            self.release_claim().await;
            // A claim lost with its connection (a network cut, a restarted
            // server) is taken again when it is free, and the run resumes from
            // the status and the catalog as a new run would; an engine that
            // took it meanwhile keeps it.
            match &outcome {
                Outcome::Failed(e)
                    if (e.lost_claim() || e.claim_unreachable())
                        && (reclaims < MAX_RECLAIMS || moved(reclaimed_in, &self.keeper.status)) =>
                {
                    let now_in = Some(resume(&self.keeper.status, false).phase());
                    reclaims = if now_in == reclaimed_in { reclaims + 1 } else { 1 };
                    reclaimed_in = now_in;
                    tracing::warn!(error = %e, attempt = reclaims, "claim lost; claiming the table again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => break outcome,
            }
        };
        let (status, sink) = self.keeper.into_parts();
        (outcome, status, sink)
    }

    /// Gives the claim up (the workers have ended).
    async fn release_claim(&mut self) {
        let claim = self.job.claim.lock().expect("claim lock").take();
        // Still shared, it ends with its connection when the last holder drops it.
        if let Some(Ok(claim)) = claim.map(Arc::try_unwrap) {
            claim.release(&self.job.connector).await;
        }
    }

    /// One engine per table: claims it in the database before anything else.
    async fn claim(&mut self) -> Result<(), EngineError> {
        let job = &self.job;
        let claim = Claim::take(&job.connector, &job.settings.source, job.dialect).await?;
        *job.claim.lock().expect("claim lock") = Some(Arc::new(claim));
        Ok(())
    }

    async fn drive(&mut self) -> Outcome {
        if self.keeper.status.started_at.is_none() {
            self.keeper.status.started_at = Some(now());
        }
        if let Err(e) = self.put_back_missing_table().await {
            let phase = resume(&self.keeper.status, false).phase();
            return self.failed(phase, e).await;
        }
        let rollback = self.job.settings.rollback;
        let mut stand = resume(&self.keeper.status, rollback);
        if rollback && !rollback_allowed(&self.keeper.status) {
            // A swap that crashed inside its window left the table name empty:
            // put the original back before refusing, as a failed swap does.
            if let Err(e) = self.close_open_window().await {
                return self.failed(stand.phase(), e).await;
            }
            let why = "applies only to a completed migration; delete the resource to abandon an unfinished one";
            let failed_in = resume(&self.keeper.status, false).phase();
            return self.failed(failed_in, InvalidInput::one("spec.rollback", why).into()).await;
        }
        match self.catalog_stand(stand).await {
            Ok(from_catalog) => stand = from_catalog,
            Err(e) => return self.failed(stand.phase(), e).await,
        }
        if let Err(e) = Box::pin(self.prepare_rebuild(stand)).await {
            return self.failed(stand.phase(), e).await;
        }
        loop {
            // Retries of every phase count, not only the copy's (saved with the next phase).
            self.keeper.set_retries(self.job.retries.get());
            let work = match stand {
                Stand::Completed => {
                    let detail = self.completed_detail();
                    return self.finish(Phase::Completed, detail, Outcome::Completed).await;
                }
                Stand::RolledBack => {
                    let detail = format!("{} is the original table again", self.job.settings.source);
                    return self.finish(Phase::RolledBack, detail, Outcome::RolledBack).await;
                }
                Stand::Work(work) => work,
            };
            let phase = work.phase();
            if let Some(outcome) = halted(&self.control) {
                return self.halt(outcome).await;
            }
            let gate = self.gate();
            let mut allowed = may_proceed(work, gate);
            if work == Work::Swapping && !allowed {
                // A retried cut-over outside its gate: nothing touches the
                // table, and what a failed attempt left is put back first.
                match self.hold_cutover().await {
                    Ok(true) => allowed = true,
                    Ok(false) => {
                        stand = Stand::Work(Work::AwaitingCutover);
                        continue;
                    }
                    Err(e) => return self.failed(phase, e).await,
                }
            }
            let next_window = self.job.settings.window.as_ref().and_then(|w| match window::state(w, now().0) {
                WindowState::Closed { opens_at } => Some(opens_at),
                WindowState::Open => None,
            });
            if work == Work::AwaitingCutover || work == Work::Swapping {
                let waiting = (!allowed).then_some(next_window).flatten();
                self.keeper.status.cutover.get_or_insert_with(CutoverStatus::default).next_window =
                    waiting.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
            }
            if !allowed {
                // Writes do not pay for the capture while the cut-over waits.
                self.drop_capture().await;
                let why = if gate.approval_given() {
                    let opens = next_window.map_or_else(|| "soon".to_string(), |t| format!("at {t}"));
                    format!("verified; waiting for the cut-over window, which opens {opens}")
                } else {
                    "verified; set spec.cutover.approved to cut over".to_string()
                };
                if self.keeper.status.phase != phase
                    && let Err(e) = self.keeper.enter(phase, why).await
                {
                    return self.failed(phase, e).await;
                }
                if let (Work::AwaitingCutover, true, false, Some(every)) =
                    (work, gate.approval_given(), gate.in_place, self.job.resync_while_waiting)
                {
                    match self.keep_in_step(every).await {
                        Ok(None) => continue,
                        Ok(Some(outcome)) => return self.halt(outcome).await,
                        Err(e) => return self.failed(phase, e).await,
                    }
                }
                if let Err(e) = self.keeper.pause(Pause::AwaitingApproval).await {
                    return self.failed(phase, e).await;
                }
                return Outcome::AwaitingApproval;
            }
            let detail = self.phase_detail(work);
            if let Err(e) = self.keeper.enter(phase, detail).await {
                return self.failed(phase, e).await;
            }
            match Box::pin(self.run_phase(work)).await {
                Ok(Flow::Next) => stand = after(work, self.gate()),
                Ok(Flow::FallBackToCopy) => stand = fall_back_to_copy(),
                Ok(Flow::Halt(outcome)) => return self.halt(outcome).await,
                Err(e) => return self.failed(phase, e).await,
            }
        }
    }

    /// An approved cut-over waiting for its window: one re-sync pass every
    /// `every` keeps the shadow close behind the source, so the window finds
    /// little to copy. Returns None once the window opens, or how the engine
    /// was halted meanwhile.
    async fn keep_in_step(&mut self, every: Duration) -> Result<Option<Outcome>, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let shape = self.original_shape().await?;
        let statements = Arc::new(job.statements(&shape, &s.source, &s.shadow));
        let batch = resync_batch_rows(s, &shape, self.widest_row(&shape).await?);
        let tracked = s.change_tracking_column.as_deref().map(|tc| {
            TrackedStatements::new(&s.source, &s.shadow, &s.id_column, &shape, tc, s.generation, job.dialect)
        });
        let mark_sql = tracked.as_ref().map(|t| t.mark.as_str());
        let mut control = self.control.clone();
        loop {
            let Some(window) = s.window.as_ref() else { return Ok(None) };
            let WindowState::Closed { opens_at } = window::state(window, jiff::Timestamp::now()) else {
                // The window opened. This engine was started without room or
                // slot (it only kept in step): it stops, and the operator
                // starts the cut-over within both limits.
                return Ok(Some(Outcome::Stopped));
            };
            if let Some(outcome) = halted(&control) {
                return Ok(Some(outcome));
            }
            job.before_change().await?;
            let (report, baseline) =
                verify_pass(&job, statements.clone(), batch, &control, self.baseline.as_ref(), mark_sql).await?;
            self.baseline = Some(baseline);
            if report.complete {
                let v = self.keeper.status.verification.get_or_insert_with(Verification::default);
                v.passes += 1;
                v.rows_resynced += report.rows_resynced;
                v.unresolved = report.unresolved.iter().map(ToString::to_string).collect();
                tracing::info!(resynced = report.rows_resynced, %opens_at, "kept the shadow in step; the window is closed");
                self.keeper.checkpoint(Save::Now).await?;
            }
            let until_open = opens_at.duration_since(jiff::Timestamp::now()).try_into().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(every.min(until_open)) => {}
                _ = control.changed() => {}
            }
        }
    }

    /// Takes the window's change capture off the table (the next cut-over
    /// arms it again): the engine stops or waits, and writes should not pay
    /// for it meanwhile.
    async fn drop_capture(&mut self) {
        if let Some(b) = self.baseline.as_mut() {
            b.captured = false;
        }
        self.armed_before_copy = None;
        if capture::wanted(&self.job) {
            Box::pin(disarm_capture(&self.job)).await;
        }
    }

    /// Records an end (once) and returns its outcome.
    async fn finish(&mut self, end: Phase, detail: String, outcome: Outcome) -> Outcome {
        if self.keeper.status.phase != end
            && let Err(e) = self.keeper.enter(end, detail).await
        {
            return self.failed(end, e).await;
        }
        outcome
    }

    async fn failed(&mut self, phase: Phase, err: EngineError) -> Outcome {
        if self.job.lease_lost() {
            // The replica that took the Lease over owns the status now.
            tracing::warn!(error = %err, "the migration's lease was lost; stopping without writing the status");
            return Outcome::Stopped;
        }
        // Boxed: the driver's future holds this call at every failure point.
        let err = Box::pin(self.explain_violation(err)).await;
        self.drop_capture().await;
        self.keeper.set_retries(self.job.retries.get());
        self.keeper.fail(phase, &err).await;
        Outcome::Failed(Arc::new(err))
    }

    async fn halt(&mut self, outcome: Outcome) -> Outcome {
        if self.job.lease_lost() {
            return Outcome::Stopped;
        }
        self.drop_capture().await;
        if let Err(e) =
            self.keeper.pause(if outcome == Outcome::Suspended { Pause::Suspended } else { Pause::Stopped }).await
        {
            tracing::warn!(error = %e, "could not save the status when pausing");
        }
        outcome
    }

    /// Where the catalog says the migration stands, when the status may lag
    /// behind it (see [`needs_catalog_check`]).
    async fn catalog_stand(&self, stand: Stand) -> Result<Stand, EngineError> {
        if !needs_catalog_check(stand, self.keeper.status.plan.is_some()) {
            return Ok(stand);
        }
        let names = read_names(&self.job.settings, self.job.original(), &mut self.job.session()).await?;
        Ok(catalog_jump(stand, &swap_state(names)))
    }

    async fn run_phase(&mut self, work: Work) -> Result<Flow, EngineError> {
        match work {
            Work::Validating if !self.job.settings.changes.is_empty() => Box::pin(self.validate_changes()).await,
            Work::Validating => Box::pin(self.validate()).await,
            Work::CreatingTarget => Box::pin(self.create_target()).await,
            Work::Copying => Box::pin(self.copy()).await,
            Work::Verifying => Box::pin(self.verify()).await,
            Work::Swapping if self.gate().in_place && !self.job.settings.changes.is_empty() => {
                self.change_in_place().await
            }
            Work::Swapping if self.gate().in_place => self.in_place().await,
            Work::Swapping => {
                // The catalog first: after the swap the original may be gone
                // (dropped with `oldTable.retain: false`) and is not needed.
                let names = read_names(&self.job.settings, self.job.original(), &mut self.job.session()).await?;
                if swap_state(names) == SwapState::Swapped {
                    return Box::pin(finish_swapped(&self.job, names, &mut self.keeper)).await;
                }
                let shape = self.original_shape().await?;
                let widest = self.widest_row(&shape).await?;
                // A swap done before means a rollback since: this is the way forward again.
                let swapped_before = self.keeper.status.cutover.as_ref().is_some_and(|c| c.swapped_at.is_some());
                self.job.rolling_forward.store(swapped_before, std::sync::atomic::Ordering::Relaxed);
                Box::pin(swap(&self.job, &shape, widest, self.baseline.take(), &mut self.keeper, &self.control)).await
            }
            Work::RollingBack if self.gate().in_place && !self.job.settings.changes.is_empty() => {
                self.undo_in_place().await
            }
            Work::RollingBack => {
                let copied = self.keeper.status.strategy.as_ref().is_some_and(|s| s.taken == TakenStrategy::Copy);
                let original = if copied && !self.job.settings.changes.is_empty() {
                    self.original_for_rollback_of_changes().await?
                } else {
                    original_for_rollback(&self.job).await?
                };
                let Some(shape) = original else {
                    let in_place =
                        self.keeper.status.strategy.as_ref().is_some_and(|s| s.taken == TakenStrategy::InPlace);
                    let why = if in_place && !self.job.settings.changes.is_empty() {
                        "the changes were made in place, so there is no old table to go back to"
                    } else if in_place {
                        "the identity was added in place, so there is no old table; \
                         ALTER TABLE ... ALTER COLUMN ... DROP IDENTITY undoes it"
                    } else if self.job.settings.retain_old {
                        "the original table is gone; there is nothing to roll back to"
                    } else {
                        "the old table was dropped at completion (oldTable.retain: false); there is nothing to roll back to"
                    };
                    return Err(InvalidInput::one("spec.rollback", why).into());
                };
                let widest = self.widest_row(&shape).await?;
                Box::pin(roll_back(&self.job, &shape, widest, &mut self.keeper)).await
            }
            Work::AwaitingCutover => Ok(Flow::Next),
        }
    }

    /// The new table, made once and found again on resume (what it carries
    /// besides rows applied again: safe to run more than once).
    async fn create_target(&mut self) -> Result<Flow, EngineError> {
        if let Some(reshape) = self.job.reshape.get().cloned() {
            let left = match ensure_new_table(&self.job, &mut self.job.session(), &reshape).await {
                Ok(left) => left,
                Err(e) => return Err(refuse_impossible(&self.job, e).await),
            };
            self.record_not_carried(left).await;
            return Ok(Flow::Next);
        }
        let shape = self.original_shape().await?;
        let shape = with_fidelity(&mut self.job.session(), shape, self.job.dialect).await?;
        let refused = ensure_shadow_table(&self.job, &mut self.job.session(), &shape).await?;
        self.record_not_carried(refused).await;
        Ok(Flow::Next)
    }

    /// The source's shape; during the cut-over window it goes by the old name.
    async fn original_shape(&self) -> Result<TableShape, EngineError> {
        let s = &self.job.settings;
        let mut session = self.job.session();
        if !s.changes.is_empty() {
            return self.original_of_changes(&mut session).await;
        }
        for table in [&s.source, &s.old] {
            let shape = session.retry("read table", |c| async move { catalog::read_shape(&c, table).await }).await?;
            if let Some(shape) = shape
                && catalog_identity_free(&shape, &s.id_column)
            {
                return Ok(shape);
            }
        }
        Err(CheckFailed::OriginalMissing { source_table: s.source.clone(), old: s.old.clone() }.into())
    }

    async fn widest_row(&self, shape: &TableShape) -> Result<i64, EngineError> {
        let table = shape.table.clone().unwrap_or_else(|| self.job.settings.source.clone());
        let mut session = self.job.session();
        let table = &table;
        Ok(session.retry("sample rows", |c| async move { Ok(catalog::widest_row_bytes(&c, table).await) }).await?)
    }

    /// Adds the identity to the table itself; when the server refuses and the
    /// spec allows it, the copy takes over.
    async fn in_place(&mut self) -> Result<Flow, EngineError> {
        let source = self.job.settings.source.clone();
        let mut session = self.job.session();
        if let Some(outcome) =
            wait_out_blockers(&self.job, &mut session, &mut self.keeper, &source, &self.control).await?
        {
            return Ok(Flow::Halt(outcome));
        }
        let added = add_identity_in_place(&self.job).await;
        self.keeper.watch_retries(self.job.retries.get()).await;
        match added? {
            InPlace::Added { identity, locked } => {
                let cutover = self.keeper.status.cutover.get_or_insert_with(CutoverStatus::default);
                // The lock is all a writer sees of it: the window (reads and
                // retries before it took the lock held nobody up).
                if let Some(locked) = locked {
                    cutover.window_millis.get_or_insert(locked.as_millis() as i64);
                }
                cutover.swapped_at = Some(now());
                tracing::info!(next_value = identity.next_value, "the identity was added in place");
                self.keeper.status.identity = Some(identity);
                Ok(Flow::Next)
            }
            InPlace::Refused(why) if self.job.settings.strategy == Strategy::InPlace => Err(InvalidInput::one(
                "spec.strategy",
                format!("InPlace: the server refused ADD IDENTITY ({why}); use Auto or Copy"),
            )
            .into()),
            InPlace::Refused(why) => {
                let reason = format!("server refused ADD IDENTITY: {why}");
                tracing::warn!(%reason, "adding the identity in place was refused; copying instead");
                self.keeper.event(Severity::Normal, "Strategy", format!("Copy: {reason}")).await;
                self.keeper.status.strategy = Some(StrategyStatus { taken: TakenStrategy::Copy, reason });
                self.keeper.checkpoint(Save::Now).await?;
                Ok(Flow::FallBackToCopy)
            }
        }
    }
}

/// The original table is the one whose id column is not (yet) an identity.
fn catalog_identity_free(shape: &TableShape, id: &str) -> bool {
    shape.column(id).is_some_and(|c| c.identity.is_none())
}

//! The engine's view of its status: every change goes through here, so the
//! write rate, the conditions and the events stay consistent.

use std::time::{Duration, Instant};

use super::error::EngineError;
use super::failpoint;
use super::plan::progress::{RateMeter, STATUS_WRITE_INTERVAL, WriteGate, progress};
use super::store::{EngineEvent, Severity, StatusSink};
use crate::api::conditions::refresh_conditions;
use crate::api::{IdentityMigrationStatus, LastError, Phase, now};

/// More retries than this within [`STORM_WINDOW`] is a retry storm worth an event.
pub const STORM_RETRIES: u64 = 50;
pub const STORM_WINDOW: Duration = Duration::from_secs(60);

/// How urgently a status change must reach the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Save {
    /// A phase change or a fact a resume depends on: written now, and a failed
    /// write stops the engine.
    Now,
    /// Progress: written when the write gate is due; a failed write is retried later.
    WhenDue,
}

/// Why the engine stops short of the end without failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// `spec.suspend`.
    Suspended,
    /// Verified, waiting for `spec.cutover.approved`.
    AwaitingApproval,
    /// Shut down (signal, lost lease, deletion): no condition change.
    Stopped,
}

/// Whether the copy has reached the end of every range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyProgress {
    Running,
    Finished,
}

impl CopyProgress {
    pub fn finished_if(done: bool) -> Self {
        if done { CopyProgress::Finished } else { CopyProgress::Running }
    }
}

/// The only writer of a migration's status: it keeps the write rate, the
/// conditions and the events consistent, and hands the status to its sink.
pub struct StatusKeeper<R: StatusSink> {
    pub status: IdentityMigrationStatus,
    sink: R,
    gate: WriteGate,
    pub rate: RateMeter,
    storm: (Instant, u64),
}

impl<R: StatusSink> StatusKeeper<R> {
    pub fn new(status: IdentityMigrationStatus, sink: R) -> Self {
        Self {
            status,
            sink,
            gate: WriteGate::new(STATUS_WRITE_INTERVAL),
            rate: RateMeter::default(),
            storm: (Instant::now(), 0),
        }
    }

    pub fn into_parts(self) -> (IdentityMigrationStatus, R) {
        (self.status, self.sink)
    }

    pub fn sink(&mut self) -> &mut R {
        &mut self.sink
    }

    /// Saves the status if forced or due. Only forced saves may fail the engine:
    /// a skipped progress write loses nothing the database does not also know.
    pub async fn checkpoint(&mut self, save: Save) -> Result<(), EngineError> {
        let force = save == Save::Now;
        self.sink.observe(&self.status);
        if !self.gate.should_write(Instant::now(), force) {
            return Ok(());
        }
        match self.sink.save(&self.status).await {
            Ok(()) => Ok(()),
            Err(e) if force => Err(EngineError::Store(e)),
            Err(e) => {
                tracing::warn!(error = %e, "could not save progress; will try again");
                Ok(())
            }
        }
    }

    /// Updates the copy progress from running totals.
    pub fn record_copy(&mut self, rows_copied: i64, rows_recopied: i64, batches: i64, copy: CopyProgress) {
        let done = copy == CopyProgress::Finished;
        self.rate.record(Instant::now(), rows_copied);
        let total = self.status.plan.as_ref().map(|p| p.rows_estimated).unwrap_or(0);
        let largest = self.status.progress.as_ref().map_or(0, |p| p.largest_batch);
        let pace = self.status.progress.as_ref().and_then(|p| p.pace.clone());
        let mut p = progress(rows_copied, total, self.rate.rows_per_second(), rows_recopied, done);
        p.batches = batches;
        p.largest_batch = largest;
        p.pace = if done { None } else { pace };
        self.status.progress = Some(p);
    }

    /// The adaptive pace now (None once the copy ends).
    pub fn set_pace(&mut self, pace: Option<crate::api::PaceStatus>) {
        if let Some(p) = self.status.progress.as_mut() {
            p.pace = pace;
        }
    }

    /// Notes the rows of one committed copy transaction.
    pub fn record_batch_size(&mut self, rows: i64) {
        if let Some(p) = self.status.progress.as_mut() {
            p.largest_batch = p.largest_batch.max(rows);
        }
    }

    pub fn set_retries(&mut self, total: u64) {
        self.status.retries = total as i64;
    }

    /// Emits a `RetryStorm` event when retries pile up.
    pub async fn watch_retries(&mut self, total: u64) {
        self.set_retries(total);
        let (since, base) = self.storm;
        if since.elapsed() > STORM_WINDOW {
            self.storm = (Instant::now(), total);
        } else if total - base > STORM_RETRIES {
            self.storm = (Instant::now(), total);
            self.event(
                Severity::Warning,
                "RetryStorm",
                format!("{} transient errors retried in the last minute", total - base),
            )
            .await;
        }
    }

    /// Saves now with the conditions brought up to date: for news that a
    /// person must see (blocked, a missing table), not for progress.
    pub async fn say(&mut self) -> Result<(), EngineError> {
        refresh_conditions(&mut self.status, false, &now());
        self.checkpoint(Save::Now).await
    }

    pub async fn event(&mut self, severity: Severity, reason: &'static str, message: String) {
        // Sinks show or publish events; this is for debugging the engine.
        tracing::debug!(reason, ?severity, %message, "event");
        self.sink.event(EngineEvent { severity, reason, message }).await;
    }

    /// Moves to `phase`, saved before any of its work begins.
    pub async fn enter(&mut self, phase: Phase, detail: String) -> Result<(), EngineError> {
        let changed = self.status.phase != phase;
        // Moving past the phase that failed is progress: the backoff starts over.
        let retrying = self.status.last_error.as_ref().is_some_and(|e| e.phase == phase);
        if !retrying && self.status.phase != Phase::Failed {
            self.status.failures = 0;
        }
        self.status.phase = phase;
        self.status.last_error = None;
        if phase == Phase::Completed {
            self.status.completed_at = Some(now());
        }
        refresh_conditions(&mut self.status, false, &now());
        self.checkpoint(Save::Now).await?;
        if changed {
            // The reason is the phase: events of one reason on one object are
            // folded into a series by Kubernetes, so phases must not share one.
            let message = if detail.is_empty() { format!("phase {phase}") } else { format!("phase {phase}: {detail}") };
            self.event(Severity::Normal, phase.as_str(), message).await;
        }
        failpoint::hit(&format!("enter-{phase}"));
        Ok(())
    }

    /// Records a failure in `phase`; the migration retries that phase next time.
    pub async fn fail(&mut self, phase: Phase, err: &EngineError) {
        let invalid_input = err.is_invalid_input();
        self.status.phase = Phase::Failed;
        self.status.failures += 1;
        self.status.last_error = Some(LastError {
            phase,
            message: err.to_string(),
            sqlstate: err.sqlstate(),
            invalid_input,
            invalid_data: matches!(err, EngineError::InvalidData(_)),
            at: Some(now()),
        });
        refresh_conditions(&mut self.status, false, &now());
        if let Err(e) = self.checkpoint(Save::Now).await {
            tracing::error!(error = %e, "could not save the failure");
        }
        let reason = err.invalid_reason().unwrap_or("Failed");
        self.event(Severity::Warning, reason, format!("{phase} failed: {err}")).await;
    }

    /// Conditions for a pause (suspend) or a wait (approval), saved.
    pub async fn pause(&mut self, pause: Pause) -> Result<(), EngineError> {
        refresh_conditions(&mut self.status, pause == Pause::Suspended, &now());
        self.checkpoint(Save::Now).await
    }
}

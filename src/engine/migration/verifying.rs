//! Verifying: the copy proven whole before the cut-over. By the change
//! capture where it was on the table before the copy wrote its first row
//! (the rows written since, re-synced and compared by id: nothing else can
//! differ), else by checksums of every id range of both tables, pass after
//! pass until one finds them in step.

use std::sync::Arc;

use super::Migration;
use crate::api::{Verification, VerifiedBy};
use crate::engine::error::EngineError;
use crate::engine::job::{Flow, Outcome, halted};
use crate::engine::plan::batches::resync_batch_rows;
use crate::engine::plan::sql::RowStatements;
use crate::engine::status_keeper::Save;
use crate::engine::steps::capture;
use crate::engine::steps::change_tracking::TrackedStatements;
use crate::engine::steps::copy::flush_copied;
use crate::engine::steps::verify::{Baseline, MAX_PASSES, verify_pass};
use crate::engine::store::{Severity, StatusSink};

impl<R: StatusSink> Migration<R> {
    pub(super) async fn verify(&mut self) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let shape = self.original_shape().await?;
        let statements = Arc::new(job.statements(&shape, &s.source, &s.shadow));
        let widest = self.widest_row(&shape).await?;
        let batch = resync_batch_rows(s, &shape, widest);
        flush_copied(&job).await?;
        if Box::pin(self.verified_by_capture(&statements, batch)).await? {
            return Ok(Flow::Next);
        }
        let tracked = s.change_tracking_column.as_deref().map(|tc| {
            TrackedStatements::new(&s.source, &s.shadow, &s.id_column, &shape, tc, s.generation, job.dialect)
        });
        let mark_sql = tracked.as_ref().map(|t| t.mark.as_str());
        let mut unresolved = Vec::new();
        for _ in 0..MAX_PASSES {
            // Armed before each pass: the last one then serves the window too.
            let armed = Box::pin(capture::arm(&job, &mut job.session())).await?;
            let (report, baseline) =
                verify_pass(&job, statements.clone(), batch, &self.control, self.baseline.as_ref(), mark_sql).await?;
            // The window may go by the log alone only after a pass that
            // left nothing unresolved: the log does not hold those ranges.
            self.baseline = Some(Baseline { captured: armed && report.in_sync(), ..baseline });
            if !report.complete {
                return Ok(Flow::Halt(halted(&self.control).unwrap_or(Outcome::Stopped)));
            }
            let v = self.keeper.status.verification.get_or_insert_with(Verification::default);
            v.by = Some(VerifiedBy::Checksums);
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
                v.verified_through = self.keeper.status.plan.as_ref().and_then(|p| p.id_max);
                self.keeper.watch_retries(job.retries.get()).await;
                self.keeper.checkpoint(Save::WhenDue).await?;
                return Ok(Flow::Next);
            }
            unresolved = v.unresolved.clone();
            self.keeper.checkpoint(Save::WhenDue).await?;
        }
        // Rows there change faster than a pass: the window, with the table
        // renamed away, copies them; it fails if it cannot make them equal.
        let message = format!(
            "id ranges {} changed again during each of {MAX_PASSES} verification passes; the cut-over window will sync them",
            unresolved.join(", ")
        );
        self.keeper.event(Severity::Warning, "StillChanging", message).await;
        self.keeper.checkpoint(Save::WhenDue).await?;
        Ok(Flow::Next)
    }

    /// The copy proven by the capture armed before it, when it was: true
    /// with the status written and the capture left on for the window.
    async fn verified_by_capture(&mut self, statements: &RowStatements, batch: i64) -> Result<bool, EngineError> {
        let Some(armed) = self.armed_before_copy.take() else { return Ok(false) };
        let job = self.job.clone();
        let recopied = self.keeper.status.progress.as_ref().map_or(0, |p| p.rows_recopied);
        if armed.skipped_rows(recopied) {
            tracing::info!("the copy skipped rows the new table refused; comparing checksums");
            return Ok(false);
        }
        let caught = capture::verified_by_log(&job, &mut job.session(), &armed, statements, batch).await?;
        let Some(caught) = caught else {
            tracing::info!("the capture cannot prove the copy; comparing checksums");
            return Ok(false);
        };
        let copied = self.keeper.status.progress.as_ref().map_or(0, |p| p.rows_copied);
        let rows = copied + caught.gained;
        let v = self.keeper.status.verification.get_or_insert_with(Verification::default);
        v.by = Some(VerifiedBy::ChangeCapture);
        v.source_rows = rows;
        v.target_rows = rows;
        v.mismatched_ranges = 0;
        v.rows_resynced += caught.rows;
        v.unresolved.clear();
        v.verified_through = self.keeper.status.plan.as_ref().and_then(|p| p.id_max);
        tracing::info!(rows, resynced = caught.rows, "the copy verified by the change capture");
        // No chunks: a pass that must still be taken cuts them afresh.
        let taken = std::time::Instant::now();
        self.baseline = Some(Baseline { chunks: Vec::new(), taken, mark: None, captured: true });
        self.keeper.watch_retries(job.retries.get()).await;
        self.keeper.checkpoint(Save::WhenDue).await?;
        Ok(true)
    }
}

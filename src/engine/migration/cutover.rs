//! Putting back what a cut-over attempt left when it may not go on: a table
//! name given back, quiesced workloads scaled back, the window closed.

use super::Migration;
use crate::api::{CutoverStatus, Phase};
use crate::engine::error::EngineError;
use crate::engine::plan::phase::{RollbackState, SwapState, effective_phase, rollback_state, swap_state};
use crate::engine::steps::catalog::read_names;
use crate::engine::steps::swap::{put_back, rename_guarded, restore_workloads};
use crate::engine::store::{Severity, StatusSink};

impl<R: StatusSink> Migration<R> {
    /// First of all, a table name that an earlier run could not give back
    /// (status `TableMissing`) is given back, whatever the spec says now.
    pub(super) async fn put_back_missing_table(&mut self) -> Result<(), EngineError> {
        if !self.keeper.status.cutover.as_ref().is_some_and(|c| c.table_missing) {
            return Ok(());
        }
        let s = &self.job.settings;
        let mut session = self.job.session();
        let names = read_names(s, self.job.original(), &mut session).await?;
        // Both windows leave the same names: the phase tells which table was renamed away.
        let rolling_back = effective_phase(&self.keeper.status) == Phase::RollingBack;
        let from = match (swap_state(names), rollback_state(names, s.retain_old)) {
            (_, RollbackState::InWindow) if rolling_back => Some(s.shadow.clone()),
            (SwapState::InWindow, _) => Some(s.old.clone()),
            _ => None,
        };
        match from {
            Some(from) => put_back(&self.job, &mut session, &mut self.keeper, &from).await,
            None => {
                // Given back meanwhile (by a person, or a run that could not save it).
                self.keeper.status.cutover.get_or_insert_with(CutoverStatus::default).table_missing = false;
                Ok(())
            }
        }
    }

    /// A cut-over that may not run now (no approval, or its window closed)
    /// although the status says Swapping: a failed attempt is being retried.
    /// True when the swap is already done (finishing it needs no gate); else
    /// the original table gets its name back, quiesced workloads their
    /// replicas, and the migration waits as before its first attempt.
    pub(super) async fn hold_cutover(&mut self) -> Result<bool, EngineError> {
        let names = read_names(&self.job.settings, self.job.original(), &mut self.job.session()).await?;
        if swap_state(names) == SwapState::Swapped {
            return Ok(true);
        }
        let reopened = self.close_open_window().await?;
        restore_workloads(&self.job, &mut self.keeper).await?;
        if reopened {
            let message = format!(
                "the cut-over is not approved or its window is closed: {} has its name back and waits",
                self.job.settings.source
            );
            self.keeper.event(Severity::Warning, "CutoverHeld", message).await;
        }
        Ok(false)
    }

    /// Renames the original table back when the catalog shows a cut-over
    /// window open (the table renamed away, the shadow not yet in); says
    /// whether it did.
    pub(super) async fn close_open_window(&self) -> Result<bool, EngineError> {
        let s = &self.job.settings;
        if self.keeper.status.plan.is_none() {
            return Ok(false);
        }
        let mut session = self.job.session();
        if swap_state(read_names(s, self.job.original(), &mut session).await?) == SwapState::InWindow {
            self.job.before_change().await?;
            tracing::warn!(table = %s.source, "a cut-over window was left open; putting the original table back");
            rename_guarded(&mut session, &s.old, &s.source).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

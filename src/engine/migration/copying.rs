//! Copying: the rows, then the new table's indexes. On PostgreSQL a fresh
//! copy arms the change capture first (it then verifies the copy, see
//! `verifying`) and fills the new table with its primary key set aside
//! ([`crate::engine::steps::key_aside`]).

use super::Migration;
use crate::api::RangeCheckpoint;
use crate::db::Dialect;
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::job::Flow;
use crate::engine::plan::shape::TableShape;
use crate::engine::status_keeper::Save;
use crate::engine::steps::capture;
use crate::engine::steps::catalog;
use crate::engine::steps::copy::copy_ranges;
use crate::engine::steps::fidelity::with_fidelity;
use crate::engine::steps::key_aside::{key_to_set_aside, restore_key, set_key_aside};
use crate::engine::steps::rebuild::refuse_impossible;
use crate::engine::steps::shadow::build_indexes;
use crate::engine::steps::survey::id_extent;
use crate::engine::store::StatusSink;

impl<R: StatusSink> Migration<R> {
    pub(super) async fn copy(&mut self) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let shape = self.original_shape().await?;
        let statements = job.statements(&shape, &s.source, &s.shadow);
        let Some(plan) = self.keeper.status.plan.as_ref() else {
            return Err(CheckFailed::NoPlan.into());
        };
        let batch_rows = plan.batch_rows;
        let ranges = self.keeper.status.checkpoint.as_ref().map_or(1, |c| c.ranges.len().max(1)) as i64;
        let rows_per_range = plan.rows_estimated / ranges;
        // A key an earlier run set aside goes back first: a resumed copy
        // finds where each range stands by id.
        Box::pin(self.put_key_back()).await?;
        // The capture as proof and the key aside need a copy from its start
        // into the empty table (a resumed one goes on at once: it is
        // verified by checksums).
        let begun =
            self.keeper.status.checkpoint.as_ref().is_some_and(|c| c.ranges.iter().any(|r| r.copied_through >= r.from));
        let shadow = &s.shadow;
        let from_start = !begun
            && job.dialect == Dialect::Postgres
            && job.session().retry("read new table", |c| async move { catalog::is_empty(&c, shadow).await }).await?;
        if self.armed_before_copy.is_none() && from_start {
            let recopied = self.keeper.status.progress.as_ref().map_or(0, |p| p.rows_recopied);
            self.armed_before_copy = Box::pin(capture::arm_before_copy(&job, &mut job.session(), recopied)).await?;
        }
        if self.armed_before_copy.is_some() {
            Box::pin(self.stretch_ranges(&shape)).await?;
        }
        let fresh = from_start && Box::pin(self.set_key_aside()).await?;
        let flow =
            copy_ranges(&job, statements, batch_rows, rows_per_range, fresh, &mut self.keeper, &mut self.control)
                .await?;
        if let Flow::Halt(outcome) = flow {
            return Ok(Flow::Halt(outcome));
        }
        Box::pin(self.put_key_back()).await?;
        let built = self.keeper.status.checkpoint.as_ref().is_some_and(|c| c.indexes_built);
        if !built {
            let mut session = job.session();
            let shape = match job.reshape.get() {
                // The new table gets the source's indexes that read unchanged columns.
                Some(reshape) => reshape.target.clone(),
                None => with_fidelity(&mut session, shape, job.dialect).await?,
            };
            let (count, refused) = match build_indexes(&job, &mut session, &shape).await {
                Ok(built) => built,
                Err(e) if job.reshape.get().is_some() => return Err(refuse_impossible(&job, e).await),
                Err(e) => return Err(e),
            };
            self.record_not_carried(refused).await;
            if let Some(cp) = self.keeper.status.checkpoint.as_mut() {
                cp.indexes_built = true;
            }
            // Saved with the next phase change; a rebuild after a crash finds them valid.
            self.keeper.checkpoint(Save::WhenDue).await?;
            tracing::info!(indexes = count, "secondary indexes built on the shadow table");
        }
        Ok(Flow::Next)
    }

    /// With the capture as the copy's proof, the ranges reach the ids the
    /// table holds once it is armed: a row inserted outside the planned
    /// ranges before then is in no log, and only the copy can carry it.
    /// (Checksums find such rows on their own: their chunks span every id.)
    async fn stretch_ranges(&mut self, shape: &TableShape) -> Result<(), EngineError> {
        let job = self.job.clone();
        let Some((low, high)) = id_extent(&job, &mut job.session(), shape).await? else {
            return Ok(());
        };
        let Some(checkpoint) = self.keeper.status.checkpoint.as_mut() else { return Ok(()) };
        if stretch(&mut checkpoint.ranges, low, high) {
            tracing::info!(low, high, "the copy's ranges reach the ids inserted since the plan");
            self.keeper.checkpoint(Save::Now).await?;
        }
        Ok(())
    }

    /// Sets the new table's primary key aside for a copy into the empty
    /// table, saved in the status before it is dropped. True when it is aside.
    async fn set_key_aside(&mut self) -> Result<bool, EngineError> {
        let job = self.job.clone();
        let mut session = job.session();
        let Some(aside) = key_to_set_aside(&job, &mut session).await? else { return Ok(false) };
        let Some(checkpoint) = self.keeper.status.checkpoint.as_mut() else { return Ok(false) };
        checkpoint.key_aside = Some(aside.clone());
        self.keeper.checkpoint(Save::Now).await?;
        job.before_change().await?;
        if set_key_aside(&job, &mut session, &aside).await? {
            return Ok(true);
        }
        if let Some(checkpoint) = self.keeper.status.checkpoint.as_mut() {
            checkpoint.key_aside = None;
        }
        self.keeper.checkpoint(Save::Now).await?;
        Ok(false)
    }

    /// Puts a key set aside back, with what it carried.
    async fn put_key_back(&mut self) -> Result<(), EngineError> {
        let Some(aside) = self.keeper.status.checkpoint.as_ref().and_then(|c| c.key_aside.clone()) else {
            return Ok(());
        };
        let job = self.job.clone();
        job.before_change().await?;
        restore_key(&job, &mut job.session(), &aside).await?;
        if let Some(checkpoint) = self.keeper.status.checkpoint.as_mut() {
            checkpoint.key_aside = None;
        }
        self.keeper.checkpoint(Save::Now).await?;
        Ok(())
    }
}

/// Widens the first range down to `low` and the last up to `high` where
/// they have not begun; with no range, one from `low` to `high`. True when
/// anything changed.
fn stretch(ranges: &mut Vec<RangeCheckpoint>, low: i64, high: i64) -> bool {
    let before = ranges.clone();
    match (ranges.first().copied(), ranges.len()) {
        (None, _) => ranges.push(RangeCheckpoint::new(low, high)),
        (Some(first), _) => {
            if low < first.from && first.copied_through < first.from {
                ranges[0] = RangeCheckpoint { from: low, copied_through: low - 1, ..first };
            }
            let last = ranges.len() - 1;
            if high > ranges[last].to {
                ranges[last].to = high;
            }
        }
    }
    *ranges != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stretch_to_ids_inserted_since_the_plan() {
        let planned = vec![RangeCheckpoint::new(10, 19), RangeCheckpoint::new(20, 29)];
        let mut ranges = planned.clone();
        assert!(!stretch(&mut ranges, 10, 29), "nothing outside the plan");
        assert_eq!(ranges, planned);
        assert!(stretch(&mut ranges, 3, 40));
        assert_eq!(ranges, vec![RangeCheckpoint::new(3, 19), RangeCheckpoint::new(20, 40)]);
        let mut none = Vec::new();
        assert!(stretch(&mut none, 5, 8));
        assert_eq!(none, vec![RangeCheckpoint::new(5, 8)]);
        // A range already begun keeps its start: its rows below are copied.
        let mut begun = vec![RangeCheckpoint { from: 10, to: 19, copied_through: 12 }];
        assert!(!stretch(&mut begun, 1, 19) && begun[0].from == 10);
    }
}

//! What the status says of a phase as it starts, and of the end.

use super::Migration;
use crate::engine::plan::phase::Work;
use crate::engine::steps::swap::window_text;
use crate::engine::store::StatusSink;

impl<R: StatusSink> Migration<R> {
    pub(super) fn phase_detail(&self, work: Work) -> String {
        let s = &self.job.settings;
        let plan = self.keeper.status.plan.as_ref();
        match work {
            Work::Validating => format!("checking the spec and {}", s.source),
            Work::CreatingTarget if self.job.reshape.get().is_some() => {
                format!("creating {} in the new shape, through {} changes", s.shadow, s.changes.len())
            }
            Work::CreatingTarget => {
                format!(
                    "creating {} with a {:?} identity (CACHE {})",
                    s.shadow,
                    s.generation,
                    s.cache(self.job.dialect)
                )
            }
            Work::Copying => match plan {
                Some(p) => format!(
                    "{} rows in {} ranges, {} workers, batches of up to {} rows",
                    p.rows_estimated,
                    self.keeper.status.checkpoint.as_ref().map_or(0, |c| c.ranges.len()),
                    s.parallelism,
                    p.batch_rows
                ),
                None => String::new(),
            },
            Work::Verifying => format!("comparing {} and {} by id range", s.source, s.shadow),
            Work::AwaitingCutover => "verified; approved".into(),
            Work::Swapping if self.gate().in_place && !s.changes.is_empty() => {
                let statements = self.keeper.status.changes.as_ref().map_or(0, |c| c.statements.len());
                format!("making {} changes to {} in place, in {statements} statements", s.changes.len(), s.source)
            }
            Work::Swapping if self.gate().in_place => {
                format!("adding a {:?} identity to {}.{} in place", s.generation, s.source, s.id_column)
            }
            Work::Swapping => format!("renaming {} to {} and {} to {}", s.source, s.old.name, s.shadow, s.source.name),
            Work::RollingBack => {
                format!("copying rows written since the cut-over into {} and renaming it back", s.old)
            }
        }
    }

    pub(super) fn completed_detail(&self) -> String {
        let status = &self.keeper.status;
        if let (Some(changes), Some(_)) = (&status.changes, self.job.reshape.get()) {
            let rows = status.verification.as_ref().map_or(0, |v| v.source_rows);
            let window = window_text(status.cutover.as_ref().and_then(|c| c.window_millis));
            return format!(
                "{} changes made to {} by the rebuild; {rows} rows verified; cut-over window {window}",
                changes.planned.len(),
                self.job.settings.source
            );
        }
        if let Some(changes) = &status.changes {
            let lock = window_text(changes.longest_lock_millis);
            return format!(
                "{} changes made to {} in place; the longest lock on it lasted {lock}",
                changes.planned.len(),
                self.job.settings.source
            );
        }
        let next = status.identity.as_ref().map(|i| i.next_value.to_string()).unwrap_or_else(|| "?".into());
        let window = window_text(status.cutover.as_ref().and_then(|c| c.window_millis));
        format!("{} generates its ids; next id {next}; cut-over window {window}", self.job.settings.source)
    }
}

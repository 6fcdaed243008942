//! Rolling back a completed migration (`spec.rollback: true`): the rows
//! written to the new table since the cut-over are copied into the old one,
//! the new table steps aside under the shadow name and the old one takes the
//! name back. Each step is its own transaction and decided from the catalog,
//! like the swap. Clearing `spec.rollback` later rolls forward with a normal
//! swap, and the identity is moved past every id again.
//!
//! Refused when the old table was dropped (`oldTable.retain: false`) or is gone.

use std::sync::Arc;

use super::catalog;
use super::failpoint;
use super::job::{EngineError, Flow, Job, always_run};
use super::phase::Names;
use super::plan::resync_batch_rows;
use super::shape::TableShape;
use super::store::Reporter;
use super::swap::{read_names, rename_guarded};
use super::tracker::{Tracker, now};
use super::validate::InvalidInput;
use super::verify::verify_pass;
use crate::api::CutoverStatus;

/// Where a rollback stands, from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackState {
    /// The new table has the name; the old one waits under its old name.
    Forward,
    /// The new table was renamed aside; the old one has not taken the name yet.
    InWindow,
    /// The old table has the name back.
    Back,
    Refused(String),
}

pub fn rollback_state(n: Names, retain_old: bool) -> RollbackState {
    match (n.table, n.table_is_identity, n.shadow, n.old) {
        (true, true, false, true) => RollbackState::Forward,
        (false, _, true, true) => RollbackState::InWindow,
        (true, false, true, false) => RollbackState::Back,
        (true, true, false, false) if !retain_old => RollbackState::Refused(
            "the old table was dropped at completion (oldTable.retain: false); there is nothing to roll back to".into(),
        ),
        (true, true, false, false) => {
            RollbackState::Refused("the old table no longer exists; there is nothing to roll back to".into())
        }
        _ => RollbackState::Refused("the tables are not as a completed migration leaves them".into()),
    }
}

pub async fn roll_back<R: Reporter>(
    job: &Arc<Job>,
    original: &TableShape,
    widest_row: i64,
    tracker: &mut Tracker<R>,
) -> Result<Flow, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    let batch = resync_batch_rows(s, original, widest_row);
    let (_keep, run) = always_run();
    loop {
        let names = read_names(s, &mut session).await?;
        match rollback_state(names, s.retain_old) {
            RollbackState::Forward => {
                // Catch up while the new table is live, then open the window.
                let statements = Arc::new(job.statements(original, &s.source, &s.old));
                let (report, _) = verify_pass(job, statements, batch, &run, None, None).await?;
                tracing::info!(
                    rows = report.rows_resynced,
                    "copied the rows written since the cut-over into the old table"
                );
                tracker.status.cutover.get_or_insert_with(CutoverStatus::default).window_opened_at = Some(now());
                tracker.checkpoint(true).await?;
                rename_guarded(&mut session, &s.source, &s.shadow).await?;
                failpoint::hit("rollback-renamed-out");
            }
            RollbackState::InWindow => {
                let statements = Arc::new(job.statements(original, &s.shadow, &s.old));
                let (sync, _) = verify_pass(job, statements, batch, &run, None, None).await?;
                if !sync.unresolved.is_empty() {
                    // Give the new table its name back: writers keep working.
                    rename_guarded(&mut session, &s.shadow, &s.source).await?;
                    let ranges: Vec<String> = sync.unresolved.iter().map(ToString::to_string).collect();
                    return Err(EngineError::Check(format!(
                        "rollback sync left id ranges different: {}",
                        ranges.join(", ")
                    )));
                }
                rename_guarded(&mut session, &s.old, &s.source).await?;
                let cutover = tracker.status.cutover.get_or_insert_with(CutoverStatus::default);
                cutover.rows_in_window = sync.rows_resynced;
                if let Some(opened) = &cutover.window_opened_at {
                    cutover.window_millis = Some(jiff::Timestamp::now().duration_since(opened.0).as_millis() as i64);
                }
                failpoint::hit("rollback-renamed-in");
            }
            RollbackState::Back => return Ok(Flow::Next),
            RollbackState::Refused(why) => return Err(InvalidInput::one("spec.rollback", why).into()),
        }
    }
}

/// The original table's shape for a rollback: the old table while the new one
/// has the name, the table itself once it is back.
pub async fn original_for_rollback(job: &Job) -> Result<Option<TableShape>, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    for table in [&s.old, &s.source] {
        let shape = session.retry("read table", |c| async move { catalog::read_shape(&c, table).await }).await?;
        if let Some(shape) = shape
            && shape.column(&s.id_column).is_some_and(|c| c.identity.is_none())
        {
            return Ok(Some(shape));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(table: bool, table_is_identity: bool, shadow: bool, old: bool) -> Names {
        Names { table, table_is_identity, shadow, old }
    }

    #[test]
    fn the_catalog_tells_where_a_rollback_stands() {
        assert_eq!(rollback_state(n(true, true, false, true), true), RollbackState::Forward);
        assert_eq!(rollback_state(n(false, false, true, true), true), RollbackState::InWindow);
        assert_eq!(rollback_state(n(true, false, true, false), true), RollbackState::Back);
        match rollback_state(n(true, true, false, false), false) {
            RollbackState::Refused(why) => assert!(why.contains("retain: false"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(rollback_state(n(true, true, false, false), true), RollbackState::Refused(_)));
        assert!(matches!(rollback_state(n(false, false, false, false), true), RollbackState::Refused(_)));
    }
}

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
use super::catalog::read_names;
use super::fidelity::adopt_sequences;
use super::swap::rename_guarded;
use super::verify::verify_pass;
use crate::api::CutoverStatus;
use crate::api::now;
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::failpoint;
use crate::engine::job::{Flow, Job, always_run};
use crate::engine::plan::batches::resync_batch_rows;
use crate::engine::plan::phase::{RollbackState, rollback_state};
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::validate::InvalidInput;
use crate::engine::status_keeper::Save;
use crate::engine::status_keeper::StatusKeeper;
use crate::engine::store::StatusSink;

pub async fn roll_back<R: StatusSink>(
    job: &Arc<Job>,
    original: &TableShape,
    widest_row: i64,
    keeper: &mut StatusKeeper<R>,
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
                keeper.status.cutover.get_or_insert_with(CutoverStatus::default).window_opened_at = Some(now());
                keeper.checkpoint(Save::Now).await?;
                job.before_change().await?;
                rename_guarded(&mut session, &s.source, &s.shadow).await?;
                failpoint::hit("rollback-renamed-out");
            }
            RollbackState::InWindow => {
                let statements = Arc::new(job.statements(original, &s.shadow, &s.old));
                let synced = match verify_pass(job, statements, batch, &run, None, None).await {
                    Ok((sync, _)) if sync.unresolved.is_empty() => Ok(sync),
                    Ok((sync, _)) => {
                        let ranges: Vec<String> = sync.unresolved.iter().map(ToString::to_string).collect();
                        Err(CheckFailed::RollbackSyncDiffers(ranges).into())
                    }
                    Err(e) => Err(EngineError::from(e)),
                };
                let sync = match synced {
                    Ok(sync) => sync,
                    Err(e) if e.lost_claim() => return Err(e),
                    Err(e) => {
                        // Give the new table its name back: writers keep working.
                        tracing::error!(error = %e, "the rollback failed inside its window; giving the new table its name back");
                        if let Err(back) = rename_guarded(&mut session, &s.shadow, &s.source).await {
                            tracing::error!(error = %back, "could not give the new table its name back");
                        }
                        return Err(e);
                    }
                };
                job.before_change().await?;
                rename_guarded(&mut session, &s.old, &s.source).await?;
                let cutover = keeper.status.cutover.get_or_insert_with(CutoverStatus::default);
                cutover.rows_in_window = sync.rows_resynced;
                if let Some(opened) = &cutover.window_opened_at {
                    cutover.window_millis = Some(jiff::Timestamp::now().duration_since(opened.0).as_millis() as i64);
                }
                failpoint::hit("rollback-renamed-in");
            }
            RollbackState::Back => {
                if job.dialect == crate::db::Dialect::Postgres {
                    // The original owns its column sequences again.
                    job.before_change().await?;
                    adopt_sequences(&mut session, &s.source).await?;
                }
                return Ok(Flow::Next);
            }
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

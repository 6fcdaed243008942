//! Swapping: the cut-over. Each step is its own transaction and the step to
//! take is read from the catalog every time, so a crash anywhere resumes at
//! the right step. The table name is absent only between the two renames
//! (the window); a failure inside the window puts the original table back.

use std::sync::Arc;
use std::time::Duration;

use super::catalog;
use super::failpoint;
use super::job::{EngineError, Flow, Job, always_run};
use super::phase::{Names, SwapState, swap_state};
use super::plan::resync_batch_rows;
use super::quiesce::{restore, save_replicas, scale_down};
use super::shadow::first_value;
use super::shape::TableShape;
use super::sql::{TableName, drop_table, ident, rename_table, restart_identity, set_generated_always, setval_identity};
use super::store::Reporter;
use super::tracker::{Tracker, now};
use super::tracking::{TrackedStatements, sync_tracked};
use super::validate::{InvalidInput, Settings};
use super::verify::{Baseline, verify_pass};
use crate::api::{CutoverStatus, Generation, IdentityStatus};
use crate::db::{Context, DbError, ErrorClass, Session};

/// A baseline older than this is refreshed before the window opens, so the
/// window only sees what changed in the last few seconds.
pub const FRESH_BASELINE: Duration = Duration::from_secs(10);

pub async fn swap<R: Reporter>(
    job: &Arc<Job>,
    original: &TableShape,
    widest_row: i64,
    mut baseline: Option<Baseline>,
    tracker: &mut Tracker<R>,
) -> Result<Flow, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    let batch = resync_batch_rows(s, original, widest_row);
    // The window is never paused: suspend and stop wait until it closes.
    let (_keep, run) = always_run();
    loop {
        let names = read_names(s, &mut session).await?;
        match swap_state(names) {
            SwapState::BeforeWindow => {
                if baseline.as_ref().is_none_or(|b| b.taken.elapsed() > FRESH_BASELINE) {
                    // Catch up while the table is still live: the window then
                    // re-reads only the source and copies only recent changes.
                    let statements = Arc::new(job.statements(original, &s.source, &s.shadow));
                    let mark = tracked(job, original, &s.source).map(|t| t.mark);
                    let (report, fresh) = verify_pass(job, statements, batch, &run, None, mark.as_deref()).await?;
                    tracing::info!(resynced = report.rows_resynced, "caught up before the window");
                    baseline = Some(fresh);
                }
                quiesce(job, tracker).await?;
                tracker.status.cutover.get_or_insert_with(CutoverStatus::default).window_opened_at = Some(now());
                tracker.checkpoint(true).await?;
                rename_guarded(&mut session, &s.source, &s.old).await?;
                tracing::info!(table = %s.source, to = %s.old, "window open: the table was renamed away");
                failpoint::hit("swap-renamed-out");
            }
            SwapState::InWindow => {
                if let Err(e) = finish_window(job, &mut session, original, batch, baseline.take(), tracker).await {
                    tracing::error!(error = %e, "the cut-over failed inside the window; putting the original table back");
                    if let Err(back) = rename_guarded(&mut session, &s.old, &s.source).await {
                        tracing::error!(error = %back, "could not put the original table back");
                    }
                    restore_workloads(job, tracker).await?;
                    return Err(e);
                }
            }
            SwapState::Swapped => {
                restore_workloads(job, tracker).await?;
                if !s.retain_old && names.old {
                    let sql = &drop_table(&s.old);
                    session
                        .retry("drop old table", |c| async move {
                            if !catalog::table_exists(&c, &s.old).await? {
                                return Ok(());
                            }
                            c.batch_execute(sql).await.ctx("drop old table")
                        })
                        .await?;
                    tracing::info!(table = %s.old, "dropped the old table (oldTable.retain: false)");
                }
                return Ok(Flow::Next);
            }
            SwapState::Inconsistent(what) => {
                return Err(EngineError::Check(format!("cannot continue the cut-over of {}: {what}", s.source)));
            }
        }
    }
}

/// Which of the migration's three names exist, and whether the table under
/// the name is the new one.
pub(super) async fn read_names(s: &Settings, session: &mut Session) -> Result<Names, DbError> {
    session
        .retry("inspect tables", |c| async move {
            Ok(Names {
                table: catalog::table_exists(&c, &s.source).await?,
                table_is_identity: catalog::identity_kind(&c, &s.source, &s.id_column).await?.is_some(),
                shadow: catalog::table_exists(&c, &s.shadow).await?,
                old: catalog::table_exists(&c, &s.old).await?,
            })
        })
        .await
}

/// Renames `from` to `to`'s name unless that already happened (a lost reply
/// to a committed rename must not fail the retry).
pub(super) async fn rename_guarded(session: &mut Session, from: &TableName, to: &TableName) -> Result<(), DbError> {
    let sql = &rename_table(from, &to.name);
    session
        .retry("rename table", |c| async move {
            if !catalog::table_exists(&c, from).await? && catalog::table_exists(&c, to).await? {
                return Ok(());
            }
            c.batch_execute(sql).await.ctx("rename table")
        })
        .await
}

/// Inside the window: copy what changed since verification, move the
/// identity past every id, check it, and rename the shadow in.
async fn finish_window<R: Reporter>(
    job: &Arc<Job>,
    session: &mut Session,
    original: &TableShape,
    batch: i64,
    baseline: Option<Baseline>,
    tracker: &mut Tracker<R>,
) -> Result<(), EngineError> {
    let s = &job.settings;
    let (_keep, run) = always_run();
    let statements = Arc::new(job.statements(original, &s.old, &s.shadow));
    let (unresolved, rows_in_window) = match (tracked(job, original, &s.old), baseline.as_ref()) {
        // Only rows written since the last pass began, then counts.
        (Some(t), Some(b)) if b.mark.is_some() => {
            let mark = b.mark.as_deref().unwrap_or_default();
            let sync = sync_tracked(job, &t, &statements, mark, b, batch).await?;
            tracing::info!(
                rows = sync.rows_recopied,
                chunks = sync.chunks_resynced.len(),
                "copied the rows changed since the last pass"
            );
            (sync.unresolved, sync.rows_recopied)
        }
        _ => {
            let (sync, _) = verify_pass(job, statements, batch, &run, baseline.as_ref(), None).await?;
            (sync.unresolved, sync.rows_resynced)
        }
    };
    if !unresolved.is_empty() {
        let ranges: Vec<String> = unresolved.iter().map(ToString::to_string).collect();
        return Err(EngineError::Check(format!("final sync left id ranges different: {}", ranges.join(", "))));
    }
    tracker.status.cutover.get_or_insert_with(CutoverStatus::default).rows_in_window = rows_in_window;
    if let Some(v) = tracker.status.verification.as_mut() {
        v.unresolved.clear();
    }

    let identity = restart_identity_after_max(job, session).await?;
    failpoint::hit("swap-identity-restarted");
    tracker.status.identity = Some(identity);

    if s.generation == Generation::Always
        && session
            .retry("read identity", |c| async move { catalog::identity_kind(&c, &s.shadow, &s.id_column).await })
            .await?
            != Some('a')
    {
        let sql = &set_generated_always(&s.shadow, &s.id_column);
        session
            .retry("set generated always", |c| async move { c.batch_execute(sql).await.ctx("set generated always") })
            .await?;
    }

    rename_guarded(session, &s.shadow, &s.source).await?;
    let cutover = tracker.status.cutover.get_or_insert_with(CutoverStatus::default);
    cutover.swapped_at = Some(now());
    if let Some(opened) = &cutover.window_opened_at {
        let millis = jiff::Timestamp::now().duration_since(opened.0).as_millis();
        cutover.window_millis = Some(millis as i64);
    }
    tracing::info!(table = %s.source, window_ms = cutover.window_millis, "window closed: the new table has the name");
    failpoint::hit("swap-renamed-in");
    // Completed is saved next; the catalog says where a crash before it stood.
    tracker.checkpoint(false).await?;
    Ok(())
}

/// `RESTART WITH` past the highest id (and `startAfter`), falling back to
/// `setval` where the engine refuses it; then the next value is read back and
/// must be above every id.
async fn restart_identity_after_max(job: &Job, session: &mut Session) -> Result<IdentityStatus, EngineError> {
    let s = &job.settings;
    let id = ident(&s.id_column);
    let max_sql = &format!("SELECT max({id})::bigint FROM {}", s.shadow);
    let max_id: Option<i64> = session
        .retry("read highest id", |c| async move {
            Ok(c.query_one(max_sql.as_str(), &[]).await.ctx("read highest id")?.get(0))
        })
        .await?;
    let restart_with = restart_value(max_id, s.start_after)
        .ok_or_else(|| EngineError::Check("ids have reached the largest bigint; no identity values are left".into()))?;

    let restart = &restart_identity(&s.shadow, &s.id_column, restart_with);
    match session
        .retry("restart identity", |c| async move { c.batch_execute(restart).await.ctx("restart identity") })
        .await
    {
        Ok(()) => {}
        Err(e) if e.class == ErrorClass::Permanent => {
            tracing::warn!(error = %e, "RESTART WITH refused; setting the sequence instead");
            let setval = &setval_identity(&s.shadow, &s.id_column, restart_with);
            session
                .retry("set identity sequence", |c| async move { c.batch_execute(setval).await.ctx("setval") })
                .await?;
        }
        Err(e) => return Err(e.into()),
    }

    let next_value = read_next_value(job, session).await?;
    let floor = max_id.unwrap_or(0).max(s.start_after.unwrap_or(0));
    if next_value <= floor {
        return Err(EngineError::Check(format!(
            "the identity would generate {next_value}, not above the highest id or startAfter ({floor})"
        )));
    }
    tracing::info!(restart_with, next_value, "identity moved past the highest id");
    Ok(IdentityStatus { restart_with, next_value })
}

/// The first value the identity may hand out: above the highest id and above
/// `startAfter`, and at least 1.
pub fn restart_value(max_id: Option<i64>, start_after: Option<i64>) -> Option<i64> {
    let floor = max_id.unwrap_or(0).max(start_after.unwrap_or(0)).max(0);
    floor.checked_add(1)
}

/// The value the identity's sequence hands out next, read without using it
/// where the sequence can be read; otherwise by drawing one value.
async fn read_next_value(job: &Job, session: &mut Session) -> Result<i64, EngineError> {
    let s = &job.settings;
    let table = &s.shadow.to_string();
    let column = &s.id_column.clone();
    let seq: Option<String> = session
        .retry("find identity sequence", |c| async move {
            Ok(c.query_one("SELECT pg_get_serial_sequence($1, $2)", &[&table, &column])
                .await
                .ctx("find sequence")?
                .get(0))
        })
        .await?;
    let seq = seq.ok_or_else(|| EngineError::Check(format!("{} has no identity sequence on {column:?}", s.shadow)))?;
    // The name comes from the catalog, already quoted by pg_get_serial_sequence.
    let read = &format!("SELECT last_value, is_called FROM {seq}");
    match session
        .retry("read identity sequence", |c| async move { c.simple_query(read).await.ctx("read sequence") })
        .await
    {
        Ok(rows) => {
            let values = match rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some((r.get(0), r.get(1))),
                _ => None,
            }) {
                Some((Some(last), Some(called))) => (last.parse::<i64>().ok(), called == "t"),
                _ => (None, false),
            };
            match values {
                (Some(last), true) => Ok(last + 1),
                (Some(last), false) => Ok(last),
                (None, _) => Err(EngineError::Check(format!("cannot read the state of sequence {seq}"))),
            }
        }
        Err(e) if e.class == ErrorClass::Permanent => {
            tracing::info!(error = %e, "sequence not readable; drawing one value to check it");
            let draw = &format!("SELECT nextval({})", super::sql::literal(&seq));
            let rows = session
                .retry("draw identity value", |c| async move { c.simple_query(draw).await.ctx("nextval") })
                .await?;
            first_value(&rows)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| EngineError::Check(format!("nextval on {seq} returned nothing")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Scales `spec.cutover.quiesce` to zero, the counts saved in status first
/// (kept from an earlier attempt, which may have scaled some already).
async fn quiesce<R: Reporter>(job: &Job, tracker: &mut Tracker<R>) -> Result<(), EngineError> {
    let targets = &job.settings.quiesce;
    if targets.is_empty() {
        return Ok(());
    }
    let workloads = job.workloads.as_deref().ok_or_else(|| {
        InvalidInput::one("spec.cutover.quiesce", "scaling workloads needs the operator (the Kubernetes API)")
    })?;
    let cutover = tracker.status.cutover.get_or_insert_with(CutoverStatus::default);
    if cutover.saved_replicas.is_empty() {
        cutover.saved_replicas = save_replicas(workloads, targets).await.map_err(EngineError::Check)?;
        tracker.checkpoint(true).await?;
    }
    if let Err(e) = scale_down(workloads, targets).await {
        restore_workloads(job, tracker).await?;
        return Err(EngineError::Check(format!("quiescing spec.cutover.quiesce: {e}")));
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    tracker.event(false, "Quiesced", format!("scaled to zero for the cut-over: {}", names.join(", "))).await;
    Ok(())
}

/// Scales quiesced workloads back to their saved counts, and forgets the counts.
async fn restore_workloads<R: Reporter>(job: &Job, tracker: &mut Tracker<R>) -> Result<(), EngineError> {
    let saved = tracker.status.cutover.as_ref().map(|c| c.saved_replicas.clone()).unwrap_or_default();
    if saved.is_empty() {
        return Ok(());
    }
    let workloads = job.workloads.as_deref().ok_or_else(|| {
        EngineError::Check(
            "workloads were quiesced, but this front end cannot scale them back; use the operator".into(),
        )
    })?;
    restore(workloads, &saved).await.map_err(|e| EngineError::Check(format!("restoring quiesced workloads: {e}")))?;
    if let Some(c) = tracker.status.cutover.as_mut() {
        c.saved_replicas.clear();
    }
    tracker.checkpoint(true).await?;
    let names: Vec<String> = saved.iter().map(|s| format!("{} to {}", s.name, s.replicas)).collect();
    tracker.event(false, "Restored", format!("scaled back after the cut-over: {}", names.join(", "))).await;
    Ok(())
}

/// The change-tracking statements from `source` into the shadow, when the spec names a column.
fn tracked(job: &Job, original: &TableShape, source: &TableName) -> Option<TrackedStatements> {
    let s = &job.settings;
    s.change_tracking_column.as_deref().map(|tc| TrackedStatements::new(source, &s.shadow, &s.id_column, original, tc))
}

/// How long a window took, for events.
pub fn window_text(millis: Option<i64>) -> String {
    match millis {
        Some(ms) => format!("{:.3}s", Duration::from_millis(ms.max(0) as u64).as_secs_f64()),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_restarts_above_the_highest_id_and_start_after() {
        assert_eq!(restart_value(Some(1_048_576), None), Some(1_048_577));
        assert_eq!(restart_value(Some(10), Some(1_200_000)), Some(1_200_001));
        assert_eq!(restart_value(Some(2_000_000), Some(1_200_000)), Some(2_000_001));
        assert_eq!(restart_value(None, None), Some(1), "empty table");
        assert_eq!(restart_value(Some(-50), None), Some(1), "identity values stay positive");
        assert_eq!(restart_value(Some(i64::MAX), None), None);
    }

    #[test]
    fn window_reads_in_seconds() {
        assert_eq!(window_text(Some(1234)), "1.234s");
        assert_eq!(window_text(None), "unknown");
    }
}

//! Swapping: the cut-over. Each step is its own transaction and the step to
//! take is read from the catalog every time, so a crash anywhere resumes at
//! the right step. The table name is absent only between the two renames
//! (the window); a failure inside the window puts the original table back.

use std::sync::Arc;
use std::time::Duration;

use super::blockers::{blocking_sessions, wait_out_blockers};
use super::capture;
use super::catalog;
use super::catalog::read_names;
use super::change_tracking::{TrackedStatements, sync_tracked};
use super::fidelity::{adopt_sequences, sync_privileges};
use super::identity::restart_identity_after_max;
use super::quiesce::{QuiesceError, restore, save_replicas, scale_down};
use super::verify::{Baseline, verify_pass};
use crate::api::now;
use crate::api::{CutoverStatus, Generation};
use crate::db::{DbError, Dialect, ErrorContext, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::failpoint;
use crate::engine::job::{Control, Flow, Job, Outcome, always_run, halted};
use crate::engine::plan::batches::resync_batch_rows;
use crate::engine::plan::names::{OriginalNames, derived_name, handover};
use crate::engine::plan::phase::{Names, SwapState, swap_state};
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::TableName;
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::sql::{IN_PLACE_LOCK_TIMEOUT_MS, drop_table, rename_table, set_generated_always};
use crate::engine::plan::validate::InvalidInput;
use crate::engine::status_keeper::Save;
use crate::engine::status_keeper::StatusKeeper;
use crate::engine::store::Severity;
use crate::engine::store::StatusSink;

/// A baseline older than this is refreshed before the window opens, so the
/// window only sees what changed in the last few seconds.
pub const FRESH_BASELINE: Duration = Duration::from_secs(10);

/// `control` may stop the engine only before the window opens (while it
/// waits for blockers or for workloads to scale down); the window itself is
/// never paused.
pub async fn swap<R: StatusSink>(
    job: &Arc<Job>,
    original: &TableShape,
    widest_row: i64,
    mut baseline: Option<Baseline>,
    keeper: &mut StatusKeeper<R>,
    control: &Control,
) -> Result<Flow, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    let batch = resync_batch_rows(s, original, widest_row);
    // The window is never paused: suspend and stop wait until it closes.
    let (_keep, run) = always_run();
    loop {
        let names = read_names(s, job.original(), &mut session).await?;
        match swap_state(names) {
            SwapState::BeforeWindow => {
                // Armed, every write from here on is noted: the window then
                // re-syncs those rows alone, however large the table. The
                // verification's last pass was taken armed: it serves, and
                // the writes since are caught up from the log, the table live.
                let live = Arc::new(job.statements(original, &s.source, &s.shadow));
                let caught_up = match baseline.as_ref() {
                    Some(b) if b.captured => {
                        Box::pin(capture::catch_up(job, &mut session, &live, batch)).await?.is_some()
                    }
                    _ => false,
                };
                let armed = caught_up || Box::pin(capture::arm(job, &mut session)).await?;
                let stale = baseline.as_ref().is_none_or(|b| b.taken.elapsed() > FRESH_BASELINE);
                if !caught_up && (armed || stale) {
                    // Catch up while the table is still live: the window then
                    // re-reads only the source and copies only recent changes.
                    let mark = tracked(job, original, &s.source).map(|t| t.mark);
                    // Only the engine writes the shadow: a baseline (from the
                    // verification, or the re-syncs while waiting for a
                    // window) still tells its side, so only the source is read.
                    let (report, fresh) =
                        verify_pass(job, live.clone(), batch, &run, baseline.as_ref(), mark.as_deref()).await?;
                    tracing::info!(resynced = report.rows_resynced, "caught up before the window");
                    // Rows taken out of the log that still differ after
                    // their re-sync are in no log now: the window re-reads.
                    // So are ranges the pass left unresolved.
                    let caught = armed
                        && report.unresolved.is_empty()
                        && Box::pin(capture::catch_up(job, &mut session, &live, batch)).await?.is_some();
                    baseline = Some(Baseline { captured: caught, ..fresh });
                }
                // Waited for with the application up, before it is quiesced.
                if let Some(outcome) = wait_out_blockers(job, &mut session, keeper, &s.source, control).await? {
                    return Ok(Flow::Halt(outcome));
                }
                match quiesce(job, keeper, control).await {
                    Err(EngineError::Quiesce(QuiesceError::Halted)) => {
                        restore_workloads(job, keeper).await?;
                        return Ok(Flow::Halt(halted(control).unwrap_or(Outcome::Stopped)));
                    }
                    quiesced => quiesced?,
                }
                // From here the application may be down: every way out puts it back.
                // Its writers stopped, the log is caught up once more with the
                // table still readable: the window then has the renames and
                // little else to do.
                if !s.quiesce.is_empty()
                    && let Some(b) = baseline.as_mut().filter(|b| b.captured)
                {
                    let live = job.statements(original, &s.source, &s.shadow);
                    match Box::pin(capture::catch_up(job, &mut session, &live, batch)).await {
                        Ok(caught) => b.captured = caught.is_some(),
                        Err(e) => {
                            restore_workloads(job, keeper).await?;
                            return Err(e.into());
                        }
                    }
                }
                if let Err(e) = open_window(job, &mut session, keeper).await {
                    if !e.lost_claim() {
                        tracing::error!(error = %e, "the cut-over could not open its window; scaling the workloads back");
                        if let Err(restore) = restore_workloads(job, keeper).await {
                            tracing::error!(error = %restore, "could not scale the workloads back");
                        }
                    }
                    if e.blocked() {
                        // A blocker came after the check: wait for it again, the application up.
                        continue;
                    }
                    return Err(e);
                }
                failpoint::hit("swap-renamed-out");
            }
            SwapState::InWindow => {
                if let Err(e) = finish_window(job, &mut session, original, batch, baseline.take(), keeper).await {
                    if e.lost_claim() {
                        // The engine that holds the table now finishes or undoes the window.
                        return Err(e);
                    }
                    tracing::error!(error = %e, "the cut-over failed inside the window; putting the original table back");
                    put_back(job, &mut session, keeper, &s.old).await?;
                    restore_workloads(job, keeper).await?;
                    return Err(e);
                }
            }
            SwapState::Swapped => return finish_swapped(job, names, keeper).await,
            SwapState::Inconsistent(what) => {
                return Err(CheckFailed::CutoverState { table: s.source.clone(), state: what }.into());
            }
        }
    }
}

/// Takes the window's change capture off the table, so that writes stop
/// paying for it: after the swap, and (from the engine's halt and failure
/// paths) when the cut-over stops short; the next attempt arms it again. A
/// failure is logged: it is tried again at the next of those, and when the
/// migration is deleted.
pub async fn disarm_capture(job: &Job) {
    let s = &job.settings;
    let disarmed = match job.before_change().await {
        Ok(()) => {
            capture::disarm(&mut job.session(), job.dialect, &s.shadow, &[&s.source, &s.old]).await.map_err(Into::into)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = disarmed {
        tracing::warn!(error = %e, "could not take the change capture off the table");
    }
}

/// Opens the window: the time saved, then the table renamed away (guarded by
/// the claim, the Lease and the blockers' check).
async fn open_window<R: StatusSink>(
    job: &Job,
    session: &mut Session,
    keeper: &mut StatusKeeper<R>,
) -> Result<(), EngineError> {
    let s = &job.settings;
    keeper.status.cutover.get_or_insert_with(CutoverStatus::default).window_opened_at = Some(now());
    keeper.checkpoint(Save::Now).await?;
    job.before_change().await?;
    if job.dialect == Dialect::Postgres {
        let late: Vec<String> = blocking_sessions(session, &s.source).await?.iter().map(ToString::to_string).collect();
        if !late.is_empty() {
            return Err(CheckFailed::Blocked(late).into());
        }
    }
    rename_guarded(session, &s.source, &s.old).await?;
    tracing::info!(table = %s.source, to = %s.old, "window open: the table was renamed away");
    Ok(())
}

/// How long the engine waits between attempts to give the original table
/// its name back, once an attempt's own retries are spent.
pub const PUT_BACK_EVERY: Duration = Duration::from_secs(1);

/// Gives the table name back to `from` (the original after a failed
/// cut-over, the new table after a failed rollback) until it succeeds: the table name must not stay absent because the
/// database was unreachable for a while. Meanwhile the status says
/// `TableMissing` (a condition and a Warning event). Stops only when another
/// engine took the table over (it then does the same): a lost Lease does not
/// stop it while the claim on the table holds (its status is then left to
/// the Lease's new holder).
pub async fn put_back<R: StatusSink>(
    job: &Job,
    session: &mut Session,
    keeper: &mut StatusKeeper<R>,
    from: &TableName,
) -> Result<(), EngineError> {
    let s = &job.settings;
    loop {
        let names = keeper.status.plan.as_ref().and_then(OriginalNames::recorded);
        let attempt = match job.before_put_back().await {
            Ok(()) => match hand_names_to(job, session, names.as_ref(), from).await {
                Ok(()) => rename_guarded(session, from, &s.source).await.map_err(EngineError::from),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        let missing = keeper.status.cutover.as_ref().is_some_and(|c| c.table_missing);
        match attempt {
            Ok(()) => {
                if missing {
                    keeper.status.cutover.get_or_insert_with(CutoverStatus::default).table_missing = false;
                    let note = format!("{} has its name back; writers reach it again", s.source);
                    keeper.event(Severity::Normal, "TableRestored", note).await;
                    if let Err(e) = keeper.say().await
                        && !job.lease_lost()
                    {
                        return Err(e);
                    }
                }
                tracing::info!(table = %s.source, "the original table has its name back");
                return Ok(());
            }
            Err(e) if e.lost_claim() => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, table = %s.source, "could not put the original table back; trying again");
                if !missing {
                    keeper.status.cutover.get_or_insert_with(CutoverStatus::default).table_missing = true;
                    let note = format!(
                        "{} is absent: renaming {from} back after a failed window failed ({e}); retrying until it succeeds",
                        s.source
                    );
                    keeper.event(Severity::Warning, "TableMissing", note).await;
                    if let Err(store) = keeper.say().await {
                        tracing::warn!(error = %store, "could not save the TableMissing status");
                    }
                }
                tokio::time::sleep(PUT_BACK_EVERY).await;
            }
        }
    }
}

/// Renames `from` to `to`'s name unless that already happened (a lost reply
/// to a committed rename must not fail the retry).
pub async fn rename_guarded(session: &mut Session, from: &TableName, to: &TableName) -> Result<(), DbError> {
    let sql = &match session.connector().dialect() {
        // Readers and writers queue behind a waiting rename: it waits briefly.
        Dialect::Postgres => format!(
            "BEGIN; SET LOCAL lock_timeout = '{IN_PLACE_LOCK_TIMEOUT_MS}ms'; {}; COMMIT",
            rename_table(from, &to.name)
        ),
        // DSQL takes no locks, and refuses lock_timeout.
        Dialect::Dsql => rename_table(from, &to.name),
    };
    session
        .retry("rename table", |c| async move {
            if !catalog::table_exists(&c, from).await? && catalog::table_exists(&c, to).await? {
                return Ok(());
            }
            let renamed = c.batch_execute(sql).await.ctx("rename table");
            if renamed.is_err() {
                let _ = c.batch_execute("ROLLBACK").await;
            }
            renamed
        })
        .await
}

/// Hands the original index and constraint names (`names`, recorded when
/// the migration was planned) to `incoming`, the table about to take the
/// table's name, as `ALTER TABLE` would have left them: `outgoing` (renamed
/// away) takes names derived for its own name, its primary key
/// `outgoing_key`. One rename per transaction, each decided from the
/// catalog ([`handover`]): a crash between two resumes with the rest.
/// Runs inside a window (no table has the name), so no application sees a
/// table half renamed. DSQL documents no `ALTER INDEX ... RENAME`: there the
/// names stay as built, and the plan says so.
pub async fn hand_names(
    session: &mut Session,
    names: Option<&OriginalNames>,
    source: &TableName,
    incoming: &TableName,
    outgoing: &TableName,
    outgoing_key: &str,
) -> Result<(), DbError> {
    let Some(names) = names else { return Ok(()) };
    if session.connector().dialect() == Dialect::Dsql {
        return Ok(());
    }
    let renames = session
        .retry("read index names", |c| async move {
            let coming = catalog::index_names(&c, incoming).await?;
            let going = catalog::index_names(&c, outgoing).await?;
            Ok(handover(&source.name, names, &incoming.name, &coming, &outgoing.name, &going, outgoing_key))
        })
        .await?;
    for (from, to) in &renames {
        let (from, to) = (&source.sibling(from.clone()), &source.sibling(to.clone()));
        let sql = &format!("ALTER INDEX {from} RENAME TO {}", ident(&to.name));
        session
            .retry("hand over a name", |c| async move {
                // A lost reply to a committed rename must not fail the retry.
                if catalog::table_exists(&c, to).await? && !catalog::table_exists(&c, from).await? {
                    return Ok(());
                }
                c.batch_execute(sql).await.ctx("hand over a name")
            })
            .await?;
    }
    if !renames.is_empty() {
        tracing::info!(table = %incoming, renames = renames.len(), "the table taking the name has the original names");
    }
    Ok(())
}

/// The name of the primary key of the table standing aside under `aside`:
/// the old table's derived from the original, the shadow's as it was built.
pub fn aside_key(job: &Job, names: &OriginalNames, aside: &TableName) -> String {
    let s = &job.settings;
    match (*aside == s.shadow, s.changes.is_empty()) {
        (true, false) => crate::engine::plan::names::new_table_key(&s.shadow, &s.changes),
        _ => derived_name(&names.key, &s.source.name, &aside.name),
    }
}

/// Hands the names to `incoming` ahead of giving it the table's name.
pub async fn hand_names_to(
    job: &Job,
    session: &mut Session,
    names: Option<&OriginalNames>,
    incoming: &TableName,
) -> Result<(), DbError> {
    let s = &job.settings;
    let Some(names) = names else { return Ok(()) };
    let outgoing = if *incoming == s.old { &s.shadow } else { &s.old };
    hand_names(session, Some(names), &s.source, incoming, outgoing, &aside_key(job, names, outgoing)).await
}

/// After the window: workloads back, and the old table dropped when
/// `oldTable.retain: false`. Needs nothing of the original table, which may
/// already be gone (a crash after the drop resumes here from the catalog).
pub async fn finish_swapped<R: StatusSink>(
    job: &Job,
    names: Names,
    keeper: &mut StatusKeeper<R>,
) -> Result<Flow, EngineError> {
    let s = &job.settings;
    restore_workloads(job, keeper).await?;
    // The capture's triggers went with the old table's name; its log is done with.
    Box::pin(disarm_capture(job)).await;
    if job.dialect == Dialect::Postgres {
        // Before the old table may go: sequences it owns would block its drop.
        job.before_change().await?;
        adopt_sequences(&mut job.session(), &s.source).await?;
    }
    if !s.retain_old && names.old {
        job.before_change().await?;
        let sql = &drop_table(&s.old);
        job.session()
            .retry("drop old table", |c| async move {
                if !catalog::table_exists(&c, &s.old).await? {
                    return Ok(());
                }
                c.batch_execute(sql).await.ctx("drop old table")
            })
            .await?;
        tracing::info!(table = %s.old, "dropped the old table (oldTable.retain: false)");
        failpoint::hit("swap-old-dropped");
    }
    Ok(Flow::Next)
}

/// Inside the window: copy what changed since verification, move the
/// identity past every id, check it, and rename the shadow in.
async fn finish_window<R: StatusSink>(
    job: &Arc<Job>,
    session: &mut Session,
    original: &TableShape,
    batch: i64,
    baseline: Option<Baseline>,
    keeper: &mut StatusKeeper<R>,
) -> Result<(), EngineError> {
    let s = &job.settings;
    let (_keep, run) = always_run();
    let statements = Arc::new(job.statements(original, &s.old, &s.shadow));
    let tracked = tracked(job, original, &s.old);
    // The rows the capture noted since the last pass began, and only those.
    let captured = match baseline.as_ref() {
        Some(b) if b.captured && tracked.is_none() => {
            Box::pin(capture::sync_written(job, session, &statements, batch)).await?
        }
        _ => None,
    };
    if let Some(rows) = captured {
        tracing::info!(rows, "re-synced the rows written since the last pass");
    }
    let (unresolved, rows_in_window) = match (tracked, baseline.as_ref(), captured) {
        (_, _, Some(rows)) => (Vec::new(), rows),
        // Only rows written since the last pass began, then counts.
        (Some(t), Some(b), None) if b.mark.is_some() => {
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
        return Err(CheckFailed::WindowSyncDiffers(ranges).into());
    }
    keeper.status.cutover.get_or_insert_with(CutoverStatus::default).rows_in_window = rows_in_window;
    if let Some(v) = keeper.status.verification.as_mut() {
        v.unresolved.clear();
    }

    // A rebuild without an identity has none to move.
    let identity = job.reshape.get().is_none_or(|r| r.has_identity());
    if identity {
        job.before_change().await?;
        let identity = restart_identity_after_max(job, session, &s.shadow).await?;
        failpoint::hit("swap-identity-restarted");
        keeper.status.identity = Some(identity);
    }

    if identity
        && s.generation == Generation::Always
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

    // A GRANT or REVOKE on the table during the copy reaches the new table.
    job.before_change().await?;
    let rebuild = job.reshape.get().map(|r| &r.rebuild);
    sync_privileges(session, &s.old, &s.shadow, job.dialect, rebuild).await?;
    job.before_change().await?;
    let names = keeper.status.plan.as_ref().and_then(OriginalNames::recorded);
    hand_names_to(job, session, names.as_ref(), &s.shadow).await?;
    job.before_change().await?;
    rename_guarded(session, &s.shadow, &s.source).await?;
    let cutover = keeper.status.cutover.get_or_insert_with(CutoverStatus::default);
    cutover.swapped_at = Some(now());
    if let Some(opened) = &cutover.window_opened_at {
        let millis = jiff::Timestamp::now().duration_since(opened.0).as_millis();
        cutover.window_millis = Some(millis as i64);
    }
    tracing::info!(table = %s.source, window_ms = cutover.window_millis, "window closed: the new table has the name");
    failpoint::hit("swap-renamed-in");
    // Completed is saved next; the catalog says where a crash before it stood.
    keeper.checkpoint(Save::WhenDue).await?;
    Ok(())
}

/// Scales `spec.cutover.quiesce` to zero, the counts saved in status first
/// (kept from an earlier attempt, which may have scaled some already).
async fn quiesce<R: StatusSink>(job: &Job, keeper: &mut StatusKeeper<R>, control: &Control) -> Result<(), EngineError> {
    let targets = &job.settings.quiesce;
    if targets.is_empty() {
        return Ok(());
    }
    let workloads = job.workloads.as_deref().ok_or_else(|| {
        InvalidInput::one("spec.cutover.quiesce", "scaling workloads needs the operator (the Kubernetes API)")
    })?;
    let cutover = keeper.status.cutover.get_or_insert_with(CutoverStatus::default);
    if cutover.saved_replicas.is_empty() {
        cutover.saved_replicas = save_replicas(workloads, targets).await.map_err(EngineError::Quiesce)?;
        keeper.checkpoint(Save::Now).await?;
    }
    if let Err(e) = scale_down(workloads, targets, || halted(control).is_some()).await {
        restore_workloads(job, keeper).await?;
        return Err(EngineError::Quiesce(e));
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    keeper.event(Severity::Normal, "Quiesced", format!("scaled to zero for the cut-over: {}", names.join(", "))).await;
    Ok(())
}

/// Scales quiesced workloads back to their saved counts, and forgets the counts.
pub async fn restore_workloads<R: StatusSink>(job: &Job, keeper: &mut StatusKeeper<R>) -> Result<(), EngineError> {
    let saved = keeper.status.cutover.as_ref().map(|c| c.saved_replicas.clone()).unwrap_or_default();
    if saved.is_empty() {
        return Ok(());
    }
    let workloads = job.workloads.as_deref().ok_or(CheckFailed::CannotRestoreWorkloads)?;
    restore(workloads, &saved).await.map_err(EngineError::Restore)?;
    if let Some(c) = keeper.status.cutover.as_mut() {
        c.saved_replicas.clear();
    }
    keeper.checkpoint(Save::Now).await?;
    let names: Vec<String> = saved.iter().map(|s| format!("{} to {}", s.name, s.replicas)).collect();
    keeper.event(Severity::Normal, "Restored", format!("scaled back after the cut-over: {}", names.join(", "))).await;
    Ok(())
}

/// The change-tracking statements from `source` into the shadow, when the spec names a column.
fn tracked(job: &Job, original: &TableShape, source: &TableName) -> Option<TrackedStatements> {
    let s = &job.settings;
    s.change_tracking_column
        .as_deref()
        .map(|tc| TrackedStatements::new(source, &s.shadow, &s.id_column, original, tc, s.generation, job.dialect))
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
    fn window_reads_in_seconds() {
        assert_eq!(window_text(Some(1234)), "1.234s");
        assert_eq!(window_text(None), "unknown");
    }
}

//! The window's change capture on PostgreSQL ([`crate::engine::plan::capture`]):
//! armed before each verification pass, caught up before the window, read
//! in it, removed after the swap (and whenever the engine stops or waits).
//! Where it cannot be made (no TRIGGER privilege, a lock not granted in
//! time), the window re-reads the table as it always could.

use std::sync::Arc;

use crate::db::{DbError, Dialect, ErrorContext, Session, committed};
use crate::engine::job::Job;
use crate::engine::plan::capture::{Capture, Written, written};
use crate::engine::plan::shape::TableName;
use crate::engine::plan::sql::RowStatements;

/// How long arming waits for writers' locks (CREATE TRIGGER queues every
/// later writer behind it while it waits): short, and tried again.
const ARM_LOCK_TIMEOUT_MS: u64 = 250;

/// Whether this migration's window uses capture: PostgreSQL, and no change
/// tracking column (which does the same by a column the application sets).
pub fn wanted(job: &Job) -> bool {
    job.dialect == Dialect::Postgres && job.settings.change_tracking_column.is_none()
}

/// Makes the capture on the source table (when absent) and empties its log.
/// True when armed: every write committed from now on is in the log. The
/// pass that follows must begin after this returns.
pub async fn arm(job: &Job, session: &mut Session) -> Result<bool, DbError> {
    if !wanted(job) {
        return Ok(false);
    }
    let s = &job.settings;
    let capture = Capture::of(&s.shadow);
    // Made already (an earlier pass, an earlier attempt): only the log is emptied.
    let check = &capture.is_armed(&s.source);
    let made = session
        .retry("read change capture", |c| async move {
            Ok(c.query_one(check.as_str(), &[]).await.ctx("read change capture")?.get::<_, bool>(0))
        })
        .await?;
    let statements = if made { Vec::new() } else { capture.create(&s.source, &s.id_column) };
    for sql in &statements {
        // CREATE TRIGGER waits for writers' locks: never queue the application behind it for long.
        if let Err(e) = briefly_locking(session, "arm change capture", sql).await {
            if e.breaks_connection() || e.is_transient() {
                return Err(e);
            }
            tracing::warn!(error = %e, "could not arm change capture; the window re-reads the whole table");
            return Ok(false);
        }
    }
    let reset = &capture.reset();
    session.retry("reset change capture", |c| async move { c.batch_execute(reset).await.ctx("reset capture") }).await?;
    tracing::info!(log = %capture.log, "change capture armed");
    Ok(true)
}

/// A catch-up round that leaves at most this many writes to the window.
pub const WINDOW_IDS: usize = 1_000;
const CATCH_UP_ROUNDS: usize = 8;

/// Before the window, the table still live: takes the noted ids out of the
/// log and re-syncs them, round after round, until a round finds at most
/// [`WINDOW_IDS`] (the writes of its own few milliseconds), so the window
/// has that much left. Answers false when the log says everything may have
/// changed (a TRUNCATE) or is gone: a pass must then be taken.
pub async fn catch_up(
    job: &Job,
    session: &mut Session,
    statements: &RowStatements,
    batch_rows: i64,
) -> Result<bool, DbError> {
    let capture = Capture::of(&job.settings.shadow);
    let take = &capture.take_written();
    for round in 0..CATCH_UP_ROUNDS {
        let taken = noted_ids(session, take, "take the change log").await?;
        let Some(Written::Ids(mut ids)) = taken.map(written) else { return Ok(false) };
        ids.sort_unstable();
        ids.dedup();
        resync_ids(session, statements, &ids, batch_rows).await?;
        tracing::info!(round, rows = ids.len(), "caught up with the writes the capture noted");
        if ids.len() <= WINDOW_IDS {
            break;
        }
    }
    Ok(true)
}

/// The ids `sql` answers from the log; None when the log is gone.
async fn noted_ids(session: &mut Session, sql: &str, what: &str) -> Result<Option<Vec<Option<i64>>>, DbError> {
    session
        .retry(what, |c| async move {
            match c.query(sql, &[]).await.ctx(what) {
                Ok(rows) => Ok(Some(rows.iter().map(|r| r.get::<_, Option<i64>>(0)).collect())),
                Err(e) if e.catalog_missing() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
}

/// Re-syncs the rows of `ids`, in transactions of up to `batch_rows` ids.
async fn resync_ids(
    session: &mut Session,
    statements: &RowStatements,
    ids: &[i64],
    batch_rows: i64,
) -> Result<(), DbError> {
    for batch in ids.chunks(batch_rows.max(1) as usize) {
        let batch = &batch.to_vec();
        let what = "re-sync written rows";
        session
            .retry(what, |c| async move {
                committed(&c, async {
                    if statements.update_first {
                        c.execute(statements.update_differing_ids.as_str(), &[batch]).await.ctx(what)?;
                    }
                    c.execute(statements.delete_stale_ids.as_str(), &[batch]).await.ctx(what)?;
                    c.execute(statements.insert_missing_ids.as_str(), &[batch]).await.ctx(what)?;
                    Ok(())
                })
                .await
            })
            .await?;
    }
    Ok(())
}

/// Re-syncs, inside the window, every row the log says was written since the
/// last arming, by id, from `statements`' source into its target. Answers
/// the rows re-synced, or None when the log says everything may have changed
/// (a TRUNCATE) or is gone (the window must then re-read the table).
pub async fn sync_written(
    job: &Arc<Job>,
    session: &mut Session,
    statements: &RowStatements,
    batch_rows: i64,
) -> Result<Option<i64>, DbError> {
    let capture = Capture::of(&job.settings.shadow);
    let read = &capture.written_ids();
    let ids = noted_ids(session, read, "read the change log").await?;
    let Some(Written::Ids(ids)) = ids.map(written) else { return Ok(None) };
    resync_ids(session, statements, &ids, batch_rows).await?;
    Ok(Some(ids.len() as i64))
}

/// Removes the capture of the migration whose new table is `shadow`: its
/// triggers from the table wherever it is (`tables`: every name it may have
/// now), its function and its log. Safe to run again.
pub async fn disarm(
    session: &mut Session,
    dialect: Dialect,
    shadow: &TableName,
    tables: &[&TableName],
) -> Result<(), DbError> {
    if dialect != Dialect::Postgres {
        return Ok(());
    }
    let capture = Capture::of(shadow);
    // Most stops find nothing to remove: one read then, no statement.
    let any = &capture.any_left(tables);
    let left = session
        .retry("read change capture", |c| async move {
            Ok(c.query_one(any.as_str(), &[]).await.ctx("read change capture")?.get::<_, bool>(0))
        })
        .await?;
    if !left {
        return Ok(());
    }
    let mut statements: Vec<String> = tables.iter().flat_map(|t| capture.drop_triggers(t)).collect();
    statements.extend(capture.drop_objects());
    for sql in &statements {
        // Each looks before it locks; and never queues writers for long.
        briefly_locking(session, "disarm change capture", sql).await?;
    }
    Ok(())
}

/// `sql` in a transaction of its own that waits at most
/// [`ARM_LOCK_TIMEOUT_MS`] for a lock.
async fn briefly_locking(session: &mut Session, what: &str, sql: &str) -> Result<(), DbError> {
    let sql = &format!("SET LOCAL lock_timeout = '{ARM_LOCK_TIMEOUT_MS}ms'; {sql}");
    session.retry(what, |c| async move { committed(&c, async { c.batch_execute(sql).await.ctx(what) }).await }).await
}

//! The change capture on PostgreSQL ([`crate::engine::plan::capture`]):
//! armed before the copy (where it then verifies the copy) or before a
//! verification pass, caught up before the window, read in it, removed
//! after the swap (and whenever the engine stops or waits).
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

/// The capture armed before the copy wrote its first row: every row the
/// copy may have read before a write changed it is then in the log, so
/// re-syncing the log's rows makes the new table whole without reading
/// either table again ([`verified_by_log`]). Held in memory only: a new
/// process, or a capture taken off meanwhile, verifies by checksums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmedBeforeCopy {
    /// `pg_postmaster_start_time()` when armed. The copy commits without
    /// waiting for the disk; a server that restarted since may have lost
    /// such batches, which only checksums find.
    server_started: String,
    /// `status.progress.rowsRecopied` when armed. A batch that meets a row
    /// the new table refuses as a duplicate (of a unique constraint only it
    /// has) is copied again skipping it: the log cannot tell of that row.
    recopied: i64,
}

impl ArmedBeforeCopy {
    /// Whether the copy skipped rows since it was armed (`recopied` now).
    pub fn skipped_rows(&self, recopied: i64) -> bool {
        recopied != self.recopied
    }
}

const SERVER_STARTED: &str = "SELECT pg_catalog.pg_postmaster_start_time()::text";

/// Arms the capture before the copy, when it can serve as the copy's
/// verification: PostgreSQL and `spec.copy.verification: Auto`. The caller
/// has found the new table empty (rows an earlier process copied were
/// copied without the capture); only the engine writes it, so it stays so.
pub async fn arm_before_copy(
    job: &Job,
    session: &mut Session,
    recopied: i64,
) -> Result<Option<ArmedBeforeCopy>, DbError> {
    if !wanted(job) || job.settings.checksums_always {
        return Ok(None);
    }
    let server_started = server_started(session).await?;
    if !arm(job, session).await? {
        return Ok(None);
    }
    Ok(Some(ArmedBeforeCopy { server_started, recopied }))
}

async fn server_started(session: &mut Session) -> Result<String, DbError> {
    session
        .retry("read server start", |c| async move {
            Ok(c.query_one(SERVER_STARTED, &[]).await.ctx("read server start")?.get::<_, String>(0))
        })
        .await
}

/// The copy's verification by the capture armed before it: the same server
/// since (no batch lost unflushed), and every row the log noted re-synced
/// and found equal to the source's (see [`catch_up`]). False when either
/// fails: the copy must then be verified by checksums. The copy must have
/// been made durable first (`copy::flush_copied`).
pub async fn verified_by_log(
    job: &Job,
    session: &mut Session,
    armed: &ArmedBeforeCopy,
    statements: &RowStatements,
    batch_rows: i64,
) -> Result<Option<CaughtUp>, DbError> {
    if server_started(session).await? != armed.server_started {
        tracing::warn!("the server restarted during the copy; verifying by checksums");
        return Ok(None);
    }
    catch_up(job, session, statements, batch_rows).await
}

/// A catch-up round that leaves at most this many writes to the window.
pub const WINDOW_IDS: usize = 1_000;
const CATCH_UP_ROUNDS: usize = 8;

/// Before the window, the table still live: takes the noted ids out of the
/// log and re-syncs them, round after round, until a round finds at most
/// [`WINDOW_IDS`] (the writes of its own few milliseconds), so the window
/// has that much left. Answers None when the log says everything may have
/// changed (a TRUNCATE) or is gone, or when re-synced rows still differ
/// from the source: a pass must then be taken.
pub async fn catch_up(
    job: &Job,
    session: &mut Session,
    statements: &RowStatements,
    batch_rows: i64,
) -> Result<Option<CaughtUp>, DbError> {
    let capture = Capture::of(&job.settings.shadow);
    let take = &capture.take_written();
    let mut caught = CaughtUp::default();
    for round in 0..CATCH_UP_ROUNDS {
        let taken = noted_ids(session, take, "take the change log").await?;
        let Some(Written::Ids(mut ids)) = taken.map(written) else { return Ok(None) };
        // Taken out of the log, not yet re-synced: a crash here leaves them
        // in no log, which is why the proof lives in this process alone.
        crate::engine::failpoint::hit("capture-taken");
        ids.sort_unstable();
        ids.dedup();
        // Refused by the new table, or written again each time: a pass decides.
        let Some(gained) = resync_ids(session, statements, &ids, batch_rows).await? else { return Ok(None) };
        caught.rows += ids.len() as i64;
        caught.gained += gained;
        tracing::info!(round, rows = ids.len(), "caught up with the writes the capture noted");
        if ids.len() <= WINDOW_IDS {
            break;
        }
    }
    Ok(Some(caught))
}

/// What a catch-up re-synced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaughtUp {
    /// Rows the log noted, each re-synced and compared.
    pub rows: i64,
    /// Rows the target gained: inserted less deleted.
    pub gained: i64,
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

/// Re-syncs the rows of `ids`, in statements of up to `batch_rows` ids, and
/// answers the rows the target gained when source and target then hold the
/// same rows for them, None when they do not.
///
/// Every stale row is deleted before any missing one is inserted: a unique
/// value that moved from one noted row to another (or a row that breaks a
/// unique constraint only the new table has) then conflicts on neither
/// order. An insert the target still refuses is skipped by `ON CONFLICT DO
/// NOTHING`, so the rows are compared afterwards: a row left out is never
/// taken for a row copied.
async fn resync_ids(
    session: &mut Session,
    statements: &RowStatements,
    ids: &[i64],
    batch_rows: i64,
) -> Result<Option<i64>, DbError> {
    let batches: Vec<Vec<i64>> = ids.chunks(batch_rows.max(1) as usize).map(<[i64]>::to_vec).collect();
    let refs: Vec<&[i64]> = batches.iter().map(Vec::as_slice).collect();
    let mut gained = resync_batches(session, statements, &refs).await?;
    for batch in &batches {
        // A row written again between its re-sync and the comparison is
        // noted again; a second re-sync tells it from a row the new table refuses.
        let mut attempts = 0;
        while !same_rows(session, statements, batch).await? {
            attempts += 1;
            if attempts == RESYNC_ATTEMPTS {
                tracing::warn!(rows = batch.len(), "rows the capture noted still differ after their re-sync");
                return Ok(None);
            }
            gained += resync_batches(session, statements, &[batch]).await?;
        }
    }
    Ok(Some(gained))
}

/// Re-syncs of one batch of noted rows before it counts as refused.
const RESYNC_ATTEMPTS: usize = 3;

/// Each step over every batch before the next step. Returns the rows the
/// target gained (inserted less deleted).
async fn resync_batches(session: &mut Session, statements: &RowStatements, batches: &[&[i64]]) -> Result<i64, DbError> {
    let what = "re-sync written rows";
    let mut steps: Vec<(&str, i64)> = Vec::new();
    if statements.update_first {
        steps.push((statements.update_differing_ids.as_str(), 0));
    }
    steps.push((statements.delete_stale_ids.as_str(), -1));
    steps.push((statements.insert_missing_ids.as_str(), 1));
    let mut gained = 0;
    for (sql, sign) in steps {
        for batch in batches {
            let batch = &batch.to_vec();
            let rows = session.retry(what, |c| async move { c.execute(sql, &[batch]).await.ctx(what) }).await?;
            gained += sign * rows as i64;
        }
    }
    Ok(gained)
}

/// Whether source and target hold the same rows for `ids`.
async fn same_rows(session: &mut Session, statements: &RowStatements, ids: &Vec<i64>) -> Result<bool, DbError> {
    let (source, target) = (&statements.source_summary_ids, &statements.target_summary_ids);
    let what = "check re-synced rows";
    session
        .retry(what, |c| async move {
            let read = |row: tokio_postgres::Row| (row.get::<_, i64>(0), row.get::<_, String>(1));
            let s = read(c.query_one(source.as_str(), &[ids]).await.ctx(what)?);
            let t = read(c.query_one(target.as_str(), &[ids]).await.ctx(what)?);
            Ok(s == t)
        })
        .await
}

/// Re-syncs, inside the window, every row the log says was written since the
/// last arming, by id, from `statements`' source into its target. Answers
/// the rows re-synced, or None when the log says everything may have changed
/// (a TRUNCATE) or is gone, or the re-synced rows still differ (the window
/// must then re-read the table).
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
    if resync_ids(session, statements, &ids, batch_rows).await?.is_none() {
        return Ok(None);
    }
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

//! Copying: id ranges shared by `parallelism` workers, each range copied in
//! ascending keyset batches, one transaction per batch.
//!
//! A batch reads its upper bound and copies exactly the rows up to it in one
//! repeatable-read transaction, so the shadow holds, per range, every source
//! row up to some id and none past it. On resume the shadow's highest id in a
//! range is therefore where that range really stands: only the batch that was
//! in flight when the process died is redone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{Mutex, mpsc};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::claim::ClaimError;
use crate::api::RangeCheckpoint;
use crate::db::{DbError, Dialect, ErrorContext, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::failpoint;
use crate::engine::job::{Control, Flow, Job, halted};
use crate::engine::plan::batches::{initial_span, next_span};
use crate::engine::plan::pace::{PaceReason, Pacer};
use crate::engine::plan::progress::Throttle;
use crate::engine::plan::sql::{RowStatements, begin_batch};
use crate::engine::status_keeper::CopyProgress;
use crate::engine::status_keeper::Save;
use crate::engine::status_keeper::StatusKeeper;
use crate::engine::store::Severity;
use crate::engine::store::StatusSink;
use tokio_postgres::types::{ToSql, Type};

/// A committed batch, or a range found already copied on resume.
#[derive(Debug)]
struct Advance {
    range: usize,
    copied_through: i64,
    rows: i64,
    /// Rows that were already in the shadow (redone work).
    recopied: i64,
    /// A committed copy transaction (not progress found on resume).
    batch: bool,
}

enum Report {
    Advance(Advance),
    Failed(DbError),
}

struct Shared {
    job: Arc<Job>,
    statements: RowStatements,
    batch_rows: i64,
    /// Rows a range holds, about: its first batch's id span follows from it.
    rows_per_range: i64,
    throttle: Option<Mutex<Throttle>>,
    /// `spec.copy.pace`: fed by every committed batch, read once a second.
    pacer: Option<std::sync::Mutex<Pacer>>,
    queue: Mutex<VecDeque<(usize, RangeCheckpoint)>>,
    stop: AtomicBool,
    /// The new table was empty when this copy began, its primary key set
    /// aside: each range stands where its checkpoint says, and a batch is
    /// told committed by its rows, not by a duplicate key.
    fresh: bool,
}

/// Copies every unfinished range of the checkpoint. Returns `Next` when all
/// are done. `fresh`: the new table was empty and has no primary key now.
pub async fn copy_ranges<R: StatusSink>(
    job: &Arc<Job>,
    statements: RowStatements,
    batch_rows: i64,
    rows_per_range: i64,
    fresh: bool,
    keeper: &mut StatusKeeper<R>,
    control: &mut Control,
) -> Result<Flow, EngineError> {
    let ranges = keeper.status.checkpoint.as_ref().map(|c| c.ranges.clone()).unwrap_or_default();
    let pending: VecDeque<(usize, RangeCheckpoint)> =
        ranges.iter().copied().enumerate().filter(|(_, r)| !r.is_done()).collect();
    let mut copied = keeper.status.progress.as_ref().map(|p| p.rows_copied).unwrap_or(0);
    let mut recopied = keeper.status.progress.as_ref().map(|p| p.rows_recopied).unwrap_or(0);
    let mut batches = keeper.status.progress.as_ref().map(|p| p.batches).unwrap_or(0);
    keeper.record_copy(copied, recopied, batches, CopyProgress::finished_if(pending.is_empty()));
    if pending.is_empty() {
        return Ok(Flow::Next);
    }
    let workers = job.settings.parallelism.min(pending.len());
    let shared = Arc::new(Shared {
        job: job.clone(),
        statements,
        batch_rows,
        rows_per_range,
        throttle: match (job.settings.max_rows_per_second, job.settings.pace) {
            (Some(r), _) => Some(Mutex::new(Throttle::new(r, Instant::now()))),
            (None, Some(_)) => Some(Mutex::new(Throttle::new(UNLIMITED, Instant::now()))),
            (None, None) => None,
        },
        pacer: job
            .settings
            .pace
            .map(|limits| std::sync::Mutex::new(Pacer::new(limits, job.settings.max_rows_per_second))),
        queue: Mutex::new(pending),
        stop: AtomicBool::new(false),
        fresh,
    });
    let (tx, mut rx) = mpsc::channel(256);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(worker(shared.clone(), tx.clone()));
    }
    drop(tx);

    let mut failure = None;
    let mut halt = None;
    let mut control_open = true;
    let mut pace_tick = tokio::time::interval(PACE_EVERY);
    pace_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_pace = Instant::now();
    loop {
        tokio::select! {
            _ = pace_tick.tick(), if shared.pacer.is_some() => {
                let elapsed = last_pace.elapsed();
                last_pace = Instant::now();
                adjust_pace(&shared, keeper, elapsed).await;
            }
            report = rx.recv() => match report {
                None => break,
                Some(Report::Advance(a)) => {
                    if let Some(cp) = keeper.status.checkpoint.as_mut() {
                        let r = &mut cp.ranges[a.range];
                        r.copied_through = r.copied_through.max(a.copied_through);
                    }
                    copied += a.rows;
                    recopied += a.recopied;
                    batches += i64::from(a.batch);
                    keeper.record_copy(copied, recopied, batches, CopyProgress::Running);
                    if a.batch {
                        keeper.record_batch_size(a.rows);
                    }
                    keeper.watch_retries(job.retries.get()).await;
                    keeper.checkpoint(Save::WhenDue).await?;
                }
                Some(Report::Failed(e)) => {
                    shared.stop.store(true, Ordering::SeqCst);
                    failure.get_or_insert(e);
                }
            },
            changed = control.changed(), if control_open => {
                if changed.is_err() {
                    control_open = false;
                } else if let Some(outcome) = halted(control) {
                    shared.stop.store(true, Ordering::SeqCst);
                    halt = Some(outcome);
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    if !job.may_write() {
        // Says which: the Lease, or the claim.
        job.before_change().await?;
        return Err(ClaimError::LeaseLost { table: job.settings.source.clone() }.into());
    }
    let done = keeper.status.checkpoint.as_ref().is_some_and(|c| c.ranges.iter().all(RangeCheckpoint::is_done));
    keeper.record_copy(copied, recopied, batches, CopyProgress::finished_if(done));
    keeper.set_retries(job.retries.get());
    // A finished copy is saved by the next phase change; a halted one now.
    keeper.checkpoint(if halt.is_some() { Save::Now } else { Save::WhenDue }).await?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    match halt {
        Some(outcome) => Ok(Flow::Halt(outcome)),
        None if done => Ok(Flow::Next),
        None => Err(CheckFailed::CopyUnfinished.into()),
    }
}

async fn worker(shared: Arc<Shared>, tx: mpsc::Sender<Report>) {
    let mut session = shared.job.session();
    let mut batch_rows = shared.batch_rows;
    loop {
        let next = shared.queue.lock().await.pop_front();
        let Some((index, range)) = next else { return };
        if let Err(e) = copy_range(&shared, &mut session, index, range, &mut batch_rows, &tx).await {
            let _ = tx.send(Report::Failed(e)).await;
            return;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

async fn copy_range(
    shared: &Shared,
    session: &mut Session,
    range: usize,
    checkpoint: RangeCheckpoint,
    batch_rows: &mut i64,
    tx: &mpsc::Sender<Report>,
) -> Result<(), DbError> {
    let s = &shared.statements;
    let to = checkpoint.to;
    let mut after = match shared.fresh {
        true => checkpoint.copied_through,
        false => resume_point(s, session, range, checkpoint, tx).await?,
    };
    let mut span = initial_span(shared.batch_rows, shared.rows_per_range, checkpoint.from, checkpoint.to);
    while after < to {
        // A lost Lease or a stale claim stops the batches too: another engine may copy now.
        if shared.stop.load(Ordering::SeqCst) || !shared.job.may_write() {
            return Ok(());
        }
        if let Some(throttle) = &shared.throttle {
            let wait = throttle.lock().await.reserve(*batch_rows, Instant::now());
            tokio::time::sleep(wait).await;
        }
        let limit = *batch_rows;
        let end = after.saturating_add(span).min(to);
        let begin = begin_batch(shared.job.dialect);
        let retries_before = shared.job.retries.get();
        let attempts = &std::sync::atomic::AtomicU32::new(0);
        let fresh = shared.fresh;
        let result = session
            .retry("copy batch", |client| async move {
                // The pace looks at the attempt that committed, not at the retries and their backoff.
                let attempt = Instant::now();
                // Without the key a batch whose commit went unanswered
                // would copy its rows twice: its rows tell it was committed.
                if fresh && attempts.fetch_add(1, Ordering::SeqCst) > 0 {
                    let row = client.query_one(&s.copied_in, &[&after, &end]).await.ctx("find the batch's rows")?;
                    let (highest, rows) = (row.get::<_, Option<i64>>(0), row.get::<_, i64>(1));
                    if rows > 0 {
                        let through = if rows < limit { end } else { highest.unwrap_or(end) };
                        return Ok(Some(((through, rows, rows), attempt.elapsed())));
                    }
                }
                // Typed: parsed, bound and run in one round trip (no prepare first).
                let params: [(&(dyn ToSql + Sync), Type); 3] =
                    [(&after, Type::INT8), (&end, Type::INT8), (&limit, Type::INT8)];
                let done = match client.query_typed(&s.copy_batch_unflushed, &params).await {
                    Ok(returned) => {
                        let rows: i64 = returned.iter().map(|r| r.get::<_, i64>(1)).sum();
                        let highest = returned.iter().filter_map(|r| r.get::<_, Option<i64>>(0)).max();
                        // A short batch copied everything up to `end`.
                        let through = if rows < limit { end } else { highest.unwrap_or(end) };
                        Ok(Some((through, rows, rows)))
                    }
                    // Rows of this batch are already there (a row the copy did not
                    // expect): copy the batch again, skipping what exists.
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        tracing::info!(after, "batch meets rows already copied; copying it idempotently");
                        copy_batch_idempotently(&client, s, begin, after, end, limit).await
                    }
                    Err(e) => Err(DbError::from_pg("copy batch", &e)),
                };
                done.map(|copied| copied.map(|c| (c, attempt.elapsed())))
            })
            .await;
        let advance = match result {
            Ok(Some(((through, rows, inserted), latency))) => {
                failpoint::hit("copy-batch");
                if let Some(pacer) = &shared.pacer {
                    let conflicts = shared.job.retries.get().saturating_sub(retries_before);
                    pacer.lock().expect("pacer lock").record_commit(rows, latency, conflicts);
                }
                span = next_span(span, rows, limit, through - after);
                Advance { range, copied_through: through, rows, recopied: rows - inserted, batch: true }
            }
            Ok(None) => {
                span = next_span(span, 0, limit, end - after);
                Advance { range, copied_through: end, rows: 0, recopied: 0, batch: false }
            }
            Err(e) if e.class.wants_smaller_piece() && *batch_rows > 1 => {
                *batch_rows = (*batch_rows / 2).max(1);
                tracing::warn!(batch_rows = *batch_rows, error = %e, "transaction too large; halving the batch");
                continue;
            }
            Err(e) => return Err(e),
        };
        after = advance.copied_through;
        if tx.send(Report::Advance(advance)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// How often the adaptive pace is adjusted.
const PACE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The token bucket's rate while the pace is unlimited.
const UNLIMITED: u64 = 1_000_000_000;

/// Adjusts the pace from the commits since the last time (and, on
/// PostgreSQL, the replicas' lag): the throttle's rate, the status, and an
/// event when throttling starts or stops.
async fn adjust_pace<R: StatusSink>(shared: &Shared, keeper: &mut StatusKeeper<R>, elapsed: std::time::Duration) {
    let Some(pacer) = &shared.pacer else { return };
    let lag_limit = shared.job.settings.pace.and_then(|p| p.max_replica_lag);
    if lag_limit.is_some() && shared.job.dialect == crate::db::Dialect::Postgres {
        let sql = "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication";
        let mut session = shared.job.session();
        let lag = session
            .retry("read replica lag", |c| async move {
                Ok(c.query_one(sql, &[]).await.ctx("read replica lag")?.get::<_, f64>(0))
            })
            .await;
        match lag {
            Ok(seconds) => pacer.lock().expect("pacer lock").record_lag(std::time::Duration::from_secs_f64(seconds)),
            Err(e) => tracing::debug!(error = %e, "could not read the replica lag"),
        }
    }
    let change = pacer.lock().expect("pacer lock").adjust(elapsed);
    if let Some(throttle) = &shared.throttle {
        throttle.lock().await.set_rate(change.rate.unwrap_or(UNLIMITED as f64));
    }
    let reason: &'static str = change.reason.into();
    keeper.set_pace(Some(crate::api::PaceStatus {
        rows_per_second: change.rate.map(|r| r.round() as i64),
        reason: reason.to_string(),
        message: change.detail.clone(),
    }));
    if change.flipped {
        let (severity, event) = match change.reason {
            PaceReason::Clear => (Severity::Normal, "Unthrottled"),
            _ => (Severity::Warning, "Throttled"),
        };
        let rate = change.rate.map_or("unlimited".to_string(), |r| format!("{} rows/s", r.round()));
        keeper.event(severity, event, format!("copy paced to {rate}: {}", change.detail)).await;
    }
}

/// The slower, idempotent form of a batch: bounds and copy in one snapshot,
/// existing ids skipped. Returns `(upper bound, rows, rows inserted)`.
async fn copy_batch_idempotently(
    client: &Client,
    s: &RowStatements,
    begin: &str,
    after: i64,
    to: i64,
    limit: i64,
) -> Result<Option<(i64, i64, i64)>, DbError> {
    client.batch_execute(begin).await.ctx("begin copy batch")?;
    let batch = async {
        let bounds = client.query_one(&s.batch_bounds, &[&after, &to, &limit]).await.ctx("find batch")?;
        let Some(hi) = bounds.get::<_, Option<i64>>(0) else { return Ok(None) };
        let rows: i64 = bounds.get(1);
        let inserted = client.execute(&s.copy_range, &[&after, &hi]).await.ctx("copy batch")?;
        // A short batch covered everything up to `to`.
        Ok(Some((if rows < limit { to } else { hi }, rows, inserted as i64)))
    }
    .await;
    match batch {
        Ok(done) => {
            client.batch_execute("COMMIT").await.ctx("commit copy batch")?;
            Ok(done)
        }
        Err(e) => {
            // Best effort: a broken connection is replaced anyway.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Where a range really stands: the checkpoint, or further if batches
/// committed after the last saved checkpoint (they are counted, not redone).
async fn resume_point(
    s: &RowStatements,
    session: &mut Session,
    range: usize,
    checkpoint: RangeCheckpoint,
    tx: &mpsc::Sender<Report>,
) -> Result<i64, DbError> {
    let after = checkpoint.copied_through;
    if after >= checkpoint.to {
        return Ok(after);
    }
    let from = after.saturating_add(1);
    let to = checkpoint.to;
    let found = session
        .retry("find copy progress", |client| async move {
            let row = client.query_one(&s.target_max_in, &[&from, &to]).await.ctx("find copy progress")?;
            let Some(max) = row.get::<_, Option<i64>>(0) else { return Ok(None) };
            let row = client.query_one(&s.target_count_in, &[&from, &max]).await.ctx("count copied rows")?;
            Ok(Some((max, row.get::<_, i64>(0))))
        })
        .await?;
    match found {
        Some((max, rows)) => {
            tracing::info!(range, copied_through = max, rows, "range is further than its checkpoint");
            let _ =
                tx.send(Report::Advance(Advance { range, copied_through: max, rows, recopied: 0, batch: false })).await;
            Ok(max)
        }
        None => Ok(after),
    }
}

/// The copy's batches commit on PostgreSQL without waiting for their WAL to
/// reach the disk (`copy_batch_unflushed`): what a server crash loses,
/// verification finds, as long as it does not read rows that are visible but
/// not yet durable. One transaction with an id, committed the usual way,
/// waits for the WAL up to its own commit, so every batch before it is durable.
pub async fn flush_copied(job: &Job) -> Result<(), DbError> {
    if job.dialect != Dialect::Postgres {
        return Ok(());
    }
    job.session()
        .retry("flush the copy", |c| async move {
            c.batch_execute("SELECT pg_catalog.txid_current()").await.ctx("flush the copy")
        })
        .await
}

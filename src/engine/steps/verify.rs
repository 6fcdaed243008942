//! Verifying: source and shadow compared chunk by chunk (row count and a
//! checksum of every column), mismatched chunks re-synced in small
//! transactions and compared again.
//!
//! Chunks are cut from the source's ids at verification time and cover the
//! whole id space (the first starts at the lowest bigint, the last ends at the
//! highest), so rows inserted during the copy, above or below the planned
//! range, are found and copied like any other difference.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{Mutex, mpsc};

use crate::db::{DbError, ErrorContext, Session};
use crate::engine::failpoint;
use crate::engine::job::{Control, Job, halted};
use crate::engine::plan::batches::CHUNK_ROWS;
use crate::engine::plan::sql::RowStatements;

/// Verification passes before the cut-over takes over a table that keeps changing.
pub const MAX_PASSES: u32 = 3;

/// An inclusive id range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub lo: i64,
    pub hi: i64,
}

impl std::fmt::Display for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// The chunk that starts at `lo`, given the id where [`CHUNK_ROWS`] rows end
/// (None past the last rows); true when it is the last chunk, which always
/// reaches the highest bigint.
pub fn next_chunk(lo: i64, end: Option<i64>) -> (Chunk, bool) {
    match end {
        Some(hi) if hi < i64::MAX => (Chunk { lo, hi }, false),
        _ => (Chunk { lo, hi: i64::MAX }, true),
    }
}

/// One pass over every chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub chunks: usize,
    /// Rows per side after the pass (equal when the pass resolved everything).
    pub source_rows: i64,
    pub target_rows: i64,
    /// Chunks that differed when first compared.
    pub mismatched: Vec<Chunk>,
    /// Chunks that still differed after their re-sync.
    pub unresolved: Vec<Chunk>,
    pub rows_resynced: i64,
    /// False when the pass was cut short by a suspend or stop.
    pub complete: bool,
}

impl PassReport {
    /// Nothing differed.
    pub fn clean(&self) -> bool {
        self.complete && self.mismatched.is_empty()
    }

    /// Every chunk matched, at once or right after its re-sync. On a table
    /// that keeps being written a pass is rarely clean; in sync is enough
    /// before the window, which checks again with the table renamed away.
    pub fn in_sync(&self) -> bool {
        self.complete && self.unresolved.is_empty()
    }
}

/// Rows and checksum of one side of a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub rows: i64,
    pub checksum: String,
}

/// The shadow's summaries after a pass. Only the engine writes the shadow,
/// so they stay true until it does; the next pass then reads only the source.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub chunks: Vec<(Chunk, Summary)>,
    pub taken: Instant,
    /// With a change-tracking column: rows written since the pass began have
    /// the column at or above this (see `tracking`).
    pub mark: Option<String>,
    /// The change capture's log was emptied before this pass began: the
    /// window re-syncs only the rows it notes (see `capture`).
    pub captured: bool,
}

struct ChunkResult {
    source: Summary,
    target: Summary,
    mismatched: bool,
    resynced: i64,
}

/// Compares (and re-syncs) every chunk with `parallelism` workers. With a
/// `baseline` its chunks are reused and only the source side is read. With
/// `mark_sql` (change tracking) the mark is read before anything else.
pub async fn verify_pass(
    job: &Arc<Job>,
    statements: Arc<RowStatements>,
    batch_rows: i64,
    control: &Control,
    baseline: Option<&Baseline>,
    mark_sql: Option<&str>,
) -> Result<(PassReport, Baseline), DbError> {
    let taken = Instant::now();
    let mark = match mark_sql {
        Some(sql) => Some(
            job.session()
                .retry("mark changes", |c| async move {
                    Ok(c.query_one(sql, &[]).await.ctx("mark changes")?.get::<_, String>(0))
                })
                .await?,
        ),
        None => None,
    };
    // Chunks are cut on one connection while the workers compare the ones
    // already cut: the cutting walks the whole id index and would otherwise
    // run before any comparison starts.
    let stop = Arc::new(AtomicBool::new(false));
    let (work_tx, work_rx) = mpsc::channel::<(Chunk, Option<Summary>)>(256);
    let producer = {
        let (statements, stop) = (statements.clone(), stop.clone());
        // No chunks known (the copy verified by the capture): cut them afresh.
        let known: Option<Vec<(Chunk, Summary)>> = baseline.filter(|b| !b.chunks.is_empty()).map(|b| b.chunks.clone());
        let mut session = job.session();
        tokio::spawn(async move {
            match known {
                Some(chunks) => {
                    let total = chunks.len();
                    for (chunk, summary) in chunks {
                        if stop.load(Ordering::SeqCst) || work_tx.send((chunk, Some(summary))).await.is_err() {
                            break;
                        }
                    }
                    Ok(total)
                }
                None => cut_chunks(&mut session, &statements, &work_tx, &stop).await,
            }
        })
    };
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (tx, mut rx) = mpsc::channel(64);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..job.settings.parallelism.max(1) {
        let (work, tx, statements, control, stop) =
            (work_rx.clone(), tx.clone(), statements.clone(), control.clone(), stop.clone());
        let mut session = job.session();
        tasks.spawn(async move {
            loop {
                if halted(&control).is_some() || stop.load(Ordering::SeqCst) {
                    return;
                }
                let Some((chunk, known)) = work.lock().await.recv().await else { return };
                let result = check_chunk(&mut session, &statements, chunk, known, batch_rows).await;
                let failed = result.is_err();
                if tx.send((chunk, result)).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut report = PassReport::default();
    let mut summaries = Vec::new();
    let mut failure = None;
    while let Some((chunk, result)) = rx.recv().await {
        match result {
            Ok(r) => {
                report.source_rows += r.source.rows;
                report.target_rows += r.target.rows;
                report.rows_resynced += r.resynced;
                if r.mismatched {
                    report.mismatched.push(chunk);
                }
                if r.source != r.target {
                    report.unresolved.push(chunk);
                }
                summaries.push((chunk, r.target));
                failpoint::hit("verify-chunk");
            }
            Err(e) => {
                failure.get_or_insert(e);
                stop.store(true, Ordering::SeqCst);
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    // The workers stopped: release the producer if it waits on a full channel.
    drop(work_rx);
    let total = match producer.await {
        Ok(Ok(total)) => total,
        Ok(Err(e)) => return Err(failure.unwrap_or(e)),
        Err(join) => return Err(DbError::engine("cut verification chunks", join.to_string())),
    };
    if let Some(e) = failure {
        return Err(e);
    }
    report.chunks = total;
    report.complete = summaries.len() == total;
    report.mismatched.sort_by_key(|c| c.lo);
    report.unresolved.sort_by_key(|c| c.lo);
    summaries.sort_by_key(|(c, _)| c.lo);
    Ok((report, Baseline { chunks: summaries, taken, mark, captured: false }))
}

/// Cuts chunks of [`CHUNK_ROWS`] source rows, covering every bigint, and
/// sends each as soon as it is known. Returns how many it sent.
async fn cut_chunks(
    session: &mut Session,
    s: &RowStatements,
    out: &mpsc::Sender<(Chunk, Option<Summary>)>,
    stop: &AtomicBool,
) -> Result<usize, DbError> {
    let mut lo = i64::MIN;
    let mut sent = 0;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(sent);
        }
        let end = session
            .retry("cut verification chunks", |c| async move {
                let row = c.query_opt(&s.chunk_end, &[&lo, &(CHUNK_ROWS - 1)]).await.ctx("cut verification chunks")?;
                Ok(row.map(|r| r.get::<_, i64>(0)))
            })
            .await?;
        let (chunk, last) = next_chunk(lo, end);
        if out.send((chunk, None)).await.is_err() {
            return Ok(sent);
        }
        sent += 1;
        if last {
            return Ok(sent);
        }
        lo = chunk.hi + 1;
    }
}

async fn summary(session: &mut Session, sql: &str, chunk: Chunk) -> Result<Summary, DbError> {
    session
        .retry("compare chunk", |c| async move {
            let row = c.query_one(sql, &[&chunk.lo, &chunk.hi]).await.ctx("summarize chunk")?;
            Ok(Summary { rows: row.get(0), checksum: row.get(1) })
        })
        .await
}

async fn check_chunk(
    session: &mut Session,
    s: &RowStatements,
    chunk: Chunk,
    known_target: Option<Summary>,
    batch_rows: i64,
) -> Result<ChunkResult, DbError> {
    let source = summary(session, &s.source_summary, chunk).await?;
    let target = match known_target {
        Some(t) => t,
        None => summary(session, &s.target_summary, chunk).await?,
    };
    if source == target {
        return Ok(ChunkResult { source, target, mismatched: false, resynced: 0 });
    }
    tracing::info!(chunk = %chunk, source_rows = source.rows, shadow_rows = target.rows, "chunk differs; re-syncing");
    let resynced = resync_rows(session, s, chunk, batch_rows).await?;
    let source = summary(session, &s.source_summary, chunk).await?;
    let target = summary(session, &s.target_summary, chunk).await?;
    Ok(ChunkResult { source, target, mismatched: true, resynced })
}

/// Buckets a differing chunk is compared in, to re-sync only where rows differ.
pub const BUCKETS: i64 = 32;

/// The id buckets of a chunk: `(base, width)` over the ids actually present,
/// or None when the chunk is empty or its span does not fit.
async fn bucket_grid(session: &mut Session, s: &RowStatements, chunk: Chunk) -> Result<Option<(i64, i64)>, DbError> {
    let sql = &s.extent_in;
    let extent: Option<(i64, i64)> = session
        .retry("find rows to re-sync", |c| async move {
            let row = c.query_one(sql.as_str(), &[&chunk.lo, &chunk.hi]).await.ctx("find rows to re-sync")?;
            Ok(row.get::<_, Option<i64>>(0).zip(row.get::<_, Option<i64>>(1)))
        })
        .await?;
    Ok(extent.and_then(|(lo, hi)| Some((lo, hi.checked_sub(lo)?.checked_add(1)?.div_euclid(BUCKETS) + 1))))
}

/// The sub-ranges of `chunk` whose rows differ between source and target.
async fn differing_buckets(session: &mut Session, s: &RowStatements, chunk: Chunk) -> Result<Vec<Chunk>, DbError> {
    let Some((base, width)) = bucket_grid(session, s, chunk).await? else { return Ok(vec![chunk]) };
    let sql = (&s.source_buckets, &s.target_buckets);
    let (source, target) = session
        .retry("compare buckets", |c| async move {
            let read = |rows: Vec<tokio_postgres::Row>| {
                rows.iter()
                    .map(|r| (r.get::<_, i64>(0), (r.get::<_, i64>(1), r.get::<_, String>(2))))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&chunk.lo, &chunk.hi, &base, &width];
            let source = read(c.query(sql.0.as_str(), &params).await.ctx("compare source buckets")?);
            let target = read(c.query(sql.1.as_str(), &params).await.ctx("compare shadow buckets")?);
            Ok((source, target))
        })
        .await?;
    let mut differ: Vec<i64> =
        source.keys().chain(target.keys()).copied().filter(|b| source.get(b) != target.get(b)).collect();
    differ.sort_unstable();
    differ.dedup();
    Ok(differ
        .into_iter()
        .map(|b| {
            let lo = base.saturating_add(b.saturating_mul(width));
            Chunk { lo: lo.max(chunk.lo), hi: lo.saturating_add(width - 1).min(chunk.hi) }
        })
        .collect())
}

/// Deletes the shadow's rows of `chunk` that differ from the source or are
/// gone from it, then copies the source's rows it lacks, bucket by bucket
/// where they differ. Returns rows touched.
async fn resync_rows(session: &mut Session, s: &RowStatements, chunk: Chunk, batch_rows: i64) -> Result<i64, DbError> {
    let mut resynced = 0;
    for part in differing_buckets(session, s, chunk).await? {
        if s.update_first {
            resynced += update_forward(session, &s.update_differing, part, batch_rows).await?;
        }
        for statement in [&s.delete_stale, &s.insert_missing] {
            resynced += repeat_until_short(session, statement, part, batch_rows).await?;
        }
    }
    Ok(resynced)
}

/// Re-syncs `chunk` and says whether source and shadow then match.
pub async fn resync_chunk(
    session: &mut Session,
    s: &RowStatements,
    chunk: Chunk,
    batch_rows: i64,
) -> Result<bool, DbError> {
    resync_rows(session, s, chunk, batch_rows).await?;
    let source = summary(session, &s.source_summary, chunk).await?;
    let target = summary(session, &s.target_summary, chunk).await?;
    Ok(source == target)
}

/// Runs an update of `LIMIT $3` rows in `[$1, $2]` that returns their ids,
/// each run from past the highest id the last one updated: a row the update
/// cannot make equal is passed, never updated again and again.
async fn update_forward(session: &mut Session, sql: &str, chunk: Chunk, batch_rows: i64) -> Result<i64, DbError> {
    let mut limit = batch_rows;
    let (mut from, mut total) = (chunk.lo, 0);
    loop {
        let ids: Vec<i64> = match session
            .retry("re-sync chunk", |c| async move {
                let rows = c.query(sql, &[&from, &chunk.hi, &limit]).await.ctx("re-sync chunk")?;
                Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
            })
            .await
        {
            Ok(ids) => ids,
            Err(e) if e.class.wants_smaller_piece() && limit > 1 => {
                limit = (limit / 2).max(1);
                continue;
            }
            Err(e) => return Err(e),
        };
        total += ids.len() as i64;
        match ids.iter().max() {
            Some(&top) if (ids.len() as i64) >= limit && top < chunk.hi => from = top + 1,
            _ => return Ok(total),
        }
    }
}

/// Runs a `LIMIT $3` statement until it touches fewer rows than the limit:
/// each run is its own transaction within the mutation limit.
async fn repeat_until_short(session: &mut Session, sql: &str, chunk: Chunk, batch_rows: i64) -> Result<i64, DbError> {
    let mut limit = batch_rows;
    let mut total = 0;
    loop {
        let n = match session
            .retry("re-sync chunk", |c| async move {
                c.execute(sql, &[&chunk.lo, &chunk.hi, &limit]).await.ctx("re-sync chunk")
            })
            .await
        {
            Ok(n) => n as i64,
            Err(e) if e.class.wants_smaller_piece() && limit > 1 => {
                limit = (limit / 2).max(1);
                continue;
            }
            Err(e) => return Err(e),
        };
        total += n;
        if n < limit {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_bigint_exactly_once() {
        let mut lo = i64::MIN;
        let mut chunks = Vec::new();
        for end in [Some(100), Some(250), None] {
            let (chunk, last) = next_chunk(lo, end);
            chunks.push(chunk);
            if last {
                break;
            }
            lo = chunk.hi + 1;
        }
        assert_eq!(
            chunks,
            vec![Chunk { lo: i64::MIN, hi: 100 }, Chunk { lo: 101, hi: 250 }, Chunk { lo: 251, hi: i64::MAX }]
        );
        assert_eq!(next_chunk(i64::MIN, Some(i64::MAX)), (Chunk { lo: i64::MIN, hi: i64::MAX }, true));
        assert_eq!(chunks[1].to_string(), "101-250");
    }

    #[test]
    fn a_pass_is_clean_only_when_complete_and_matching() {
        let mut r = PassReport { complete: true, ..Default::default() };
        assert!(r.clean() && r.in_sync());
        r.mismatched.push(Chunk { lo: 1, hi: 2 });
        assert!(!r.clean());
        assert!(r.in_sync(), "re-synced: in sync");
        r.unresolved.push(Chunk { lo: 1, hi: 2 });
        assert!(!r.in_sync());
        assert!(!PassReport::default().clean() && !PassReport::default().in_sync(), "cut short");
    }
}

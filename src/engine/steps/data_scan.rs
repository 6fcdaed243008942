//! Runs the read-only scan of [`crate::engine::plan::changes::scan`]: every
//! check over the table in batches of keys, a failing conversion bisected to
//! its rows. Reads only; what breaks the new shape comes back as findings,
//! and a check the server cannot run at all (a `using` that names no column,
//! say) as bad input on the change's field.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use crate::db::{DbError, Dialect, ErrorContext, Session};
use crate::engine::error::EngineError;
use crate::engine::job::Job;
use crate::engine::plan::changes::scan::{
    Finder, Finding, InvalidData, MAX_BISECTED, MAX_IDS, SCAN_BATCH_ROWS, Scan, ScanCheck,
};
use crate::engine::plan::validate::InvalidInput;

/// What one check found so far.
#[derive(Default)]
struct Tally {
    rows: u64,
    at_least: bool,
    ids: Vec<i64>,
}

impl Tally {
    fn add(&mut self, ids: &[i64]) {
        self.rows += ids.len() as u64;
        let room = MAX_IDS.saturating_sub(self.ids.len());
        self.ids.extend(ids.iter().take(room));
    }
}

/// Scans the table; Err(InvalidData) when any row breaks a check. The key
/// windows are walked on `session`; `workers` sessions (the copy's
/// parallelism) check them at once, and the findings are added up in key
/// order, so the ids named are the lowest whatever finished first.
pub async fn scan_data(job: &Job, session: &mut Session, scan: &Scan) -> Result<(), EngineError> {
    // Every check read by the server first, rows or not: on an empty table
    // a CHECK naming no column is still refused, never taken as made.
    for check in &scan.checks {
        let sql = match &check.finder {
            Finder::Rows(sql) | Finder::Converts(sql) | Finder::Table(sql) => sql.as_str(),
        };
        session
            .retry("scan: read a check", |c| async move { c.prepare(sql).await.ctx("scan: read a check").map(drop) })
            .await
            .map_err(|e| refused(check, e))?;
    }
    let mut tallies: Vec<Tally> = scan.checks.iter().map(|_| Tally::default()).collect();
    for (check, tally) in scan.checks.iter().zip(&mut tallies) {
        if let Finder::Table(sql) = &check.finder {
            let ids = keys(session, check, sql, None).await?;
            tally.add(&ids);
        }
    }
    if job.dialect == Dialect::Postgres && whole_table_fits(session, scan).await? {
        return match broken(scan, tallies) {
            Some(found) => Err(EngineError::InvalidData(found)),
            None => Ok(()),
        };
    }
    // Windows are cut on this session while up to `workers` are checked.
    let pool = std::sync::Mutex::new(Vec::<Session>::new());
    // Per check: the rows its bisections have found, in every window.
    let bisected: Vec<AtomicUsize> = scan.checks.iter().map(|_| AtomicUsize::new(0)).collect();
    let workers = job.settings.parallelism.max(1);
    let mut in_flight = FuturesOrdered::new();
    let (mut after, mut walked) = (i64::MIN, false);
    loop {
        while in_flight.len() < workers && !walked {
            match next_window(session, scan, after).await? {
                Some(last) => {
                    in_flight.push_back(check_window(job, &pool, &bisected, scan, (after, last)));
                    after = last;
                }
                None => walked = true,
            }
        }
        // In key order, whatever finished first.
        let Some(window) = in_flight.next().await else { break };
        for (tally, (ids, cut_short)) in tallies.iter_mut().zip(window?) {
            tally.add(&ids);
            tally.at_least |= cut_short;
        }
    }
    match broken(scan, tallies) {
        Some(found) => Err(EngineError::InvalidData(found)),
        None => Ok(()),
    }
}

/// Every check some rows break, with what the tallies found.
fn broken(scan: &Scan, tallies: Vec<Tally>) -> Option<InvalidData> {
    let findings: Vec<Finding> = scan
        .checks
        .iter()
        .zip(tallies)
        .filter(|(_, t)| t.rows > 0)
        .map(|(c, t)| Finding {
            field: c.field.clone(),
            what: c.what.clone(),
            rows: t.rows,
            at_least: t.at_least,
            ids: t.ids,
        })
        .collect();
    (!findings.is_empty()).then(|| InvalidData::new(findings))
}

/// Whether no row breaks a windowed check, each asked of the whole table in
/// one statement. On PostgreSQL that is a plain sequential read with no
/// transaction limit to stay under, several times cheaper than walking the
/// key windows; only when a check finds something are the windows walked,
/// to name the rows.
async fn whole_table_fits(session: &mut Session, scan: &Scan) -> Result<bool, EngineError> {
    let (all_after, all_through) = (i64::MIN, i64::MAX);
    for check in &scan.checks {
        let fits = match &check.finder {
            Finder::Rows(sql) => {
                let sql = &format!("SELECT NOT EXISTS ({sql})");
                session
                    .retry("scan the table", |c| async move {
                        let row = c.query_one(sql.as_str(), &[&all_after, &all_through]).await.ctx("scan the table")?;
                        Ok(row.get::<_, bool>(0))
                    })
                    .await
                    .map_err(|e| refused(check, e))?
            }
            Finder::Converts(sql) => converts(session, check, sql, all_after, all_through).await?,
            Finder::Table(_) => true,
        };
        if !fits {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The last key of the window after `after`, None past the last row.
async fn next_window(session: &mut Session, scan: &Scan, after: i64) -> Result<Option<i64>, EngineError> {
    let sql = scan.next_batch.as_str();
    let (last, rows): (Option<i64>, i64) = session
        .retry("scan: next batch", |c| async move {
            let row = c.query_one(sql, &[&after, &SCAN_BATCH_ROWS]).await.ctx("scan: next batch")?;
            Ok((row.get(0), row.get(1)))
        })
        .await?;
    Ok(last.filter(|_| rows > 0))
}

/// The keys in the window `(after, last]` that break each check, in the
/// checks' order (with whether the bisection stopped short), on a session of
/// `pool` (a new one when all are busy). `bisected`: per check, the rows its
/// bisections have found in every window, which stop at [`MAX_BISECTED`].
async fn check_window(
    job: &Job,
    pool: &std::sync::Mutex<Vec<Session>>,
    bisected: &[AtomicUsize],
    scan: &Scan,
    (after, last): (i64, i64),
) -> Result<Vec<(Vec<i64>, bool)>, EngineError> {
    let taken = pool.lock().expect("scan pool").pop();
    let mut session = taken.unwrap_or_else(|| job.session());
    let mut out = Vec::with_capacity(scan.checks.len());
    for (check, bisected) in scan.checks.iter().zip(bisected) {
        let found = match &check.finder {
            Finder::Rows(sql) => (keys(&mut session, check, sql, Some((after, last))).await?, false),
            Finder::Converts(sql) if converts(&mut session, check, sql, after, last).await? => (Vec::new(), false),
            Finder::Converts(sql) => {
                let all = keys(&mut session, check, &scan.keys_in, Some((after, last))).await?;
                bisect(&mut session, check, sql, &all, bisected).await?
            }
            Finder::Table(_) => (Vec::new(), false),
        };
        out.push(found);
    }
    pool.lock().expect("scan pool").push(session);
    Ok(out)
}

/// Finds the rows among `keys` whose conversion fails, halving the range
/// each time, until [`MAX_BISECTED`] are found by all windows together
/// (`bisected`; then true: there may be more).
async fn bisect(
    session: &mut Session,
    check: &ScanCheck,
    sql: &str,
    keys: &[i64],
    bisected: &AtomicUsize,
) -> Result<(Vec<i64>, bool), EngineError> {
    let mut found = Vec::new();
    let mut pending = vec![keys];
    while let Some(part) = pending.pop() {
        if bisected.load(Ordering::Relaxed) >= MAX_BISECTED {
            return Ok((found, true));
        }
        let (Some(first), Some(last)) = (part.first(), part.last()) else { continue };
        if converts(session, check, sql, first - 1, *last).await? {
            continue;
        }
        if part.len() == 1 {
            found.extend_from_slice(part);
            bisected.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (low, high) = part.split_at(part.len() / 2);
        // The lower half last in, first out: ids are found lowest first.
        pending.push(high);
        pending.push(low);
    }
    Ok((found, false))
}

/// Whether every row in `(after, last]` converts.
async fn converts(
    session: &mut Session,
    check: &ScanCheck,
    sql: &str,
    after: i64,
    last: i64,
) -> Result<bool, EngineError> {
    let ran = session
        .retry(
            "scan: convert",
            |c| async move { c.query_one(sql, &[&after, &last]).await.ctx("scan: convert").map(|_| ()) },
        )
        .await;
    match ran {
        Ok(()) => Ok(true),
        Err(e) if e.sqlstate.as_deref().is_some_and(|s| s.starts_with("22")) => Ok(false),
        Err(e) => Err(refused(check, e)),
    }
}

/// The keys a finder returns, over `(after, last]` or the whole table.
async fn keys(
    session: &mut Session,
    check: &ScanCheck,
    sql: &str,
    range: Option<(i64, i64)>,
) -> Result<Vec<i64>, EngineError> {
    let ran = session
        .retry("scan", |c| async move {
            let rows = match &range {
                Some((after, last)) => c.query(sql, &[after, last]).await,
                None => c.query(sql, &[]).await,
            };
            Ok(rows.ctx("scan")?.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<i64>>())
        })
        .await;
    ran.map_err(|e| refused(check, e))
}

/// A check the server cannot run: a syntax error or an unknown name in an
/// expression of the spec is the spec's fault, and so is a value an earlier
/// change cannot convert (class 22, met reading the rows as that change
/// leaves them): ALTER TABLE refuses both. Anything else is the database's.
fn refused(check: &ScanCheck, e: DbError) -> EngineError {
    if e.sqlstate.as_deref().is_some_and(|s| s.starts_with("42") || s.starts_with("22")) {
        return InvalidInput::one(&check.field, format!("the server cannot check it: {}", e.message)).into();
    }
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_keeps_the_first_ten_ids_and_counts_every_row() {
        let mut tally = Tally::default();
        tally.add(&(1..=7).collect::<Vec<_>>());
        tally.add(&(8..=20).collect::<Vec<_>>());
        assert_eq!(tally.rows, 20);
        assert_eq!(tally.ids, (1..=10).collect::<Vec<_>>());
    }
}

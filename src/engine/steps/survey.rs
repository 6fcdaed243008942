//! Validating's database half: read the table, check it against the spec
//! (preflight), and measure it for the plan. Reads only; shared by the engine
//! and the `plan` command.

use super::catalog;
use super::fidelity::with_fidelity;
use crate::api::RangeCheckpoint;
use crate::db::Dialect;
use crate::db::{DbError, ErrorContext, Session};
use crate::engine::error::EngineError;
use crate::engine::job::Job;
use crate::engine::plan::batches::{self, indexes_during_copy, next_span, range_count, split_by_quantiles};
use crate::engine::plan::ddl::index_builds;
use crate::engine::plan::names::derived_name;
use crate::engine::plan::preflight::{Route, preflight, route_for};
use crate::engine::plan::shape::{ConstraintKind, TableShape};
use crate::engine::plan::sql::RowStatements;

/// What the engine knows about the table before it changes anything.
#[derive(Clone, Debug)]
pub struct Survey {
    pub shape: TableShape,
    /// Lowest and highest id, None for an empty table.
    pub extent: Option<(i64, i64)>,
    pub rows: i64,
    pub widest_row: i64,
    /// Rows per copy transaction.
    pub batch_rows: i64,
    pub ranges: Vec<RangeCheckpoint>,
}

pub async fn survey(job: &Job) -> Result<Survey, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    let shape = session.retry("read table", |c| async move { catalog::read_shape(&c, &s.source).await }).await?;
    let shape = match shape {
        // Read as the database keeps it (a PostgreSQL table planned for DSQL
        // shows everything DSQL will not carry).
        Some(shape) => Some(with_fidelity(&mut session, shape, job.connector.dialect()).await?),
        None => None,
    };
    let mut names = vec![s.shadow.name.clone(), s.old.name.clone()];
    if let Some(shape) = &shape {
        names.extend(
            shape
                .constraints
                .iter()
                .filter(|c| c.kind != ConstraintKind::Check)
                .map(|c| derived_name(&c.name, &s.source.name, &s.shadow.name)),
        );
        names.extend(index_builds(shape, &s.source, &s.shadow, job.dialect).into_iter().map(|i| i.name));
    }
    let names = &names;
    let around = session
        .retry("check names", |c| async move { catalog::surroundings(&c, &s.source.schema, names).await })
        .await?;
    let route = route_for(s.strategy, job.dialect);
    preflight(s, shape.as_ref(), &around, job.dialect, route)?;
    let shape = shape.expect("preflight refuses a missing table");

    let measured = measure(job, &mut session, &shape, route == Route::InPlace).await?;
    Ok(Survey { shape, ..measured })
}

/// The table measured for the copy: its ids, rows, widest row, and the
/// batches and ranges of a copy into a table of `shape` (the source's, or a
/// rebuild's new table). `estimate_only`: the statistics' row count is enough.
pub async fn measure(
    job: &Job,
    session: &mut Session,
    shape: &TableShape,
    estimate_only: bool,
) -> Result<Survey, EngineError> {
    let s = &job.settings;
    // Only ids are read here, which every change leaves as they are: the
    // table itself (the new table may not exist yet).
    let statements = RowStatements::new(&s.source, &s.shadow, &s.id_column, shape, job.dialect, s.generation);
    let estimate = shape.estimated_rows;
    let extent = read_extent(session, &statements).await?;
    // Exact on PostgreSQL (cheap); DSQL's statistics where it has them, else a
    // count by id slices: one count(*) of a big table passes DSQL's 5 minutes.
    let rows = match (job.dialect, extent) {
        (Dialect::Dsql, _) if estimate > 0 => estimate,
        (_, None) => 0,
        // In place copies nothing: the statistics' estimate is enough for the
        // plan, and the run stays O(1) in the table's size.
        _ if estimate_only => estimate.max(0),
        (Dialect::Dsql, Some((min, max))) => count_by_slices(session, &statements.source_count_in, min, max).await?,
        (Dialect::Postgres, Some(_)) => {
            let count_sql = &format!("SELECT count(*)::bigint FROM {}", s.source);
            session
                .retry("count rows", |c| async move { Ok(c.query_one(count_sql, &[]).await.ctx("count rows")?.get(0)) })
                .await?
        }
    };
    let table = &s.source;
    let widest_row =
        session.retry("sample rows", |c| async move { Ok(catalog::widest_row_bytes(&c, table).await) }).await?;
    let batch_rows = batches::batch_rows(s, indexes_during_copy(shape), widest_row);
    let id = s.id_column.as_str();
    let bounds =
        session.retry("read id statistics", |c| async move { Ok(catalog::id_histogram(&c, table, id).await) }).await?;
    let ranges = match extent {
        Some((min, max)) => split_by_quantiles(min, max, &bounds, range_count(s.parallelism, rows, batch_rows)),
        None => Vec::new(),
    };
    Ok(Survey { shape: shape.clone(), extent, rows, widest_row, batch_rows, ranges })
}

/// Rows one counting statement aims at: far inside DSQL's transaction age.
pub const COUNT_SLICE_ROWS: i64 = 1_000_000;

/// Counts the rows in `[min, max]` one id slice per statement (`count_in`
/// takes the inclusive bounds `$1`, `$2`). Slices follow the density of ids,
/// and a slice that runs into the transaction age limit is halved.
async fn count_by_slices(session: &mut Session, count_in: &str, min: i64, max: i64) -> Result<i64, DbError> {
    let (mut lo, mut span, mut total) = (min, COUNT_SLICE_ROWS, 0i64);
    loop {
        let hi = lo.saturating_add(span - 1).min(max);
        let counted = session
            .retry("count rows", |c| async move {
                Ok(c.query_one(count_in, &[&lo, &hi]).await.ctx("count rows")?.get::<_, i64>(0))
            })
            .await;
        match counted {
            Ok(n) => {
                total += n;
                if hi >= max {
                    return Ok(total);
                }
                span = next_span(span, n, COUNT_SLICE_ROWS, hi - lo + 1);
                lo = hi + 1;
            }
            Err(e) if e.class.wants_smaller_piece() && span > 1 => span = (span / 2).max(1),
            Err(e) => return Err(e),
        }
    }
}

/// The lowest and highest id of the table (`shape`, as the source is),
/// None when it is empty.
pub async fn id_extent(job: &Job, session: &mut Session, shape: &TableShape) -> Result<Option<(i64, i64)>, DbError> {
    let s = &job.settings;
    let statements = RowStatements::new(&s.source, &s.shadow, &s.id_column, shape, job.dialect, s.generation);
    read_extent(session, &statements).await
}

async fn read_extent(session: &mut Session, statements: &RowStatements) -> Result<Option<(i64, i64)>, DbError> {
    let extent_sql = &statements.source_extent;
    session
        .retry("read id range", |c| async move {
            let row = c.query_one(extent_sql, &[]).await.ctx("read id range")?;
            Ok(row.get::<_, Option<i64>>(0).zip(row.get::<_, Option<i64>>(1)))
        })
        .await
}

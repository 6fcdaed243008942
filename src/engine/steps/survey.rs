//! Validating's database half: read the table, check it against the spec
//! (preflight), and measure it for the plan. Reads only; shared by the engine
//! and the `plan` command.

use super::catalog;
use crate::api::RangeCheckpoint;
use crate::db::Dialect;
use crate::db::ErrorContext;
use crate::engine::error::EngineError;
use crate::engine::job::Job;
use crate::engine::plan::batches::{self, indexes_during_copy, range_count, split_by_quantiles};
use crate::engine::plan::ddl::{derived_name, index_builds};
use crate::engine::plan::shape::{ConstraintKind, TableShape};
use crate::engine::plan::validate::preflight;

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
    preflight(s, shape.as_ref(), &around, job.dialect)?;
    let shape = shape.expect("preflight refuses a missing table");

    let statements = job.statements(&shape, &s.source, &s.shadow);
    let estimate = shape.estimated_rows;
    let count_sql = &format!("SELECT count(*)::bigint FROM {}", s.source);
    let (extent_sql, dialect) = (&statements.source_extent, job.dialect);
    let (extent, rows) = session
        .retry("measure table", |c| async move {
            let row = c.query_one(extent_sql, &[]).await.ctx("read id range")?;
            let extent: Option<(i64, i64)> = row.get::<_, Option<i64>>(0).zip(row.get::<_, Option<i64>>(1));
            // Exact on PostgreSQL (cheap); DSQL's statistics where it has them.
            let rows = if dialect == Dialect::Dsql && estimate > 0 {
                estimate
            } else {
                c.query_one(count_sql, &[]).await.ctx("count rows")?.get(0)
            };
            Ok((extent, rows))
        })
        .await?;
    let table = &s.source;
    let widest_row =
        session.retry("sample rows", |c| async move { Ok(catalog::widest_row_bytes(&c, table).await) }).await?;
    let batch_rows = batches::batch_rows(s, indexes_during_copy(&shape), widest_row);
    let id = s.id_column.as_str();
    let bounds =
        session.retry("read id statistics", |c| async move { Ok(catalog::id_histogram(&c, table, id).await) }).await?;
    let ranges = match extent {
        Some((min, max)) => split_by_quantiles(min, max, &bounds, range_count(s.parallelism, rows, batch_rows)),
        None => Vec::new(),
    };
    Ok(Survey { shape, extent, rows, widest_row, batch_rows, ranges })
}

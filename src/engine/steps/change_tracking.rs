//! `spec.copy.changeTrackingColumn`: with a column that every write sets (an
//! `updated_at`), the cut-over window copies only the rows written since the
//! last verification pass began, then compares row counts per chunk, instead
//! of checksumming every row.
//!
//! Why that is enough: after the changed rows are copied again, a row can
//! differ only by being present in the shadow and gone from the source (a
//! delete leaves no trace in the column). Such a chunk has more rows in the
//! shadow than in the source, which the counts show; it is then re-synced
//! row by row.

use std::sync::Arc;

use crate::api::Generation;

use super::verify::{Baseline, Chunk, resync_chunk};
use crate::db::{DbError, Dialect, ErrorContext};
use crate::engine::job::Job;
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::TableName;
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::sql::{RowStatements, column_list};

/// Rows changed since the last pass may be stamped by clocks this far behind
/// the database's (application servers setting `updated_at`).
pub const CLOCK_MARGIN_SECONDS: i64 = 5;

/// Statements over the change-tracking column `tc` of `source`, copying into `target`.
#[derive(Clone, Debug)]
pub struct TrackedStatements {
    /// The mark to keep for the next window: rows written from now on have `tc >= mark`.
    pub mark: String,
    /// Up to `$3` ids in `($2, $4]` whose `tc >= $1` (the mark, as text): one
    /// id slice at a time, so no statement reads the whole table.
    pub changed_ids: String,
    /// Removes the target rows of the ids in `$1`.
    pub delete_ids: String,
    /// Copies the source rows of the ids in `$1`.
    pub insert_ids: String,
}

impl TrackedStatements {
    pub fn new(
        source: &TableName,
        target: &TableName,
        id: &str,
        shape: &TableShape,
        tc: &str,
        generation: Generation,
        dialect: Dialect,
    ) -> Self {
        let id_q = ident(id);
        let tc_q = ident(tc);
        // The column's type as the catalog printed it.
        let tc_type = shape.column(tc).map(|c| c.data_type.clone()).unwrap_or_else(|| "timestamptz".into());
        let cols = column_list(&shape.insertable_columns(), None);
        let src_cols = column_list(&shape.insertable_columns(), Some("s"));
        Self {
            mark: mark_sql(dialect, &tc_type),
            changed_ids: format!(
                "SELECT {id_q}::bigint FROM {source} WHERE {tc_q} >= CAST($1::text AS {tc_type}) AND {id_q} > $2::bigint \
                 AND {id_q} <= $4::bigint ORDER BY {id_q} LIMIT $3::bigint"
            ),
            delete_ids: format!("DELETE FROM {target} WHERE {id_q} = ANY($1::bigint[])"),
            insert_ids: format!(
                "INSERT INTO {target} ({cols}){} SELECT {src_cols} FROM {source} s WHERE s.{id_q} = ANY($1::bigint[])",
                match generation {
                    Generation::ByDefault => "",
                    Generation::Always => " OVERRIDING SYSTEM VALUE",
                }
            ),
        }
    }
}

/// DSQL ends every transaction within this many seconds.
pub const DSQL_TRANSACTION_AGE_SECONDS: i64 = 300;

/// The mark: a stamp that no commit after it can carry an older one of.
/// A transaction stamps rows with its start time (`now()`) or later, and may
/// commit long after it began, after its chunk was compared; so the mark is
/// the start of the oldest transaction still open (PostgreSQL; the preflight
/// makes sure every session can be seen), or on DSQL the oldest start any
/// transaction can have, less the margin for application clocks.
fn mark_sql(dialect: Dialect, tc_type: &str) -> String {
    match dialect {
        Dialect::Postgres => format!(
            "SELECT (least(clock_timestamp(), (SELECT min(xact_start) FROM pg_catalog.pg_stat_activity \
             WHERE xact_start IS NOT NULL AND pid <> pg_catalog.pg_backend_pid())) \
             - interval '{CLOCK_MARGIN_SECONDS} seconds')::{tc_type}::text"
        ),
        Dialect::Dsql => format!(
            "SELECT (clock_timestamp() - interval '{} seconds')::{tc_type}::text",
            DSQL_TRANSACTION_AGE_SECONDS + CLOCK_MARGIN_SECONDS
        ),
    }
}

/// What the window did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackedSync {
    pub rows_recopied: i64,
    pub chunks_resynced: Vec<Chunk>,
    /// Chunks still different after their re-sync.
    pub unresolved: Vec<Chunk>,
}

/// Contiguous id slices `(after, through]` that cover every id: one per
/// verified chunk, below the first and above the last.
fn id_slices(chunks: impl Iterator<Item = Chunk>) -> Vec<(i64, i64)> {
    let mut slices = Vec::new();
    let mut after = i64::MIN;
    for chunk in chunks {
        if chunk.hi > after {
            slices.push((after, chunk.hi));
            after = chunk.hi;
        }
    }
    if after < i64::MAX {
        slices.push((after, i64::MAX));
    }
    slices
}

/// Copies the rows changed since `mark`, then re-syncs chunks whose counts differ.
pub async fn sync_tracked(
    job: &Arc<Job>,
    tracked: &TrackedStatements,
    rows: &RowStatements,
    mark: &str,
    baseline: &Baseline,
    batch_rows: i64,
) -> Result<TrackedSync, DbError> {
    let mut session = job.session();
    let mut result = TrackedSync::default();
    let mut limit = batch_rows;
    for (start, end) in id_slices(baseline.chunks.iter().map(|(c, _)| *c)) {
        let mut after = start;
        loop {
            let sql = &tracked.changed_ids;
            let ids: Vec<i64> = session
                .retry("find changed rows", |c| async move {
                    let found = c.query(sql.as_str(), &[&mark, &after, &limit, &end]).await.ctx("find changed rows")?;
                    Ok(found.iter().map(|r| r.get(0)).collect())
                })
                .await?;
            let Some(&last) = ids.last() else { break };
            let ids = &ids;
            let copied = async {
                for sql in [&tracked.delete_ids, &tracked.insert_ids] {
                    session
                        .retry("copy changed rows", |c| async move {
                            c.execute(sql.as_str(), &[ids]).await.ctx("copy changed rows")
                        })
                        .await?;
                }
                Ok::<_, DbError>(())
            }
            .await;
            match copied {
                Ok(()) => {}
                Err(e) if e.class.wants_smaller_piece() && limit > 1 => {
                    limit = (limit / 2).max(1);
                    continue;
                }
                Err(e) => return Err(e),
            }
            result.rows_recopied += ids.len() as i64;
            after = last;
        }
    }
    for (chunk, _) in &baseline.chunks {
        let counts = (&rows.source_count_in, &rows.target_count_in);
        let chunk = *chunk;
        let (source, target): (i64, i64) = session
            .retry("count chunk", |c| async move {
                let s = c.query_one(counts.0.as_str(), &[&chunk.lo, &chunk.hi]).await.ctx("count source")?.get(0);
                let t = c.query_one(counts.1.as_str(), &[&chunk.lo, &chunk.hi]).await.ctx("count shadow")?.get(0);
                Ok((s, t))
            })
            .await?;
        if source != target {
            result.chunks_resynced.push(chunk);
            if !resync_chunk(&mut session, rows, chunk, batch_rows).await? {
                result.unresolved.push(chunk);
            }
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::post_tag_shape;

    #[test]
    fn statements_follow_the_column_type() {
        let shape = post_tag_shape();
        let t = TrackedStatements::new(
            &TableName::new("public", "post_tag_old"),
            &TableName::new("public", "post_tag_new"),
            "id",
            &shape,
            "created_at",
            Generation::ByDefault,
            Dialect::Postgres,
        );
        // Not the clock alone: the start of the oldest open transaction.
        assert!(t.mark.contains("least(clock_timestamp(), (SELECT min(xact_start) FROM pg_catalog.pg_stat_activity"));
        assert!(t.mark.ends_with("- interval '5 seconds')::timestamp without time zone::text"), "{}", t.mark);
        assert!(t.changed_ids.contains("\"created_at\" >= CAST($1::text AS timestamp without time zone)"));
        assert!(t.insert_ids.starts_with("INSERT INTO \"public\".\"post_tag_new\""));
        let t = TrackedStatements::new(
            &TableName::new("p", "a"),
            &TableName::new("p", "b"),
            "id",
            &shape,
            "created_at",
            Generation::ByDefault,
            Dialect::Dsql,
        );
        assert_eq!(
            t.mark, "SELECT (clock_timestamp() - interval '305 seconds')::timestamp without time zone::text",
            "no DSQL transaction is older than 300 s"
        );
    }

    #[test]
    fn changed_rows_are_looked_for_one_id_slice_at_a_time() {
        let t = TrackedStatements::new(
            &TableName::new("public", "post_tag_old"),
            &TableName::new("public", "post_tag_new"),
            "id",
            &post_tag_shape(),
            "created_at",
            Generation::ByDefault,
            Dialect::Postgres,
        );
        assert!(t.changed_ids.contains("\"id\" > $2::bigint AND \"id\" <= $4::bigint"), "{}", t.changed_ids);
        let chunks = [Chunk { lo: 1, hi: 100 }, Chunk { lo: 101, hi: 250 }];
        let slices = id_slices(chunks.into_iter());
        assert_eq!(slices, vec![(i64::MIN, 100), (100, 250), (250, i64::MAX)], "every id in exactly one slice");
        assert_eq!(id_slices(std::iter::empty()), vec![(i64::MIN, i64::MAX)]);
    }
}

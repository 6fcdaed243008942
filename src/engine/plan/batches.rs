//! How much each transaction and each worker takes on: batch sizes within
//! DSQL's limits, the id span a batch reads, and how the ids are cut into
//! ranges for the workers. Pure.

use super::quotas::{BYTE_BUDGET, MUTATION_BUDGET};
use super::shape::TableShape;
use super::validate::Settings;
use crate::api::RangeCheckpoint;

/// Ranges per worker: enough that workers finishing early find more work.
pub const RANGES_PER_WORKER: usize = 4;

/// Source rows per verification chunk: each compare reads this many rows from
/// each table in one statement, far inside DSQL's time and memory limits.
pub const CHUNK_ROWS: i64 = 20_000;
/// Secondary indexes present while rows are copied: unique constraints are
/// created with the table; plain indexes are built after the copy.
pub fn indexes_during_copy(shape: &TableShape) -> usize {
    shape.constraint_indexes()
}

/// Rows per transaction that keep `(1 + indexes) * rows` within the mutation
/// budget and `rows * row_bytes * (1 + indexes)` within the byte budget.
pub fn auto_batch_rows(secondary_indexes: usize, max_row_bytes: i64) -> i64 {
    let per_row = 1 + secondary_indexes as i64;
    let by_rows = MUTATION_BUDGET / per_row;
    let by_bytes = BYTE_BUDGET / (max_row_bytes.max(1) * per_row);
    by_rows.min(by_bytes).max(1)
}

/// The batch for a copy or re-sync with `secondary_indexes` present: the user's
/// choice when given (validated against the limit on DSQL), else automatic.
pub fn batch_rows(settings: &Settings, secondary_indexes: usize, max_row_bytes: i64) -> i64 {
    settings.batch_rows.unwrap_or_else(|| auto_batch_rows(secondary_indexes, max_row_bytes))
}

/// The id span a range's first batch reads: enough ids to hold `batch_rows`
/// rows at the range's average density (`rows` over `[id_min, id_max]`).
pub fn initial_span(batch_rows: i64, rows: i64, id_min: i64, id_max: i64) -> i64 {
    let ids = (id_max as i128 - id_min as i128 + 1).max(1);
    let rows = rows.max(1) as i128;
    let span = (batch_rows.max(1) as i128 * ids).div_euclid(rows);
    span.clamp(batch_rows.max(1) as i128, i64::MAX as i128 / 4) as i64
}

/// The id span for the next batch. Each batch reads only `(after, after + span]`,
/// so its cost stays bounded even under a poor query plan (a table without
/// statistics gets a bitmap scan of the whole range otherwise). A full batch
/// shows the span that holds `limit` rows; a short one scales the span up, at
/// most fourfold per batch.
pub fn next_span(span: i64, rows: i64, limit: i64, used_span: i64) -> i64 {
    let next = if rows >= limit {
        used_span.max(1)
    } else if rows == 0 {
        span.saturating_mul(4)
    } else {
        let scaled = span as i128 * limit as i128 / rows as i128;
        scaled.min(span as i128 * 4) as i64
    };
    next.clamp(1, i64::MAX / 4)
}

/// The batch for re-syncing rows once every index exists (verification, the
/// window, rollback): the user's choice when given, else automatic.
pub fn resync_batch_rows(settings: &Settings, shape: &TableShape, widest_row: i64) -> i64 {
    settings.batch_rows.unwrap_or_else(|| auto_batch_rows(shape.secondary_indexes(), widest_row))
}

/// Splits `[min, max]` into at most `parts` contiguous ranges of equal id width.
pub fn split_ranges(min: i64, max: i64, parts: usize) -> Vec<RangeCheckpoint> {
    if max < min {
        return Vec::new();
    }
    let width = max as i128 - min as i128 + 1;
    let parts = (parts.max(1) as i128).min(width);
    let step = width / parts;
    let extra = width % parts;
    let mut out = Vec::with_capacity(parts as usize);
    let mut from = min as i128;
    for i in 0..parts {
        let len = step + if i < extra { 1 } else { 0 };
        let to = from + len - 1;
        out.push(RangeCheckpoint::new(from as i64, to as i64));
        from = to + 1;
    }
    out
}

/// Splits `[min, max]` into `parts` ranges holding about equal numbers of
/// rows, at quantiles of the id column (`bounds`: ascending histogram bounds,
/// as the planner's statistics keep them). Ids are rarely spread evenly (a
/// jump, a few outliers far above the rest); equal id widths would then hand
/// one worker nearly every row. Without usable bounds, equal widths.
pub fn split_by_quantiles(min: i64, max: i64, bounds: &[i64], parts: usize) -> Vec<RangeCheckpoint> {
    let inside: Vec<i64> = bounds.iter().copied().filter(|b| *b > min && *b < max).collect();
    if parts <= 1 || inside.len() < parts {
        return split_ranges(min, max, parts);
    }
    let mut cuts: Vec<i64> = (1..parts).map(|i| inside[i * inside.len() / parts]).collect();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut from = min;
    for cut in cuts {
        out.push(RangeCheckpoint::new(from, cut));
        from = cut + 1;
    }
    out.push(RangeCheckpoint::new(from, max));
    out
}

/// How many ranges to cut: a few per worker, but not ranges of less than a few batches.
pub fn range_count(parallelism: usize, rows_estimated: i64, batch_rows: i64) -> usize {
    let by_rows = (rows_estimated.max(0) / (batch_rows.max(1) * 2)).max(1) as usize;
    (parallelism * RANGES_PER_WORKER).min(by_rows).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::quotas::DSQL_MUTATION_LIMIT;

    #[test]
    fn batch_size_keeps_every_transaction_within_the_mutation_budget() {
        assert_eq!(auto_batch_rows(0, 60), 2900);
        assert_eq!(auto_batch_rows(1, 60), 1450);
        assert_eq!(auto_batch_rows(3, 60), 725);
        for indexes in 0..24 {
            let rows = auto_batch_rows(indexes, 100);
            assert!(rows * (1 + indexes as i64) <= MUTATION_BUDGET);
            assert!(rows * (1 + indexes as i64) < DSQL_MUTATION_LIMIT);
        }
    }

    #[test]
    fn wide_rows_shrink_the_batch_to_the_byte_budget() {
        let rows = auto_batch_rows(0, 64 * 1024);
        assert_eq!(rows, 128);
        assert!(rows * 64 * 1024 <= BYTE_BUDGET);
        assert_eq!(auto_batch_rows(0, 100 * 1024 * 1024), 1, "never zero");
    }

    #[test]
    fn batch_spans_follow_the_density_of_ids() {
        assert_eq!(initial_span(2900, 1_000_000, 1, 1_000_000), 2900, "dense ids");
        assert_eq!(initial_span(2900, 1_000_000, 1, 10_000_000), 29_000, "one id in ten used");
        assert_eq!(initial_span(2900, 0, 5, 5), 2900, "never below the batch");
        assert_eq!(initial_span(2900, 1, i64::MIN, i64::MAX), i64::MAX / 4, "no overflow");
        // A full batch teaches the span that held it.
        assert_eq!(next_span(29_000, 2900, 2900, 4_000), 4_000);
        // A short batch grows the span towards a full one, at most fourfold.
        assert_eq!(next_span(1000, 1450, 2900, 1000), 2000);
        assert_eq!(next_span(1000, 10, 2900, 1000), 4000);
        assert_eq!(next_span(1000, 0, 2900, 1000), 4000);
        assert_eq!(next_span(i64::MAX / 4, 0, 2900, 1), i64::MAX / 4);
    }

    #[test]
    fn ranges_cover_the_ids_exactly_once() {
        let r = split_ranges(1, 1_048_576, 16);
        assert_eq!(r.len(), 16);
        assert_eq!(r[0], RangeCheckpoint { from: 1, to: 65536, copied_through: 0 });
        assert_eq!(r[15].to, 1_048_576);
        for w in r.windows(2) {
            assert_eq!(w[0].to + 1, w[1].from);
        }
        let uneven = split_ranges(10, 20, 3);
        assert_eq!(uneven.iter().map(|r| r.to - r.from + 1).sum::<i64>(), 11);
        assert_eq!(split_ranges(5, 5, 8), vec![RangeCheckpoint::new(5, 5)]);
        assert!(split_ranges(5, 4, 8).is_empty());
        let extreme = split_ranges(i64::MIN, i64::MAX, 4);
        assert_eq!(extreme.first().unwrap().from, i64::MIN);
        assert_eq!(extreme.last().unwrap().to, i64::MAX);
        assert_eq!(extreme.first().unwrap().copied_through, i64::MIN, "saturates below the first id");
    }

    #[test]
    fn quantile_ranges_share_skewed_ids_fairly() {
        // Nine tenths of the ids below 1,000, a tenth far above.
        let bounds: Vec<i64> = (0..=90).map(|i| i * 11).chain((1..=10).map(|i| 5_000_000 + i * 100)).collect();
        let ranges = split_by_quantiles(1, 5_001_000, &bounds, 4);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].from, 1);
        assert_eq!(ranges[3].to, 5_001_000);
        for w in ranges.windows(2) {
            assert_eq!(w[0].to + 1, w[1].from, "contiguous");
        }
        assert!(ranges[2].to < 1_000, "three ranges share the dense ids: {ranges:?}");
        // Equal widths would put nearly every row in the first range.
        assert!(split_ranges(1, 5_001_000, 4)[0].to > 1_000);
        // Without statistics: equal widths.
        assert_eq!(split_by_quantiles(1, 100, &[], 4), split_ranges(1, 100, 4));
        assert_eq!(split_by_quantiles(1, 100, &[5, 50], 4), split_ranges(1, 100, 4));
    }

    #[test]
    fn range_count_scales_with_workers_and_rows() {
        assert_eq!(range_count(4, 1_000_000, 2900), 16);
        assert_eq!(range_count(4, 100, 2900), 1);
        assert_eq!(range_count(1, 1_000_000, 2900), 4);
    }
}

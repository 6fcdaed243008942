//! From a table's shape and the validated settings to what the engine will do:
//! the shadow table's DDL, its indexes, the batch size and the id ranges. Pure.

use crate::api::RangeCheckpoint;

use super::shape::{ConstraintKind, TableShape};
use super::sql::{Dialect, TableName, ident};
use super::validate::{MAX_IDENTIFIER_BYTES, Settings};

/// DSQL's quota: rows mutated per transaction, table rows plus index rows.
pub const DSQL_MUTATION_LIMIT: i64 = 3000;
/// What the engine plans for, leaving room for how DSQL counts edge cases.
pub const MUTATION_BUDGET: i64 = 2900;
/// DSQL's 10 MiB per transaction, with the same kind of margin.
pub const BYTE_BUDGET: i64 = 8 * 1024 * 1024;
/// Ranges per worker: enough that workers finishing early find more work.
pub const RANGES_PER_WORKER: usize = 4;

/// An index to build on the shadow table.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexBuild {
    /// The source index it recreates.
    pub source_name: String,
    pub name: String,
    pub sql: String,
}

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

/// A name for an object of the new table, derived from the source object's name:
/// `post_tag_pkey` on `post_tag` becomes `post_tag_new_pkey` on `post_tag_new`.
/// Kept within the identifier limit with a stable hash suffix when too long.
pub fn derived_name(original: &str, source_table: &str, new_table: &str) -> String {
    let candidate = match original.strip_prefix(source_table) {
        Some(rest) if !rest.is_empty() => format!("{new_table}{rest}"),
        _ => format!("{new_table}_{original}"),
    };
    fit_identifier(&candidate)
}

fn fit_identifier(name: &str) -> String {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name.to_string();
    }
    let hash = fnv1a(name.as_bytes());
    let mut cut = MAX_IDENTIFIER_BYTES - 9;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}", &name[..cut], hash as u32)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

/// `CREATE TABLE` for the shadow table: every column with its type, default,
/// NOT NULL and collation; the id as a `bigint` identity `BY DEFAULT` (so the
/// copy keeps ids); the primary key, unique and check constraints.
pub fn create_shadow_table(shape: &TableShape, settings: &Settings) -> String {
    let source = &settings.source.name;
    let shadow = &settings.shadow.name;
    let mut parts = Vec::new();
    for col in &shape.columns {
        let mut def = format!("    {} ", ident(&col.name));
        if col.name == settings.id_column {
            def.push_str(&format!("bigint GENERATED BY DEFAULT AS IDENTITY (CACHE {}) NOT NULL", settings.cache));
            parts.push(def);
            continue;
        }
        def.push_str(&col.data_type);
        if let Some(collation) = &col.collation {
            def.push_str(&format!(" COLLATE {collation}"));
        }
        if let Some(expr) = &col.generated {
            def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
        } else if let Some(default) = &col.default {
            def.push_str(&format!(" DEFAULT {default}"));
        }
        if col.not_null {
            def.push_str(" NOT NULL");
        }
        parts.push(def);
    }
    for con in &shape.constraints {
        let name = match con.kind {
            // Index-backed constraint names are unique per schema: derive new ones.
            ConstraintKind::PrimaryKey | ConstraintKind::Unique => derived_name(&con.name, source, shadow),
            ConstraintKind::Check => con.name.clone(),
        };
        parts.push(format!("    CONSTRAINT {} {}", ident(&name), con.definition));
    }
    format!("CREATE TABLE {} (\n{}\n)", settings.shadow, parts.join(",\n"))
}

/// The secondary indexes of the source, recreated on `table` (the shadow).
pub fn index_builds(shape: &TableShape, source: &TableName, table: &TableName, dialect: Dialect) -> Vec<IndexBuild> {
    shape
        .indexes
        .iter()
        .map(|index| {
            let name = derived_name(&index.name, &source.name, &table.name);
            let unique = if index.unique { "UNIQUE " } else { "" };
            let sql = match dialect {
                Dialect::Postgres => format!(
                    "CREATE {unique}INDEX {} ON {table} USING {} {}",
                    ident(&name),
                    index.method,
                    index.definition
                ),
                Dialect::Dsql => {
                    format!("CREATE {unique}INDEX ASYNC {} ON {table} {}", ident(&name), index.definition)
                }
            };
            IndexBuild { source_name: index.name.clone(), name, sql }
        })
        .collect()
}

/// The part of `pg_get_indexdef` after `USING <method> `, checked against the
/// prefix PostgreSQL prints (the table named with or without its schema).
/// The names are as `quote_ident` prints them.
pub fn index_definition_tail(
    def: &str,
    unique: bool,
    index: &str,
    schema: &str,
    table: &str,
    method: &str,
) -> Option<String> {
    let head = format!("CREATE {}INDEX {index} ON ", if unique { "UNIQUE " } else { "" });
    let rest = def.strip_prefix(&head)?;
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    let using = format!(" USING {method} ");
    [format!("{schema}.{table}"), table.to_string()]
        .iter()
        .find_map(|name| rest.strip_prefix(name.as_str())?.strip_prefix(using.as_str()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::shape::Index;
    use crate::engine::testing::{post_tag_shape, spec_for};
    use crate::engine::validate::{TargetSource, validate_spec};

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

    #[test]
    fn derived_names_follow_the_table_and_fit_the_limit() {
        assert_eq!(derived_name("post_tag_pkey", "post_tag", "post_tag_new"), "post_tag_new_pkey");
        assert_eq!(derived_name("idx_post", "post_tag", "post_tag_new"), "post_tag_new_idx_post");
        let long = derived_name(&"x".repeat(60), "t", "t_new");
        assert_eq!(long.len(), MAX_IDENTIFIER_BYTES);
        assert_eq!(long, derived_name(&"x".repeat(60), "t", "t_new"), "stable");
        assert_ne!(long, derived_name(&format!("{}y", "x".repeat(59)), "t", "t_new"));
        let multibyte = derived_name(&"é".repeat(40), "t", "t_new");
        assert!(multibyte.len() <= MAX_IDENTIFIER_BYTES);
    }

    #[test]
    fn shadow_table_clones_columns_and_constraints_with_an_identity_id() {
        let settings = validate_spec(&spec_for("post_tag"), TargetSource::Spec).unwrap();
        let ddl = create_shadow_table(&post_tag_shape(), &settings);
        assert_eq!(
            ddl,
            "CREATE TABLE \"public\".\"post_tag_new\" (\n\
             \x20   \"id\" bigint GENERATED BY DEFAULT AS IDENTITY (CACHE 65536) NOT NULL,\n\
             \x20   \"post_id\" character varying NOT NULL,\n\
             \x20   \"tag_id\" character varying NOT NULL,\n\
             \x20   \"created_at\" timestamp without time zone DEFAULT CURRENT_TIMESTAMP,\n\
             \x20   CONSTRAINT \"post_tag_new_pkey\" PRIMARY KEY (id)\n\
             )"
        );
    }

    #[test]
    fn integer_ids_are_widened_and_generated_columns_kept() {
        let mut shape = post_tag_shape();
        shape.columns[0].data_type = "integer".into();
        shape.columns[1].generated = Some("lower((tag_id)::text)".into());
        shape.columns[1].collation = Some("\"C\"".into());
        let mut spec = spec_for("post_tag");
        spec.identity.cache = 1;
        let settings = validate_spec(&spec, TargetSource::Spec).unwrap();
        let ddl = create_shadow_table(&shape, &settings);
        assert!(ddl.contains("\"id\" bigint GENERATED BY DEFAULT AS IDENTITY (CACHE 1) NOT NULL"));
        assert!(ddl.contains(
            "\"post_id\" character varying COLLATE \"C\" GENERATED ALWAYS AS (lower((tag_id)::text)) STORED NOT NULL"
        ));
        assert_eq!(shape.insertable_columns(), vec!["id", "tag_id", "created_at"]);
    }

    #[test]
    fn indexes_are_recreated_under_derived_names_in_either_dialect() {
        let shape = post_tag_shape();
        let source = TableName::new("public", "post_tag");
        let shadow = source.sibling("post_tag_new");
        let pg = index_builds(&shape, &source, &shadow, Dialect::Postgres);
        assert_eq!(pg[0].name, "post_tag_new_post_id_idx");
        assert_eq!(
            pg[0].sql,
            "CREATE INDEX \"post_tag_new_post_id_idx\" ON \"public\".\"post_tag_new\" USING btree (post_id)"
        );
        let dsql = index_builds(&shape, &source, &shadow, Dialect::Dsql);
        assert_eq!(
            dsql[0].sql,
            "CREATE INDEX ASYNC \"post_tag_new_post_id_idx\" ON \"public\".\"post_tag_new\" (post_id)"
        );
        let mut unique = shape.clone();
        unique.indexes = vec![Index {
            name: "u".into(),
            unique: true,
            method: "btree".into(),
            definition: "(lower(tag_id)) WHERE (post_id IS NOT NULL)".into(),
        }];
        let b = index_builds(&unique, &source, &shadow, Dialect::Postgres);
        assert_eq!(
            b[0].sql,
            "CREATE UNIQUE INDEX \"post_tag_new_u\" ON \"public\".\"post_tag_new\" USING btree (lower(tag_id)) WHERE (post_id IS NOT NULL)"
        );
    }

    #[test]
    fn index_definition_tail_is_taken_only_after_the_exact_prefix() {
        let tail = index_definition_tail(
            "CREATE INDEX post_tag_post_id_idx ON public.post_tag USING btree (post_id)",
            false,
            "post_tag_post_id_idx",
            "public",
            "post_tag",
            "btree",
        );
        assert_eq!(tail.as_deref(), Some("(post_id)"));
        let tail = index_definition_tail(
            "CREATE UNIQUE INDEX \"Odd USING btree x\" ON \"My S\".\"T USING btree \" USING btree (a) INCLUDE (b)",
            true,
            "\"Odd USING btree x\"",
            "\"My S\"",
            "\"T USING btree \"",
            "btree",
        );
        assert_eq!(tail.as_deref(), Some("(a) INCLUDE (b)"));
        let tail = index_definition_tail("CREATE INDEX i ON t USING btree (a)", false, "i", "public", "t", "btree");
        assert_eq!(tail.as_deref(), Some("(a)"), "unqualified when the schema is on the search path");
        assert_eq!(
            index_definition_tail("CREATE INDEX j ON t USING hash (a)", false, "i", "public", "t", "btree"),
            None
        );
    }
}

//! Identifier quoting and the statements the engine runs. Pure: every function
//! returns text, so `plan` prints exactly what the engine executes.
//!
//! Every identifier goes through [`ident`]; user input never reaches SQL any other
//! way. Values travel as bind parameters (`$1`, ...).

use super::quote::{ident, literal};
use super::shape::{TableName, TableShape};
use crate::api::Generation;
use crate::db::Dialect;

/// Starts a copy batch: one snapshot for reading its bounds and copying its
/// rows. DSQL transactions are always repeatable read (snapshot isolation).
pub fn begin_batch(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Dsql => "BEGIN",
        Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ",
    }
}

/// Comma-separated quoted column names, optionally prefixed with a table alias.
pub fn column_list(columns: &[String], alias: Option<&str>) -> String {
    columns
        .iter()
        .map(|c| match alias {
            Some(a) => format!("{a}.{}", ident(c)),
            None => ident(c),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Statements that move rows between two tables of the same shape, by id.
///
/// Built once per migration; `$1`/`$2` are the exclusive lower and inclusive
/// upper id bounds and `$3` the row limit, all `bigint`.
#[derive(Clone, Debug)]
pub struct RowStatements {
    /// Copies the next `$3` source rows in `($1, $2]`, keeping ids, in one
    /// statement; returns rows of `(highest id, rows)` to add up (never the rows' data).
    pub copy_batch: String,
    /// `copy_batch` as the engine runs it: on PostgreSQL its commit does not
    /// wait for the WAL to reach the disk. A batch lost to a server crash is
    /// found and copied again by verification, which reads every row of both
    /// tables after making them durable (`copy::flush_copied`). About a tenth
    /// of the copy's time at 1M rows (docs/benchmarks.md).
    pub copy_batch_unflushed: String,
    /// Fallback when `copy_batch` meets rows already copied: `(upper bound of
    /// the batch, rows in it)` among at most `$3` rows in `($1, $2]`, ...
    pub batch_bounds: String,
    /// ... then copies `($1, $2]` skipping existing ids, in the same snapshot.
    pub copy_range: String,
    /// `(rows, checksum)` of the source in `[$1, $2]`.
    pub source_summary: String,
    /// `(rows, checksum)` of the target in `[$1, $2]`.
    pub target_summary: String,
    /// `(rows, checksum)` of the source's, and the target's, rows whose ids
    /// are in `$1` (a bigint array): the rows the capture noted, checked
    /// after their re-sync.
    pub source_summary_ids: String,
    pub target_summary_ids: String,
    /// Deletes up to `$3` target rows in `[$1, $2]` that differ from the source or are
    /// gone from it.
    pub delete_stale: String,
    /// Inserts up to `$3` source rows in `[$1, $2]` missing from the target.
    pub insert_missing: String,
    /// Updates up to `$3` target rows in `[$1, $2]` that differ from the
    /// source's row of the same id, in id order; returns their ids.
    pub update_differing: String,
    /// `delete_stale`, `insert_missing` and `update_differing` over the rows
    /// whose ids are in `$1` (a bigint array), with no limit: the window's
    /// re-sync of the rows the capture noted.
    pub delete_stale_ids: String,
    pub insert_missing_ids: String,
    pub update_differing_ids: String,
    /// Re-syncs update differing rows before deleting what is left: set where
    /// the source reads values from the target itself (a rollback's dropped
    /// column), which a deleted row would no longer have.
    pub update_first: bool,
    /// `max(id)` of the target in `[$1, $2]`.
    pub target_max_in: String,
    /// `(max(id), rows)` of the target in `($1, $2]`: what a batch copied.
    pub copied_in: String,
    /// Source rows, and target rows, in `[$1, $2]`.
    pub source_count_in: String,
    pub target_count_in: String,
    /// The source id `$2` rows past the first id at or above `$1`: where a
    /// verification chunk of `$2 + 1` rows ends.
    pub chunk_end: String,
    /// `(min(id), max(id))` of the source.
    pub source_extent: String,
    /// `(bucket, rows, checksum)` of the source in `[$1, $2]`, ids grouped in
    /// buckets of `$4` ids counted from `$3`: where in a chunk rows differ.
    pub source_buckets: String,
    pub target_buckets: String,
    /// `(min(id), max(id))` of source and target together in `[$1, $2]`.
    pub extent_in: String,
}

impl RowStatements {
    /// `source` is a table, or a FROM item giving the source's rows in the
    /// target's shape (a rebuild's). Inserts write the insertable columns
    /// (stored generated columns are computed); checksums cover every column. With `generation: Always` the
    /// target's id may be `GENERATED ALWAYS` (a roll-forward after a rollback
    /// copies into it), so inserts say `OVERRIDING SYSTEM VALUE`.
    pub fn new(
        source: &dyn std::fmt::Display,
        target: &TableName,
        id: &str,
        shape: &TableShape,
        dialect: Dialect,
        generation: Generation,
    ) -> Self {
        // A FROM item (a rebuild's rows) needs an alias where a table needs none.
        let bare = source.to_string();
        let src = if bare.starts_with('(') { format!("{bare} src") } else { bare };
        let columns = &shape.insertable_columns();
        let all_columns = &shape.all_columns();
        let id_q = ident(id);
        let cols = column_list(columns, None);
        let into = match generation {
            Generation::ByDefault => format!("INSERT INTO {target} ({cols})"),
            Generation::Always => format!("INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE"),
        };
        let src_cols = column_list(columns, Some("s"));
        let set_columns: Vec<String> = columns.iter().filter(|c| c.as_str() != id).cloned().collect();
        let row_text = |alias: &str| format!("ROW({})::text", column_list(all_columns, Some(alias)));
        // The checksum of a chunk. On PostgreSQL each row gets a 64-bit hash
        // (`row_hash`, many times cheaper than md5 of its text) and the hashes
        // are summed exactly: `sum(bigint)` adds in 128 bits and returns a
        // numeric, a third cheaper than casting each hash to numeric. DSQL
        // gets only standard text functions: the md5 of every row's md5, in
        // id order.
        let checksum = match dialect {
            Dialect::Postgres => {
                format!("coalesce(sum({}), 0)::text", row_hash(shape, "r"))
            }
            Dialect::Dsql => format!("coalesce(md5(string_agg(md5({}), '' ORDER BY r.{id_q})), '')", row_text("r")),
        };
        let summary = |table: &dyn std::fmt::Display| {
            format!(
                "SELECT count(*)::bigint, {checksum} \
                 FROM {table} r WHERE r.{id_q} >= $1::bigint AND r.{id_q} <= $2::bigint"
            )
        };
        let summary_ids = |table: &dyn std::fmt::Display| {
            format!("SELECT count(*)::bigint, {checksum} FROM {table} r WHERE r.{id_q} = ANY($1::bigint[])")
        };
        let buckets = |table: &dyn std::fmt::Display| {
            format!(
                "SELECT ((r.{id_q} - $3::bigint) / $4::bigint)::bigint AS bucket, count(*)::bigint, {checksum} \
                 FROM {table} r WHERE r.{id_q} >= $1::bigint AND r.{id_q} <= $2::bigint GROUP BY 1"
            )
        };
        let insert = format!(
            "{into} SELECT {src_cols} FROM {source} s \
             WHERE s.{id_q} > $1::bigint AND s.{id_q} <= $2::bigint ORDER BY s.{id_q} LIMIT $3::bigint"
        );
        // The re-sync's statements, over an id range (`$1`..`$2`, at most
        // `$3` rows) or over a list of ids (`$1`, a bigint array: the
        // window's written rows, see `capture`).
        let range = |alias: &str| format!("{alias}.{id_q} >= $1::bigint AND {alias}.{id_q} <= $2::bigint");
        let ids = |alias: &str| format!("{alias}.{id_q} = ANY($1::bigint[])");
        let (limited, whole) = (" LIMIT $3::bigint", "");
        let delete_stale = |within: &dyn Fn(&str) -> String, limit: &str| {
            format!(
                "DELETE FROM {target} WHERE {id_q} IN (SELECT t.{id_q} FROM {target} t \
                 WHERE {} AND NOT EXISTS \
                 (SELECT 1 FROM {source} s WHERE s.{id_q} = t.{id_q} AND {} = {}) \
                 ORDER BY t.{id_q}{})",
                within("t"),
                row_text("s"),
                row_text("t"),
                limit
            )
        };
        let insert_missing = |within: &dyn Fn(&str) -> String, limit: &str| {
            format!(
                "{into} SELECT {src_cols} FROM {source} s \
                 WHERE {} AND NOT EXISTS \
                 (SELECT 1 FROM {target} t WHERE t.{id_q} = s.{id_q}) \
                 ORDER BY s.{id_q}{} ON CONFLICT DO NOTHING",
                within("s"),
                limit
            )
        };
        let update_differing = |within: &dyn Fn(&str) -> String, limit: &str| {
            format!(
                "UPDATE {target} t SET ({}) = ROW({}) FROM {source} s WHERE s.{id_q} = t.{id_q} AND t.{id_q} IN \
                 (SELECT t2.{id_q} FROM {target} t2 JOIN {source} s2 ON s2.{id_q} = t2.{id_q} \
                 WHERE {} AND {} <> {} \
                 ORDER BY t2.{id_q}{}) RETURNING t.{id_q}::bigint",
                column_list(&set_columns, None),
                column_list(&set_columns, Some("s")),
                within("t2"),
                row_text("s2"),
                row_text("t2"),
                limit
            )
        };
        let (copy_batch, copy_batch_unflushed) = match dialect {
            // One row back instead of every id: the client decodes a row per
            // batch, not thousands, on cores the server needs. The setting is
            // local to the batch's transaction and read at its commit.
            Dialect::Postgres => {
                let head =
                    format!("WITH copied AS ({insert} RETURNING {id_q}) SELECT max({id_q})::bigint, count(*)::bigint");
                let unflushed = format!("{head}, pg_catalog.set_config('synchronous_commit', 'off', true) FROM copied");
                (format!("{head} FROM copied"), unflushed)
            }
            // Whether DSQL takes data-modifying CTEs is not documented: plain RETURNING.
            Dialect::Dsql => {
                let batch = format!("{insert} RETURNING {id_q}::bigint, 1::bigint");
                (batch.clone(), batch)
            }
        };
        Self {
            copy_batch_unflushed,
            copy_batch,
            batch_bounds: format!(
                "SELECT max(b.id), count(*)::bigint FROM (SELECT {id_q}::bigint AS id FROM {src} \
                 WHERE {id_q} > $1::bigint AND {id_q} <= $2::bigint ORDER BY {id_q} LIMIT $3::bigint) b"
            ),
            copy_range: format!(
                "{into} SELECT {src_cols} FROM {source} s \
                 WHERE s.{id_q} > $1::bigint AND s.{id_q} <= $2::bigint ORDER BY s.{id_q} ON CONFLICT DO NOTHING"
            ),
            source_summary: summary(source),
            target_summary: summary(target),
            source_summary_ids: summary_ids(source),
            target_summary_ids: summary_ids(target),
            source_buckets: buckets(source),
            target_buckets: buckets(target),
            extent_in: format!(
                "SELECT min(x.id), max(x.id) FROM (SELECT {id_q}::bigint AS id FROM {src} \
                 WHERE {id_q} >= $1::bigint AND {id_q} <= $2::bigint UNION ALL SELECT {id_q}::bigint FROM {target} \
                 WHERE {id_q} >= $1::bigint AND {id_q} <= $2::bigint) x"
            ),
            delete_stale: delete_stale(&range, limited),
            insert_missing: insert_missing(&range, limited),
            update_differing: update_differing(&range, limited),
            delete_stale_ids: delete_stale(&ids, whole),
            insert_missing_ids: insert_missing(&ids, whole),
            update_differing_ids: update_differing(&ids, whole),
            update_first: false,
            target_max_in: format!(
                "SELECT max({id_q})::bigint FROM {target} WHERE {id_q} >= $1::bigint AND {id_q} <= $2::bigint"
            ),
            copied_in: format!(
                "SELECT max({id_q})::bigint, count(*)::bigint FROM {target} \
                 WHERE {id_q} > $1::bigint AND {id_q} <= $2::bigint"
            ),
            source_count_in: format!(
                "SELECT count(*)::bigint FROM {src} WHERE {id_q} >= $1::bigint AND {id_q} <= $2::bigint"
            ),
            target_count_in: format!(
                "SELECT count(*)::bigint FROM {target} WHERE {id_q} >= $1::bigint AND {id_q} <= $2::bigint"
            ),
            chunk_end: format!(
                "SELECT {id_q}::bigint FROM {src} WHERE {id_q} >= $1::bigint ORDER BY {id_q} OFFSET $2::bigint LIMIT 1"
            ),
            source_extent: format!("SELECT min({id_q})::bigint, max({id_q})::bigint FROM {src}"),
        }
    }
}

/// A 64-bit hash of a row: each column hashed by its type's own hash
/// function, seeded by its position (so that values trading columns or rows
/// show), a NULL by a constant of its own, and the hashes XORed. A quarter
/// cheaper than `hash_record_extended(ROW(...))` (0.16 s against 0.22 s for
/// 1M rows), which looks every column's type up again for each row.
///
/// A column goes in as it is only where its hash equality is exactly value
/// equality; the rest go in as text (numeric hashes ignore scale, floats
/// equate -0 and 0, and some types have no hash at all). `integer` and
/// `bigint` hash alike, so a widened id compares equal. Text hashes under
/// `COLLATE "C"`, by its bytes: under a nondeterministic collation `'Alice'`
/// and `'alice'` hash alike, and a case-only change would pass unseen. A
/// `timestamptz` hashes as its UTC time, one to one.
pub fn row_hash(shape: &TableShape, alias: &str) -> String {
    let cols: Vec<String> = shape
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let col = format!("{alias}.{}", ident(&c.name));
            let seed = i as i64 + 1;
            let hash = column_hash(&col, &c.data_type, seed);
            // A NULL's stand-in: a constant no column's seed shares.
            format!("coalesce({hash}, {})", NULL_HASH ^ seed)
        })
        .collect();
    format!("({})", cols.join(" # "))
}

/// Arbitrary: XORed with the column's position for the hash of its NULL.
const NULL_HASH: i64 = 0x5bd1_e995_7a3c_0f11;

fn column_hash(col: &str, data_type: &str, seed: i64) -> String {
    let t = data_type;
    if !exact_hash(t) {
        return format!("hashtextextended({col}::text COLLATE \"C\", {seed})");
    }
    match t {
        "smallint" | "integer" | "bigint" => format!("hashint8extended({col}::bigint, {seed})"),
        "boolean" => format!("hashint8extended({col}::int::bigint, {seed})"),
        "uuid" => format!("uuid_hash_extended({col}, {seed})"),
        "\"char\"" => format!("hashcharextended({col}, {seed})"),
        "time without time zone" => format!("time_hash_extended({col}, {seed})"),
        _ if is_text(t) => format!("hashtextextended({col} COLLATE \"C\", {seed})"),
        _ if t.starts_with("timestamp") && t.ends_with("with time zone") && !t.ends_with("without time zone") => {
            format!("timestamp_hash_extended({col} AT TIME ZONE 'UTC', {seed})")
        }
        _ if t.starts_with("timestamp") => format!("timestamp_hash_extended({col}, {seed})"),
        // date and bytea: their text is one to one with their value.
        _ => format!("hashtextextended({col}::text, {seed})"),
    }
}

fn is_text(data_type: &str) -> bool {
    data_type == "text" || data_type.starts_with("character varying")
}

fn exact_hash(data_type: &str) -> bool {
    const EXACT: &[&str] = &[
        "smallint",
        "integer",
        "bigint",
        "text",
        "boolean",
        "date",
        "uuid",
        "bytea",
        "timestamp without time zone",
        "timestamp with time zone",
        "time without time zone",
    ];
    EXACT.contains(&data_type)
        || data_type.starts_with("character varying")
        || data_type.starts_with("timestamp(")
        || data_type == "\"char\""
}

/// `ALTER TABLE t RENAME TO n` (the new name is unqualified: a rename stays in its schema).
pub fn rename_table(table: &TableName, new_name: &str) -> String {
    format!("ALTER TABLE {table} RENAME TO {}", ident(new_name))
}

pub fn restart_identity(table: &TableName, id: &str, restart_with: i64) -> String {
    format!("ALTER TABLE {table} ALTER COLUMN {} RESTART WITH {restart_with}", ident(id))
}

/// Fallback where `RESTART WITH` is refused: the sequence behind the identity.
pub fn setval_identity(table: &TableName, id: &str, restart_with: i64) -> String {
    format!(
        "SELECT setval(pg_get_serial_sequence({}, {}), {}, false)",
        literal(&table.to_string()),
        literal(id),
        restart_with
    )
}

pub fn set_generated_always(table: &TableName, id: &str) -> String {
    format!("ALTER TABLE {table} ALTER COLUMN {} SET GENERATED ALWAYS", ident(id))
}

/// How long the in-place transaction waits for the table's lock: writers
/// queue behind the waiting lock for no longer than this.
pub const IN_PLACE_LOCK_TIMEOUT_MS: u64 = 1000;

/// `LOCK TABLE t IN ACCESS EXCLUSIVE MODE`: in place, nothing reads or writes
/// between the highest id and the identity (PostgreSQL only).
pub fn lock_table(table: &TableName) -> String {
    format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
}

pub fn drop_default(table: &TableName, id: &str) -> String {
    format!("ALTER TABLE {table} ALTER COLUMN {} DROP DEFAULT", ident(id))
}

/// `ADD GENERATED ... AS IDENTITY` on the existing id column, starting past every id.
pub fn add_identity(table: &TableName, id: &str, generation: Generation, start_with: i64, cache: i64) -> String {
    let generation = match generation {
        Generation::ByDefault => "BY DEFAULT",
        Generation::Always => "ALWAYS",
    };
    format!(
        "ALTER TABLE {table} ALTER COLUMN {} ADD GENERATED {generation} AS IDENTITY (START WITH {start_with} CACHE {cache})",
        ident(id)
    )
}

/// The highest id of `table`, as a `bigint` (NULL when empty).
pub fn select_max_id(table: &TableName, id: &str) -> String {
    format!("SELECT max({})::bigint FROM {table}", ident(id))
}

pub fn drop_table(table: &TableName) -> String {
    format!("DROP TABLE {table}")
}

pub fn drop_index(schema: &str, index: &str) -> String {
    format!("DROP INDEX {}.{}", ident(schema), ident(index))
}

/// The sequence behind an identity column, for reading its next value.
pub fn identity_sequence(table: &TableName, id: &str) -> String {
    format!("SELECT pg_get_serial_sequence({}, {})", literal(&table.to_string()), literal(id))
}

/// The first value the identity may hand out: above the highest id and above
/// `startAfter`, and at least 1.
pub fn restart_value(max_id: Option<i64>, start_after: Option<i64>) -> Option<i64> {
    let floor = max_id.unwrap_or(0).max(start_after.unwrap_or(0)).max(0);
    floor.checked_add(1)
}

/// `CALL sys.wait_for_job('<job id>')`: DSQL's procedure that waits for an
/// asynchronous job. `None` unless `job_id` looks like DSQL's ids (lower-case
/// base32), which also keeps it safe inside a literal.
pub fn wait_for_job(job_id: &str) -> Option<String> {
    let plausible = !job_id.is_empty()
        && job_id.len() <= 64
        && job_id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    plausible.then(|| format!("CALL sys.wait_for_job({})", literal(job_id)))
}

/// A job's state and its engine's words, by job id (`$1`).
pub const JOB_STATUS: &str = "SELECT status::text, details::text FROM sys.jobs WHERE job_id = $1::text";

/// What a wait on an asynchronous DSQL job means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobVerdict {
    Done,
    /// Still submitted or processing (the wait timed out): wait again.
    Wait,
    /// The job failed; what DSQL says about it.
    Failed(String),
}

/// `sys.wait_for_job` answered `finished`; when false, `sys.jobs` says the
/// job's `status` and `details`. False means failed *or timed out*.
pub fn job_verdict(finished: bool, status: Option<&str>, details: Option<&str>) -> JobVerdict {
    if finished {
        return JobVerdict::Done;
    }
    let details = details.filter(|d| !d.is_empty());
    match status {
        Some("completed") => JobVerdict::Done,
        Some(s @ ("failed" | "cancelled" | "canceled")) => JobVerdict::Failed(match details {
            Some(d) => format!("{s}: {d}"),
            None => s.to_string(),
        }),
        // submitted, processing, or a row not (yet) visible.
        _ => JobVerdict::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_inner_quotes_doubled() {
        assert_eq!(ident("id"), "\"id\"");
        assert_eq!(ident("Post Tag"), "\"Post Tag\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("x\"; DROP TABLE t; --"), "\"x\"\"; DROP TABLE t; --\"");
    }

    #[test]
    fn literals_double_single_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn table_names_render_qualified() {
        let t = TableName::new("My Schema", "post\"tag");
        assert_eq!(t.to_string(), "\"My Schema\".\"post\"\"tag\"");
        assert_eq!(t.sibling("x").to_string(), "\"My Schema\".\"x\"");
    }

    #[test]
    fn copy_statement_keeps_ids_and_skips_existing_rows() {
        let mut shape = crate::engine::testing::post_tag_shape();
        shape.columns.truncate(2);
        let s = RowStatements::new(
            &TableName::new("public", "post_tag"),
            &TableName::new("public", "post_tag_new"),
            "id",
            &shape,
            Dialect::Postgres,
            Generation::ByDefault,
        );
        assert_eq!(
            s.copy_batch,
            "WITH copied AS (INSERT INTO \"public\".\"post_tag_new\" (\"id\", \"post_id\") SELECT s.\"id\", s.\"post_id\" \
             FROM \"public\".\"post_tag\" s WHERE s.\"id\" > $1::bigint AND s.\"id\" <= $2::bigint \
             ORDER BY s.\"id\" LIMIT $3::bigint RETURNING \"id\") SELECT max(\"id\")::bigint, count(*)::bigint FROM copied"
        );
        // The engine's form commits without waiting for the WAL flush, for
        // that transaction only (verification flushes before it reads).
        assert_eq!(
            s.copy_batch_unflushed,
            s.copy_batch
                .replace(" FROM copied", ", pg_catalog.set_config('synchronous_commit', 'off', true) FROM copied")
        );
        assert!(s.copy_range.ends_with("ORDER BY s.\"id\" ON CONFLICT DO NOTHING"));
        assert!(
            s.source_summary.contains(
                "sum((coalesce(hashint8extended(r.\"id\"::bigint, 1), 6616326155794124560) # \
                 coalesce(hashtextextended(r.\"post_id\" COLLATE \"C\", 2), 6616326155794124563)))"
            ),
            "{}",
            s.source_summary
        );
        assert!(s.batch_bounds.contains("ORDER BY \"id\" LIMIT $3::bigint"));
        assert!(s.source_summary.contains("FROM \"public\".\"post_tag\" r"));
        assert!(s.target_summary.contains("FROM \"public\".\"post_tag_new\" r"));
        // A GENERATED ALWAYS target (a roll-forward after a rollback) takes ids only when told to.
        let always = RowStatements::new(
            &TableName::new("public", "post_tag"),
            &TableName::new("public", "post_tag_new"),
            "id",
            &shape,
            Dialect::Postgres,
            Generation::Always,
        );
        for insert in [&always.copy_batch, &always.copy_range, &always.insert_missing] {
            assert!(insert.contains("(\"id\", \"post_id\") OVERRIDING SYSTEM VALUE SELECT"), "{insert}");
        }
    }

    #[test]
    fn checksums_hash_exact_types_directly_and_the_rest_as_text() {
        let mut shape = crate::engine::testing::post_tag_shape();
        shape.columns[1].data_type = "numeric(10,2)".into();
        shape.columns[2].data_type = "json".into();
        let hash = row_hash(&shape, "r");
        assert!(hash.contains("hashtextextended(r.\"post_id\"::text COLLATE \"C\", 2)"), "{hash}");
        assert!(hash.contains("hashtextextended(r.\"tag_id\"::text COLLATE \"C\", 3)"), "{hash}");
        for (t, h) in [
            ("timestamp with time zone", "timestamp_hash_extended(r.\"created_at\" AT TIME ZONE 'UTC', 4)"),
            ("timestamp(3) with time zone", "timestamp_hash_extended(r.\"created_at\" AT TIME ZONE 'UTC', 4)"),
            ("timestamp(3) without time zone", "timestamp_hash_extended(r.\"created_at\", 4)"),
            ("date", "hashtextextended(r.\"created_at\"::text, 4)"),
            ("integer", "hashint8extended(r.\"created_at\"::bigint, 4)"),
        ] {
            shape.columns[3].data_type = t.into();
            assert!(row_hash(&shape, "r").contains(h), "{t}: {}", row_hash(&shape, "r"));
        }
        let (a, b) = (TableName::new("p", "a"), TableName::new("p", "b"));
        let dsql = RowStatements::new(&a, &b, "id", &shape, Dialect::Dsql, Generation::ByDefault);
        assert!(
            dsql.target_summary.contains("md5(ROW(r.\"id\", r.\"post_id\", r.\"tag_id\", r.\"created_at\")::text)")
        );
        assert!(!dsql.target_summary.contains("extended"));
        assert_eq!(dsql.copy_batch_unflushed, dsql.copy_batch, "DSQL has no synchronous_commit to set");
    }

    #[test]
    fn identity_statements() {
        let t = TableName::new("public", "t");
        assert_eq!(restart_identity(&t, "id", 42), "ALTER TABLE \"public\".\"t\" ALTER COLUMN \"id\" RESTART WITH 42");
        assert_eq!(
            setval_identity(&TableName::new("o'k", "t"), "id", 7),
            "SELECT setval(pg_get_serial_sequence('\"o''k\".\"t\"', 'id'), 7, false)"
        );
        assert_eq!(rename_table(&t, "t_old"), "ALTER TABLE \"public\".\"t\" RENAME TO \"t_old\"");
    }

    #[test]
    fn the_identity_restarts_above_the_highest_id_and_start_after() {
        assert_eq!(restart_value(Some(1_048_576), None), Some(1_048_577));
        assert_eq!(restart_value(Some(10), Some(1_200_000)), Some(1_200_001));
        assert_eq!(restart_value(Some(2_000_000), Some(1_200_000)), Some(2_000_001));
        assert_eq!(restart_value(None, None), Some(1), "empty table");
        assert_eq!(restart_value(Some(-50), None), Some(1), "identity values stay positive");
        assert_eq!(restart_value(Some(i64::MAX), None), None);
    }

    #[test]
    fn a_dsql_job_wait_tells_done_from_failed_from_still_running() {
        assert_eq!(job_verdict(true, None, None), JobVerdict::Done);
        assert_eq!(job_verdict(false, Some("completed"), None), JobVerdict::Done);
        assert_eq!(job_verdict(false, Some("processing"), None), JobVerdict::Wait, "the wait timed out");
        assert_eq!(job_verdict(false, Some("submitted"), None), JobVerdict::Wait);
        assert_eq!(job_verdict(false, None, None), JobVerdict::Wait);
        assert_eq!(
            job_verdict(false, Some("failed"), Some("duplicate key value")),
            JobVerdict::Failed("failed: duplicate key value".into())
        );
        assert_eq!(
            wait_for_job("abcdefghijklmnopqrstuvwxyz").as_deref(),
            Some("CALL sys.wait_for_job('abcdefghijklmnopqrstuvwxyz')"),
            "a procedure: CALL, never SELECT"
        );
        assert_eq!(wait_for_job("x'); DROP TABLE t; --"), None);
    }
}

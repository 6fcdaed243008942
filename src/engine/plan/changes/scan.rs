//! The read-only scan that proves the data fits the new shape before
//! anything changes: per data check, the SQL that finds the rows breaking it,
//! over the table as the changes before it leave each row. Pure.
//!
//! Most checks read the table in batches of keys (`$1` exclusive, `$2`
//! inclusive) and return the keys of offending rows. On PostgreSQL each is
//! first asked of the whole table at once (the widest bounds), and the
//! batches are walked only to name the rows when one finds any. A conversion cannot say
//! which row fails without failing: its query evaluates every row of a batch,
//! and the engine bisects a batch that errors. A uniqueness check reads the
//! whole table at once, as duplicates may lie in different batches.

use std::fmt;

use super::{DataCheck, Rebuild, ScopedCheck, State};
use crate::api::changes::Change;
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::TableName;

/// Rows per scan batch: reads only, so DSQL's write limit does not apply;
/// small enough that each query returns in well under a second.
pub const SCAN_BATCH_ROWS: i64 = 10_000;
/// Ids reported per check.
pub const MAX_IDS: usize = 10;
/// Rows whose conversion fails, found one by one, before the count is given
/// as a lower bound: each costs a few queries.
pub const MAX_BISECTED: usize = 100;

/// Rows that break one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub field: String,
    pub what: String,
    pub rows: u64,
    /// More rows may break it: the count stopped at [`MAX_BISECTED`].
    pub at_least: bool,
    /// Up to [`MAX_IDS`] keys of breaking rows, lowest first.
    pub ids: Vec<i64>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.ids.iter().map(ToString::to_string).collect();
        let more = if self.at_least { "at least " } else { "" };
        let rows = if self.rows == 1 { "row has" } else { "rows have" };
        write!(f, "{}: {more}{} {rows} {} (ids {})", self.field, self.rows, self.what, ids.join(", "))
    }
}

/// The data does not fit the new shape: before anything changed (the scan),
/// or in rows written since, which the new table refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidData {
    pub findings: Vec<Finding>,
    pub since_scan: bool,
}

impl InvalidData {
    pub fn new(findings: Vec<Finding>) -> Self {
        Self { findings, since_scan: false }
    }

    /// The same findings, in rows written after the scan.
    pub fn since_the_scan(self) -> Self {
        Self { since_scan: true, ..self }
    }
}

impl fmt::Display for InvalidData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let each: Vec<String> = self.findings.iter().map(ToString::to_string).collect();
        let said = if self.since_scan {
            "rows written since the data scan do not fit the new shape; the new table refused them, nothing is \
             lost and the cut-over waits: fix the rows and run again"
        } else {
            "the data does not fit the new shape; nothing was changed"
        };
        write!(f, "{said}: {}", each.join("; "))
    }
}

impl std::error::Error for InvalidData {}

/// The column through which every layer carries the table's key.
const KEY: &str = "__idmig_key";

/// How a check's query finds offending rows.
#[derive(Clone, Debug, PartialEq)]
pub enum Finder {
    /// Returns the keys of offending rows in `($1, $2]`.
    Rows(String),
    /// Converts every row in `($1, $2]`; a data error (SQLSTATE class 22)
    /// means some row does not convert.
    Converts(String),
    /// Returns the keys of offending rows in the whole table.
    Table(String),
}

/// One check of the scan: the field of the change that asks for it, what a
/// breaking row has, and how to find them.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanCheck {
    pub field: String,
    pub what: String,
    pub finder: Finder,
}

/// The scan of `table`, keyed by the integer column `key`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// `(last key, rows)` of the next batch of at most `$2` rows after `$1`.
    pub next_batch: String,
    /// The keys in `($1, $2]`, in order: what a failing conversion is bisected over.
    pub keys_in: String,
    pub checks: Vec<ScanCheck>,
}

/// The scan for `changes` to the table as `base` describes it. `key` must
/// not be renamed or dropped by a change (checked by the caller).
pub fn scan(base: &State, changes: &[Change], table: &TableName, key: &str) -> Scan {
    let k = ident(key);
    let checks = match Rebuild::new(base.clone(), changes, 0) {
        Ok(all) => all.data_checks.iter().flat_map(|c| checks_for(&all, c, changes, table, &k)).collect(),
        // Invalid changes are refused before any scan.
        Err(_) => Vec::new(),
    };
    Scan {
        next_batch: format!(
            "SELECT max(b.k)::bigint, count(*)::bigint FROM (SELECT {k}::bigint AS k FROM {table} \
             WHERE {k} > $1::bigint ORDER BY {k} LIMIT $2::bigint) b"
        ),
        keys_in: format!("SELECT {k}::bigint FROM {table} WHERE {k} > $1::bigint AND {k} <= $2::bigint ORDER BY {k}"),
        checks,
    }
}

fn checks_for(all: &Rebuild, scoped: &ScopedCheck, changes: &[Change], table: &TableName, k: &str) -> Vec<ScanCheck> {
    let key = changes[scoped.change].kind().map_or("", |kind| kind.key());
    let field = format!("spec.changes[{}].{key}", scoped.change);
    let ranged = format!(
        "(SELECT s.*, s.{k} AS {} FROM {table} s WHERE s.{k} > $1::bigint AND s.{k} <= $2::bigint)",
        ident(KEY)
    );
    let whole = format!("(SELECT s.*, s.{k} AS {} FROM {table} s)", ident(KEY));
    let rows = |source: &str| all.rows_at(scoped.depth, source, KEY);
    let keys_where = |source: &str, condition: String| {
        format!("SELECT r.{}::bigint FROM {} AS r WHERE {condition} ORDER BY 1", ident(KEY), rows(source))
    };
    let check = |what: String, finder: Finder| ScanCheck { field: field.clone(), what, finder };
    match &scoped.check {
        DataCheck::NotNull { column } => {
            vec![check(
                format!("NULL in {column}"),
                Finder::Rows(keys_where(&ranged, format!("r.{} IS NULL", ident(column)))),
            )]
        }
        DataCheck::Check { name, expression } => vec![check(
            format!("a value that fails {name} ({expression})"),
            Finder::Rows(keys_where(&ranged, format!("({expression}) IS FALSE"))),
        )],
        DataCheck::References { name, key: fk } => {
            let target = match fk.references.table.split_once('.') {
                Some((schema, t)) => TableName::new(schema, t),
                None => table.sibling(fk.references.table.clone()),
            };
            let present: Vec<String> = fk.columns.iter().map(|c| format!("r.{} IS NOT NULL", ident(c))).collect();
            let matches: Vec<String> = fk
                .columns
                .iter()
                .zip(&fk.references.columns)
                .map(|(c, rc)| format!("x.{} = r.{}", ident(rc), ident(c)))
                .collect();
            let condition = format!(
                "{} AND NOT EXISTS (SELECT 1 FROM {target} x WHERE {})",
                present.join(" AND "),
                matches.join(" AND ")
            );
            vec![check(
                format!("no row in {target} for ({}) ({name})", fk.columns.join(", ")),
                Finder::Rows(keys_where(&ranged, condition)),
            )]
        }
        DataCheck::Unique { columns } => {
            let cols = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            let dup = format!(
                "({}) IN (SELECT {cols} FROM {} AS d GROUP BY {cols} HAVING count(*) > 1)",
                columns.iter().map(|c| format!("r.{}", ident(c))).collect::<Vec<_>>().join(", "),
                rows(&whole)
            );
            vec![check(
                format!("a ({}) that another row has too", columns.join(", ")),
                Finder::Table(keys_where(&whole, dup)),
            )]
        }
        DataCheck::Converts { column, expression, data_type } => {
            // The conversion is by assignment: a value too long for a shorter
            // string type raises here, as ALTER COLUMN ... TYPE would.
            vec![check(
                format!("a {column} that does not convert to {data_type}"),
                Finder::Converts(format!("SELECT count({expression})::bigint FROM {} AS r", rows(&ranged))),
            )]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::tests::{changes, orders};

    fn table() -> TableName {
        TableName::new("public", "orders")
    }

    #[test]
    fn each_check_reads_the_row_as_the_changes_before_it_leave_it() {
        let list = changes(
            r#"
- renameColumn: {from: cust, to: customer_id}
- alterColumn: {column: email, notNull: true}
- alterColumn: {column: amount, type: "varchar(5)"}
- addConstraint: {name: orders_email_key, unique: [email]}
- addConstraint: {name: orders_customer_fk, foreignKey: {columns: [customer_id], references: {table: customers, columns: [id]}}}
"#,
        );
        let scan = scan(&State::of(&orders()), &list, &table(), "id");
        let fields: Vec<(&str, &str)> = scan.checks.iter().map(|c| (c.field.as_str(), c.what.as_str())).collect();
        assert_eq!(
            fields,
            [
                ("spec.changes[1].alterColumn", "NULL in email"),
                ("spec.changes[2].alterColumn", "a amount that does not convert to character varying(5)"),
                ("spec.changes[3].addConstraint", "a (email) that another row has too"),
                (
                    "spec.changes[4].addConstraint",
                    "no row in \"public\".\"customers\" for (customer_id) (orders_customer_fk)"
                ),
            ]
        );
        let Finder::Rows(not_null) = &scan.checks[0].finder else { panic!("{:?}", scan.checks[0]) };
        assert!(not_null.contains("\"cust\" AS \"customer_id\""), "read after the rename: {not_null}");
        assert!(not_null.contains("s.\"id\" > $1::bigint AND s.\"id\" <= $2::bigint"), "{not_null}");
        let Finder::Converts(converts) = &scan.checks[1].finder else { panic!() };
        assert!(
            converts.starts_with(
                "SELECT count(pg_catalog.\"varchar\"((\"amount\")::character varying, 9, false))::bigint FROM "
            ),
            "by assignment, which raises where a cast would cut: {converts}"
        );
        let Finder::Table(unique) = &scan.checks[2].finder else { panic!() };
        assert!(!unique.contains("$1"), "duplicates are looked for in the whole table: {unique}");
        assert!(unique.contains("GROUP BY \"email\" HAVING count(*) > 1"), "{unique}");
        let Finder::Rows(orphans) = &scan.checks[3].finder else { panic!() };
        assert!(
            orphans.contains("r.\"customer_id\" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM \"public\".\"customers\" x WHERE x.\"id\" = r.\"customer_id\")"),
            "{orphans}"
        );
        assert!(scan.next_batch.contains("LIMIT $2::bigint"), "{}", scan.next_batch);
    }

    #[test]
    fn a_given_using_expression_is_trusted_to_shorten_and_a_check_passes_on_null() {
        let list = changes(
            r#"
- alterColumn: {column: email, type: "varchar(3)", using: "left(email, 3)"}
- addConstraint: {name: amount_positive, check: "amount >= 0"}
"#,
        );
        let scan = scan(&State::of(&orders()), &list, &table(), "id");
        assert_eq!(scan.checks.len(), 2, "no length check where using says how: {:?}", scan.checks);
        let Finder::Rows(check) = &scan.checks[1].finder else { panic!() };
        assert!(check.contains("WHERE (amount >= 0) IS FALSE"), "NULL passes a CHECK: {check}");
    }

    #[test]
    fn a_finding_names_the_field_the_count_and_the_ids() {
        let finding = Finding {
            field: "spec.changes[1].alterColumn".into(),
            what: "NULL in email".into(),
            rows: 3,
            at_least: false,
            ids: vec![4, 9, 17],
        };
        assert_eq!(finding.to_string(), "spec.changes[1].alterColumn: 3 rows have NULL in email (ids 4, 9, 17)");
        let capped = Finding { rows: 100, at_least: true, ids: vec![1], ..finding };
        assert!(capped.to_string().contains("at least 100 rows"), "{capped}");
    }
}

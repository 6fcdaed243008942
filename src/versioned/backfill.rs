//! A DML backfill in key-range batches: the file's UPDATE or DELETE with a
//! range of the table's primary key added to its WHERE, run batch after
//! batch. Each batch commits in one transaction with the history row that
//! says how far it got, so a kill never applies a batch twice (an
//! `UPDATE t SET n = n + 1` stays exact) and a restart goes on from there.
//! An `INSERT ... SELECT` from one table is batched the same way, by key
//! ranges of the table it reads. The SQL is built on the statement's parse
//! tree. Pure.

use pg_query::protobuf::{InsertStmt, Node, SelectStmt, SetOperation};
use pg_query::{NodeEnum, NodeRef, ParserOptions};

use super::sql::{statement_text, table_of};
use crate::engine::plan::batches::auto_batch_rows;
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::TableName;

/// What batches an `INSERT ... SELECT` by key ranges of the table it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertSource {
    /// The table the SELECT reads, whose primary key makes the ranges.
    pub table: TableName,
    /// How the SELECT names it (its alias, or its name).
    pub qualifier: String,
    /// The table the rows go into.
    pub into: TableName,
    /// The functions the SELECT calls, by name: the runner asks the server
    /// whether any is an aggregate or returns a set (either makes batches
    /// differ from one statement), and runs the statement whole if so.
    pub functions: Vec<String>,
}

/// The source of an `INSERT ... SELECT` that key-range batches leave as it
/// is: one table in FROM, no WITH, grouping, DISTINCT, LIMIT, window or set
/// operation, no aggregate call that shows as one, and the table written
/// read nowhere in it (a batch would see the batches before it). None
/// otherwise: the statement runs whole.
pub fn insert_source(insert: &InsertStmt) -> Option<InsertSource> {
    if insert.with_clause.is_some() {
        return None;
    }
    let Some(NodeEnum::SelectStmt(select)) = insert.select_stmt.as_ref()?.node.as_ref() else { return None };
    let plain = select.values_lists.is_empty()
        && select.op() == SetOperation::SetopNone
        && select.with_clause.is_none()
        && select.group_clause.is_empty()
        && select.having_clause.is_none()
        && select.distinct_clause.is_empty()
        && select.window_clause.is_empty()
        && select.limit_count.is_none()
        && select.limit_offset.is_none()
        && select.locking_clause.is_empty()
        && select.into_clause.is_none();
    let [from] = select.from_clause.as_slice() else { return None };
    let Some(NodeEnum::RangeVar(source)) = from.node.as_ref() else { return None };
    if !plain {
        return None;
    }
    let into = table_of(insert.relation.as_ref());
    let mut functions = Vec::new();
    for (node, ..) in NodeEnum::SelectStmt(select.clone()).nodes() {
        match node {
            NodeRef::FuncCall(f) => {
                let aggregate = f.agg_star
                    || f.agg_distinct
                    || f.over.is_some()
                    || f.agg_filter.is_some()
                    || !f.agg_order.is_empty()
                    || f.agg_within_group;
                if aggregate {
                    return None;
                }
                if let Some(Some(NodeEnum::String(name))) = f.funcname.last().map(|n| n.node.as_ref()) {
                    functions.push(name.sval.clone());
                }
            }
            NodeRef::RangeVar(r) if same_table(&table_of(Some(r)), &into) => return None,
            _ => {}
        }
    }
    functions.sort();
    functions.dedup();
    let qualifier = source.alias.as_ref().map_or(source.relname.clone(), |a| a.aliasname.clone());
    Some(InsertSource { table: table_of(Some(source)), qualifier, into, functions })
}

/// Whether two names may be the same table: an unqualified name may be any
/// schema's, so the names alone decide then.
fn same_table(a: &TableName, b: &TableName) -> bool {
    a.name == b.name
}

/// The SELECT of an INSERT, to change its WHERE.
fn select_of(insert: &mut InsertStmt) -> Option<&mut SelectStmt> {
    match insert.select_stmt.as_mut()?.node.as_mut()? {
        NodeEnum::SelectStmt(s) => Some(s),
        _ => None,
    }
}

/// Rows per batch: under DSQL's 3,000 mutations and 10 MiB a transaction,
/// counting one mutation for the row and one for each secondary index entry,
/// and rows as wide as `row_bytes`, with room to spare (the table engine's
/// own budgets).
pub fn batch_rows(secondary_indexes: usize, row_bytes: i64) -> i64 {
    auto_batch_rows(secondary_indexes, row_bytes).clamp(1, 1_000)
}

/// The statement limited to keys in `($1, $2]` (or `<= $1` for the first
/// batch, `first`), parameters as text cast to the key's type. None for a
/// statement that is not an UPDATE, a DELETE or a batchable INSERT ... SELECT.
pub fn batched(tree: &NodeEnum, key: &str, key_type: &str, first: bool) -> Option<String> {
    let key = match tree {
        NodeEnum::InsertStmt(i) => format!("{}.{}", ident(&insert_source(i)?.qualifier), ident(key)),
        _ => ident(key),
    };
    let bounds = if first {
        format!("{key} <= ($1::text)::{key_type}")
    } else {
        format!("{key} > ($1::text)::{key_type} AND {key} <= ($2::text)::{key_type}")
    };
    let template = format!("SELECT 1 WHERE (true) AND {bounds}");
    let parsed = pg_query::parse(&template, ParserOptions::DEFAULT).ok()?.protobuf;
    let Some(NodeEnum::SelectStmt(select)) = parsed.stmts.first()?.stmt.as_ref()?.node.clone() else { return None };
    let mut range = select.where_clause?;
    let mut tree = tree.clone();
    let where_clause = match &mut tree {
        NodeEnum::UpdateStmt(u) => &mut u.where_clause,
        NodeEnum::DeleteStmt(d) => &mut d.where_clause,
        NodeEnum::InsertStmt(i) => &mut select_of(i)?.where_clause,
        _ => return None,
    };
    // The template's `(true)` is the file's own condition, or goes.
    if let Some(NodeEnum::BoolExpr(and)) = range.node.as_mut() {
        match where_clause.take() {
            Some(own) => and.args[0] = *own,
            None => {
                and.args.remove(0);
            }
        }
    }
    let range = match range.node.as_ref() {
        Some(NodeEnum::BoolExpr(and)) if and.args.len() == 1 => Box::new(and.args[0].clone()),
        _ => range,
    };
    *where_clause = Some(Box::new(Node { node: range.node.clone() }));
    Some(statement_text(&tree))
}

/// The highest key of the next batch after `after` (none: from the start).
pub fn next_bound_sql(table: &str, key: &str, key_type: &str, first: bool) -> String {
    let key = ident(key);
    let from = if first { String::new() } else { format!(" WHERE {key} > ($1::text)::{key_type}") };
    let limit = if first { "$1" } else { "$2" };
    format!("SELECT max(k)::text FROM (SELECT {key} AS k FROM {table}{from} ORDER BY {key} LIMIT {limit}::bigint) s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(sql: &str) -> NodeEnum {
        let parsed = pg_query::parse(sql, ParserOptions::DEFAULT).unwrap();
        parsed.protobuf.stmts[0].stmt.as_ref().unwrap().node.clone().unwrap()
    }

    #[test]
    fn the_files_condition_is_kept_and_the_key_range_added() {
        let sql = batched(&tree("UPDATE orders SET n = n + 1 WHERE status = 'new'"), "id", "bigint", false).unwrap();
        assert_eq!(
            sql,
            "UPDATE orders SET n = n + 1 WHERE status = 'new' AND id > $1::text::bigint AND id <= $2::text::bigint"
        );
        let first = batched(&tree("DELETE FROM audit"), "at", "timestamp with time zone", true).unwrap();
        assert_eq!(first, "DELETE FROM audit WHERE at <= $1::text::timestamp with time zone");
        // The deparser quotes a key only where it must, and always where it must.
        let odd = batched(&tree("DELETE FROM audit"), "Order Key", "bigint", true).unwrap();
        assert_eq!(odd, "DELETE FROM audit WHERE \"Order Key\" <= $1::text::bigint");
        let or = batched(&tree("UPDATE t SET a = 1 WHERE a IS NULL OR b"), "id", "uuid", false).unwrap();
        assert!(or.contains("WHERE (a IS NULL OR b) AND"), "the OR stays inside: {or}");
        assert_eq!(batched(&tree("INSERT INTO t VALUES (1)"), "id", "bigint", false), None);
    }

    #[test]
    fn an_insert_select_gets_the_range_on_the_key_of_the_table_it_reads_by_its_alias() {
        let insert =
            tree("INSERT INTO archive (id, total) SELECT o.id, round(o.total, 2) FROM shop.orders o WHERE o.total > 0");
        let NodeEnum::InsertStmt(i) = &insert else { panic!() };
        let source = insert_source(i).unwrap();
        assert_eq!(source.table, TableName::new("shop", "orders"));
        assert_eq!(source.into, TableName::new("public", "archive"));
        assert_eq!(source.qualifier, "o");
        assert_eq!(source.functions, ["round"]);
        assert_eq!(
            batched(&insert, "id", "bigint", false).unwrap(),
            "INSERT INTO archive (id, total) SELECT o.id, round(o.total, 2) FROM shop.orders o \
             WHERE o.total > 0 AND o.id > $1::text::bigint AND o.id <= $2::text::bigint"
        );
        let unaliased = batched(&tree("INSERT INTO archive SELECT * FROM orders"), "id", "bigint", true).unwrap();
        assert_eq!(unaliased, "INSERT INTO archive SELECT * FROM orders WHERE orders.id <= $1::text::bigint");
        let grouped = tree("INSERT INTO totals SELECT c, sum(t) FROM orders GROUP BY c");
        assert_eq!(batched(&grouped, "id", "bigint", true), None, "batches would change a GROUP BY");
    }

    #[test]
    fn batches_stay_under_dsqls_mutation_and_byte_limits_whatever_the_indexes_and_widths() {
        assert_eq!(batch_rows(0, 100), 1_000);
        assert_eq!(batch_rows(2, 100), 966);
        for n in 0..40 {
            for bytes in [1, 200, 20_000, 2_000_000, 50_000_000] {
                let rows = batch_rows(n, bytes);
                assert!(rows * (1 + n as i64) < 3_000 && rows >= 1);
                assert!(rows == 1 || rows * bytes * (1 + n as i64) <= 10 * 1024 * 1024, "{n} {bytes}: {rows}");
            }
        }
        assert_eq!(batch_rows(0, 20_000), 419, "20 kB rows: 8 MiB a batch");
    }

    #[test]
    fn the_next_bound_reads_one_batch_of_keys() {
        assert_eq!(
            next_bound_sql("\"public\".\"t\"", "id", "bigint", true),
            "SELECT max(k)::text FROM (SELECT \"id\" AS k FROM \"public\".\"t\" ORDER BY \"id\" LIMIT $1::bigint) s"
        );
        assert!(next_bound_sql("t", "id", "bigint", false).contains("WHERE \"id\" > ($1::text)::bigint"));
    }
}

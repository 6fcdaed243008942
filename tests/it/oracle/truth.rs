//! What a table is, as PostgreSQL's catalog and its rows say: the things
//! `ALTER TABLE` decides and the engine must decide the same way.

use tokio_postgres::Client;

/// A table's columns (in order, with type, NOT NULL, default, collation,
/// generation and identity), its constraints and indexes by name and
/// definition, its comments, and every row in key order. The schema's name
/// is left out, so tables in two schemas compare.
#[derive(Debug, PartialEq, Eq)]
pub struct Truth {
    pub columns: Vec<String>,
    pub constraints: Vec<String>,
    pub indexes: Vec<String>,
    pub comments: Vec<String>,
    pub rows: Vec<String>,
}

impl Truth {
    /// The differences from `reference`, one line each (empty when equal).
    pub fn differences(&self, reference: &Truth) -> Vec<String> {
        let mut out = Vec::new();
        part(&mut out, "column", &self.columns, &reference.columns);
        part(&mut out, "constraint", &self.constraints, &reference.constraints);
        part(&mut out, "index", &self.indexes, &reference.indexes);
        part(&mut out, "comment", &self.comments, &reference.comments);
        if self.rows != reference.rows {
            let first = self.rows.iter().zip(&reference.rows).find(|(a, b)| a != b);
            out.push(format!(
                "rows: the engine has {} rows, ALTER TABLE {}; first difference (engine, ALTER) {first:?}",
                self.rows.len(),
                reference.rows.len()
            ));
        }
        out
    }
}

/// What one part of two truths has that the other lacks, or their order.
fn part(out: &mut Vec<String>, what: &str, ours: &[String], theirs: &[String]) {
    let before = out.len();
    out.extend(theirs.iter().filter(|l| !ours.contains(l)).map(|l| format!("{what}: ALTER TABLE has {l}")));
    out.extend(ours.iter().filter(|l| !theirs.contains(l)).map(|l| format!("{what}: the engine has {l}")));
    if out.len() == before && ours != theirs {
        out.push(format!("{what}: the same in another order: {ours:?} against {theirs:?}"));
    }
}

const COLUMNS: &str = "SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
    || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
    || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED' \
            ELSE coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') END \
    || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
            THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END \
    || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' WHEN 'd' THEN ' IDENTITY BY DEFAULT' ELSE '' END \
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
    LEFT JOIN pg_collation co ON co.oid = a.attcollation \
    WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const CONSTRAINTS: &str = "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::text::regclass ORDER BY 1";

const INDEXES: &str = "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::text::regclass ORDER BY 1";

const COMMENTS: &str = "SELECT 'table ' || coalesce(obj_description($1::text::regclass, 'pg_class'), '-') \
    UNION ALL SELECT 'column ' || attname || ' ' || col_description($1::text::regclass, attnum) FROM pg_attribute \
    WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped AND col_description($1::text::regclass, attnum) IS NOT NULL \
    ORDER BY 1";

/// The truth of `schema.table`, rows ordered by `key`.
pub async fn truth(client: &Client, schema: &str, table: &str, key: &str) -> Truth {
    let qualified = format!("{}.{}", crate::support::q(schema), crate::support::q(table));
    let lines = |sql: &'static str| {
        let qualified = qualified.clone();
        async move {
            let rows = client
                .query(sql, &[&qualified])
                .await
                .unwrap_or_else(|e| panic!("{qualified}: {}: {sql}", crate::support::db_message(&e)));
            rows.iter().map(|r| unqualified(&r.get::<_, String>(0), schema)).collect::<Vec<_>>()
        }
    };
    let rows_sql = format!("SELECT r::text FROM {qualified} r ORDER BY {}", crate::support::q(key));
    let rows = client.query(&rows_sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect();
    Truth {
        columns: lines(COLUMNS).await,
        constraints: lines(CONSTRAINTS).await,
        indexes: lines(INDEXES).await,
        comments: lines(COMMENTS).await,
        rows,
    }
}

/// `text` without the schema's name, wherever the catalog printed it.
fn unqualified(text: &str, schema: &str) -> String {
    text.replace(&format!("{}.", crate::support::q(schema)), "").replace(&format!("{schema}."), "")
}

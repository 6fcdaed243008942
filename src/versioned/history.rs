//! The history table (`spec.history`, `public.schema_history` by default):
//! one row per migration with its checksum, how many of its steps are
//! applied, the step in flight (a DDL sent, a job, a batch cursor, a
//! rebuild's status), and how it ended. Also what other tools left: a
//! Flyway, golang-migrate, goose or dbmate history is read (never written)
//! once, to adopt the versions it applied.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::db::error::{DbError, ErrorContext};
use crate::engine::plan::shape::TableName;

/// `CREATE TABLE IF NOT EXISTS` of the history: plain types DSQL takes.
pub fn create_sql(table: &TableName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
         version text PRIMARY KEY, \
         description text NOT NULL, \
         file text NOT NULL, \
         checksum text NOT NULL, \
         kind text NOT NULL, \
         steps_total integer NOT NULL, \
         steps_applied integer NOT NULL, \
         in_flight text, \
         started_at timestamptz NOT NULL, \
         finished_at timestamptz, \
         duration_ms bigint, \
         failed_at text, \
         failed_sqlstate text, \
         failed_message text)"
    )
}

/// How a row came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// Run by this tool.
    Applied,
    /// Below `spec.baseline`: recorded, never run.
    Baseline,
    /// Applied by another tool, as its history said.
    Adopted,
}

impl RowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RowKind::Applied => "applied",
            RowKind::Baseline => "baseline",
            RowKind::Adopted => "adopted",
        }
    }
}

/// One row as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub version: String,
    pub checksum: String,
    pub kind: String,
    pub steps_total: i32,
    pub steps_applied: i32,
    pub in_flight: Option<String>,
    pub finished: bool,
}

impl Row {
    /// Its checksum says what ran: baseline and adopted rows have none to compare.
    pub fn compares_checksum(&self) -> bool {
        self.kind == RowKind::Applied.as_str()
    }
}

pub async fn read(client: &Client, table: &TableName) -> Result<Vec<Row>, DbError> {
    let sql = format!(
        "SELECT version, checksum, kind, steps_total, steps_applied, in_flight, finished_at IS NOT NULL FROM {table}"
    );
    let rows = client.query(sql.as_str(), &[]).await.ctx("read the history")?;
    Ok(rows
        .iter()
        .map(|r| Row {
            version: r.get(0),
            checksum: r.get(1),
            kind: r.get(2),
            steps_total: r.get(3),
            steps_applied: r.get(4),
            in_flight: r.get(5),
            finished: r.get(6),
        })
        .collect())
}

/// Records a migration that starts (or, for a repeatable file whose
/// checksum changed, starts again).
pub async fn start(
    client: &Client,
    table: &TableName,
    m: &super::rules::PlannedMigration,
    kind: RowKind,
) -> Result<(), DbError> {
    let finished = kind != RowKind::Applied;
    let sql = format!(
        "INSERT INTO {table} (version, description, file, checksum, kind, steps_total, steps_applied, started_at, \
         finished_at, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now(), CASE WHEN $8 THEN now() END, CASE WHEN $8 THEN 0 END) \
         ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum, steps_total = EXCLUDED.steps_total, \
         steps_applied = EXCLUDED.steps_applied, in_flight = NULL, started_at = now(), finished_at = EXCLUDED.finished_at, \
         duration_ms = EXCLUDED.duration_ms, failed_at = NULL, failed_sqlstate = NULL, failed_message = NULL"
    );
    let total = m.steps.len() as i32;
    let applied = if finished { total } else { 0 };
    client
        .execute(
            sql.as_str(),
            &[&m.version, &m.description, &m.file, &m.checksum, &kind.as_str(), &total, &applied, &finished],
        )
        .await
        .ctx("record the migration's start")?;
    Ok(())
}

/// `UPDATE` of the row's progress: `steps_applied` and what is in flight.
/// Sent alone, or inside a step's own transaction (DML steps), so that the
/// step and its progress commit together.
pub fn progress_sql(table: &TableName) -> String {
    format!("UPDATE {table} SET steps_applied = $2, in_flight = $3 WHERE version = $1")
}

pub async fn progress(
    client: &Client,
    table: &TableName,
    version: &str,
    applied: i32,
    in_flight: Option<&str>,
) -> Result<(), DbError> {
    client
        .execute(progress_sql(table).as_str(), &[&version, &applied, &in_flight])
        .await
        .ctx("record the migration's progress")?;
    Ok(())
}

pub async fn finish(client: &Client, table: &TableName, version: &str) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE {table} SET finished_at = now(), in_flight = NULL, \
         duration_ms = (extract(epoch FROM now() - started_at) * 1000)::bigint WHERE version = $1"
    );
    client.execute(sql.as_str(), &[&version]).await.ctx("record the migration's end")?;
    Ok(())
}

pub async fn fail(
    client: &Client,
    table: &TableName,
    version: &str,
    at: &str,
    sqlstate: Option<&str>,
    message: &str,
) -> Result<(), DbError> {
    let sql =
        format!("UPDATE {table} SET failed_at = $2, failed_sqlstate = $3, failed_message = $4 WHERE version = $1");
    client.execute(sql.as_str(), &[&version, &at, &sqlstate, &message]).await.ctx("record the failure")?;
    Ok(())
}

/// A history another tool left, and the versions it says are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    pub tool: &'static str,
    pub table: TableName,
    pub versions: Vec<String>,
    /// golang-migrate keeps only the newest version: every older one is applied too.
    pub head_only: bool,
}

impl Foreign {
    /// Whether this history says `ours` is applied.
    pub fn applied(&self, ours: &super::files::Version) -> bool {
        self.versions
            .iter()
            .any(|v| same_version(v, &ours.text) || (self.head_only && super::files::Version::new(v) >= *ours))
    }
}

/// Reads the first history another tool left in `schema`, if any: Flyway's
/// successful rows, golang-migrate's version (clean only), goose's applied
/// versions, dbmate's versions.
pub async fn foreign(client: &Arc<Client>, schema: &str) -> Result<Option<Foreign>, DbError> {
    let candidates: [(&'static str, &str, &str); 4] = [
        ("Flyway", "flyway_schema_history", "SELECT version FROM {t} WHERE success AND version IS NOT NULL"),
        ("golang-migrate", "schema_migrations", "SELECT version::text FROM {t} WHERE NOT dirty"),
        ("goose", "goose_db_version", "SELECT version_id::text FROM {t} WHERE is_applied AND version_id > 0"),
        ("dbmate", "schema_migrations", "SELECT version::text FROM {t}"),
    ];
    for (tool, name, query) in candidates {
        let table = TableName::new(schema, name);
        if !crate::engine::steps::catalog::table_exists(client, &table).await? {
            continue;
        }
        // golang-migrate and dbmate share the name: the columns tell which.
        let sql = query.replace("{t}", &table.to_string());
        match client.query(sql.as_str(), &[]).await {
            Ok(rows) => {
                let versions = rows.iter().map(|r| r.get::<_, String>(0)).collect();
                return Ok(Some(Foreign { tool, table, versions, head_only: tool == "golang-migrate" }));
            }
            Err(e) if e.code().is_some_and(|c| c.code() == "42703") => continue,
            Err(e) => return Err(DbError::from_pg("read another tool's history", &e)),
        }
    }
    Ok(None)
}

/// Whether `applied` (another tool's version text) names the same version
/// as `ours`: golang-migrate and goose store numbers (`1` for `0001`).
pub fn same_version(applied: &str, ours: &str) -> bool {
    applied == ours
        || (applied.parse::<u128>().ok().is_some() && applied.parse::<u128>().ok() == ours.parse::<u128>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_tools_number_their_versions_without_leading_zeros() {
        assert!(same_version("1", "0001"));
        assert!(same_version("20240101120000", "20240101120000"));
        assert!(same_version("1.1", "1.1"));
        assert!(!same_version("1.1", "1.10"));
        assert!(!same_version("2", "0001"));
    }

    #[test]
    fn the_history_table_uses_only_types_dsql_takes_and_is_made_once() {
        let sql = create_sql(&TableName::new("public", "schema_history"));
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"public\".\"schema_history\""));
        for refused in ["jsonb", "serial", "[]", "DEFAULT"] {
            assert!(!sql.contains(refused), "{refused} in {sql}");
        }
    }
}

//! A TableMigration's in-place statements, made one at a time against the
//! table: each in its own transaction, with a lock timeout on PostgreSQL so
//! that writers queue behind it for at most that long (a timeout waits out
//! the sessions in the way and tries again). Resumable: the status counts
//! the statements made, and a statement that a crash or a lost reply may have
//! committed is taken as made when the server says its object already exists
//! or is already gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blockers::wait_out_blockers;
use super::catalog::{self, IndexState};
use super::in_place::{InPlace, add_identity_in_place};
use super::shadow::{await_job, first_value};
use crate::api::ChangesStatus;
use crate::db::{DbError, Dialect, ErrorContext, Session};
use crate::engine::error::EngineError;
use crate::engine::failpoint;
use crate::engine::job::{Control, Job, Outcome};
use crate::engine::plan::changes::ways::IDENTITY_START_PLACEHOLDER;
use crate::engine::plan::shape::TableName;
use crate::engine::plan::sql::IN_PLACE_LOCK_TIMEOUT_MS;
use crate::engine::status_keeper::{Save, StatusKeeper};
use crate::engine::store::StatusSink;

/// How a statement is made.
#[derive(Debug, PartialEq, Eq)]
enum Kind<'a> {
    /// `CREATE ... INDEX CONCURRENTLY name`: outside any transaction; an
    /// invalid index an earlier attempt left is dropped first.
    ConcurrentIndex(String),
    /// DSQL `ALTER TABLE ASYNC`: answers a job id, which is awaited.
    AsyncJob,
    /// `addIdentity` in place: made as an IdentityMigration makes it (the
    /// start read under the lock, the old default replaced, the identity
    /// settled past every id), never sent as the plan prints it.
    AddIdentity,
    /// Anything else: briefly locks the table (`ALTER TABLE`), or takes a
    /// lock that lets writers through (`VALIDATE CONSTRAINT`).
    Alter { blocks_writers: bool, sql: &'a str },
}

fn kind(sql: &str) -> Kind<'_> {
    if sql.contains(" ADD GENERATED ") && sql.contains(IDENTITY_START_PLACEHOLDER) {
        return Kind::AddIdentity;
    }
    if let Some(rest) = sql.strip_prefix("CREATE UNIQUE INDEX CONCURRENTLY ") {
        return Kind::ConcurrentIndex(leading_ident(rest).unwrap_or_default());
    }
    if sql.starts_with("ALTER TABLE ASYNC ") {
        return Kind::AsyncJob;
    }
    Kind::Alter { blocks_writers: !sql.contains(" VALIDATE CONSTRAINT "), sql }
}

/// The quoted identifier `rest` starts with, unquoted.
fn leading_ident(rest: &str) -> Option<String> {
    let mut chars = rest.strip_prefix('"')?.chars().peekable();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
            } else {
                return Some(out);
            }
        }
        out.push(c);
    }
    None
}

/// SQLSTATEs that, for a statement a crash may have committed, may say it
/// was: its object exists already, or is gone already. The catalog decides.
fn maybe_made(e: &DbError) -> bool {
    matches!(e.sqlstate.as_deref(), Some("42710" | "42701" | "42703" | "42704" | "42P07"))
}

/// What the catalog shows once a statement is made: an object of a name
/// (planned free) there, or gone.
#[derive(Debug, PartialEq, Eq)]
enum Evidence {
    Column { name: String, present: bool },
    Constraint { name: String, present: bool },
    Relation { name: String, present: bool },
}

/// The evidence of an in-place statement, as the planner writes them
/// (`ALTER TABLE <table> <clause>`); None for a form that has none, whose
/// error is then the error.
fn evidence(sql: &str, table: &TableName) -> Option<Vec<Evidence>> {
    let clause = sql.strip_prefix(&format!("ALTER TABLE {table} "))?;
    let name_after = |prefix: &str| clause.strip_prefix(prefix).and_then(leading_ident);
    if let Some(name) = name_after("ADD COLUMN ") {
        return Some(vec![Evidence::Column { name, present: true }]);
    }
    if let Some(name) = name_after("DROP COLUMN ") {
        return Some(vec![Evidence::Column { name, present: false }]);
    }
    if let Some(rest) = clause.strip_prefix("RENAME COLUMN ") {
        let from = leading_ident(rest)?;
        let to = leading_ident(rest.split_once(" TO ")?.1)?;
        return Some(vec![
            Evidence::Column { name: from, present: false },
            Evidence::Column { name: to, present: true },
        ]);
    }
    if let Some(rest) = clause.strip_prefix("DROP CONSTRAINT ") {
        let dropped = leading_ident(rest)?;
        // `DROP CONSTRAINT old, ADD CONSTRAINT new PRIMARY KEY USING INDEX idx`.
        if let Some((_, add)) = rest.split_once(", ADD CONSTRAINT ") {
            let added = leading_ident(add)?;
            let index = leading_ident(add.split_once(" USING INDEX ")?.1)?;
            let mut all = vec![Evidence::Constraint { name: added.clone(), present: true }];
            if dropped != added {
                all.push(Evidence::Constraint { name: dropped, present: false });
            }
            all.push(Evidence::Relation { name: index, present: false });
            return Some(all);
        }
        return Some(vec![Evidence::Constraint { name: dropped, present: false }]);
    }
    if let Some(name) = name_after("ADD CONSTRAINT ") {
        return Some(vec![Evidence::Constraint { name, present: true }]);
    }
    None
}

/// Whether the catalog shows `sql` made (the error `e` said its object
/// exists or is gone): evidence, never the error code alone. A statement
/// that failed for another reason (a misspelt column in a CHECK, a key of
/// another name) is an error.
async fn made_before(session: &mut Session, table: &TableName, sql: &str, e: &DbError) -> Result<bool, DbError> {
    let Some(evidence) = evidence(sql, table).filter(|_| maybe_made(e)) else { return Ok(false) };
    let evidence = &evidence;
    session
        .retry("look for a change made before", |c| async move {
            for fact in evidence {
                let shown = match fact {
                    Evidence::Column { name, present } => catalog::has_column(&c, table, name).await? == *present,
                    Evidence::Constraint { name, present } => {
                        catalog::has_constraint(&c, table, name).await? == *present
                    }
                    Evidence::Relation { name, present } => {
                        catalog::table_exists(&c, &table.sibling(name.clone())).await? == *present
                    }
                };
                if !shown {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
}

/// The changes made (`statements`, counted by `applied`), or undone (`undo`,
/// counted by `undone`) by `spec.rollback`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Back,
}

/// Makes the statements of `direction` from its count on; None when all are
/// made (the other direction's count then starts again from none), or how
/// the engine was halted between two of them.
pub async fn make_in_place<R: StatusSink>(
    job: &Arc<Job>,
    keeper: &mut StatusKeeper<R>,
    control: &Control,
    direction: Direction,
) -> Result<Option<Outcome>, EngineError> {
    let table = job.settings.source.clone();
    let mut session = job.session();
    let ChangesStatus { statements, applied, undo, undone, .. } = keeper.status.changes.clone().unwrap_or_default();
    let (statements, done) = match direction {
        Direction::Forward => (statements, applied),
        Direction::Back => (undo, undone),
    };
    for (i, sql) in statements.iter().enumerate().skip(done.max(0) as usize) {
        if let Some(outcome) = crate::engine::job::halted(control) {
            return Ok(Some(outcome));
        }
        let locked = loop {
            if let Some(outcome) = wait_out_blockers(job, &mut session, keeper, &table, control).await? {
                return Ok(Some(outcome));
            }
            job.before_change().await?;
            if kind(sql) == Kind::AddIdentity {
                // Decided from the catalog: a crash after the change resumes
                // by checking the identity, not by adding it again.
                match add_identity_in_place(job).await? {
                    InPlace::Added { identity, locked } => {
                        keeper.status.identity = Some(identity);
                        break locked;
                    }
                    InPlace::Refused(why) => {
                        let e = DbError::engine("add identity", format!("the server refused ADD IDENTITY: {why}"));
                        return Err(e.into());
                    }
                }
            }
            match make_one(job, &mut session, &table, sql).await {
                Ok(locked) => break locked,
                // Names were checked against the catalog when planned: an
                // object of the name is this statement's, made by a crashed
                // run or an attempt whose reply was lost.
                Err(e) if made_before(&mut session, &table, sql, &e).await? => {
                    tracing::info!(statement = %sql, error = %e, "made before the last run stopped");
                    break None;
                }
                // The lock timed out behind a session: look for it, then try again.
                Err(e) if e.sqlstate.as_deref() == Some("55P03") => {
                    tracing::info!(statement = %sql, "the lock timed out; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        failpoint::hit("change-made");
        let changes = keeper.status.changes.get_or_insert_with(ChangesStatus::default);
        match direction {
            Direction::Forward => changes.applied = i as i64 + 1,
            Direction::Back => changes.undone = i as i64 + 1,
        }
        if let Some(locked) = locked {
            // Rounded up: a lock of 0.3 ms is reported as at most 1 ms.
            let ms = locked.as_micros().div_ceil(1000) as i64;
            changes.longest_lock_millis = Some(changes.longest_lock_millis.map_or(ms, |m| m.max(ms)));
        }
        tracing::info!(statement = %sql, locked_ms = locked.map(|l| l.as_millis() as u64), "made in place");
        keeper.checkpoint(Save::Now).await?;
    }
    // Made: a later turn the other way starts from its first statement.
    let changes = keeper.status.changes.get_or_insert_with(ChangesStatus::default);
    match direction {
        Direction::Forward => changes.undone = 0,
        Direction::Back => changes.applied = 0,
    }
    Ok(None)
}

/// The columns added in place that hold values written since, each as a
/// problem on its change: a rollback would drop them with the column, so it
/// is refused by name instead. A value other than the column's default
/// counts (any value, for a column without one); a column already gone (a
/// rollback resumed) holds nothing.
pub async fn written_to_added(job: &Job) -> Result<Vec<crate::engine::plan::validate::Problem>, EngineError> {
    let s = &job.settings;
    let table = &s.source;
    let mut session = job.session();
    let mut problems = Vec::new();
    for (i, change) in s.changes.iter().enumerate() {
        let Some(added) = &change.add_column else { continue };
        let column = crate::engine::plan::quote::ident(&added.name);
        let written = match &added.default {
            Some(default) => format!("{column} IS DISTINCT FROM ({default})"),
            None => format!("{column} IS NOT NULL"),
        };
        // Counted to a thousand at most: enough to say it.
        let sql = &format!("SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {written} LIMIT 1000) w");
        let name = added.name.as_str();
        let rows: i64 = session
            .retry("look for values written to an added column", |c| async move {
                if !catalog::has_column(&c, table, name).await? {
                    return Ok(0);
                }
                Ok(c.query_one(sql.as_str(), &[]).await.ctx("look for values written to an added column")?.get(0))
            })
            .await?;
        if rows > 0 {
            let count = if rows >= 1000 { "at least 1000".to_string() } else { rows.to_string() };
            problems.push(crate::engine::plan::validate::Problem::new(
                format!("spec.changes[{i}].addColumn"),
                format!(
                    "{name:?} holds values written since it was added ({count} rows); a rollback would drop them \
                     with the column: keep them elsewhere or clear them, then roll back"
                ),
            ));
        }
    }
    Ok(problems)
}

/// Makes one statement; how long it held writers off, when it does.
async fn make_one(job: &Job, session: &mut Session, table: &TableName, sql: &str) -> Result<Option<Duration>, DbError> {
    match (kind(sql), job.dialect) {
        // Made by the identity path in [`make_in_place`], never sent as printed.
        (Kind::AddIdentity, _) => Err(DbError::engine("add identity", "made by the identity path, not as printed")),
        (Kind::ConcurrentIndex(name), _) => {
            let (schema, name) = (table.schema.as_str(), name.as_str());
            let state =
                session.retry("read index", |c| async move { catalog::index_state(&c, schema, name).await }).await?;
            match state {
                IndexState::Valid => return Ok(None),
                IndexState::Invalid => {
                    let drop = &format!("DROP INDEX CONCURRENTLY {}", TableName::new(schema, name));
                    session
                        .retry("drop invalid index", |c| async move { c.batch_execute(drop).await.ctx("drop index") })
                        .await?;
                }
                IndexState::Absent => {}
            }
            session.retry("create index", |c| async move { c.batch_execute(sql).await.ctx("create index") }).await?;
            Ok(None)
        }
        (Kind::AsyncJob, _) => {
            let job_id = session
                .retry("start job", |c| async move { Ok(first_value(&c.simple_query(sql).await.ctx("start job")?)) })
                .await?
                .ok_or_else(|| DbError::engine("start job", format!("{sql} returned no job id")))?;
            await_job(session, &job_id, sql).await?;
            Ok(None)
        }
        (Kind::Alter { blocks_writers, sql }, Dialect::Postgres) => {
            let begin = &format!("BEGIN; SET LOCAL lock_timeout = '{IN_PLACE_LOCK_TIMEOUT_MS}ms'");
            let held = session
                .retry("change in place", |c| async move {
                    let started = Instant::now();
                    // The statement carries spec text: alone, through the
                    // extended protocol (one statement per Parse).
                    let done = async {
                        c.batch_execute(begin).await.ctx("change in place")?;
                        c.execute(sql, &[]).await.ctx("change in place")?;
                        c.batch_execute("COMMIT").await.ctx("change in place")
                    }
                    .await;
                    if done.is_err() {
                        // The transaction ends here, not with the connection.
                        let _ = c.batch_execute("ROLLBACK").await;
                    }
                    done.map(|()| started.elapsed())
                })
                .await?;
            Ok(blocks_writers.then_some(held))
        }
        (Kind::Alter { blocks_writers, sql }, Dialect::Dsql) => {
            let started = Instant::now();
            session
                .retry("change in place", |c| async move { c.execute(sql, &[]).await.ctx("change in place").map(drop) })
                .await?;
            Ok(blocks_writers.then(|| started.elapsed()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_statement_is_known_made_by_what_the_catalog_shows() {
        let t = TableName::new("public", "t");
        let col = |name: &str, present| Evidence::Column { name: name.into(), present };
        let con = |name: &str, present| Evidence::Constraint { name: name.into(), present };
        assert_eq!(evidence("ALTER TABLE \"public\".\"t\" ADD COLUMN \"s\" text", &t), Some(vec![col("s", true)]));
        assert_eq!(
            evidence("ALTER TABLE \"public\".\"t\" RENAME COLUMN \"a\" TO \"b\"", &t),
            Some(vec![col("a", false), col("b", true)])
        );
        assert_eq!(
            evidence("ALTER TABLE \"public\".\"t\" ADD CONSTRAINT \"c\" CHECK (x > 0) NOT VALID", &t),
            Some(vec![con("c", true)])
        );
        assert_eq!(
            evidence(
                "ALTER TABLE \"public\".\"t\" DROP CONSTRAINT \"my_key\", ADD CONSTRAINT \"t_pkey\" PRIMARY KEY USING INDEX \"t_pkey_idmig\"",
                &t
            ),
            Some(vec![
                con("t_pkey", true),
                con("my_key", false),
                Evidence::Relation { name: "t_pkey_idmig".into(), present: false }
            ])
        );
        assert_eq!(evidence("ALTER TABLE \"public\".\"t\" ALTER COLUMN \"a\" SET NOT NULL", &t), None);
    }

    #[test]
    fn statements_are_told_apart_by_how_they_are_made() {
        assert_eq!(
            kind("CREATE UNIQUE INDEX CONCURRENTLY \"a \"\"b\" ON \"public\".\"t\" (\"x\")"),
            Kind::ConcurrentIndex("a \"b".into())
        );
        assert_eq!(kind("ALTER TABLE ASYNC \"public\".\"t\" VALIDATE CONSTRAINT \"c\""), Kind::AsyncJob);
        let validate = "ALTER TABLE \"public\".\"t\" VALIDATE CONSTRAINT \"c\"";
        assert_eq!(kind(validate), Kind::Alter { blocks_writers: false, sql: validate });
        let not_null = "ALTER TABLE \"public\".\"t\" ALTER COLUMN \"email\" SET NOT NULL";
        assert_eq!(kind(not_null), Kind::Alter { blocks_writers: true, sql: not_null });
    }
}

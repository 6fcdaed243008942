//! Executing one step against the database, so that a kill at any point
//! resumes exactly once. DML steps commit with their progress row in one
//! transaction. DDL cannot share a transaction with DML on DSQL, so the
//! history row first says the statement is being sent; a resumed run that
//! finds that mark reads the catalog (or takes the server's "already
//! exists") before sending it again. Jobs are awaited by their id, kept in
//! the history row while they run.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::backfill::{batch_rows, batched, insert_source, next_bound_sql};
use super::history;
use crate::db::error::{DbError, ErrorContext};
use crate::db::{Dialect, Session, committed};
use crate::engine::plan::shape::TableName;
use crate::engine::steps::catalog::{read_shape, table_exists, widest_row_bytes};
use crate::engine::steps::shadow::{await_job, first_value};

/// What the history row says of the step in flight (`in_flight`, JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub step: usize,
    /// A DDL statement was (perhaps) sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The highest key a backfill has done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// A rebuild's status, as the table engine keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<serde_json::Value>,
}

impl InFlight {
    pub fn parse(text: Option<&str>) -> Option<Self> {
        text.and_then(|t| serde_json::from_str(t).ok())
    }

    pub fn text(&self) -> String {
        serde_json::to_string(self).expect("in-flight state serializes")
    }
}

/// Where a step's work is recorded: the history row of `version`.
pub struct Ledger<'a> {
    pub history: &'a TableName,
    pub version: &'a str,
    /// The step's number (0-based) among the migration's steps.
    pub step: usize,
    /// Told each job id and batch cursor as it is recorded (the operator's status).
    pub watcher: Option<&'a (dyn Fn(&InFlight) + Sync)>,
}

impl Ledger<'_> {
    fn tell(&self, state: &InFlight) {
        if let Some(watcher) = self.watcher {
            watcher(state);
        }
    }

    async fn mark(&self, session: &mut Session, state: &InFlight) -> Result<(), DbError> {
        self.tell(state);
        let text = state.text();
        let (history, version, step) = (self.history, self.version, self.step as i32);
        session
            .retry("record the step in flight", |c| {
                let text = text.clone();
                async move { history::progress(&c, history, version, step, Some(&text)).await }
            })
            .await
    }

    /// The step is done: `steps_applied` moves past it.
    pub async fn done(&self, session: &mut Session) -> Result<(), DbError> {
        let (history, version, next) = (self.history, self.version, self.step as i32 + 1);
        session
            .retry("record the step done", |c| async move { history::progress(&c, history, version, next, None).await })
            .await
    }
}

/// SQLSTATEs that say a DDL statement's object exists already (or is gone
/// already): after a lost reply, the statement had committed.
const MADE_ALREADY: [&str; 7] = ["42P07", "42701", "42710", "42P06", "42723", "42P16", "42704"];

/// One DDL statement in its own transaction. `resumed` is what the history
/// said of this step, if it was in flight.
pub async fn ddl(
    session: &mut Session,
    ledger: &Ledger<'_>,
    sql: &str,
    creates: Option<&TableName>,
    resumed: Option<&InFlight>,
) -> Result<(), DbError> {
    let was_sent = resumed.is_some_and(|r| r.sent);
    if was_sent && let Some(object) = creates {
        let exists = session.retry("read the catalog", |c| async move { table_exists(&c, object).await }).await?;
        if exists {
            tracing::info!(object = %object, "the statement had committed before its reply was lost");
            return ledger.done(session).await;
        }
    }
    ledger.mark(session, &InFlight { step: ledger.step, sent: true, ..Default::default() }).await?;
    let sent = session.retry("ddl", |c| async move { c.batch_execute(sql).await.ctx("ddl") }).await;
    match sent {
        Ok(()) => crate::engine::failpoint::hit("schema-ddl-committed"),
        Err(e) if was_sent && e.sqlstate.as_deref().is_some_and(|s| MADE_ALREADY.contains(&s)) => {
            tracing::info!(sqlstate = e.sqlstate.as_deref(), "the statement had committed before its reply was lost");
        }
        Err(e) => return Err(e),
    }
    ledger.done(session).await
}

/// Whether index `index` exists, and if so whether it is valid.
async fn index_state(client: &Client, index: &TableName) -> Result<Option<bool>, DbError> {
    let sql = "SELECT i.indisvalid FROM pg_catalog.pg_index i \
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname = $1 AND c.relname = $2";
    let row = client.query_opt(sql, &[&index.schema, &index.name]).await.ctx("read the index")?;
    Ok(row.map(|r| r.get(0)))
}

/// An index: on DSQL `CREATE INDEX ASYNC` and its job awaited; on
/// PostgreSQL `CREATE INDEX CONCURRENTLY`. A build that fails leaves an
/// INVALID index (which `IF NOT EXISTS` would silently accept): it is
/// dropped and built once more before the step fails.
pub async fn index(
    session: &mut Session,
    ledger: &Ledger<'_>,
    dialect: Dialect,
    sql: &str,
    index: &TableName,
    resumed: Option<&InFlight>,
) -> Result<(), DbError> {
    if let Some(job) = resumed.and_then(|r| r.job.clone()) {
        // A build started by the run that stopped: wait for it, never drop it.
        if await_job(session, &job, &format!("index {index}")).await.is_ok() {
            return ledger.done(session).await;
        }
    }
    for attempt in 1..=2 {
        let state = session.retry("read the index", |c| async move { index_state(&c, index).await }).await?;
        match state {
            Some(true) => return ledger.done(session).await,
            Some(false) => {
                tracing::warn!(index = %index, "an INVALID index from a failed build: dropped to build it again");
                let drop = format!("DROP INDEX {index}");
                let drop = drop.as_str();
                session
                    .retry("drop the invalid index", |c| async move { c.batch_execute(drop).await.ctx("drop index") })
                    .await?;
            }
            None => {}
        }
        let built = match dialect {
            Dialect::Dsql => {
                let job: Option<String> = session
                    .retry("create index", |c| async move {
                        let rows = c.simple_query(sql).await.ctx("create index")?;
                        Ok(first_value(&rows))
                    })
                    .await?;
                match job {
                    Some(job) => {
                        ledger
                            .mark(
                                session,
                                &InFlight { step: ledger.step, job: Some(job.clone()), ..Default::default() },
                            )
                            .await?;
                        crate::engine::failpoint::hit("schema-job-recorded");
                        await_job(session, &job, &format!("index {index}")).await
                    }
                    None => Err(DbError::engine("create index", "CREATE INDEX ASYNC returned no job id")),
                }
            }
            Dialect::Postgres => {
                session.retry("create index", |c| async move { c.batch_execute(sql).await.ctx("create index") }).await
            }
        };
        match built {
            Ok(()) => return ledger.done(session).await,
            Err(e) if attempt == 1 => tracing::warn!(error = %e, index = %index, "the index build failed; once more"),
            Err(e) => return Err(e),
        }
    }
    unreachable!("the second attempt returns")
}

/// Validates a constraint added NOT VALID: on DSQL a job, awaited.
pub async fn validate(
    session: &mut Session,
    ledger: &Ledger<'_>,
    dialect: Dialect,
    sql: &str,
    resumed: Option<&InFlight>,
) -> Result<(), DbError> {
    let what = "the constraint's validation";
    if let Some(job) = resumed.and_then(|r| r.job.clone()) {
        await_job(session, &job, what).await?;
        return ledger.done(session).await;
    }
    match dialect {
        Dialect::Dsql => {
            let job = session
                .retry("validate", |c| async move { Ok(first_value(&c.simple_query(sql).await.ctx("validate")?)) })
                .await?;
            if let Some(job) = job {
                ledger
                    .mark(session, &InFlight { step: ledger.step, job: Some(job.clone()), ..Default::default() })
                    .await?;
                await_job(session, &job, what).await?;
            }
        }
        Dialect::Postgres => {
            session.retry("validate", |c| async move { c.batch_execute(sql).await.ctx("validate") }).await?;
        }
    }
    ledger.done(session).await
}

/// Statements in one transaction with the step's progress: all or nothing.
pub async fn in_transaction(session: &mut Session, ledger: &Ledger<'_>, statements: &[String]) -> Result<(), DbError> {
    let progress = history::progress_sql(ledger.history);
    let (progress, version, next) = (progress.as_str(), ledger.version, ledger.step as i32 + 1);
    session
        .retry("dml", |c| async move {
            committed(&c, async {
                for s in statements {
                    c.batch_execute(s).await.ctx("dml")?;
                }
                c.execute(progress, &[&version, &next, &None::<String>]).await.ctx("record the step done")?;
                Ok(())
            })
            .await
        })
        .await
}

/// A backfill in key-range batches, each with its cursor in the same
/// transaction. A table without a one-column primary key runs it whole.
pub async fn backfill(
    session: &mut Session,
    ledger: &Ledger<'_>,
    tree: &pg_query::NodeEnum,
    sql: &str,
    table: &TableName,
    resumed: Option<&InFlight>,
) -> Result<u64, DbError> {
    let shape = session.retry("read the table", |c| async move { read_shape(&c, table).await }).await?;
    let key = shape.as_ref().and_then(|s| {
        let pk = s.primary_key()?;
        let [column] = pk.columns.as_slice() else { return None };
        Some((column.clone(), s.column(column)?.data_type.clone(), s.secondary_indexes()))
    });
    let Some((key, key_type, mut indexes)) = key else {
        tracing::info!(table = %table, "no one-column primary key: the statement runs whole");
        in_transaction(session, ledger, &[sql.to_string()]).await?;
        return Ok(1);
    };
    let mut written = table.clone();
    if let pg_query::NodeEnum::InsertStmt(insert) = tree {
        // The batch's writes land in the INSERT's table: its indexes count.
        // A walk of the tree already parsed: no parser, so no parser stack.
        let source = insert_source(insert);
        let into = match &source {
            Some(s) if !calls_aggregate_or_set(session, &s.functions).await? => {
                let into = &s.into;
                session.retry("read the table", |c| async move { read_shape(&c, into).await }).await?
            }
            _ => None,
        };
        let Some(into) = into else {
            tracing::info!(table = %table, "an INSERT ... SELECT that batches would change: it runs whole");
            in_transaction(session, ledger, &[sql.to_string()]).await?;
            return Ok(1);
        };
        indexes = into.secondary_indexes();
        written = source.map_or(written, |s| s.into);
    }
    let (first_sql, next_sql) =
        super::sql::on_parser_stack(|| (batched(tree, &key, &key_type, true), batched(tree, &key, &key_type, false)));
    let (Some(first_sql), Some(next_sql)) = (first_sql, next_sql) else {
        in_transaction(session, ledger, &[sql.to_string()]).await?;
        return Ok(1);
    };
    // Rows as wide as the widest read or written: within the byte limit too.
    let widest = {
        let (read, written) = (table, &written);
        session
            .retry("sample row widths", |c| async move {
                Ok(widest_row_bytes(&c, read).await.max(widest_row_bytes(&c, written).await))
            })
            .await?
    };
    let rows = batch_rows(indexes, widest);
    let table_text = table.to_string();
    let progress = history::progress_sql(ledger.history);
    let (version, step) = (ledger.version, ledger.step as i32);
    let mut cursor = resumed.and_then(|r| r.cursor.clone());
    let mut batches = 0;
    loop {
        let bound_sql = next_bound_sql(&table_text, &key, &key_type, cursor.is_none());
        let after = cursor.clone();
        let hi: Option<String> = session
            .retry("read the next batch", |c| {
                let (bound_sql, after) = (bound_sql.clone(), after.clone());
                async move {
                    let row = match &after {
                        None => c.query_one(bound_sql.as_str(), &[&rows]).await,
                        Some(lo) => c.query_one(bound_sql.as_str(), &[lo, &rows]).await,
                    };
                    Ok(row.ctx("read the next batch")?.get(0))
                }
            })
            .await?;
        let Some(hi) = hi else { break };
        let state = InFlight { step: ledger.step, cursor: Some(hi.clone()), ..Default::default() }.text();
        let (batch_sql, lo) = match &cursor {
            None => (first_sql.as_str(), None),
            Some(lo) => (next_sql.as_str(), Some(lo.clone())),
        };
        let history = ledger.history;
        session
            .retry("backfill batch", |c| {
                let (hi, lo, state, progress) = (hi.clone(), lo.clone(), state.clone(), progress.clone());
                async move {
                    // A lost reply to a commit: the history says whether it landed.
                    if done_up_to(&c, history, version).await?.as_deref() == Some(hi.as_str()) {
                        return Ok(());
                    }
                    committed(&c, async {
                        match &lo {
                            None => c.execute(batch_sql, &[&hi]).await.ctx("backfill batch")?,
                            Some(lo) => c.execute(batch_sql, &[lo, &hi]).await.ctx("backfill batch")?,
                        };
                        c.execute(progress.as_str(), &[&version, &step, &Some(state)]).await.ctx("record the batch")?;
                        Ok(())
                    })
                    .await
                }
            })
            .await?;
        batches += 1;
        crate::engine::failpoint::hit("schema-backfill-batch");
        ledger.tell(&InFlight { step: ledger.step, cursor: Some(hi.clone()), ..Default::default() });
        cursor = Some(hi);
    }
    ledger.done(session).await?;
    Ok(batches)
}

/// Whether any function of these names is an aggregate, a window function or
/// returns a set: any of them makes batches differ from one statement.
async fn calls_aggregate_or_set(session: &mut Session, functions: &[String]) -> Result<bool, DbError> {
    if functions.is_empty() {
        return Ok(false);
    }
    let names = functions.to_vec();
    session
        .retry("read the functions", |c| {
            let names = names.clone();
            async move {
                let row = c.query_one(AGGREGATE_OR_SET, &[&names]).await.ctx("read pg_proc")?;
                Ok(row.get(0))
            }
        })
        .await
}

const AGGREGATE_OR_SET: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc \
     WHERE proname = ANY($1::text[]) AND (prokind IN ('a', 'w') OR proretset))";

/// The cursor the history row holds for the step in flight.
async fn done_up_to(c: &Arc<Client>, history: &TableName, version: &str) -> Result<Option<String>, DbError> {
    let sql = format!("SELECT in_flight FROM {history} WHERE version = $1");
    let row = c.query_opt(sql.as_str(), &[&version]).await.ctx("read the history")?;
    let text: Option<String> = row.and_then(|r| r.get(0));
    Ok(InFlight::parse(text.as_deref()).and_then(|f| f.cursor))
}

//! Sessions that would block a lock on the production table. A statement
//! that needs ACCESS EXCLUSIVE (a rename, the in-place ALTER) queues behind
//! every transaction holding any lock on the table, and every reader and
//! writer queues behind it. So before taking such a lock the engine looks for
//! long transactions and sessions idle in a transaction on the table, and
//! waits for them to end while saying who they are (`BlockedBy`), instead of
//! blocking the application for a lock timeout again and again.
//!
//! PostgreSQL only: DSQL takes no locks (optimistic concurrency).

use std::fmt;
use std::time::Duration;

use crate::api::CutoverStatus;
use crate::db::{DbError, Dialect, ErrorContext, Session};
use crate::engine::error::EngineError;
use crate::engine::job::{Control, Job, Outcome, halted};
use crate::engine::plan::shape::TableName;
use crate::engine::status_keeper::{Save, StatusKeeper};
use crate::engine::store::{Severity, StatusSink};

/// A transaction on the table older than this would hold the lock up.
pub const LONG_TRANSACTION: Duration = Duration::from_secs(1);
/// How often the engine looks again while blocked.
pub const BLOCKED_POLL: Duration = Duration::from_millis(500);

/// A session in the way, as `pg_stat_activity` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocker {
    pub pid: i32,
    pub application_name: String,
    pub idle_in_transaction: bool,
    pub transaction_seconds: f64,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.idle_in_transaction { "idle in a transaction" } else { "in a transaction" };
        let name = if self.application_name.is_empty() { "no application_name" } else { &self.application_name };
        write!(f, "pid {} ({name}), {state} for {:.0}s", self.pid, self.transaction_seconds)
    }
}

/// Sessions other than ours holding or awaiting a lock on `$1` whose
/// transaction is idle or older than `$2` seconds.
const BLOCKERS: &str = "SELECT DISTINCT a.pid, coalesce(a.application_name, ''), \
        coalesce(a.state LIKE 'idle in transaction%', false), \
        extract(epoch FROM now() - a.xact_start)::float8 \
     FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'relation' AND l.relation = pg_catalog.to_regclass($1) \
       AND l.pid <> pg_catalog.pg_backend_pid() AND a.xact_start IS NOT NULL \
       AND (a.state LIKE 'idle in transaction%' OR now() - a.xact_start > make_interval(secs => $2::float8)) \
     ORDER BY 1";

/// The sessions that would block a lock on `table` now.
pub async fn blocking_sessions(session: &mut Session, table: &TableName) -> Result<Vec<Blocker>, DbError> {
    let name = table.to_string();
    let older_than = LONG_TRANSACTION.as_secs_f64();
    let (name, older_than) = (&name, &older_than);
    session
        .retry("look for blocking sessions", |c| async move {
            let rows = c.query(BLOCKERS, &[name, older_than]).await.ctx("look for blocking sessions")?;
            Ok(rows
                .iter()
                .map(|r| Blocker {
                    pid: r.get(0),
                    application_name: r.get(1),
                    idle_in_transaction: r.get(2),
                    transaction_seconds: r.get(3),
                })
                .collect())
        })
        .await
}

/// Waits until no session would block a lock on `table`, saying who blocks
/// meanwhile (status `cutover.blockedBy`, the condition `BlockedBy`, one
/// Warning event). Nothing is changed while it waits, so the engine may stop
/// here: then it answers how it was halted.
pub async fn wait_out_blockers<R: StatusSink>(
    job: &Job,
    session: &mut Session,
    keeper: &mut StatusKeeper<R>,
    table: &TableName,
    control: &Control,
) -> Result<Option<Outcome>, EngineError> {
    if job.dialect != Dialect::Postgres {
        return Ok(None);
    }
    let mut announced = false;
    loop {
        let blockers = blocking_sessions(session, table).await?;
        if blockers.is_empty() {
            if announced {
                keeper.status.cutover.get_or_insert_with(CutoverStatus::default).blocked_by.clear();
                keeper.event(Severity::Normal, "Unblocked", format!("nothing blocks a lock on {table} now")).await;
                keeper.say().await?;
            }
            return Ok(None);
        }
        if let Some(outcome) = halted(control) {
            keeper.status.cutover.get_or_insert_with(CutoverStatus::default).blocked_by.clear();
            return Ok(Some(outcome));
        }
        job.before_change().await?;
        let said: Vec<String> = blockers.iter().map(ToString::to_string).collect();
        keeper.status.cutover.get_or_insert_with(CutoverStatus::default).blocked_by = said.clone();
        if !announced {
            announced = true;
            tracing::warn!(table = %table, blockers = %said.join("; "), "waiting for sessions that would block the lock");
            let note = format!("waiting to lock {table} until these end: {}", said.join("; "));
            keeper.event(Severity::Warning, "BlockedBy", note).await;
            keeper.say().await?;
        } else {
            keeper.checkpoint(Save::WhenDue).await?;
        }
        let mut control = control.clone();
        tokio::select! {
            () = tokio::time::sleep(BLOCKED_POLL) => {}
            _ = control.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocker_says_who_it_is_and_how_long_it_has_held_on() {
        let b = Blocker {
            pid: 42,
            application_name: "pg_dump".into(),
            idle_in_transaction: false,
            transaction_seconds: 95.4,
        };
        assert_eq!(b.to_string(), "pid 42 (pg_dump), in a transaction for 95s");
        let idle = Blocker { application_name: String::new(), idle_in_transaction: true, ..b };
        assert_eq!(idle.to_string(), "pid 42 (no application_name), idle in a transaction for 95s");
    }
}

//! On PostgreSQL a fresh copy fills the new table without its primary key:
//! a row costs about half as much to insert into a table with no index, and
//! the key's index built once afterwards costs less than keeping it up row
//! by row (docs/benchmarks.md). The key is saved in the status before it is
//! dropped, and put back, as it was, before anything reads the new table by
//! id: after the copy, or first when a run resumes a copy stopped with the
//! key aside.

use crate::api::KeyAside;
use crate::db::{DbError, Dialect, ErrorContext, Session, committed};
use crate::engine::job::Job;
use crate::engine::plan::quote::ident;
use crate::engine::steps::catalog;

/// How long dropping the key waits for its lock: only this engine uses
/// the new table, so a wait means something else holds it; the copy then
/// keeps the key.
const DROP_LOCK_TIMEOUT_MS: u64 = 1_000;

/// The new table's primary key, to be set aside: None where the copy keeps
/// it (DSQL, which declares keys only in CREATE TABLE; a table that holds
/// rows already, copied by an earlier run; a table with no key).
pub async fn key_to_set_aside(job: &Job, session: &mut Session) -> Result<Option<KeyAside>, DbError> {
    if job.dialect != Dialect::Postgres {
        return Ok(None);
    }
    let shadow = &job.settings.shadow;
    let shape = session.retry("read new table", |c| async move { catalog::read_shape(&c, shadow).await }).await?;
    let Some(key) = shape.as_ref().and_then(|s| s.primary_key()) else { return Ok(None) };
    let empty = &format!("SELECT NOT EXISTS (SELECT 1 FROM {shadow})");
    let empty = session
        .retry("read new table", |c| async move {
            Ok(c.query_one(empty.as_str(), &[]).await.ctx("read new table")?.get::<_, bool>(0))
        })
        .await?;
    Ok(empty.then(|| KeyAside { name: key.name.clone(), definition: key.definition.clone() }))
}

/// Drops the key `aside` names; the caller has saved it in the status.
/// False when the server refuses (an object depends on it, its lock not
/// granted in time): the copy keeps the key then.
pub async fn set_key_aside(job: &Job, session: &mut Session, aside: &KeyAside) -> Result<bool, DbError> {
    let (shadow, name) = (&job.settings.shadow, aside.name.as_str());
    let sql = &format!(
        "SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT_MS}ms'; ALTER TABLE {shadow} DROP CONSTRAINT {}",
        ident(name)
    );
    let what = "set the primary key aside";
    let dropped = session
        .retry(what, |c| async move {
            if !catalog::has_constraint(&c, shadow, name).await? {
                return Ok(());
            }
            committed(&c, async { c.batch_execute(sql).await.ctx(what) }).await
        })
        .await;
    match dropped {
        Ok(()) => {
            tracing::info!(key = name, table = %shadow, "copying without the primary key; it is built after the copy");
            Ok(true)
        }
        Err(e) if e.breaks_connection() || e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the primary key stays on the new table during the copy");
            Ok(false)
        }
    }
}

/// Puts the key back as it was printed, when it is not there.
pub async fn restore_key(job: &Job, session: &mut Session, aside: &KeyAside) -> Result<(), DbError> {
    let (shadow, name) = (&job.settings.shadow, aside.name.as_str());
    // The definition is the server's own print of the key this engine made.
    let sql = &format!("ALTER TABLE {shadow} ADD CONSTRAINT {} {}", ident(name), aside.definition);
    let what = "put the primary key back";
    session
        .retry(what, |c| async move {
            if catalog::has_constraint(&c, shadow, name).await? {
                return Ok(());
            }
            c.batch_execute(sql).await.ctx(what)
        })
        .await?;
    tracing::info!(key = name, table = %shadow, "the primary key is back on the new table");
    Ok(())
}

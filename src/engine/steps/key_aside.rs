//! On PostgreSQL a fresh copy fills the new table without its primary key:
//! a row costs about half as much to insert into a table with no index, and
//! the key's index built once afterwards costs less than keeping it up row
//! by row (docs/benchmarks.md). The key is saved in the status before it is
//! dropped (with the statements that give back what a drop takes along),
//! and put back, as it was, before anything reads the new table by
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

/// The new table's primary key, to be set aside (the caller has found the
/// table empty: rows an earlier run copied keep it): None where the copy
/// keeps it (DSQL, which declares keys only in CREATE TABLE; no key).
pub async fn key_to_set_aside(job: &Job, session: &mut Session) -> Result<Option<KeyAside>, DbError> {
    if job.dialect != Dialect::Postgres {
        return Ok(None);
    }
    let shadow = &job.settings.shadow;
    let shape = session.retry("read new table", |c| async move { catalog::read_shape(&c, shadow).await }).await?;
    let Some(key) = shape.as_ref().and_then(|s| s.primary_key()) else { return Ok(None) };
    let (table, name) = (&shadow.to_string(), key.name.as_str());
    let then = session
        .retry("read the primary key", |c| async move {
            let row = c.query_one(KEY_EXTRAS, &[table, &name]).await.ctx("read the primary key")?;
            Ok(row.get::<_, Vec<String>>(0))
        })
        .await?;
    Ok(Some(KeyAside { name: key.name.clone(), definition: key.definition.clone(), then }))
}

/// The statements that give a key (`$2` on the table `$1`) back what a
/// drop takes with it besides its definition, printed by the server.
const KEY_EXTRAS: &str = "\
    WITH k AS (SELECT c.oid, c.conname, i.indexrelid, i.indisclustered, i.indisreplident \
               FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_index i ON i.indexrelid = c.conindid \
               WHERE c.conrelid = $1::text::regclass AND c.conname = $2) \
    SELECT array_remove(ARRAY[ \
        (SELECT format('COMMENT ON CONSTRAINT %I ON %s IS %L', k.conname, $1::text, d.description) FROM k \
         JOIN pg_catalog.pg_description d ON d.objoid = k.oid AND d.classoid = 'pg_catalog.pg_constraint'::regclass), \
        (SELECT format('COMMENT ON INDEX %s IS %L', k.indexrelid::regclass, d.description) FROM k \
         JOIN pg_catalog.pg_description d ON d.objoid = k.indexrelid \
          AND d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0), \
        (SELECT format('ALTER TABLE %s CLUSTER ON %I', $1::text, k.conname) FROM k WHERE k.indisclustered), \
        (SELECT format('ALTER TABLE %s REPLICA IDENTITY USING INDEX %I', $1::text, k.conname) FROM k \
         WHERE k.indisreplident) \
    ], NULL)::text[]";

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

/// Puts the key back as it was printed, with what it carried, when it is
/// not there; in one transaction, so a key found there is whole.
pub async fn restore_key(job: &Job, session: &mut Session, aside: &KeyAside) -> Result<(), DbError> {
    let (shadow, name) = (&job.settings.shadow, aside.name.as_str());
    // The server's own prints, of the key this engine made and its extras.
    let add = format!("ALTER TABLE {shadow} ADD CONSTRAINT {} {}", ident(name), aside.definition);
    let statements = &std::iter::once(add).chain(aside.then.iter().cloned()).collect::<Vec<_>>();
    let what = "put the primary key back";
    session
        .retry(what, |c| async move {
            if catalog::has_constraint(&c, shadow, name).await? {
                return Ok(());
            }
            committed(&c, async {
                for sql in statements {
                    c.batch_execute(sql).await.ctx(what)?;
                }
                Ok(())
            })
            .await
        })
        .await?;
    tracing::info!(key = name, table = %shadow, "the primary key is back on the new table");
    Ok(())
}

//! The identity added to the table itself, where the server accepts
//! `ALTER COLUMN ... ADD GENERATED ... AS IDENTITY`: no copy, no second table,
//! and everything the table carries stays as it is.
//!
//! PostgreSQL: one short transaction that takes the table's lock with a lock
//! timeout (writers queue behind it for at most that long; a timeout is retried
//! with backoff), reads the highest id under the lock, drops the id's old
//! default (its sequence is kept and reported) and adds the identity past
//! every id. DSQL: the statement is tried in a DDL transaction of its own (a
//! refusal changes nothing), then the identity is moved past the ids written
//! meanwhile. Either way the catalog says on resume whether it happened.

use std::sync::Arc;

use super::catalog;
use super::identity::{read_max_id, read_next_value, restart_identity_after_max};
use crate::api::IdentityStatus;
use crate::db::{DbError, Dialect, ErrorContext};
use crate::engine::error::EngineError;
use crate::engine::failpoint;
use crate::engine::job::Job;
use crate::engine::plan::shape::TableName;
use crate::engine::plan::sql::{
    IN_PLACE_LOCK_TIMEOUT_MS, add_identity, drop_default, lock_table, restart_value, select_max_id,
};

/// How the attempt ended.
#[derive(Debug)]
pub enum InPlace {
    /// The table's id is an identity now; `locked` is how long writers were
    /// held off (the lock held, or the DDL statement on DSQL), when this
    /// run made the change.
    Added { identity: IdentityStatus, locked: Option<std::time::Duration> },
    /// The server refused `ADD GENERATED` (what it said): the copy must do it.
    Refused(String),
}

/// Whether an error is the server refusing the statement itself (DSQL before
/// it supported it: `0A000` "unsupported ALTER TABLE ALTER COLUMN ... ADD
/// IDENTITY statement"), as opposed to a failure to run it.
pub fn refuses_add_identity(e: &DbError) -> bool {
    e.sqlstate.as_deref() == Some("0A000")
        || (e.message.to_ascii_lowercase().contains("unsupported")
            && e.message.to_ascii_lowercase().contains("identity"))
}

/// Adds the identity in place, or says why the server would not.
pub async fn add_identity_in_place(job: &Arc<Job>) -> Result<InPlace, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    let (table, id) = (&s.source, s.id_column.as_str());
    let shape = session.retry("read table", |c| async move { catalog::read_shape(&c, table).await }).await?;
    let column = shape.as_ref().and_then(|t| t.column(id));
    let default = column.and_then(|c| c.default.clone());
    let already = column.is_some_and(|c| c.identity.is_some());
    let mut locked = None;
    let replaced_default = if already {
        tracing::info!(table = %table, "the id is an identity already (a crash after the change); checking it");
        None
    } else {
        job.before_change().await?;
        let added = match job.dialect {
            Dialect::Postgres => add_under_lock(job, &mut session, default.is_some()).await,
            Dialect::Dsql if default.is_some() => {
                let why = "the id column has a default; on DSQL dropping it and adding the identity are two \
                           DDL transactions, which would not be one step";
                return Ok(InPlace::Refused(why.to_string()));
            }
            Dialect::Dsql => add_in_own_transaction(job, &mut session).await,
        };
        match added {
            Ok(held) => locked = Some(held),
            Err(e) if refuses_add_identity(&e) => return Ok(InPlace::Refused(e.message)),
            Err(e) => return Err(e.into()),
        }
        failpoint::hit("in-place-added");
        default
    };
    let mut identity = settle_identity(job, &mut session).await?;
    identity.replaced_default = replaced_default;
    Ok(InPlace::Added { identity, locked })
}

/// Reads the identity's next value back and checks it is above every id.
/// Writers use the identity as soon as the change commits, so it is never
/// restarted backwards: only when ids were written above it (DSQL, where no
/// lock holds writers off while the change is made) is it moved forward.
async fn settle_identity(job: &Job, session: &mut crate::db::Session) -> Result<IdentityStatus, EngineError> {
    let s = &job.settings;
    let table = &s.source;
    let next_value = read_next_value(job, session, table).await?;
    let max_id = read_max_id(session, table, &s.id_column).await?;
    let floor = max_id.unwrap_or(0).max(s.start_after.unwrap_or(0));
    if next_value > floor {
        return Ok(IdentityStatus { restart_with: next_value, next_value, replaced_default: None });
    }
    tracing::warn!(next_value, floor, "ids were written above the new identity; moving it forward");
    restart_identity_after_max(job, session, table).await
}

/// Sequences owned by the column `$3` of `$1.$2` (a `serial`'s), as regclass text.
const OWNED_SEQUENCES: &str = "SELECT s.oid::regclass::text FROM pg_catalog.pg_depend d \
     JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
     JOIN pg_catalog.pg_class t ON t.oid = d.refobjid JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'a' \
       AND n.nspname = $1 AND t.relname = $2 AND a.attname = $3";

/// PostgreSQL: lock, read the highest id, replace the default by the
/// identity, in one transaction.
async fn add_under_lock(
    job: &Job,
    session: &mut crate::db::Session,
    has_default: bool,
) -> Result<std::time::Duration, DbError> {
    let s = &job.settings;
    let (table, id) = (&s.source, s.id_column.as_str());
    let begin = &format!("BEGIN; SET LOCAL lock_timeout = '{IN_PLACE_LOCK_TIMEOUT_MS}ms'; {}", lock_table(table));
    let max_sql = &select_max_id(table, id);
    session
        .retry("add identity in place", |c| async move {
            let attempt = async {
                c.batch_execute(begin).await.ctx("lock the table")?;
                // Writers wait from here until the commit: the window.
                let locked = std::time::Instant::now();
                let max: Option<i64> = c.query_one(max_sql.as_str(), &[]).await.ctx("read highest id")?.get(0);
                let start = restart_value(max, s.start_after)
                    .ok_or_else(|| DbError::engine("add identity", "ids have reached the largest bigint"))?;
                let mut ddl = Vec::new();
                if has_default {
                    ddl.push(drop_default(table, id));
                    // A serial's sequence stays, detached from the column: kept
                    // for whoever still uses it, and no longer mistaken for the
                    // identity's own sequence.
                    let owned =
                        c.query(OWNED_SEQUENCES, &[&table.schema, &table.name, &id]).await.ctx("read sequences")?;
                    ddl.extend(owned.iter().map(|r| format!("ALTER SEQUENCE {} OWNED BY NONE", r.get::<_, String>(0))));
                }
                ddl.push(add_identity(table, id, s.generation, start, s.cache(Dialect::Postgres)));
                ddl.push("COMMIT".to_string());
                c.batch_execute(&ddl.join(";\n")).await.ctx("add identity")?;
                Ok(locked.elapsed())
            }
            .await;
            if attempt.is_err() {
                let _ = c.batch_execute("ROLLBACK").await;
            }
            attempt
        })
        .await
}

/// DSQL: the statement alone in its DDL transaction, starting past the ids
/// read just before (the identity is moved again after).
async fn add_in_own_transaction(job: &Job, session: &mut crate::db::Session) -> Result<std::time::Duration, DbError> {
    let s = &job.settings;
    let (table, id) = (&s.source, s.id_column.as_str());
    let max = read_max_id(session, table, id).await?;
    let start = restart_value(max, s.start_after)
        .ok_or_else(|| DbError::engine("add identity", "ids have reached the largest bigint"))?;
    let ddl = &add_identity(table, id, s.generation, start, s.cache(Dialect::Dsql));
    session
        .retry("add identity in place", |c| async move {
            let started = std::time::Instant::now();
            c.batch_execute(ddl).await.ctx("add identity")?;
            Ok(started.elapsed())
        })
        .await
}

/// The scratch table of the probe beside `table` (its name cut to leave room).
fn probe_table(table: &TableName) -> TableName {
    let stem: String = table.name.chars().take(48).collect();
    table.sibling(format!("{stem}_idmig_probe"))
}

/// Whether DSQL takes ADD IDENTITY at all, asked of a scratch table of its
/// own so that the answer costs nothing of the real one: the way is then
/// chosen before the approval gate, which guards only the real change (and
/// a refusal means the copy runs first and asks for approval after its
/// verification). Each statement is its own DDL transaction.
pub async fn probe_add_identity(job: &Job) -> Result<Option<String>, EngineError> {
    let probe = probe_table(&job.settings.source);
    let mut session = job.session();
    let drop = &format!("DROP TABLE IF EXISTS {probe}");
    let create = &format!("CREATE TABLE {probe} (id bigint PRIMARY KEY)");
    let add = &add_identity(&probe, "id", crate::api::Generation::ByDefault, 1, job.settings.cache(Dialect::Dsql));
    // A table of that name is dropped only when it is what a crashed probe
    // leaves (one column, no rows): a user's table is never dropped.
    let probe_ref = &probe;
    let leftover = session
        .retry("probe: look for the scratch table", |c| async move {
            if !super::catalog::table_exists(&c, probe_ref).await? {
                return Ok(None);
            }
            let shape = format!(
                "SELECT (SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass($1) \
                 AND attnum > 0 AND NOT attisdropped) = 1 AND NOT EXISTS (SELECT 1 FROM {probe_ref})"
            );
            let ours: bool = c
                .query_one(shape.as_str(), &[&probe_ref.to_string()])
                .await
                .ctx("probe: read the scratch table")?
                .get(0);
            Ok(Some(ours))
        })
        .await?;
    if leftover == Some(false) {
        return Err(crate::engine::plan::validate::InvalidInput::one(
            "spec.table",
            format!(
                "{probe} is taken by a table with rows or other columns; the DSQL probe needs that name (rename it)"
            ),
        )
        .into());
    }
    job.before_change().await?;
    session.retry("probe: clear", |c| async move { c.batch_execute(drop).await.ctx("probe: clear") }).await?;
    session.retry("probe: create", |c| async move { c.batch_execute(create).await.ctx("probe: create") }).await?;
    let answer = session.retry("probe: add identity", |c| async move { c.batch_execute(add).await.ctx("probe") }).await;
    session.retry("probe: drop", |c| async move { c.batch_execute(drop).await.ctx("probe: drop") }).await?;
    match answer {
        Ok(()) => Ok(None),
        Err(e) if refuses_add_identity(&e) => Ok(Some(e.message)),
        Err(e) => Err(e.into()),
    }
}

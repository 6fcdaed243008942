//! The shadow table: created once (reused on resume when its shape is the
//! expected one), and its secondary indexes built after the copy.

use super::catalog::{self, IndexState};
use crate::db::Dialect;
use crate::db::{DbError, ErrorContext, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::failpoint;
use crate::engine::job::Job;
use crate::engine::plan::ddl::{create_shadow_table, index_builds};
use crate::engine::plan::quote::literal;
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::sql::drop_index;

/// Creates the shadow table, or checks that the one already there is ours.
pub async fn ensure_shadow_table(job: &Job, session: &mut Session, source: &TableShape) -> Result<(), EngineError> {
    let settings = &job.settings;
    let shadow = &settings.shadow;
    let existing = session.retry("read shadow table", |c| async move { catalog::read_shape(&c, shadow).await }).await?;
    if let Some(found) = existing {
        let id = found.column(&settings.id_column);
        let same_columns = found.all_columns() == source.all_columns();
        if same_columns && id.is_some_and(|c| c.identity.is_some()) {
            tracing::info!(table = %shadow, "reusing the shadow table created earlier");
            return Ok(());
        }
        return Err(CheckFailed::ForeignShadow(shadow.clone()).into());
    }
    let ddl = &create_shadow_table(source, settings);
    session
        .retry("create shadow table", |c| async move {
            // A lost reply to a committed CREATE must not fail the retry.
            if catalog::table_exists(&c, shadow).await? {
                return Ok(());
            }
            c.batch_execute(ddl).await.ctx("create shadow table")
        })
        .await?;
    Ok(())
}

/// Builds the source's secondary indexes on the shadow table: each one DDL
/// statement in its own transaction; on DSQL `CREATE INDEX ASYNC` and a wait on
/// its job. Valid indexes from an earlier run are kept; invalid ones rebuilt.
pub async fn build_indexes(job: &Job, session: &mut Session, source: &TableShape) -> Result<usize, EngineError> {
    let settings = &job.settings;
    let schema = settings.shadow.schema.as_str();
    let mut built = 0;
    for index in &index_builds(source, &settings.source, &settings.shadow, job.dialect) {
        let state =
            session.retry("read index", |c| async move { catalog::index_state(&c, schema, &index.name).await }).await?;
        match state {
            IndexState::Valid => continue,
            IndexState::Invalid => {
                tracing::warn!(index = %index.name, "dropping an index left invalid by an earlier build");
                let sql = &drop_index(schema, &index.name);
                session
                    .retry("drop invalid index", |c| async move { c.batch_execute(sql).await.ctx("drop index") })
                    .await?;
            }
            IndexState::Absent => {}
        }
        tracing::info!(index = %index.name, "building index");
        match job.dialect {
            Dialect::Postgres => {
                session
                    .retry("create index", |c| async move {
                        if catalog::index_state(&c, schema, &index.name).await? == IndexState::Valid {
                            return Ok(());
                        }
                        c.batch_execute(&index.sql).await.ctx("create index")
                    })
                    .await?
            }
            Dialect::Dsql => build_async_index(session, &index.sql, &index.name).await?,
        }
        failpoint::hit("index-built");
        built += 1;
    }
    Ok(built)
}

/// DSQL: `CREATE INDEX ASYNC` returns a job id; `sys.wait_for_job` returns
/// true when the index is ready and false when the build failed.
async fn build_async_index(session: &mut Session, sql: &str, name: &str) -> Result<(), DbError> {
    let job_id: String = session
        .retry("create index", |c| async move {
            let rows = c.simple_query(sql).await.ctx("create index")?;
            first_value(&rows).ok_or_else(|| DbError::engine("create index", "CREATE INDEX ASYNC returned no job id"))
        })
        .await?;
    tracing::info!(index = name, job_id = %job_id, "waiting for the index build job");
    // The job id goes in as a literal: its SQL type is DSQL's to choose.
    let wait = &format!("SELECT sys.wait_for_job({})", literal(&job_id));
    let ok: bool = session
        .retry("wait for index job", |c| async move {
            let rows = c.simple_query(wait).await.ctx("wait for index job")?;
            Ok(first_value(&rows).is_some_and(|v| v == "t" || v.eq_ignore_ascii_case("true")))
        })
        .await?;
    if ok {
        Ok(())
    } else {
        Err(DbError::engine(
            "build index",
            format!("index {name}: build job {job_id} failed (the index is left INVALID)"),
        ))
    }
}

/// The first column of the first row of a simple query's answer.
pub fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

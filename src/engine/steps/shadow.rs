//! The shadow table: created once (reused on resume when its shape is the
//! expected one), and its secondary indexes built after the copy.

use std::time::{Duration, Instant};

use super::catalog::{self, IndexState};
use super::fidelity;
use crate::db::Dialect;
use crate::db::{DbError, ErrorContext, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::failpoint;
use crate::engine::job::Job;
use crate::engine::plan::ddl::{create_shadow_table, index_builds};
use crate::engine::plan::fidelity::{index_statements, shadow_statements};
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::sql::drop_index;
use crate::engine::plan::sql::{JOB_STATUS, JobVerdict, job_verdict, wait_for_job};

/// Creates the shadow table, or checks that the one already there is ours;
/// what the server refused to carry, described.
pub async fn ensure_shadow_table(
    job: &Job,
    session: &mut Session,
    source: &TableShape,
) -> Result<Vec<String>, EngineError> {
    let settings = &job.settings;
    let shadow = &settings.shadow;
    let existing = session.retry("read shadow table", |c| async move { catalog::read_shape(&c, shadow).await }).await?;
    if let Some(found) = existing {
        let id = found.column(&settings.id_column);
        let same_columns = found.all_columns() == source.all_columns();
        if same_columns && id.is_some_and(|c| c.identity.is_some()) {
            tracing::info!(table = %shadow, "reusing the shadow table created earlier");
            return apply_extras(job, session, source).await;
        }
        return Err(CheckFailed::ForeignShadow(shadow.clone()).into());
    }
    job.before_change().await?;
    create_once(session, shadow, &create_shadow_table(source, settings, job.dialect), "create shadow table").await?;
    apply_extras(job, session, source).await
}

/// Runs the `CREATE TABLE` `ddl` of `table`, retried; a lost reply to a
/// committed CREATE does not fail the retry (the table is found there).
pub async fn create_once(session: &mut Session, table: &TableName, ddl: &str, what: &str) -> Result<(), DbError> {
    session
        .retry(what, |c| async move {
            if catalog::table_exists(&c, table).await? {
                return Ok(());
            }
            // One statement, which may carry spec text: the extended protocol.
            c.execute(ddl, &[]).await.ctx(what).map(drop)
        })
        .await
}

/// Owner, privileges, comments, statistics and policies of the source, on
/// the shadow (idempotent: a resumed run applies them again); what the
/// server refused, described.
async fn apply_extras(job: &Job, session: &mut Session, source: &TableShape) -> Result<Vec<String>, EngineError> {
    let s = &job.settings;
    let statements = shadow_statements(&source.fidelity, source, &s.source, &s.shadow, job.dialect);
    job.before_change().await?;
    Ok(fidelity::apply_carrying(session, "carry table extras", &statements, job.dialect).await?)
}

/// Builds the source's secondary indexes on the shadow table: each one DDL
/// statement in its own transaction; on DSQL `CREATE INDEX ASYNC` and a wait on
/// its job. Valid indexes from an earlier run are kept. An invalid one is
/// rebuilt on PostgreSQL; on DSQL it may be a build still running (dropping
/// it would cancel the build), so the engine waits for it instead. Returns
/// how many were built, and what of their extras the server refused.
pub async fn build_indexes(
    job: &Job,
    session: &mut Session,
    source: &TableShape,
) -> Result<(usize, Vec<String>), EngineError> {
    let settings = &job.settings;
    let schema = settings.shadow.schema.as_str();
    let mut built = 0;
    for index in &index_builds(source, &settings.source, &settings.shadow, job.dialect) {
        let state =
            session.retry("read index", |c| async move { catalog::index_state(&c, schema, &index.name).await }).await?;
        match (state, job.dialect) {
            (IndexState::Valid, _) => continue,
            (IndexState::Invalid, Dialect::Dsql) => {
                tracing::info!(index = %index.name, "an earlier build of the index is not finished; waiting for it");
                wait_until_valid(session, schema, &index.name).await?;
                built += 1;
                continue;
            }
            (IndexState::Invalid, Dialect::Postgres) => {
                tracing::warn!(index = %index.name, "dropping an index left invalid by an earlier build");
                let sql = &drop_index(schema, &index.name);
                session
                    .retry("drop invalid index", |c| async move { c.batch_execute(sql).await.ctx("drop index") })
                    .await?;
            }
            (IndexState::Absent, _) => {}
        }
        if let Some(left_out) = &index.left_out {
            tracing::warn!(index = %index.name, "{left_out}");
        }
        tracing::info!(index = %index.name, "building index");
        job.before_change().await?;
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
            Dialect::Dsql => build_async_index_twice(session, &index.sql, schema, &index.name).await?,
        }
        failpoint::hit("index-built");
        built += 1;
    }
    let extras = index_statements(&source.fidelity, source, &settings.source, &settings.shadow, job.dialect);
    job.before_change().await?;
    let refused = fidelity::apply_carrying(session, "carry index extras", &extras, job.dialect).await?;
    Ok((built, refused))
}

/// How long the engine waits for one DSQL index build before it gives up.
pub const INDEX_BUILD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How often an index whose job is unknown is looked at again.
const INDEX_POLL: Duration = Duration::from_secs(2);

/// DSQL: `CREATE INDEX ASYNC` answers a job id; `CALL sys.wait_for_job` waits
/// for it and answers false when the job failed *or the wait timed out*, so
/// `sys.jobs` tells which. A lost reply to the CREATE shows on its retry as
/// 42P07 (the index exists): the engine then waits on the catalog.
async fn build_async_index(session: &mut Session, sql: &str, schema: &str, name: &str) -> Result<(), DbError> {
    let job_id: Option<String> = session
        .retry("create index", |c| async move {
            match c.simple_query(sql).await {
                Ok(rows) => first_value(&rows)
                    .map(Some)
                    .ok_or_else(|| DbError::engine("create index", "CREATE INDEX ASYNC returned no job id")),
                Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42P07") => Ok(None),
                Err(e) => Err(DbError::from_pg("create index", &e)),
            }
        })
        .await?;
    let Some(job_id) = job_id else {
        tracing::info!(index = name, "the index exists already (a lost reply); waiting for its build");
        return wait_until_valid(session, schema, name).await;
    };
    await_job(session, &job_id, &format!("index {name}")).await
}

/// A DSQL index build whose job failed is built once more (what the failed
/// build left is dropped first: its job has ended, so nothing is cancelled).
/// A second failure is [`EngineError::IndexBuild`]: on a rebuild's new
/// table, the changes' own refusal (an index that does not apply to a new
/// type, a value it cannot take), where ALTER TABLE would refuse too.
pub async fn build_async_index_twice(
    session: &mut Session,
    sql: &str,
    schema: &str,
    name: &str,
) -> Result<(), EngineError> {
    match build_async_index(session, sql, schema, name).await {
        Err(e) if job_failed(&e) => {
            tracing::warn!(index = name, error = %e, "the index build failed; building it once more");
            let state =
                session.retry("read index", |c| async move { catalog::index_state(&c, schema, name).await }).await?;
            if state != IndexState::Absent {
                let sql = &drop_index(schema, name);
                session
                    .retry("drop the failed index", |c| async move { c.batch_execute(sql).await.ctx("drop index") })
                    .await?;
            }
            match build_async_index(session, sql, schema, name).await {
                Err(e) if job_failed(&e) => {
                    Err(EngineError::IndexBuild { index: name.to_string(), message: e.message })
                }
                other => Ok(other?),
            }
        }
        other => Ok(other?),
    }
}

/// The context of a DSQL job that ended as failed or cancelled.
const JOB_FAILED: &str = "the DSQL job failed";

/// Whether `e` is a DSQL job that ended as failed (not a wait cut short).
pub fn job_failed(e: &DbError) -> bool {
    e.context == JOB_FAILED
}

/// Waits for the DSQL job `job_id` (an index build, a constraint's
/// validation) to finish; `what` names its object in errors.
pub async fn await_job(session: &mut Session, job_id: &str, what: &str) -> Result<(), DbError> {
    let wait = &wait_for_job(job_id)
        .ok_or_else(|| DbError::engine("wait for job", format!("{job_id:?} is not a DSQL job id")))?;
    tracing::info!(what, job_id = %job_id, "waiting for the DSQL job");
    let deadline = Instant::now() + INDEX_BUILD_TIMEOUT;
    loop {
        let finished: bool = session
            .retry("wait for job", |c| async move {
                let rows = c.simple_query(wait).await.ctx("wait for job")?;
                Ok(first_value(&rows).is_some_and(|v| v == "t" || v.eq_ignore_ascii_case("true")))
            })
            .await?;
        let (status, details): (Option<String>, Option<String>) = if finished {
            (None, None)
        } else {
            session
                .retry("read job", |c| async move {
                    let row = c.query_opt(JOB_STATUS, &[&job_id]).await.ctx("read sys.jobs")?;
                    Ok(row.map_or((None, None), |r| (r.get(0), r.get(1))))
                })
                .await?
        };
        match job_verdict(finished, status.as_deref(), details.as_deref()) {
            JobVerdict::Done => return Ok(()),
            JobVerdict::Failed(why) => {
                return Err(DbError::engine(JOB_FAILED, format!("{what}: job {job_id} {why}")));
            }
            JobVerdict::Wait if Instant::now() > deadline => {
                return Err(DbError::engine(
                    "wait for job",
                    format!("{what}: job {job_id} still runs after {INDEX_BUILD_TIMEOUT:?}"),
                ));
            }
            JobVerdict::Wait => tracing::info!(what, job_id = %job_id, ?status, "the job continues"),
        }
    }
}

/// Waits until DSQL reports the index valid: a build whose job id is not known
/// (a lost reply, or an earlier run's build) is never dropped, since that
/// would cancel it.
async fn wait_until_valid(session: &mut Session, schema: &str, name: &str) -> Result<(), DbError> {
    let deadline = Instant::now() + INDEX_BUILD_TIMEOUT;
    loop {
        let state =
            session.retry("read index", |c| async move { catalog::index_state(&c, schema, name).await }).await?;
        match state {
            IndexState::Valid => return Ok(()),
            IndexState::Absent => {
                return Err(DbError::engine(
                    "build index",
                    format!("index {name} disappeared while it was being built"),
                ));
            }
            IndexState::Invalid if Instant::now() > deadline => {
                return Err(DbError::engine(
                    "build index",
                    format!(
                        "index {name} is still not valid after {INDEX_BUILD_TIMEOUT:?}; its build job may have failed \
                         (see sys.jobs): drop the index and run again"
                    ),
                ));
            }
            IndexState::Invalid => tokio::time::sleep(INDEX_POLL).await,
        }
    }
}

/// The first column of the first row of a simple query's answer.
pub fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

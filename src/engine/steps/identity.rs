//! The identity after either path: moved past every id (and `startAfter`)
//! and its next value read back, without using it where the server allows.

use super::shadow::first_value;
use crate::api::IdentityStatus;
use crate::db::{DbError, ErrorClass, ErrorContext, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::job::Job;
use crate::engine::plan::quote::literal;
use crate::engine::plan::shape::TableName;
use crate::engine::plan::sql::{restart_identity, restart_value, select_max_id, setval_identity};

/// The highest id of `table` (None when it is empty), in a statement of its own.
pub async fn read_max_id(session: &mut Session, table: &TableName, id: &str) -> Result<Option<i64>, DbError> {
    let sql = &select_max_id(table, id);
    session
        .retry(
            "read highest id",
            |c| async move { Ok(c.query_one(sql.as_str(), &[]).await.ctx("read highest id")?.get(0)) },
        )
        .await
}

/// `RESTART WITH` past the highest id (and `startAfter`), falling back to
/// `setval` where the engine refuses it; then the next value is read back and
/// must be above every id.
pub async fn restart_identity_after_max(
    job: &Job,
    session: &mut Session,
    table: &TableName,
) -> Result<IdentityStatus, EngineError> {
    let s = &job.settings;
    let max_id = read_max_id(session, table, &s.id_column).await?;
    let restart_with =
        restart_value(max_id, s.start_after).ok_or_else(|| EngineError::from(CheckFailed::IdsExhausted))?;

    let restart = &restart_identity(table, &s.id_column, restart_with);
    match session
        .retry("restart identity", |c| async move { c.batch_execute(restart).await.ctx("restart identity") })
        .await
    {
        Ok(()) => {}
        Err(e) if e.class == ErrorClass::Permanent => {
            tracing::warn!(error = %e, "RESTART WITH refused; setting the sequence instead");
            let setval = &setval_identity(table, &s.id_column, restart_with);
            session
                .retry("set identity sequence", |c| async move { c.batch_execute(setval).await.ctx("setval") })
                .await?;
        }
        Err(e) => return Err(e.into()),
    }

    let next_value = read_next_value(job, session, table).await?;
    let floor = max_id.unwrap_or(0).max(s.start_after.unwrap_or(0));
    if next_value <= floor {
        return Err(CheckFailed::IdentityTooLow { next_value, floor }.into());
    }
    tracing::info!(restart_with, next_value, "identity moved past the highest id");
    Ok(IdentityStatus { restart_with, next_value, replaced_default: None })
}

/// The value the identity's sequence hands out next, read without using it
/// where the sequence can be read; otherwise by drawing one value.
pub async fn read_next_value(job: &Job, session: &mut Session, table: &TableName) -> Result<i64, EngineError> {
    let s = &job.settings;
    let name = table;
    let table = &table.to_string();
    let column = &s.id_column.clone();
    let seq: Option<String> = session
        .retry("find identity sequence", |c| async move {
            Ok(c.query_one("SELECT pg_get_serial_sequence($1, $2)", &[&table, &column])
                .await
                .ctx("find sequence")?
                .get(0))
        })
        .await?;
    let seq = seq.ok_or_else(|| {
        EngineError::from(CheckFailed::NoIdentitySequence { table: name.clone(), column: column.clone() })
    })?;
    // The name comes from the catalog, already quoted by pg_get_serial_sequence.
    let read = &format!("SELECT last_value, is_called FROM {seq}");
    match session
        .retry("read identity sequence", |c| async move { c.simple_query(read).await.ctx("read sequence") })
        .await
    {
        Ok(rows) => {
            let values = match rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some((r.get(0), r.get(1))),
                _ => None,
            }) {
                Some((Some(last), Some(called))) => (last.parse::<i64>().ok(), called == "t"),
                _ => (None, false),
            };
            match values {
                (Some(last), true) => Ok(last + 1),
                (Some(last), false) => Ok(last),
                (None, _) => Err(CheckFailed::SequenceUnreadable(seq.clone()).into()),
            }
        }
        Err(e) if e.class == ErrorClass::Permanent => {
            tracing::info!(error = %e, "sequence not readable; drawing one value to check it");
            let draw = &format!("SELECT nextval({})", literal(&seq));
            let rows = session
                .retry("draw identity value", |c| async move { c.simple_query(draw).await.ctx("nextval") })
                .await?;
            first_value(&rows)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| EngineError::from(CheckFailed::NextvalEmpty(seq.clone())))
        }
        Err(e) => Err(e.into()),
    }
}

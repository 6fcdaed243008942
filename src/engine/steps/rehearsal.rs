//! Runs the rehearsal of [`crate::engine::plan::changes::rehearsal`] on
//! PostgreSQL: the changes by ALTER TABLE on an empty temporary copy of the
//! table, in a transaction that is always rolled back, and the copy's
//! catalog read before it goes. Nothing outside the session's temporary
//! schema is touched; the original is only read (LIKE takes ACCESS SHARE
//! for the few milliseconds the transaction lasts).

use crate::db::{DbError, ErrorContext, Session};
use crate::engine::error::EngineError;
use crate::engine::plan::changes::rehearsal::{REHEARSAL_TABLE, refuses_the_change, rehearsal};
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::validate::{InvalidInput, Problem};
use crate::engine::steps::catalog;

/// What the rehearsal answered.
enum Answer {
    /// The empty copy after every change, as its catalog reads.
    Made(Box<TableShape>),
    /// ALTER TABLE refused a change: its field and the server's words.
    Refused(Problem),
}

/// The table as PostgreSQL's ALTER TABLE leaves it after `changes`, read
/// from an empty copy of `source` (whose catalog is `shape`). A change ALTER
/// TABLE refuses is bad input naming its field; a failure of the rehearsal
/// itself is logged and answered None (the planner's text is used).
pub async fn rehearse(
    session: &mut Session,
    shape: &TableShape,
    source: &TableName,
    changes: &[crate::api::changes::Change],
) -> Result<Option<TableShape>, EngineError> {
    let statements = &rehearsal(shape, source, changes);
    let answer = session
        .retry("rehearse the changes", |c| async move {
            c.batch_execute("BEGIN").await.ctx("rehearse the changes")?;
            let outcome = async {
                for statement in statements {
                    // Spec text goes alone, through the extended protocol: data, never statements.
                    if let Err(e) = c.execute(statement.sql.as_str(), &[]).await.ctx("rehearse the changes") {
                        return match &statement.field {
                            Some(field) if refuses_the_change(e.sqlstate.as_deref()) => {
                                let mut why = format!("ALTER TABLE refuses this change: {}", e.message);
                                if field.ends_with(".type") && e.sqlstate.as_deref() == Some("42804") {
                                    why.push_str("; set `using` to say how each value converts");
                                }
                                Ok(Answer::Refused(Problem::new(field.clone(), why)))
                            }
                            _ => Err(e),
                        };
                    }
                }
                let schema: String = c
                    .query_one("SELECT nspname::text FROM pg_catalog.pg_namespace WHERE oid = pg_my_temp_schema()", &[])
                    .await
                    .ctx("read the rehearsal's schema")?
                    .get(0);
                let copy = TableName::new(schema, REHEARSAL_TABLE);
                let made = catalog::read_shape(&c, &copy).await?;
                made.map(|m| Answer::Made(Box::new(m)))
                    .ok_or_else(|| DbError::engine("rehearse the changes", "the copy is gone"))
            }
            .await;
            // Whatever happened, nothing of the rehearsal stays.
            let rolled_back = c.batch_execute("ROLLBACK").await.ctx("rehearse the changes");
            let answer = outcome?;
            rolled_back?;
            Ok(answer)
        })
        .await;
    match answer {
        Ok(Answer::Made(made)) => Ok(Some(*made)),
        Ok(Answer::Refused(problem)) => Err(InvalidInput(vec![problem]).into()),
        Err(e) if e.is_transient() => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "could not rehearse the changes by ALTER TABLE; the new table takes the planned definitions");
            Ok(None)
        }
    }
}

//! Runs [`crate::engine::plan::changes::stages`] on DSQL: at each stage
//! where ALTER TABLE would parse the definitions again, a scratch table at
//! that stage's types takes them as the stage before printed them, its
//! catalog is read, and it is dropped. A stage the server refuses (a CHECK
//! or index that no longer applies, a default with no assignment cast to
//! the new type) is the change's refusal, exit 2, as ALTER refuses it; the
//! table itself is only read.

use crate::api::changes::Change;
use crate::db::{DbError, ErrorContext, Session};
use crate::engine::error::EngineError;
use crate::engine::job::Job;
use crate::engine::plan::changes::rehearsal::refuses_the_change;
use crate::engine::plan::changes::stages::{
    adopt_stage, as_printed, scratch_table, stage_field, stage_statements, stages,
};
use crate::engine::plan::changes::{State, apply};
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::validate::InvalidInput;
use crate::engine::steps::catalog;
use crate::engine::steps::shadow::{build_async_index_twice, create_once};

/// The definitions as ALTER TABLE would print them after `changes`, where
/// a later change meets a new type again; None where no stage needs it.
pub async fn rehearse_in_stages(
    job: &Job,
    session: &mut Session,
    shape: &TableShape,
    source: &TableName,
    changes: &[Change],
) -> Result<Option<TableShape>, EngineError> {
    let wanted = stages(changes);
    if wanted.is_empty() {
        return Ok(None);
    }
    let mut state = State::of(shape);
    for (i, change) in changes.iter().enumerate() {
        // Validated already: a problem here is the planner's, and the planner's text is kept.
        if let Err(problem) = apply(&mut state, change, i) {
            tracing::warn!(
                ?problem,
                "could not follow the changes in stages; the new table takes the planned definitions"
            );
            return Ok(None);
        }
        if !wanted.contains(&i) {
            continue;
        }
        let field = stage_field(change, i);
        let scratch = scratch_table(source, i);
        clear_leftover(session, &scratch, &state).await?;
        job.before_change().await?;
        let printed = parse_at_stage(session, &state, source, &scratch).await;
        drop_scratch(session, &scratch).await?;
        match printed {
            Ok(printed) => adopt_stage(&mut state, &printed, source, &scratch),
            Err(e) => return Err(refusal(e, &field)),
        }
        tracing::info!(stage = i, table = %scratch, "definitions parsed again at the stage's types");
    }
    Ok(Some(as_printed(&state, source)))
}

/// The scratch table made, its indexes built, and its catalog read.
async fn parse_at_stage(
    session: &mut Session,
    state: &State,
    source: &TableName,
    scratch: &TableName,
) -> Result<TableShape, EngineError> {
    let statements = stage_statements(state, source, scratch);
    create_once(session, scratch, &statements.create, "stage: create the scratch table").await?;
    for (name, sql) in &statements.indexes {
        build_async_index_twice(session, sql, &scratch.schema, name).await?;
    }
    let printed =
        session.retry("stage: read the scratch table", |c| async move { catalog::read_shape(&c, scratch).await });
    printed.await?.ok_or_else(|| DbError::engine("stage", "the scratch table is gone").into())
}

/// A change the server refused at its stage, named by its field.
fn refusal(e: EngineError, field: &str) -> EngineError {
    let refused = match &e {
        EngineError::Db(db) if refuses_the_change(db.sqlstate.as_deref()) => Some(db.message.clone()),
        EngineError::IndexBuild { .. } => Some(e.to_string()),
        _ => None,
    };
    match refused {
        Some(message) => {
            let mut why = format!("ALTER TABLE refuses this change: {message}");
            if e.sqlstate().as_deref() == Some("42804") {
                why.push_str("; set `using` to say how each value converts, or the default to one of the new type");
            }
            InvalidInput::one(field, why).into()
        }
        None => e,
    }
}

async fn drop_scratch(session: &mut Session, scratch: &TableName) -> Result<(), DbError> {
    let sql = &format!("DROP TABLE IF EXISTS {scratch}");
    session
        .retry("stage: drop the scratch table", |c| async move { c.batch_execute(sql).await.ctx("stage: drop") })
        .await
}

/// A scratch table a crashed run left (empty, the stage's columns) is
/// dropped; a table of that name that is not one is never touched.
async fn clear_leftover(session: &mut Session, scratch: &TableName, state: &State) -> Result<(), EngineError> {
    let found = session.retry("stage: look for the scratch table", |c| async move {
        let Some(shape) = catalog::read_shape(&c, scratch).await? else { return Ok(None) };
        let empty = format!("SELECT NOT EXISTS (SELECT 1 FROM {scratch})");
        let empty: bool = c.query_one(empty.as_str(), &[]).await.ctx("stage: read the scratch table")?.get(0);
        Ok(Some((shape, empty)))
    });
    let Some((shape, empty)) = found.await? else { return Ok(()) };
    let names =
        |columns: &[crate::engine::plan::shape::Column]| columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if !empty || names(&shape.columns) != names(&state.columns) {
        let why = format!(
            "{scratch} is taken by another table; the DSQL rehearsal of these changes needs that name (rename it)"
        );
        return Err(InvalidInput::one("spec.table", why).into());
    }
    drop_scratch(session, scratch).await.map_err(Into::into)
}

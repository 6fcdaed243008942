//! A rebuild's new table: created once in the new shape, or found from an
//! earlier run and checked to be ours (its primary key's name and columns),
//! then given the original's owner, privileges, comments and the rest, each
//! column's by its new name.

use super::catalog;
use super::fidelity::{apply_carrying, read_fidelity};
use super::shadow::create_once;
use crate::db::{Dialect, ErrorContext, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::job::Job;
use crate::engine::plan::changes::carry::carried;
use crate::engine::plan::changes::render::{create_table, repeated_uniques};
use crate::engine::plan::changes::reshape::Reshape;
use crate::engine::plan::fidelity::shadow_statements;
use crate::engine::plan::names::new_table_key;
use crate::engine::plan::validate::InvalidInput;

/// Creates the new table (or finds it) and gives it the original's extras
/// through the changes; returns what is not carried, described.
pub async fn ensure_new_table(job: &Job, session: &mut Session, reshape: &Reshape) -> Result<Vec<String>, EngineError> {
    create_new_table(job, session, reshape).await?;
    let s = &job.settings;
    let mut left_out = Vec::new();
    // A unique constraint identical to another is added after the CREATE,
    // which would fold them into one. DSQL declares constraints only there.
    for (name, sql) in repeated_uniques(&reshape.rebuild.target, &s.source, &s.shadow) {
        if job.dialect == Dialect::Dsql {
            left_out.push(format!("unique constraint {name}: it repeats another's columns, and DSQL adds unique constraints only in CREATE TABLE, which keeps one"));
            continue;
        }
        let (shadow, name, sql) = (&s.shadow, name.as_str(), sql.as_str());
        job.before_change().await?;
        session
            .retry("add a repeated unique constraint", |c| async move {
                if catalog::has_constraint(&c, shadow, name).await? {
                    return Ok(());
                }
                c.batch_execute(sql).await.ctx("add a repeated unique constraint")
            })
            .await?;
    }
    let source = &s.source;
    let dialect = job.dialect;
    let Some(original) =
        session.retry("read table extras", |c| async move { read_fidelity(&c, source, dialect).await }).await?
    else {
        return Ok(left_out);
    };
    let (extras, mut left) = carried(&original, &reshape.rebuild, &reshape.target.indexes);
    left.append(&mut left_out);
    let statements = shadow_statements(&extras, &reshape.target, source, &s.shadow, dialect);
    job.before_change().await?;
    left.extend(apply_carrying(session, "carry table extras", &statements, dialect).await?);
    Ok(left)
}

async fn create_new_table(job: &Job, session: &mut Session, reshape: &Reshape) -> Result<(), EngineError> {
    let s = &job.settings;
    let shadow = &s.shadow;
    let existing = session.retry("read new table", |c| async move { catalog::read_shape(&c, shadow).await }).await?;
    if let Some(found) = existing {
        let key = new_table_key(shadow, &s.changes);
        let ours = found.primary_key().is_some_and(|k| k.name == key);
        if ours && found.all_columns() == reshape.target.all_columns() {
            tracing::info!(table = %shadow, "reusing the new table created earlier");
            return Ok(());
        }
        return Err(CheckFailed::ForeignShadow(shadow.clone()).into());
    }
    let key = new_table_key(shadow, &s.changes);
    let ddl = create_table(&reshape.rebuild.target, &s.source, shadow, &key, job.dialect);
    job.before_change().await?;
    create_once(session, shadow, &ddl, "create new table").await?;
    tracing::info!(table = %shadow, "created the new table in the new shape");
    Ok(())
}

/// Whether `err`, met making the new table or an index on it, says the
/// changes make that table impossible: a CHECK, a default or an index that
/// does not apply to a column's new type (SQLSTATE classes 42 and 22, but
/// not a missing privilege; on DSQL an index build that failed twice), which
/// ALTER TABLE refuses the same way.
fn impossible(err: &EngineError) -> Option<String> {
    // A DSQL build job says no SQLSTATE: failing twice on the new table, it
    // is the changes' (the index's definition at a new type, or a value).
    if let EngineError::IndexBuild { .. } = err {
        return Some(err.to_string());
    }
    let code = err.sqlstate()?;
    let input = (code.starts_with("42") && code != "42501") || code.starts_with("22");
    input.then(|| err.to_string())
}

/// Turns a failure to make the new table (or its indexes) that the changes
/// themselves cause into bad input: the new table this migration made is
/// dropped, so the database is as it was, and the run exits 2. Any other
/// error is returned as it is.
pub async fn refuse_impossible(job: &Job, err: EngineError) -> EngineError {
    let Some(said) = impossible(&err) else { return err };
    let s = &job.settings;
    let (shadow, key) = (&s.shadow, new_table_key(&s.shadow, &s.changes));
    let key = key.as_str();
    let drop = &crate::engine::plan::sql::drop_table(shadow);
    let dropped = async {
        job.before_change().await?;
        job.session()
            .retry("drop the new table", |c| async move {
                if catalog::has_constraint(&c, shadow, key).await? {
                    c.batch_execute(drop).await.ctx("drop the new table")?;
                }
                Ok(())
            })
            .await
            .map_err(EngineError::from)
    }
    .await;
    if let Err(e) = dropped {
        tracing::warn!(error = %e, table = %shadow, "could not drop the new table the changes cannot have");
    }
    InvalidInput::one(
        "spec.changes",
        format!("the table cannot take these changes, as ALTER TABLE would refuse them: {said}; nothing is changed"),
    )
    .into()
}

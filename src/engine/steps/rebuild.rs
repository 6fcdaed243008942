//! A rebuild's new table: created once in the new shape, or found from an
//! earlier run and checked to be ours (its primary key's name and columns),
//! then given the original's owner, privileges, comments and the rest, each
//! column's by its new name.

use super::catalog;
use super::fidelity::{apply_carrying, read_fidelity};
use super::shadow::create_once;
use crate::db::Session;
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::job::Job;
use crate::engine::plan::changes::carry::carried;
use crate::engine::plan::changes::render::create_table;
use crate::engine::plan::changes::reshape::Reshape;
use crate::engine::plan::fidelity::shadow_statements;
use crate::engine::plan::names::new_table_key;

/// Creates the new table (or finds it) and gives it the original's extras
/// through the changes; returns what is not carried, described.
pub async fn ensure_new_table(job: &Job, session: &mut Session, reshape: &Reshape) -> Result<Vec<String>, EngineError> {
    create_new_table(job, session, reshape).await?;
    let s = &job.settings;
    let source = &s.source;
    let dialect = job.dialect;
    let Some(original) =
        session.retry("read table extras", |c| async move { read_fidelity(&c, source, dialect).await }).await?
    else {
        return Ok(Vec::new());
    };
    let (extras, mut left) = carried(&original, &reshape.rebuild, &reshape.target.indexes);
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

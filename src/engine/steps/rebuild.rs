//! A rebuild's new table: created once in the new shape, or found from an
//! earlier run and checked to be ours (its primary key's name and columns).

use super::catalog;
use crate::db::ErrorContext;
use crate::db::Session;
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::job::Job;
use crate::engine::plan::changes::render::create_table;
use crate::engine::plan::changes::reshape::Reshape;
use crate::engine::plan::names::new_table_key;

pub async fn ensure_new_table(job: &Job, session: &mut Session, reshape: &Reshape) -> Result<(), EngineError> {
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
    let ddl = &create_table(&reshape.rebuild.target, &s.source, shadow, &key, job.dialect);
    job.before_change().await?;
    session
        .retry("create new table", |c| async move {
            // A lost reply to a committed CREATE must not fail the retry.
            if catalog::table_exists(&c, shadow).await? {
                return Ok(());
            }
            c.batch_execute(ddl).await.ctx("create new table")
        })
        .await?;
    tracing::info!(table = %shadow, "created the new table in the new shape");
    Ok(())
}

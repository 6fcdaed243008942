//! Deleting an unfinished migration: its shadow table goes; user data stays.

use std::sync::Arc;

use super::capture;
use super::catalog;
use super::catalog::read_names;
use super::swap::rename_guarded;
use crate::db::{Connector, ErrorContext, RetryCounter, RetryPolicy, Session};
use crate::engine::error::EngineError;
use crate::engine::plan::phase::{SwapState, swap_state};
use crate::engine::plan::sql::drop_table;
use crate::engine::plan::validate::Settings;

/// Drops the shadow table of a migration that did not complete. Inside the
/// cut-over window the original table first gets its name back. A completed
/// swap, or a shadow name held by a table that is not an identity table,
/// is left alone. Returns what was done, if anything.
pub async fn drop_unfinished_shadow(connector: Arc<Connector>, s: Settings) -> Result<Option<String>, EngineError> {
    let dialect = connector.dialect();
    let mut session = Session::new(connector, RetryPolicy::default(), Arc::new(RetryCounter::default()));
    let names = read_names(&s, None, &mut session).await?;
    if !names.shadow {
        return Ok(None);
    }
    let mut done = Vec::new();
    match swap_state(names) {
        SwapState::BeforeWindow => {}
        SwapState::InWindow => {
            rename_guarded(&mut session, &s.old, &s.source).await?;
            done.push(format!("renamed {} back to {}", s.old, s.source.name));
        }
        SwapState::Swapped | SwapState::Inconsistent(_) => return Ok(None),
    }
    // The window's change capture, if it was armed: writes stop paying for it.
    if let Err(e) = capture::disarm(&mut session, dialect, &s.shadow, &[&s.source]).await {
        tracing::warn!(error = %e, "could not take the change capture off the table");
    }
    let shadow = &s.shadow;
    let id = s.id_column.as_str();
    let ours =
        session.retry("inspect shadow table", |c| async move { catalog::identity_kind(&c, shadow, id).await }).await?;
    if ours.is_none() {
        tracing::warn!(table = %shadow, "not dropping: it is not an identity table this migration created");
        return Ok(if done.is_empty() { None } else { Some(done.join("; ")) });
    }
    let sql = &drop_table(shadow);
    session
        .retry("drop shadow table", |c| async move {
            if !catalog::table_exists(&c, shadow).await? {
                return Ok(());
            }
            c.batch_execute(sql).await.ctx("drop shadow table")
        })
        .await?;
    done.push(format!("dropped the unfinished shadow table {shadow}"));
    Ok(Some(done.join("; ")))
}

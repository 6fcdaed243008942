//! Rolling back a completed migration (`spec.rollback: true`): the rows
//! written to the new table since the cut-over are copied into the old one,
//! the new table steps aside under the shadow name and the old one takes the
//! name back. Each step is its own transaction and decided from the catalog,
//! like the swap. Clearing `spec.rollback` later rolls forward with a normal
//! swap, and the identity is moved past every id again.
//!
//! A TableMigration's rebuild goes back the same way, its rows through each
//! change's inverse ([`crate::engine::plan::changes::reverse`]).
//!
//! Refused when the old table was dropped (`oldTable.retain: false`) or is
//! gone, or when a change has no inverse (named).

use std::sync::Arc;

use super::blockers::wait_out_blockers;
use super::catalog;
use super::catalog::read_names;
use super::fidelity::adopt_sequences;
use super::swap::{hand_names_to, put_back, rename_guarded};
use super::verify::verify_pass;
use crate::api::CutoverStatus;
use crate::api::now;
use crate::db::{ErrorContext, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::failpoint;
use crate::engine::job::{Flow, Job, always_run};
use crate::engine::plan::batches::resync_batch_rows;
use crate::engine::plan::names::OriginalNames;
use crate::engine::plan::phase::{RollbackState, rollback_state};
use crate::engine::plan::quote::{ident, literal};
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::validate::InvalidInput;
use crate::engine::status_keeper::Save;
use crate::engine::status_keeper::StatusKeeper;
use crate::engine::store::StatusSink;

pub async fn roll_back<R: StatusSink>(
    job: &Arc<Job>,
    original: &TableShape,
    widest_row: i64,
    keeper: &mut StatusKeeper<R>,
) -> Result<Flow, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    let batch = resync_batch_rows(s, original, widest_row);
    let (_keep, run) = always_run();
    loop {
        let names = read_names(s, job.original(), &mut session).await?;
        match rollback_state(names, s.retain_old) {
            RollbackState::Forward => {
                // Catch up while the new table is live, then open the window.
                let statements = Arc::new(job.rollback_statements(original, &s.source, &s.old)?);
                let (report, _) = verify_pass(job, statements, batch, &run, None, None).await?;
                tracing::info!(
                    rows = report.rows_resynced,
                    "copied the rows written since the cut-over into the old table"
                );
                if let Some(outcome) = wait_out_blockers(job, &mut session, keeper, &s.source, &run).await? {
                    return Ok(Flow::Halt(outcome));
                }
                keeper.status.cutover.get_or_insert_with(CutoverStatus::default).window_opened_at = Some(now());
                keeper.checkpoint(Save::Now).await?;
                job.before_change().await?;
                rename_guarded(&mut session, &s.source, &s.shadow).await?;
                failpoint::hit("rollback-renamed-out");
            }
            RollbackState::InWindow => {
                let statements = Arc::new(job.rollback_statements(original, &s.shadow, &s.old)?);
                let synced = match verify_pass(job, statements, batch, &run, None, None).await {
                    Ok((sync, _)) if sync.unresolved.is_empty() => Ok(sync),
                    Ok((sync, _)) => {
                        let ranges: Vec<String> = sync.unresolved.iter().map(ToString::to_string).collect();
                        Err(CheckFailed::RollbackSyncDiffers(ranges).into())
                    }
                    Err(e) => Err(EngineError::from(e)),
                };
                let sync = match synced {
                    Ok(sync) => sync,
                    Err(e) if e.lost_claim() => return Err(e),
                    Err(e) => {
                        // Give the new table its name back: writers keep working.
                        tracing::error!(error = %e, "the rollback failed inside its window; giving the new table its name back");
                        put_back(job, &mut session, keeper, &s.shadow).await?;
                        return Err(e);
                    }
                };
                job.before_change().await?;
                // The new table stands aside under the names it was built with.
                let names = keeper.status.plan.as_ref().and_then(OriginalNames::recorded);
                hand_names_to(job, &mut session, names.as_ref(), &s.old).await?;
                job.before_change().await?;
                rename_guarded(&mut session, &s.old, &s.source).await?;
                let cutover = keeper.status.cutover.get_or_insert_with(CutoverStatus::default);
                cutover.rows_in_window = sync.rows_resynced;
                if let Some(opened) = &cutover.window_opened_at {
                    cutover.window_millis = Some(jiff::Timestamp::now().duration_since(opened.0).as_millis() as i64);
                }
                failpoint::hit("rollback-renamed-in");
            }
            RollbackState::Back => {
                if job.dialect == crate::db::Dialect::Postgres {
                    // The original owns its column sequences again.
                    job.before_change().await?;
                    adopt_sequences(&mut session, &s.source).await?;
                }
                // The identity handed out ids above the old sequence's: move it past them.
                job.before_change().await?;
                advance_default_sequences(job, &mut session, &s.source).await?;
                return Ok(Flow::Next);
            }
            RollbackState::Refused(why) => return Err(InvalidInput::one("spec.rollback", why).into()),
        }
    }
}

/// The original table's shape for a rollback: the old table while the new one
/// has the name, the table itself once it is back.
pub async fn original_for_rollback(job: &Job) -> Result<Option<TableShape>, EngineError> {
    let s = &job.settings;
    let mut session = job.session();
    for table in [&s.old, &s.source] {
        let shape = session.retry("read table", |c| async move { catalog::read_shape(&c, table).await }).await?;
        if let Some(shape) = shape
            && shape.column(&s.id_column).is_some_and(|c| c.identity.is_none())
        {
            return Ok(Some(shape));
        }
    }
    Ok(None)
}

/// The sequences behind the table's column defaults (`nextval(...)`), with
/// the column each feeds: schema, sequence, column.
const DEFAULT_SEQUENCES: &str = "SELECT sn.nspname::text, sc.relname::text, a.attname::text \
     FROM pg_catalog.pg_attrdef ad \
     JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = ad.oid \
     JOIN pg_catalog.pg_class sc ON sc.oid = d.refobjid AND sc.relkind = 'S' \
     JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
     WHERE ad.adrelid = pg_catalog.to_regclass($1) ORDER BY 1, 2, 3";

/// Moves every sequence used by a column default of `table` past the highest
/// value in that column: rows copied back from the new table carry ids its
/// identity generated, which the old sequence would hand out again (23505).
/// Never moves a sequence backwards. A catalog DSQL does not have is
/// reported and skipped: its tables rarely use sequence defaults.
async fn advance_default_sequences(job: &Job, session: &mut Session, table: &TableName) -> Result<(), EngineError> {
    let name = &table.to_string();
    let found = session
        .retry("read default sequences", |c| async move {
            let rows = c.query(DEFAULT_SEQUENCES, &[name]).await.ctx("read default sequences")?;
            Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2))).collect())
        })
        .await;
    let found: Vec<(String, String, String)> = match found {
        Ok(found) => found,
        Err(e) if job.dialect == crate::db::Dialect::Dsql && e.catalog_missing() => {
            tracing::warn!(error = %e, table = %table, "cannot read the default sequences here; none moved");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for (schema, sequence, column) in found {
        let sequence = TableName::new(schema, sequence);
        let sql = &advance_sequence(&sequence, table, &column);
        let moved: Option<i64> = session
            .retry("move a default sequence", |c| async move {
                Ok(c.query_opt(sql.as_str(), &[]).await.ctx("move a default sequence")?.map(|r| r.get(0)))
            })
            .await?;
        if let Some(to) = moved {
            tracing::info!(sequence = %sequence, column, to, "moved the default's sequence past the copied ids");
        }
    }
    Ok(())
}

/// `setval` of `sequence` to the highest `column` of `table` when that is at
/// or above the sequence's last value; no row when nothing needs to move.
fn advance_sequence(sequence: &TableName, table: &TableName, column: &str) -> String {
    format!(
        "SELECT pg_catalog.setval({seq_text}::regclass, m.top, true) FROM \
         (SELECT max({col})::bigint AS top FROM {table}) m, (SELECT last_value, is_called FROM {sequence}) s \
         WHERE m.top IS NOT NULL AND (m.top > s.last_value OR (m.top = s.last_value AND NOT s.is_called))",
        seq_text = literal(&sequence.to_string()),
        col = ident(column),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_sequence_moves_only_forward_and_every_name_is_quoted() {
        let sql =
            advance_sequence(&TableName::new("public", "Post\"Tag_seq"), &TableName::new("public", "post tag"), "id");
        assert!(sql.contains("setval('\"public\".\"Post\"\"Tag_seq\"'::regclass"), "{sql}");
        assert!(sql.contains("FROM \"public\".\"post tag\""), "{sql}");
        assert!(sql.contains("m.top > s.last_value"), "{sql}");
    }
}

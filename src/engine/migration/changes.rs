//! A TableMigration through the phase machine: Validating plans each change
//! (in place or the rebuild), refuses a change to the key the rows are gone
//! through by, and scans the data read-only. In-place changes are made where
//! an in-place identity is added (Swapping, after the approval gate); a
//! rebuild takes the copy's phases with the new table's shape
//! ([`Reshape`]), as an identity copy does with the source's.

use std::sync::Arc;

use super::Migration;
use crate::api::Strategy;
use crate::api::changes::ChangeKind;
use crate::api::{
    ChangesStatus, Checkpoint, CutoverStatus, PlanStatus, PlannedChange, StrategyStatus, TakenStrategy, now,
};
use crate::db::{Dialect, Session};
use crate::engine::error::{CheckFailed, EngineError};
use crate::engine::job::{Flow, Job};
use crate::engine::plan::changes::reshape::{Reshape, refusals};
use crate::engine::plan::changes::scan::scan;
use crate::engine::plan::changes::undo::undo_in_place;
use crate::engine::plan::changes::ways::{ChangePlan, Way, plan_changes};
use crate::engine::plan::changes::{Rebuild, State};
use crate::engine::plan::names::{OriginalNames, new_table_key};
use crate::engine::plan::not_carried::names_not_carried;
use crate::engine::plan::phase::{Stand, Work};
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::validate::{InvalidInput, Problem, Settings};
use crate::engine::status_keeper::CopyProgress;
use crate::engine::steps::catalog;
use crate::engine::steps::catalog::read_names;
use crate::engine::steps::data_scan::scan_data;
use crate::engine::steps::fidelity::with_fidelity;
use crate::engine::steps::in_place::probe_add_identity;
use crate::engine::steps::rehearsal::rehearse;
use crate::engine::steps::spec_check::check_spec_text;
use crate::engine::steps::stages::rehearse_in_stages;
use crate::engine::steps::survey::{Survey, measure};
use crate::engine::steps::table_changes::{Direction, make_in_place, written_to_added};
use crate::engine::store::{Severity, StatusSink};

/// The changes rehearsed by ALTER TABLE on an empty copy of the table on
/// PostgreSQL; on DSQL, which has no temporary tables and refuses these
/// ALTERs, the definitions parsed again on a scratch table at each stage
/// where ALTER would (see [`rehearse_in_stages`]).
async fn rehearsed(
    job: &Job,
    session: &mut Session,
    shape: &TableShape,
    changes: &[crate::api::changes::Change],
) -> Result<Option<TableShape>, EngineError> {
    let Some(table) = shape.table.as_ref() else { return Ok(None) };
    match job.dialect {
        Dialect::Postgres => rehearse(session, shape, table, changes).await,
        Dialect::Dsql => rehearse_in_stages(job, session, shape, table, changes).await,
    }
}

/// The rebuild's new table, with the definitions ALTER TABLE printed where
/// it was rehearsed.
fn reshaped(rebuild: Rebuild, shape: &TableShape, rehearsed: Option<&TableShape>) -> Reshape {
    let mut reshape = Reshape::new(rebuild, shape);
    if let Some(rehearsed) = rehearsed {
        let unmatched = reshape.adopt(rehearsed);
        if !unmatched.is_empty() {
            tracing::warn!(?unmatched, "the planned new table and ALTER TABLE's rehearsal differ here");
        }
    }
    reshape
}

impl<R: StatusSink> Migration<R> {
    pub(super) async fn validate_changes(&mut self) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let mut session = job.session();
        let table = &s.source;
        let shape = session
            .retry("read table", |c| async move { catalog::read_shape(&c, table).await })
            .await?
            .ok_or_else(|| InvalidInput::one("spec.table", format!("table {table} does not exist")))?;
        // One identity path: on DSQL, whether ADD IDENTITY is taken is asked
        // of a scratch table, as an IdentityMigration asks it.
        let wants_identity = s.changes.iter().any(|c| c.add_identity.is_some());
        let refused = match (job.dialect, s.strategy, wants_identity) {
            (Dialect::Dsql, Strategy::Auto | Strategy::InPlace, true) => {
                plan_changes(&shape, table, &s.changes, job.dialect, Strategy::Copy, None)?;
                probe_add_identity(&job).await?
            }
            _ => None,
        };
        let planned = plan_changes(&shape, table, &s.changes, job.dialect, s.strategy, refused.as_deref())?;
        check_spec_text(&mut session, &State::of(&shape), &s.changes).await?;
        // ALTER TABLE's own answer on an empty copy: a change it refuses stops here.
        let rehearsed = match planned.rebuild.is_some() || job.dialect == Dialect::Postgres {
            true => Box::pin(rehearsed(&job, &mut session, &shape, &s.changes)).await?,
            false => None,
        };
        key_kept(s)?;
        // The data first: rows that break the new shape are what a person needs to hear of.
        let checks = scan(&State::of(&shape), &s.changes, table, &s.id_column);
        tracing::info!(checks = checks.checks.len(), "scanning the data against the new shape");
        scan_data(&job, &mut session, &checks).await?;
        if let Some(rebuild) = planned.rebuild.clone() {
            if s.change_tracking_column.is_some() {
                let why = "a rebuild does not use a change tracking column yet; remove it";
                return Err(InvalidInput::one("spec.copy.changeTrackingColumn", why).into());
            }
            let shape = with_fidelity(&mut session, shape.clone(), job.dialect).await?;
            let names = [s.shadow.name.clone(), s.old.name.clone(), new_table_key(&s.shadow, &s.changes)];
            let names = &names;
            let around = session
                .retry("check names", |c| async move { catalog::surroundings(&c, &s.source.schema, names).await })
                .await?;
            let stranded = refusals(&shape, s, &around, job.dialect);
            if !stranded.is_empty() {
                return Err(InvalidInput(stranded).into());
            }
            // The table the rebuild starts from, told by its OID once the
            // swap has handed its names to the new table.
            let oid = session.retry("read table oid", |c| async move { catalog::table_oid(&c, table).await }).await?;
            if let Some(oid) = oid {
                let _ = job.original_oid.set(i64::from(oid));
            }
            let reshape = Arc::new(reshaped(rebuild, &shape, rehearsed.as_ref()));
            let _ = job.reshape.set(reshape.clone());
            let measured = measure(&job, &mut session, &reshape.target, false).await?;
            return self.plan_rebuild(&planned, &reshape, &shape, measured).await;
        }
        let status = &mut self.keeper.status;
        status.plan = Some(PlanStatus {
            shadow_table: s.shadow.name.clone(),
            old_table: s.old.name.clone(),
            secondary_indexes: shape.secondary_indexes() as i64,
            dialect: job.dialect.as_str().to_string(),
            ..Default::default()
        });
        status.checkpoint = None;
        status.verification = None;
        status.identity = None;
        status.cutover = None;
        let reason = format!("every change is made in place: {}", ways(&planned));
        status.strategy = Some(StrategyStatus { taken: TakenStrategy::InPlace, reason: reason.clone() });
        let (undo, refused) = undo_in_place(&shape, table, &s.changes, job.dialect);
        status.changes = Some(ChangesStatus {
            undo,
            undo_refused: refused.iter().map(|p| format!("{}: {}", p.field, p.message)).collect(),
            ..changes_status(&planned)
        });
        self.keeper.event(Severity::Normal, "Strategy", format!("InPlace: {reason}")).await;
        Ok(Flow::Next)
    }

    /// The rebuild's plan in the status: the copy's ranges and batches as for
    /// an identity copy, the way of each change, what the new table leaves out.
    async fn plan_rebuild(
        &mut self,
        planned: &ChangePlan,
        reshape: &Reshape,
        original: &TableShape,
        m: Survey,
    ) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        tracing::info!(rows = m.rows, ranges = m.ranges.len(), batch_rows = m.batch_rows, "planned the rebuild's copy");
        let names = OriginalNames::of(original, &s.changes);
        let status = &mut self.keeper.status;
        status.plan = Some(PlanStatus {
            shadow_table: s.shadow.name.clone(),
            old_table: s.old.name.clone(),
            batch_rows: m.batch_rows,
            id_min: m.extent.map(|e| e.0),
            id_max: m.extent.map(|e| e.1),
            rows_estimated: m.rows,
            secondary_indexes: reshape.target.secondary_indexes() as i64,
            dialect: job.dialect.as_str().to_string(),
            not_carried: Vec::new(),
            original_oid: job.original(),
            original_key: names.as_ref().map(|n| n.key.clone()),
            original_names: names.map(|n| n.others).unwrap_or_default(),
            window_estimate_millis: None,
        });
        let rows = m.rows;
        status.checkpoint = Some(Checkpoint { ranges: m.ranges, ..Default::default() });
        status.verification = None;
        status.identity = None;
        status.cutover = None;
        let reason = format!("the changes need the rebuild: {}", ways(planned));
        status.strategy = Some(StrategyStatus { taken: TakenStrategy::Copy, reason: reason.clone() });
        status.changes = Some(changes_status(planned));
        self.keeper.record_copy(0, 0, 0, CopyProgress::Running);
        self.estimate_window(original, rows, true).await;
        self.keeper.event(Severity::Normal, "Strategy", format!("Copy: {reason}")).await;
        let mut notes = reshape.not_carried.clone();
        notes.extend(names_not_carried(&s.shadow, job.dialect));
        if job.dialect == Dialect::Dsql {
            notes.extend(reshape.target.columns.iter().filter_map(|c| {
                let collation = c.collation.as_ref()?;
                Some(format!("column {}: COLLATE {collation}, which DSQL's CREATE TABLE does not take", c.name))
            }));
        }
        self.record_not_carried(notes).await;
        Ok(Flow::Next)
    }

    /// A resumed rebuild plans its new table again from the original table,
    /// which the catalog still shows as it was (under its old name once the
    /// window has opened).
    pub(super) async fn prepare_rebuild(&mut self, stand: Stand) -> Result<(), EngineError> {
        let s = &self.job.settings;
        let copied = self.keeper.status.strategy.as_ref().is_some_and(|t| t.taken == TakenStrategy::Copy);
        let working = matches!(stand, Stand::Work(w) if w != Work::Validating && w != Work::RollingBack);
        if s.changes.is_empty() || !copied || !working || self.job.reshape.get().is_some() {
            return Ok(());
        }
        let shape = self.original_of_changes(&mut self.job.session()).await?;
        // The rebuild was chosen at Validating (perhaps on DSQL's answer to a
        // probe): the same new table whatever made it needed.
        let planned = plan_changes(&shape, &s.source, &s.changes, self.job.dialect, Strategy::Copy, None)?;
        if let Some(rebuild) = planned.rebuild {
            let job = self.job.clone();
            let rehearsed = Box::pin(rehearsed(&job, &mut job.session(), &shape, &s.changes)).await?;
            let _ = self.job.reshape.set(Arc::new(reshaped(rebuild, &shape, rehearsed.as_ref())));
        }
        Ok(())
    }

    /// The original table of a TableMigration: under its name until the
    /// window opens, then under the old name.
    pub(super) async fn original_of_changes(&self, session: &mut Session) -> Result<TableShape, EngineError> {
        let s = &self.job.settings;
        let names = read_names(s, self.job.original(), session).await?;
        let table = if names.old && (!names.table || names.table_is_new) { &s.old } else { &s.source };
        session
            .retry("read table", |c| async move { catalog::read_shape(&c, table).await })
            .await?
            .ok_or_else(|| CheckFailed::OriginalMissing { source_table: s.source.clone(), old: s.old.clone() }.into())
    }

    /// The original table for a rollback of a rebuild: the old table while
    /// the new one has the name (or, in the window, neither has it), the
    /// table itself once it has the name back; None when it is gone.
    pub(super) async fn original_for_rollback_of_changes(&self) -> Result<Option<TableShape>, EngineError> {
        let s = &self.job.settings;
        let mut session = self.job.session();
        let names = read_names(s, self.job.original(), &mut session).await?;
        let table = match (names.old, names.table && !names.table_is_new) {
            (true, _) => &s.old,
            (false, true) => &s.source,
            (false, false) => return Ok(None),
        };
        Ok(session.retry("read table", |c| async move { catalog::read_shape(&c, table).await }).await?)
    }

    /// A row the new table refuses (SQLSTATE class 23), or whose value does
    /// not convert or fit (class 22: the copy converts by assignment), was
    /// written after the scan: the scan runs again, read-only, and names the
    /// rows by id. Nothing is lost, the cut-over waits, and a run after the
    /// rows are fixed goes on from its checkpoint. Any other error is
    /// returned as it is.
    pub(super) async fn explain_violation(&self, err: EngineError) -> EngineError {
        let s = &self.job.settings;
        let refused = err.sqlstate().is_some_and(|code| code.starts_with("23") || code.starts_with("22"));
        if !refused || self.job.reshape.get().is_none() {
            return err;
        }
        let mut session = self.job.session();
        let Ok(shape) = self.original_of_changes(&mut session).await else { return err };
        let table = shape.table.clone().unwrap_or_else(|| s.source.clone());
        let checks = scan(&State::of(&shape), &s.changes, &table, &s.id_column);
        match scan_data(&self.job, &mut session, &checks).await {
            Err(EngineError::InvalidData(found)) => {
                tracing::warn!(error = %err, "rows written since the scan break the new shape");
                EngineError::InvalidData(found.since_the_scan())
            }
            _ => err,
        }
    }

    /// Rolling back changes made in place: their inverses, one by one, as
    /// planned with them; refused, naming the changes, when some have none.
    pub(super) async fn undo_in_place(&mut self) -> Result<Flow, EngineError> {
        let changes = self.keeper.status.changes.clone().unwrap_or_default();
        if !changes.undo_refused.is_empty() {
            let problems = changes
                .undo_refused
                .iter()
                .map(|said| match said.split_once(": ") {
                    Some((field, why)) => Problem::new(field, why),
                    None => Problem::new("spec.rollback", said.as_str()),
                })
                .collect();
            return Err(InvalidInput(problems).into());
        }
        let written = written_to_added(&self.job).await?;
        if !written.is_empty() {
            return Err(InvalidInput(written).into());
        }
        if let Some(outcome) = make_in_place(&self.job, &mut self.keeper, &self.control, Direction::Back).await? {
            return Ok(Flow::Halt(outcome));
        }
        Ok(Flow::Next)
    }

    /// Swapping of a TableMigration made in place: the statements, one by one.
    pub(super) async fn change_in_place(&mut self) -> Result<Flow, EngineError> {
        if let Some(outcome) = make_in_place(&self.job, &mut self.keeper, &self.control, Direction::Forward).await? {
            return Ok(Flow::Halt(outcome));
        }
        let longest = self.keeper.status.changes.as_ref().and_then(|c| c.longest_lock_millis);
        let cutover = self.keeper.status.cutover.get_or_insert_with(CutoverStatus::default);
        cutover.window_millis = longest;
        cutover.swapped_at.get_or_insert_with(now);
        Ok(Flow::Next)
    }
}

/// The key the rows are gone through by must stay as it is: no change may
/// rename, drop or retype it.
fn key_kept(s: &Settings) -> Result<(), InvalidInput> {
    let key = s.id_column.as_str();
    let problems: Vec<Problem> = s
        .changes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let (field, touches) = match c.kind().ok()? {
                ChangeKind::RenameColumn(r) => ("renameColumn.from", r.from == key),
                ChangeKind::DropColumn(d) => ("dropColumn.name", d.name == key),
                ChangeKind::AlterColumn(a) => ("alterColumn.type", a.column == key && a.data_type.is_some()),
                _ => return None,
            };
            touches.then(|| {
                Problem::new(
                    format!("spec.changes[{i}].{field}"),
                    format!("{key:?} is the primary key the rows are gone through by; it cannot change here"),
                )
            })
        })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(InvalidInput(problems)) }
}

fn ways(planned: &ChangePlan) -> String {
    planned.decided.iter().map(|d| format!("{} {} ({})", d.key, d.way.as_str(), d.why)).collect::<Vec<_>>().join("; ")
}

fn changes_status(planned: &ChangePlan) -> ChangesStatus {
    ChangesStatus {
        planned: planned
            .decided
            .iter()
            .map(|d| PlannedChange {
                index: d.index as i64,
                kind: d.key.to_string(),
                way: match d.way {
                    Way::InPlace => "InPlace",
                    Way::Rebuild => "Rebuild",
                }
                .to_string(),
                why: d.why.clone(),
            })
            .collect(),
        statements: planned.decided.iter().flat_map(|d| d.statements.iter().cloned()).collect(),
        ..Default::default()
    }
}

//! A TableMigration through the phase machine: Validating plans each change
//! (in place or the rebuild), refuses a change to the key the rows are gone
//! through by, and scans the data read-only; the in-place changes are made
//! where an in-place identity is added (Swapping, after the approval gate).

use super::Migration;
use crate::api::changes::ChangeKind;
use crate::api::{ChangesStatus, CutoverStatus, PlanStatus, PlannedChange, StrategyStatus, TakenStrategy, now};
use crate::engine::error::EngineError;
use crate::engine::job::Flow;
use crate::engine::plan::changes::State;
use crate::engine::plan::changes::scan::scan;
use crate::engine::plan::changes::ways::{ChangePlan, Way, plan_changes};
use crate::engine::plan::validate::{InvalidInput, Problem, Settings};
use crate::engine::steps::catalog;
use crate::engine::steps::data_scan::scan_data;
use crate::engine::steps::table_changes::make_in_place;
use crate::engine::store::{Severity, StatusSink};

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
        let planned = plan_changes(&shape, table, &s.changes, job.dialect, s.strategy)?;
        key_kept(s)?;
        // The data first: rows that break the new shape are what a person needs to hear of.
        let checks = scan(&State::of(&shape), &s.changes, table, &s.id_column);
        tracing::info!(checks = checks.checks.len(), "scanning the data against the new shape");
        scan_data(&mut session, &checks).await?;
        if let Some(first) = planned.decided.iter().find(|d| d.way == Way::Rebuild) {
            return Err(InvalidInput::one(
                format!("spec.changes[{}].{}", first.index, first.key),
                format!(
                    "needs the rebuild ({}); this version makes in-place changes only: `plan -f` shows the \
                     rebuild's SQL",
                    first.why
                ),
            )
            .into());
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
        status.changes = Some(changes_status(&planned));
        self.keeper.event(Severity::Normal, "Strategy", format!("InPlace: {reason}")).await;
        Ok(Flow::Next)
    }

    /// Swapping of a TableMigration made in place: the statements, one by one.
    pub(super) async fn change_in_place(&mut self) -> Result<Flow, EngineError> {
        if let Some(outcome) = make_in_place(&self.job, &mut self.keeper, &self.control).await? {
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
        applied: 0,
        longest_lock_millis: None,
    }
}

//! Validating: the survey, the way the identity is added, and the plan kept
//! in the status; and what the new table will not carry, said once.

use super::Migration;
use crate::api::{Checkpoint, PlanStatus, Strategy, StrategyStatus, TakenStrategy};
use crate::db::Dialect;
use crate::engine::error::EngineError;
use crate::engine::job::{Flow, Job};
use crate::engine::plan::names::OriginalNames;
use crate::engine::plan::not_carried::{known_not_carried, names_not_carried};
use crate::engine::plan::shape::TableShape;
use crate::engine::plan::window_cost::{slow_window, window_cost};
use crate::engine::status_keeper::CopyProgress;
use crate::engine::steps::in_place::probe_add_identity;
use crate::engine::steps::survey::{Survey, survey};
use crate::engine::store::{Severity, StatusSink};

impl<R: StatusSink> Migration<R> {
    pub(super) async fn validate(&mut self) -> Result<Flow, EngineError> {
        let job = self.job.clone();
        let s = &job.settings;
        let Survey { shape, extent, rows, widest_row, batch_rows, ranges } = survey(&job).await?;
        let strategy = match (s.strategy, job.dialect) {
            (Strategy::Auto, Dialect::Dsql) => dsql_way(&job, &shape).await?,
            (asked, dialect) => choose_strategy(asked, dialect),
        };
        tracing::info!(rows, ranges = ranges.len(), batch_rows, widest_row_bytes = widest_row, "planned the copy");
        if s.strategy == Strategy::Auto && strategy.taken == TakenStrategy::Copy {
            tracing::warn!(reason = %strategy.reason, "copying instead of adding the identity in place");
            self.keeper.event(Severity::Normal, "Strategy", format!("Copy: {}", strategy.reason)).await;
        }
        let names = OriginalNames::of(&shape, &[]);
        let status = &mut self.keeper.status;
        status.plan = Some(PlanStatus {
            shadow_table: s.shadow.name.clone(),
            old_table: s.old.name.clone(),
            batch_rows,
            id_min: extent.map(|e| e.0),
            id_max: extent.map(|e| e.1),
            rows_estimated: rows,
            secondary_indexes: shape.secondary_indexes() as i64,
            dialect: job.dialect.as_str().to_string(),
            not_carried: Vec::new(),
            original_oid: None,
            original_key: names.as_ref().map(|n| n.key.clone()),
            original_names: names.map(|n| n.others).unwrap_or_default(),
            window_estimate_millis: None,
        });
        status.checkpoint = Some(Checkpoint { ranges, ..Default::default() });
        status.verification = None;
        status.identity = None;
        status.cutover = None;
        let strategy_copies = strategy.taken == TakenStrategy::Copy;
        status.strategy = Some(strategy);
        self.keeper.record_copy(0, 0, 0, CopyProgress::Running);
        if strategy_copies {
            self.estimate_window(&shape, rows, false).await;
            let mut notes = known_not_carried(&shape, &s.source, &s.shadow, job.dialect);
            notes.extend(names_not_carried(&s.shadow, job.dialect));
            self.record_not_carried(notes).await;
        }
        Ok(Flow::Next)
    }

    /// Puts the window's estimate in the plan, and says in a Warning event
    /// (once) when it will be long, with what would make it short.
    pub(super) async fn estimate_window(&mut self, shape: &TableShape, rows: i64, rebuild: bool) {
        let s = &self.job.settings;
        let cost = window_cost(self.job.dialect, rows, s.parallelism, s.change_tracking_column.is_some());
        tracing::info!(window = %cost.describe(), "the cut-over window");
        let Some(plan) = self.keeper.status.plan.as_mut() else { return };
        let said_before = plan.window_estimate_millis.is_some();
        plan.window_estimate_millis = cost.millis();
        if let Some(warning) = slow_window(&cost, shape, rebuild).filter(|_| !said_before) {
            tracing::warn!(%warning, "a long cut-over window");
            self.keeper.event(Severity::Warning, "SlowWindow", warning).await;
        }
    }

    /// Adds `notes` to `status.plan.notCarried` and says the new ones in a
    /// Warning event (a resumed run finds the same ones and stays quiet).
    pub(super) async fn record_not_carried(&mut self, notes: Vec<String>) {
        let Some(plan) = self.keeper.status.plan.as_mut() else { return };
        let new: Vec<String> = notes.into_iter().filter(|n| !plan.not_carried.contains(n)).collect();
        if new.is_empty() {
            return;
        }
        plan.not_carried.extend(new.iter().cloned());
        for note in &new {
            tracing::warn!(note = %note, "not carried over to the new table");
        }
        self.keeper.event(Severity::Warning, "NotCarried", format!("not carried over: {}", new.join("; "))).await;
    }
}

/// The way the identity will be added, before trying: by copy when the spec
/// says so, else in place (on DSQL a probe: a refusal falls back to the copy).
fn choose_strategy(asked: Strategy, dialect: Dialect) -> StrategyStatus {
    match (asked, dialect) {
        (Strategy::Copy, _) => StrategyStatus { taken: TakenStrategy::Copy, reason: "spec.strategy: Copy".into() },
        (_, Dialect::Postgres) => StrategyStatus {
            taken: TakenStrategy::InPlace,
            reason: "PostgreSQL adds the identity to the existing column in place, without a copy".into(),
        },
        (Strategy::Auto, Dialect::Dsql) => StrategyStatus {
            taken: TakenStrategy::InPlace,
            reason: "DSQL took ADD IDENTITY on a scratch table: adding it in place; the copy follows if it refuses \
                     it on the table"
                .into(),
        },
        (Strategy::InPlace, Dialect::Dsql) => StrategyStatus {
            taken: TakenStrategy::InPlace,
            reason: "spec.strategy: InPlace; DSQL is asked to add the identity to the table itself".into(),
        },
    }
}

/// `Auto` on DSQL: in place only where DSQL can do it. Identity is bigint
/// only there, so another id type takes the copy (which widens it); else a
/// probe on a scratch table says whether ADD IDENTITY is taken at all.
async fn dsql_way(job: &Job, shape: &TableShape) -> Result<StrategyStatus, EngineError> {
    let id_type = shape.column(&job.settings.id_column).map(|c| c.data_type.clone()).unwrap_or_default();
    if id_type != "bigint" {
        let reason = format!("DSQL identity columns are bigint only and the id is {id_type}: the copy widens it");
        return Ok(StrategyStatus { taken: TakenStrategy::Copy, reason });
    }
    Ok(match probe_add_identity(job).await? {
        Some(why) => {
            StrategyStatus { taken: TakenStrategy::Copy, reason: format!("server refused ADD IDENTITY: {why}") }
        }
        None => choose_strategy(Strategy::Auto, Dialect::Dsql),
    })
}

//! What a reconciliation should do, from the spec, the freshest status and
//! the state of the migration's engine task. Pure.

use std::time::Duration;

use super::kind::MigrationSpec;
use crate::api::{Approval, IdentityMigrationStatus, Phase, TakenStrategy};
use crate::engine::plan::phase::{Gate, Work, effective_phase, may_own_shadow, may_proceed, settled};
use crate::engine::plan::validate::InvalidInput;
use crate::engine::plan::window::{self, WindowState};

/// The engine task of one migration, as the supervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    None,
    /// Running, started for this `metadata.generation`.
    Running {
        generation: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the engine.
    Start,
    /// The spec changed under a running engine: stop it at its next checkpoint;
    /// it starts again with the new spec.
    Restart,
    /// Pause the running engine at its next checkpoint (`spec.suspend()`).
    Suspend,
    /// The engine is running; look again later.
    Wait,
    /// Nothing to do until the spec changes (completed, suspended, awaiting approval).
    Idle,
    /// A failed migration retries after this long.
    RetryAfter(Duration),
    /// The spec is invalid: record it, and wait for a new spec.
    Reject(InvalidInput),
}

/// Retries of a failed migration back off from this ...
pub const RETRY_BASE: Duration = Duration::from_secs(15);
/// ... up to this.
pub const RETRY_CAP: Duration = Duration::from_secs(600);
/// Bad input is checked again this often even without a spec change (a table
/// or Secret may have been created meanwhile).
pub const RECHECK_INVALID: Duration = Duration::from_secs(300);

/// The wait before retry number `failures` (1 for the first).
pub fn retry_delay(failures: i64) -> Duration {
    let exp = failures.clamp(1, 16) as u32 - 1;
    RETRY_BASE.saturating_mul(2u32.saturating_pow(exp)).min(RETRY_CAP)
}

/// `failed_for`: how long ago the last failure was recorded.
pub fn decide(
    spec: &impl MigrationSpec,
    status: &IdentityMigrationStatus,
    generation: i64,
    task: Task,
    failed_for: Duration,
) -> Decision {
    decide_at(spec, status, generation, task, failed_for, jiff::Timestamp::now())
}

/// [`decide`] at the instant `now` (cut-over windows depend on it).
pub fn decide_at(
    spec: &impl MigrationSpec,
    status: &IdentityMigrationStatus,
    generation: i64,
    task: Task,
    failed_for: Duration,
    now: jiff::Timestamp,
) -> Decision {
    if let Err(invalid) = spec.check() {
        return match task {
            Task::Running { .. } => Decision::Restart,
            Task::None => Decision::Reject(invalid),
        };
    }
    if let Task::Running { generation: started } = task {
        return if spec.suspend() {
            Decision::Suspend
        } else if started != generation {
            Decision::Restart
        } else {
            Decision::Wait
        };
    }
    let spec_changed = status.observed_generation.is_some_and(|g| g != generation);
    // spec.rollback() turns a completed migration back; clearing it rolls forward.
    if settled(status, spec.rollback()) {
        return Decision::Idle;
    }
    let window = spec.cutover().window.as_ref().and_then(|w| window::parse(w).ok()).map(|w| window::state(&w, now));
    let gate = Gate {
        manual_approval: spec.cutover().approval == Approval::Manual,
        approved: spec.cutover().approved,
        windowed: window.is_some(),
        window_open: window == Some(WindowState::Open),
        in_place: false,
    };
    match status.phase {
        _ if spec.suspend() => Decision::Idle,
        Phase::AwaitingCutover if !may_proceed(Work::AwaitingCutover, gate) => match window {
            // Approved (or no approval asked), by copy: the engine keeps the
            // shadow in step until the window opens, then cuts over.
            Some(WindowState::Closed { .. }) if gate.approval_given() && !in_place(status) => Decision::Start,
            // In place there is nothing to keep in step: look again when it opens.
            Some(WindowState::Closed { opens_at }) if gate.approval_given() => {
                Decision::RetryAfter(opens_at.duration_since(now).try_into().unwrap_or(Duration::ZERO))
            }
            _ => Decision::Idle,
        },
        // The original table lost its name in a failed cut-over: put it back now.
        Phase::Failed if table_missing(status) => Decision::Start,
        // A failed cut-over outside its gate: the engine only puts back what
        // the attempt left and waits in AwaitingCutover, so no backoff.
        Phase::Failed if effective_phase(status) == Phase::Swapping && !may_proceed(Work::Swapping, gate) => {
            Decision::Start
        }
        Phase::Failed if !spec_changed => {
            let invalid = status.last_error.as_ref().is_some_and(|e| e.invalid_input);
            let wait = if invalid { RECHECK_INVALID } else { retry_delay(status.failures) };
            match wait.checked_sub(failed_for) {
                Some(left) if !left.is_zero() => Decision::RetryAfter(left),
                _ => Decision::Start,
            }
        }
        _ => Decision::Start,
    }
}

fn table_missing(status: &IdentityMigrationStatus) -> bool {
    status.cutover.as_ref().is_some_and(|c| c.table_missing)
}

fn in_place(status: &IdentityMigrationStatus) -> bool {
    status.strategy.as_ref().is_some_and(|s| s.taken == TakenStrategy::InPlace)
}

/// What deleting the resource must clean up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing was created, or the migration completed: user data stays.
    Nothing,
    /// An unfinished shadow table may exist and is dropped.
    DropShadow,
}

pub fn cleanup_for(status: &IdentityMigrationStatus) -> Cleanup {
    let phase = effective_phase(status);
    // Swapping is included: a deletion inside the window puts the original back first.
    if may_own_shadow(phase) || phase == Phase::Swapping { Cleanup::DropShadow } else { Cleanup::Nothing }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LastError;
    use crate::engine::testing::spec_for;

    fn status(phase: Phase) -> IdentityMigrationStatus {
        IdentityMigrationStatus { phase, observed_generation: Some(1), ..Default::default() }
    }

    fn failed(invalid_input: bool, failures: i64) -> IdentityMigrationStatus {
        IdentityMigrationStatus {
            failures,
            last_error: Some(LastError { phase: Phase::Copying, invalid_input, ..Default::default() }),
            ..status(Phase::Failed)
        }
    }

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn new_and_unfinished_migrations_start_and_running_ones_are_left_alone() {
        let spec = spec_for("t");
        assert_eq!(decide(&spec, &IdentityMigrationStatus::default(), 1, Task::None, NOW), Decision::Start);
        assert_eq!(decide(&spec, &status(Phase::Copying), 1, Task::None, NOW), Decision::Start);
        assert_eq!(decide(&spec, &status(Phase::Copying), 1, Task::Running { generation: 1 }, NOW), Decision::Wait);
        assert_eq!(decide(&spec, &status(Phase::Completed), 1, Task::None, NOW), Decision::Idle);
    }

    #[test]
    fn spec_changes_restart_the_engine_and_suspend_pauses_it() {
        let mut spec = spec_for("t");
        spec.copy.max_rows_per_second = 1000;
        assert_eq!(decide(&spec, &status(Phase::Copying), 2, Task::Running { generation: 1 }, NOW), Decision::Restart);
        spec.suspend = true;
        assert_eq!(decide(&spec, &status(Phase::Copying), 2, Task::Running { generation: 1 }, NOW), Decision::Suspend);
        assert_eq!(decide(&spec, &status(Phase::Copying), 2, Task::None, NOW), Decision::Idle);
        spec.suspend = false;
        assert_eq!(decide(&spec, &status(Phase::Copying), 3, Task::None, NOW), Decision::Start, "resumed");
    }

    #[test]
    fn rollback_and_roll_forward_start_the_engine() {
        let mut spec = spec_for("t");
        spec.rollback = true;
        assert_eq!(decide(&spec, &status(Phase::Completed), 2, Task::None, NOW), Decision::Start);
        assert_eq!(decide(&spec, &status(Phase::RolledBack), 2, Task::None, NOW), Decision::Idle);
        spec.rollback = false;
        assert_eq!(decide(&spec, &status(Phase::RolledBack), 3, Task::None, NOW), Decision::Start);
        assert_eq!(cleanup_for(&status(Phase::RolledBack)), Cleanup::Nothing, "both tables are user data");
    }

    #[test]
    fn manual_cutover_waits_for_approval() {
        let mut spec = spec_for("t");
        spec.cutover.approval = Approval::Manual;
        assert_eq!(decide(&spec, &status(Phase::AwaitingCutover), 1, Task::None, NOW), Decision::Idle);
        spec.cutover.approved = true;
        assert_eq!(decide(&spec, &status(Phase::AwaitingCutover), 2, Task::None, NOW), Decision::Start);
    }

    #[test]
    fn a_closed_window_is_looked_at_again_when_it_opens_and_needs_the_approval_too() {
        let mut spec = spec_for("t");
        spec.cutover.window = Some(crate::api::CutoverWindow {
            start: "02:00".into(),
            duration: "2h".into(),
            time_zone: "UTC".into(),
            days: vec![],
        });
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        let waiting = status(Phase::AwaitingCutover);
        assert_eq!(
            decide_at(&spec, &waiting, 1, Task::None, NOW, at("2026-12-01T01:00:00Z")),
            Decision::Start,
            "by copy, the engine keeps the shadow in step while it waits"
        );
        let in_place = IdentityMigrationStatus {
            strategy: Some(crate::api::StrategyStatus { taken: TakenStrategy::InPlace, reason: String::new() }),
            ..waiting.clone()
        };
        assert_eq!(
            decide_at(&spec, &in_place, 1, Task::None, NOW, at("2026-12-01T01:00:00Z")),
            Decision::RetryAfter(Duration::from_secs(3600))
        );
        assert_eq!(decide_at(&spec, &waiting, 1, Task::None, NOW, at("2026-12-01T02:30:00Z")), Decision::Start);
        spec.cutover.approval = Approval::Manual;
        assert_eq!(
            decide_at(&spec, &waiting, 1, Task::None, NOW, at("2026-12-01T02:30:00Z")),
            Decision::Idle,
            "open, but not approved"
        );
        spec.cutover.approved = true;
        assert_eq!(decide_at(&spec, &waiting, 2, Task::None, NOW, at("2026-12-01T02:30:00Z")), Decision::Start);
    }

    #[test]
    fn failures_back_off_and_bad_input_waits_for_a_new_spec() {
        let spec = spec_for("t");
        assert_eq!(retry_delay(1), Duration::from_secs(15));
        assert_eq!(retry_delay(3), Duration::from_secs(60));
        assert_eq!(retry_delay(40), RETRY_CAP);
        assert_eq!(
            decide(&spec, &failed(false, 2), 1, Task::None, Duration::from_secs(10)),
            Decision::RetryAfter(Duration::from_secs(20))
        );
        assert_eq!(decide(&spec, &failed(false, 2), 1, Task::None, Duration::from_secs(30)), Decision::Start);
        assert_eq!(
            decide(&spec, &failed(true, 1), 1, Task::None, Duration::from_secs(60)),
            Decision::RetryAfter(Duration::from_secs(240))
        );
        assert_eq!(decide(&spec, &failed(true, 1), 2, Task::None, NOW), Decision::Start, "a new spec is tried at once");
    }

    #[test]
    fn a_failed_cut_over_is_held_outside_its_gate_and_a_missing_table_is_put_back_at_once() {
        let mut spec = spec_for("t");
        spec.cutover.approval = Approval::Manual;
        spec.cutover.approved = true;
        let mut swap_failed = failed(false, 3);
        swap_failed.last_error.as_mut().unwrap().phase = Phase::Swapping;
        let soon = Duration::from_secs(1);
        assert!(
            matches!(decide(&spec, &swap_failed, 1, Task::None, soon), Decision::RetryAfter(_)),
            "approved: the retry backs off as any failure"
        );
        spec.cutover.approved = false;
        assert_eq!(
            decide(&spec, &swap_failed, 2, Task::None, soon),
            Decision::Start,
            "approval withdrawn: the engine starts only to hold the cut-over (it goes to AwaitingCutover)"
        );
        spec.cutover.approved = true;
        swap_failed.cutover = Some(crate::api::CutoverStatus { table_missing: true, ..Default::default() });
        assert_eq!(decide(&spec, &swap_failed, 1, Task::None, soon), Decision::Start, "no backoff while absent");
    }

    #[test]
    fn an_invalid_spec_is_rejected_and_stops_a_running_engine() {
        let mut spec = spec_for("t");
        spec.identity.cache = Some(1000);
        match decide(&spec, &status(Phase::Pending), 1, Task::None, NOW) {
            Decision::Reject(invalid) => assert_eq!(invalid.0[0].field, "spec.identity.cache"),
            other => panic!("{other:?}"),
        }
        assert_eq!(decide(&spec, &status(Phase::Copying), 2, Task::Running { generation: 1 }, NOW), Decision::Restart);
    }

    #[test]
    fn deletion_drops_only_an_unfinished_shadow() {
        assert_eq!(cleanup_for(&status(Phase::Copying)), Cleanup::DropShadow);
        assert_eq!(cleanup_for(&status(Phase::AwaitingCutover)), Cleanup::DropShadow);
        assert_eq!(cleanup_for(&status(Phase::Swapping)), Cleanup::DropShadow);
        assert_eq!(cleanup_for(&failed(false, 1)), Cleanup::DropShadow, "failed while copying");
        assert_eq!(cleanup_for(&status(Phase::Completed)), Cleanup::Nothing);
        assert_eq!(cleanup_for(&status(Phase::Validating)), Cleanup::Nothing);
        assert_eq!(cleanup_for(&IdentityMigrationStatus::default()), Cleanup::Nothing);
    }
}

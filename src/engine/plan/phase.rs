//! The phase machine in one place: every phase, every transition, the rules
//! that choose one, and where a resumed migration picks up. Pure.
//!
//! ```text
//!          ┌─ in place ─▶ (AwaitingCutover) ─▶ Swapping: ADD GENERATED on the table ─▶ Completed
//!          │                                      │ refused (Auto)
//!          │                                      ▼
//! Pending ─▶ Validating ─▶ CreatingTarget ─▶ Copying ─▶ Verifying
//!                                                          │
//!            ┌──────────── approval: Automatic ───────────┤
//!            │                                             ▼ approval: Manual
//!            │                                       AwaitingCutover ─(approved)─┐
//!            ▼                                                                   │
//!         Swapping ◀─────────────────────────────────────────────────────────────┘
//!            │  (the catalog shows a started window: any earlier phase jumps here)
//!            ▼
//!        Completed ─(spec.rollback)─▶ RollingBack ─▶ RolledBack ─(rollback cleared)─▶ Swapping
//!
//! any phase ─(error)─▶ Failed ─(run again, retry, spec changed)─▶ the phase that failed
//! ```
//!
//! Every rule is a function here: [`after`] (the next phase),
//! [`fall_back_to_copy`] (in place refused), [`may_proceed`]
//! (the approval gate), [`resume`] (where a run starts, from the status),
//! [`catalog_jump`] (where the catalog overrides a lagging status),
//! [`effective_phase`] (which phase a failed migration failed in),
//! [`swap_state`] and [`rollback_state`] (where a window stands).

use crate::api::{IdentityMigrationStatus, Phase};

/// What the cut-over asks for, as far as the phase machine is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub manual_approval: bool,
    pub approved: bool,
    /// A cut-over window is set, and whether it is open now.
    pub windowed: bool,
    pub window_open: bool,
    /// The identity is added in place: no shadow table, no copy.
    pub in_place: bool,
}

/// A phase in which the engine has work to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Validating,
    CreatingTarget,
    Copying,
    Verifying,
    AwaitingCutover,
    Swapping,
    RollingBack,
}

impl Work {
    pub fn phase(self) -> Phase {
        match self {
            Work::Validating => Phase::Validating,
            Work::CreatingTarget => Phase::CreatingTarget,
            Work::Copying => Phase::Copying,
            Work::Verifying => Phase::Verifying,
            Work::AwaitingCutover => Phase::AwaitingCutover,
            Work::Swapping => Phase::Swapping,
            Work::RollingBack => Phase::RollingBack,
        }
    }
}

/// Where the driver stands: a phase to work through, or one of the two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stand {
    Work(Work),
    Completed,
    RolledBack,
}

impl Stand {
    pub fn phase(self) -> Phase {
        match self {
            Stand::Work(work) => work.phase(),
            Stand::Completed => Phase::Completed,
            Stand::RolledBack => Phase::RolledBack,
        }
    }
}

/// Where the driver stands in `phase`. Pending starts with validation, and so
/// does a failure whose phase is unknown.
fn stand(phase: Phase) -> Stand {
    match phase {
        Phase::Pending | Phase::Failed | Phase::Validating => Stand::Work(Work::Validating),
        Phase::CreatingTarget => Stand::Work(Work::CreatingTarget),
        Phase::Copying => Stand::Work(Work::Copying),
        Phase::Verifying => Stand::Work(Work::Verifying),
        Phase::AwaitingCutover => Stand::Work(Work::AwaitingCutover),
        Phase::Swapping => Stand::Work(Work::Swapping),
        Phase::RollingBack => Stand::Work(Work::RollingBack),
        Phase::Completed => Stand::Completed,
        Phase::RolledBack => Stand::RolledBack,
    }
}

/// Where the migration goes once `work` is done.
pub fn after(work: Work, gate: Gate) -> Stand {
    match work {
        Work::Validating if gate.in_place && gate.waits() => Stand::Work(Work::AwaitingCutover),
        Work::Validating if gate.in_place => Stand::Work(Work::Swapping),
        Work::Validating => Stand::Work(Work::CreatingTarget),
        Work::CreatingTarget => Stand::Work(Work::Copying),
        Work::Copying => Stand::Work(Work::Verifying),
        Work::Verifying if gate.waits() => Stand::Work(Work::AwaitingCutover),
        Work::Verifying | Work::AwaitingCutover => Stand::Work(Work::Swapping),
        Work::Swapping => Stand::Completed,
        Work::RollingBack => Stand::RolledBack,
    }
}

/// Where a migration goes when the server refused to add the identity in
/// place (`strategy: Auto`): the copy, from its first phase.
pub fn fall_back_to_copy() -> Stand {
    Stand::Work(Work::CreatingTarget)
}

impl Gate {
    /// Whether the cut-over has anything to wait for (an approval or a window).
    pub fn waits(self) -> bool {
        self.manual_approval || self.windowed
    }

    /// Whether the approval rule holds (the window aside).
    pub fn approval_given(self) -> bool {
        !self.manual_approval || self.approved
    }
}

/// Whether `work` may start now, or must wait for a person or a window:
/// the cut-over needs the approval (if asked) and an open window (if set).
/// Swapping is gated as well as the wait before it: a failed cut-over is
/// retried only where a first one would be allowed, and a retry outside the
/// gate first puts back whatever the failed one left (see [`SwapState`]).
pub fn may_proceed(work: Work, gate: Gate) -> bool {
    match work {
        Work::AwaitingCutover | Work::Swapping => gate.approval_given() && (!gate.windowed || gate.window_open),
        _ => true,
    }
}

/// The phase a migration is in; for a failed one, the phase that failed
/// (Pending when unknown).
pub fn effective_phase(status: &IdentityMigrationStatus) -> Phase {
    match status.phase {
        Phase::Failed => status.last_error.as_ref().map_or(Phase::Pending, |e| e.phase),
        phase => phase,
    }
}

/// Where a (re)started engine stands. A failed migration retries the phase
/// that failed: every phase is idempotent and checks the catalog first.
/// `rollback` is `spec.rollback`: it turns a completed migration back, and
/// clearing it rolls a rolled-back one forward with a new swap.
pub fn resume(status: &IdentityMigrationStatus, rollback: bool) -> Stand {
    match effective_phase(status) {
        Phase::Completed if rollback => Stand::Work(Work::RollingBack),
        Phase::RolledBack if !rollback => Stand::Work(Work::Swapping),
        phase => stand(phase),
    }
}

/// A migration with nothing left to do until its spec changes: it has reached
/// the end that `spec.rollback` asks for.
pub fn settled(status: &IdentityMigrationStatus, rollback: bool) -> bool {
    matches!(
        (status.phase, resume(status, rollback)),
        (Phase::Completed, Stand::Completed) | (Phase::RolledBack, Stand::RolledBack)
    )
}

/// Whether `spec.rollback` may apply: only a migration that completed its
/// cut-over (or is rolling back) has an old table to return to.
pub fn rollback_allowed(status: &IdentityMigrationStatus) -> bool {
    matches!(effective_phase(status), Phase::Completed | Phase::RollingBack | Phase::RolledBack)
}

/// Whether the catalog must be asked before resuming at `stand`: a status
/// that lags behind the database (a crash between a rename and its status
/// write) must not restart the copy once a plan exists.
pub fn needs_catalog_check(stand: Stand, has_plan: bool) -> bool {
    has_plan && matches!(stand, Stand::Work(w) if !matches!(w, Work::Swapping | Work::RollingBack))
}

/// Where the catalog sends a resumed migration: into the swap when the window
/// has begun or the swap is done, else where the status says.
pub fn catalog_jump(stand: Stand, state: &SwapState) -> Stand {
    match state {
        SwapState::InWindow | SwapState::Swapped => Stand::Work(Work::Swapping),
        _ => stand,
    }
}

/// Phases that have created the shadow table or may have: deleting an
/// unfinished migration must drop it.
pub fn may_own_shadow(phase: Phase) -> bool {
    matches!(phase, Phase::CreatingTarget | Phase::Copying | Phase::Verifying | Phase::AwaitingCutover)
}

/// Where the two renames of the cut-over stand, read from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapState {
    /// The source still has its name; the shadow exists beside it.
    BeforeWindow,
    /// The source was renamed away; the shadow waits to take its name.
    InWindow,
    /// The table with the name is the new one (an identity column).
    Swapped,
    /// The catalog matches no step of the cut-over.
    Inconsistent(String),
}

/// What the catalog says about the three names of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    pub table: bool,
    /// The table under the name is the new one: its id is an identity (an
    /// identity migration), or its primary key is the new table's (a rebuild).
    pub table_is_new: bool,
    pub shadow: bool,
    pub old: bool,
}

pub fn swap_state(n: Names) -> SwapState {
    match (n.table, n.table_is_new, n.shadow, n.old) {
        (true, false, true, false) => SwapState::BeforeWindow,
        (false, _, true, true) => SwapState::InWindow,
        (true, true, false, _) => SwapState::Swapped,
        (true, false, true, true) => SwapState::Inconsistent(
            "the table, the shadow table and the old table all exist; the old table name was taken by someone else"
                .into(),
        ),
        (true, false, false, _) => {
            SwapState::Inconsistent("the shadow table is missing; it was dropped outside the migration".into())
        }
        (false, _, false, true) => SwapState::Inconsistent(
            "both the table and the shadow table are missing; only the old table remains (rename it back)".into(),
        ),
        (false, _, _, false) => SwapState::Inconsistent("the table and the old table are both missing".into()),
        (true, true, true, _) => {
            SwapState::Inconsistent("the table already has an identity column and the shadow table exists".into())
        }
    }
}

/// Where a rollback stands, from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollbackState {
    /// The new table has the name; the old one waits under its old name.
    Forward,
    /// The new table was renamed aside; the old one has not taken the name yet.
    InWindow,
    /// The old table has the name back.
    Back,
    Refused(String),
}

pub fn rollback_state(n: Names, retain_old: bool) -> RollbackState {
    match (n.table, n.table_is_new, n.shadow, n.old) {
        (true, true, false, true) => RollbackState::Forward,
        (false, _, true, true) => RollbackState::InWindow,
        (true, false, true, false) => RollbackState::Back,
        (true, true, false, false) if !retain_old => RollbackState::Refused(
            "the old table was dropped at completion (oldTable.retain: false); there is nothing to roll back to".into(),
        ),
        (true, true, false, false) => {
            RollbackState::Refused("the old table no longer exists; there is nothing to roll back to".into())
        }
        _ => RollbackState::Refused("the tables are not as a completed migration leaves them".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LastError;

    fn names(table: bool, table_is_new: bool, shadow: bool, old: bool) -> Names {
        Names { table, table_is_new, shadow, old }
    }

    const AUTO: Gate =
        Gate { manual_approval: false, approved: false, windowed: false, window_open: false, in_place: false };
    const MANUAL: Gate =
        Gate { manual_approval: true, approved: false, windowed: false, window_open: false, in_place: false };
    const APPROVED: Gate =
        Gate { manual_approval: true, approved: true, windowed: false, window_open: false, in_place: false };
    const IN_PLACE: Gate =
        Gate { manual_approval: false, approved: false, windowed: false, window_open: false, in_place: true };
    const IN_PLACE_MANUAL: Gate =
        Gate { manual_approval: true, approved: false, windowed: false, window_open: false, in_place: true };

    fn walk_from(start: Stand, gate: Gate) -> Vec<Phase> {
        let mut seen = vec![start.phase()];
        let mut at = start;
        while let Stand::Work(work) = at {
            at = after(work, gate);
            seen.push(at.phase());
        }
        seen
    }

    #[test]
    fn automatic_migrations_walk_every_phase_in_order() {
        let start = resume(&IdentityMigrationStatus::default(), false);
        use Phase::*;
        assert_eq!(walk_from(start, AUTO), vec![Validating, CreatingTarget, Copying, Verifying, Swapping, Completed]);
    }

    #[test]
    fn manual_approval_stops_before_the_swap_until_approved() {
        assert_eq!(after(Work::Verifying, MANUAL), Stand::Work(Work::AwaitingCutover));
        assert!(!may_proceed(Work::AwaitingCutover, MANUAL));
        assert!(may_proceed(Work::AwaitingCutover, APPROVED));
        assert_eq!(after(Work::AwaitingCutover, APPROVED), Stand::Work(Work::Swapping));
        assert!(may_proceed(Work::Copying, MANUAL));
    }

    #[test]
    fn a_retried_cut_over_needs_the_approval_and_the_window_like_the_first() {
        assert!(!may_proceed(Work::Swapping, MANUAL), "a failed swap is not retried without approval");
        assert!(may_proceed(Work::Swapping, APPROVED));
        let closed = Gate { windowed: true, ..APPROVED };
        assert!(!may_proceed(Work::Swapping, closed), "nor outside the window");
        assert!(may_proceed(Work::Swapping, Gate { window_open: true, ..closed }));
        assert!(may_proceed(Work::Swapping, AUTO));
        assert!(may_proceed(Work::RollingBack, MANUAL), "a rollback is asked for by spec.rollback itself");
    }

    #[test]
    fn a_window_holds_the_cut_over_until_it_opens_and_combines_with_approval() {
        let closed = Gate { windowed: true, ..AUTO };
        assert_eq!(after(Work::Verifying, closed), Stand::Work(Work::AwaitingCutover));
        assert!(!may_proceed(Work::AwaitingCutover, closed));
        assert!(may_proceed(Work::AwaitingCutover, Gate { window_open: true, ..closed }));
        assert!(may_proceed(Work::Copying, closed), "the copy runs outside the window");
        // Both must hold: an open window without the approval waits, and the reverse.
        assert!(!may_proceed(Work::AwaitingCutover, Gate { windowed: true, window_open: true, ..MANUAL }));
        assert!(!may_proceed(Work::AwaitingCutover, Gate { windowed: true, ..APPROVED }));
        assert!(may_proceed(Work::AwaitingCutover, Gate { windowed: true, window_open: true, ..APPROVED }));
        let in_place = Gate { windowed: true, ..IN_PLACE };
        assert_eq!(after(Work::Validating, in_place), Stand::Work(Work::AwaitingCutover));
    }

    #[test]
    fn ends_have_no_work_and_a_rollback_ends_rolled_back() {
        for p in [Phase::Completed, Phase::RolledBack] {
            let status = IdentityMigrationStatus { phase: p, ..Default::default() };
            assert!(!matches!(resume(&status, p == Phase::RolledBack), Stand::Work(_)), "{p}");
        }
        assert_eq!(after(Work::RollingBack, AUTO), Stand::RolledBack);
    }

    #[test]
    fn a_failed_migration_resumes_in_the_phase_that_failed() {
        let mut status = IdentityMigrationStatus { phase: Phase::Failed, ..Default::default() };
        assert_eq!(resume(&status, false).phase(), Phase::Validating);
        status.last_error = Some(LastError { phase: Phase::Copying, message: "x".into(), ..Default::default() });
        assert_eq!(resume(&status, false).phase(), Phase::Copying);
        assert_eq!(effective_phase(&status), Phase::Copying);
        status.phase = Phase::Verifying;
        assert_eq!(resume(&status, false).phase(), Phase::Verifying);
        status.phase = Phase::Pending;
        assert_eq!(resume(&status, false).phase(), Phase::Validating);
    }

    #[test]
    fn rollback_turns_a_completed_migration_back_and_clearing_it_rolls_forward() {
        let done = IdentityMigrationStatus { phase: Phase::Completed, ..Default::default() };
        assert_eq!(resume(&done, false).phase(), Phase::Completed);
        assert_eq!(resume(&done, true).phase(), Phase::RollingBack);
        assert!(settled(&done, false) && !settled(&done, true));
        let back = IdentityMigrationStatus { phase: Phase::RolledBack, ..Default::default() };
        assert_eq!(resume(&back, true).phase(), Phase::RolledBack);
        assert_eq!(resume(&back, false).phase(), Phase::Swapping, "rolled forward by a new swap");
        assert!(settled(&back, true) && !settled(&back, false));
        assert!(rollback_allowed(&done) && rollback_allowed(&back));
        let copying = IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() };
        assert!(!rollback_allowed(&copying));
        let failed_back = IdentityMigrationStatus {
            phase: Phase::Failed,
            last_error: Some(LastError { phase: Phase::RollingBack, ..Default::default() }),
            ..Default::default()
        };
        assert!(rollback_allowed(&failed_back));
        assert_eq!(resume(&failed_back, true).phase(), Phase::RollingBack);
    }

    /// Every transition of the diagram in the module doc, walked through the
    /// functions that decide it; every phase appears in the table.
    #[test]
    fn every_transition_in_the_table() {
        use Phase::*;
        let status = |phase: Phase, failed_in: Option<Phase>| IdentityMigrationStatus {
            phase,
            last_error: failed_in.map(|p| LastError { phase: p, ..Default::default() }),
            ..Default::default()
        };
        // (from, rule, to) through `after` and the gate.
        let work: [(Work, Gate, Phase); 11] = [
            (Work::Validating, AUTO, CreatingTarget),
            (Work::Validating, IN_PLACE, Swapping),
            (Work::Validating, IN_PLACE_MANUAL, AwaitingCutover),
            (Work::CreatingTarget, AUTO, Copying),
            (Work::Copying, AUTO, Verifying),
            (Work::Verifying, AUTO, Swapping),
            (Work::Verifying, MANUAL, AwaitingCutover),
            (Work::AwaitingCutover, APPROVED, Swapping),
            (Work::AwaitingCutover, MANUAL, Swapping),
            (Work::Swapping, AUTO, Completed),
            (Work::RollingBack, AUTO, RolledBack),
        ];
        let mut covered = std::collections::HashSet::new();
        for (from, gate, to) in work {
            assert_eq!(after(from, gate).phase(), to, "{from:?} with {gate:?}");
            covered.extend([from.phase(), to]);
        }
        assert!(!may_proceed(Work::AwaitingCutover, MANUAL), "the gate holds until approved");
        assert!(!may_proceed(Work::AwaitingCutover, IN_PLACE_MANUAL), "in place waits for approval too");
        assert_eq!(fall_back_to_copy(), Stand::Work(Work::CreatingTarget), "in place refused: the copy");
        // (status, spec.rollback, where a run starts) through `resume`.
        let resumes = [
            (status(Pending, None), false, Validating),
            (status(Failed, Some(Copying)), false, Copying),
            (status(Failed, None), false, Validating),
            (status(Completed, None), true, RollingBack),
            (status(Completed, None), false, Completed),
            (status(RolledBack, None), false, Swapping),
            (status(RolledBack, None), true, RolledBack),
        ];
        for (s, rollback, to) in resumes {
            assert_eq!(resume(&s, rollback).phase(), to, "{:?} rollback={rollback}", s.phase);
            covered.extend([s.phase, to]);
        }
        // The catalog's jump over a lagging status.
        let copying = Stand::Work(Work::Copying);
        assert!(needs_catalog_check(copying, true));
        assert!(!needs_catalog_check(copying, false), "no plan: nothing was created");
        assert!(!needs_catalog_check(Stand::Work(Work::Swapping), true));
        assert_eq!(catalog_jump(copying, &SwapState::InWindow), Stand::Work(Work::Swapping));
        assert_eq!(catalog_jump(copying, &SwapState::Swapped), Stand::Work(Work::Swapping));
        assert_eq!(catalog_jump(copying, &SwapState::BeforeWindow), copying);
        for phase in Phase::ALL {
            assert!(covered.contains(&phase), "{phase} is in no transition");
        }
    }

    #[test]
    fn the_catalog_tells_where_the_cutover_stands() {
        let n = |table, table_is_new, shadow, old| Names { table, table_is_new, shadow, old };
        assert_eq!(swap_state(n(true, false, true, false)), SwapState::BeforeWindow);
        assert_eq!(swap_state(n(false, false, true, true)), SwapState::InWindow);
        assert_eq!(swap_state(n(true, true, false, true)), SwapState::Swapped);
        assert_eq!(swap_state(n(true, true, false, false)), SwapState::Swapped, "old table dropped (retain: false)");
        for bad in [
            n(true, false, true, true),
            n(true, false, false, true),
            n(false, false, false, true),
            n(false, false, false, false),
        ] {
            assert!(matches!(swap_state(bad), SwapState::Inconsistent(_)), "{bad:?}");
        }
    }

    #[test]
    fn only_unfinished_phases_own_the_shadow_table() {
        assert!(may_own_shadow(Phase::Copying));
        assert!(!may_own_shadow(Phase::Validating));
        assert!(!may_own_shadow(Phase::Swapping), "in the window the shadow holds the only complete copy");
        assert!(!may_own_shadow(Phase::Completed));
    }

    #[test]
    fn the_catalog_tells_where_a_rollback_stands() {
        assert_eq!(rollback_state(names(true, true, false, true), true), RollbackState::Forward);
        assert_eq!(rollback_state(names(false, false, true, true), true), RollbackState::InWindow);
        assert_eq!(rollback_state(names(true, false, true, false), true), RollbackState::Back);
        match rollback_state(names(true, true, false, false), false) {
            RollbackState::Refused(why) => assert!(why.contains("retain: false"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(rollback_state(names(true, true, false, false), true), RollbackState::Refused(_)));
        assert!(matches!(rollback_state(names(false, false, false, false), true), RollbackState::Refused(_)));
    }
}

//! The phase machine in one place: every phase, every transition, and where a
//! resumed migration picks up. Pure.
//!
//! ```text
//! Pending -> Validating -> CreatingTarget -> Copying -> Verifying
//!     -> AwaitingCutover (approval: Manual) -> Swapping -> Completed
//! any phase --permanent error--> Failed --run again / spec changed--> the phase that failed
//! Completed --spec.rollback--> RollingBack -> RolledBack
//! ```

use crate::api::{IdentityMigrationStatus, Phase};

/// What the cut-over asks for, as far as the phase machine is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    pub manual_approval: bool,
    pub approved: bool,
}

/// The phase after `phase` finished its work.
pub fn next_phase(phase: Phase, gate: Gate) -> Phase {
    match phase {
        Phase::Pending => Phase::Validating,
        Phase::Validating => Phase::CreatingTarget,
        Phase::CreatingTarget => Phase::Copying,
        Phase::Copying => Phase::Verifying,
        Phase::Verifying if gate.manual_approval => Phase::AwaitingCutover,
        Phase::Verifying => Phase::Swapping,
        Phase::AwaitingCutover => Phase::Swapping,
        Phase::Swapping => Phase::Completed,
        Phase::RollingBack => Phase::RolledBack,
        Phase::Completed | Phase::Failed | Phase::RolledBack => phase,
    }
}

/// Whether `phase` may start its work now, or must wait for a person.
pub fn may_proceed(phase: Phase, gate: Gate) -> bool {
    match phase {
        Phase::AwaitingCutover => !gate.manual_approval || gate.approved,
        _ => true,
    }
}

/// The phase a (re)started engine runs first. A failed migration retries the
/// phase that failed: every phase is idempotent and checks the catalog first.
/// A failure in validation starts over from Validating. `rollback` is
/// `spec.rollback`: it turns a completed migration back, and clearing it
/// rolls a rolled-back one forward again.
pub fn resume_phase(status: &IdentityMigrationStatus, rollback: bool) -> Phase {
    match status.phase {
        Phase::Pending => Phase::Validating,
        Phase::Failed => match status.last_error.as_ref().map(|e| e.phase) {
            None | Some(Phase::Pending | Phase::Failed) => Phase::Validating,
            Some(phase) => phase,
        },
        Phase::Completed if rollback => Phase::RollingBack,
        Phase::RolledBack if !rollback => Phase::Swapping,
        phase => phase,
    }
}

/// Whether `spec.rollback` may apply to a migration in `phase`: only one that
/// completed its cut-over (or is rolling back) has an old table to return to.
pub fn rollback_allowed(status: &IdentityMigrationStatus) -> bool {
    let phase = match status.phase {
        Phase::Failed => status.last_error.as_ref().map_or(Phase::Pending, |e| e.phase),
        phase => phase,
    };
    matches!(phase, Phase::Completed | Phase::RollingBack | Phase::RolledBack)
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
    /// The table under the name has an identity id column.
    pub table_is_identity: bool,
    pub shadow: bool,
    pub old: bool,
}

pub fn swap_state(n: Names) -> SwapState {
    match (n.table, n.table_is_identity, n.shadow, n.old) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LastError;

    const AUTO: Gate = Gate { manual_approval: false, approved: false };
    const MANUAL: Gate = Gate { manual_approval: true, approved: false };
    const APPROVED: Gate = Gate { manual_approval: true, approved: true };

    #[test]
    fn automatic_migrations_walk_every_phase_in_order() {
        let mut phase = Phase::Pending;
        let mut seen = vec![phase];
        while !phase.is_terminal() {
            phase = next_phase(phase, AUTO);
            seen.push(phase);
        }
        use Phase::*;
        assert_eq!(seen, vec![Pending, Validating, CreatingTarget, Copying, Verifying, Swapping, Completed]);
    }

    #[test]
    fn manual_approval_stops_before_the_swap_until_approved() {
        assert_eq!(next_phase(Phase::Verifying, MANUAL), Phase::AwaitingCutover);
        assert!(!may_proceed(Phase::AwaitingCutover, MANUAL));
        assert!(may_proceed(Phase::AwaitingCutover, APPROVED));
        assert_eq!(next_phase(Phase::AwaitingCutover, APPROVED), Phase::Swapping);
        assert!(may_proceed(Phase::Copying, MANUAL));
    }

    #[test]
    fn terminal_phases_stay() {
        for p in [Phase::Completed, Phase::Failed, Phase::RolledBack] {
            assert_eq!(next_phase(p, AUTO), p);
        }
        assert_eq!(next_phase(Phase::RollingBack, AUTO), Phase::RolledBack);
    }

    #[test]
    fn a_failed_migration_resumes_in_the_phase_that_failed() {
        let mut status = IdentityMigrationStatus { phase: Phase::Failed, ..Default::default() };
        assert_eq!(resume_phase(&status, false), Phase::Validating);
        status.last_error = Some(LastError { phase: Phase::Copying, message: "x".into(), ..Default::default() });
        assert_eq!(resume_phase(&status, false), Phase::Copying);
        status.phase = Phase::Verifying;
        assert_eq!(resume_phase(&status, false), Phase::Verifying);
        status.phase = Phase::Pending;
        assert_eq!(resume_phase(&status, false), Phase::Validating);
    }

    #[test]
    fn rollback_turns_a_completed_migration_back_and_clearing_it_rolls_forward() {
        let done = IdentityMigrationStatus { phase: Phase::Completed, ..Default::default() };
        assert_eq!(resume_phase(&done, false), Phase::Completed);
        assert_eq!(resume_phase(&done, true), Phase::RollingBack);
        let back = IdentityMigrationStatus { phase: Phase::RolledBack, ..Default::default() };
        assert_eq!(resume_phase(&back, true), Phase::RolledBack);
        assert_eq!(resume_phase(&back, false), Phase::Swapping, "rolled forward by a new swap");
        assert!(rollback_allowed(&done) && rollback_allowed(&back));
        let copying = IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() };
        assert!(!rollback_allowed(&copying));
        let failed_back = IdentityMigrationStatus {
            phase: Phase::Failed,
            last_error: Some(LastError { phase: Phase::RollingBack, ..Default::default() }),
            ..Default::default()
        };
        assert!(rollback_allowed(&failed_back));
        assert_eq!(resume_phase(&failed_back, true), Phase::RollingBack);
    }

    #[test]
    fn the_catalog_tells_where_the_cutover_stands() {
        let n = |table, table_is_identity, shadow, old| Names { table, table_is_identity, shadow, old };
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
}

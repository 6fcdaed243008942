//! A SchemaMigration's status as kstatus reads it: the conditions Ready,
//! Reconciling, Stalled, AwaitingApproval and Drifted for each state of a
//! run, set as the other kinds set theirs. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{Desired, apply_conditions};
use crate::api::schema::{InFlight, SchemaMigrationStatus};

/// Where a SchemaMigration stands.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// A run is under way.
    Applying {
        pending: usize,
        in_flight: Option<InFlight>,
    },
    /// Every migration up to the target version is applied.
    UpToDate {
        current: Option<String>,
    },
    /// The plan waits for `policy.approvedPlanHash`.
    AwaitingApproval {
        hash: String,
        why: String,
        pending: usize,
    },
    /// A rebuild waits for its cut-over's approval or window.
    AwaitingCutover {
        version: String,
    },
    /// An applied file changed.
    Drifted {
        message: String,
    },
    /// The files or the spec must change (a refusal, a syntax error, bad input).
    Stalled {
        message: String,
    },
    /// A failure the next attempt may get past (the database, the API).
    Retrying {
        message: String,
    },
    Suspended,
}

fn d(type_: &'static str, on: bool, reason: &str, message: impl Into<String>) -> Desired {
    Desired { type_, status: on, reason: reason.to_string(), message: message.into() }
}

/// The five conditions of `state`.
pub fn desired(state: &State) -> [Desired; 5] {
    let quiet = |t: &'static str, reason: &str| d(t, false, reason, "");
    match state {
        State::Applying { pending, in_flight } => {
            let step =
                in_flight.as_ref().map(|f| format!(": version {} step {}", f.version, f.step)).unwrap_or_default();
            let message = format!("applying {pending} pending migration(s){step}");
            [
                d("Ready", false, "Applying", message.clone()),
                d("Reconciling", true, "Applying", message),
                quiet("Stalled", "Applying"),
                quiet("AwaitingApproval", "Applying"),
                quiet("Drifted", "Applying"),
            ]
        }
        State::UpToDate { current } => {
            let message = format!("up to date at version {}", current.as_deref().unwrap_or("(none)"));
            [
                d("Ready", true, "UpToDate", message),
                quiet("Reconciling", "UpToDate"),
                quiet("Stalled", "UpToDate"),
                quiet("AwaitingApproval", "UpToDate"),
                quiet("Drifted", "UpToDate"),
            ]
        }
        State::AwaitingApproval { hash, why, pending } => {
            let message = format!(
                "{pending} pending migration(s) {why}: set spec.policy.approvedPlanHash to \"{hash}\" to approve this plan"
            );
            [
                d("Ready", false, "AwaitingApproval", message.clone()),
                quiet("Reconciling", "AwaitingApproval"),
                quiet("Stalled", "AwaitingApproval"),
                d("AwaitingApproval", true, "PlanHash", message),
                quiet("Drifted", "AwaitingApproval"),
            ]
        }
        State::AwaitingCutover { version } => {
            let message = format!("version {version} rebuilds a table: waiting for spec.cutover (approval or window)");
            [
                d("Ready", false, "AwaitingCutover", message.clone()),
                quiet("Reconciling", "AwaitingCutover"),
                quiet("Stalled", "AwaitingCutover"),
                d("AwaitingApproval", true, "Cutover", message),
                quiet("Drifted", "AwaitingCutover"),
            ]
        }
        State::Drifted { message } => [
            d("Ready", false, "Drifted", message.clone()),
            quiet("Reconciling", "Drifted"),
            d("Stalled", true, "Drifted", message.clone()),
            quiet("AwaitingApproval", "Drifted"),
            d("Drifted", true, "ChecksumChanged", message.clone()),
        ],
        State::Stalled { message } => [
            d("Ready", false, "Stalled", message.clone()),
            quiet("Reconciling", "Stalled"),
            d("Stalled", true, "InvalidInput", message.clone()),
            quiet("AwaitingApproval", "Stalled"),
            quiet("Drifted", "Stalled"),
        ],
        State::Retrying { message } => [
            d("Ready", false, "Retrying", message.clone()),
            d("Reconciling", true, "Retrying", message.clone()),
            quiet("Stalled", "Retrying"),
            quiet("AwaitingApproval", "Retrying"),
            quiet("Drifted", "Retrying"),
        ],
        State::Suspended => [
            d("Ready", false, "Suspended", "spec.suspend is true"),
            quiet("Reconciling", "Suspended"),
            quiet("Stalled", "Suspended"),
            quiet("AwaitingApproval", "Suspended"),
            quiet("Drifted", "Suspended"),
        ],
    }
}

/// Writes `state` into `status` for `generation`.
pub fn apply(status: &mut SchemaMigrationStatus, state: &State, generation: Option<i64>, now: &Time) {
    status.observed_generation = generation;
    match state {
        State::Applying { pending, in_flight } => {
            status.pending = *pending as i64;
            status.in_flight = in_flight.clone();
        }
        State::UpToDate { current } => {
            status.current_version = current.clone();
            status.pending = 0;
            status.in_flight = None;
            status.plan_hash = None;
            status.last_applied_at = Some(now.clone());
        }
        State::AwaitingApproval { hash, pending, .. } => {
            status.plan_hash = Some(hash.clone());
            status.pending = *pending as i64;
        }
        _ => {}
    }
    apply_conditions(&mut status.conditions, &desired(state), generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(status: &SchemaMigrationStatus) -> Vec<&str> {
        status.conditions.iter().filter(|c| c.status == "True").map(|c| c.type_.as_str()).collect()
    }

    #[test]
    fn each_state_raises_the_conditions_kstatus_reads() {
        let now = crate::api::now();
        let mut status = SchemaMigrationStatus::default();
        apply(&mut status, &State::Applying { pending: 3, in_flight: None }, Some(2), &now);
        assert_eq!(on(&status), ["Reconciling"]);
        assert_eq!((status.pending, status.observed_generation), (3, Some(2)));
        apply(&mut status, &State::UpToDate { current: Some("7".into()) }, Some(2), &now);
        assert_eq!(on(&status), ["Ready"]);
        assert_eq!((status.current_version.as_deref(), status.pending), (Some("7"), 0));
        let waiting = State::AwaitingApproval { hash: "abc".into(), why: "drops or deletes: 8".into(), pending: 1 };
        apply(&mut status, &waiting, Some(3), &now);
        assert_eq!(on(&status), ["AwaitingApproval"]);
        assert_eq!(status.plan_hash.as_deref(), Some("abc"));
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.contains("approvedPlanHash to \"abc\""), "{}", ready.message);
        apply(&mut status, &State::Drifted { message: "version 3 changed".into() }, Some(3), &now);
        assert_eq!(on(&status), ["Stalled", "Drifted"]);
        apply(&mut status, &State::Stalled { message: "V2__x.sql:3: triggers".into() }, Some(3), &now);
        assert_eq!(on(&status), ["Stalled"]);
        assert_eq!(status.conditions.len(), 5);
    }
}

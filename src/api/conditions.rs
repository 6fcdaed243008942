//! `Ready`, `Progressing` and `Degraded` in the standard `metav1.Condition`
//! shape, derived from the status alone so both front ends agree. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::status::{IdentityMigrationStatus, Phase};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// One condition as the phase machine sees it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn desired(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Desired {
    Desired { type_, status, reason: reason.to_string(), message: message.into() }
}

/// The three conditions for a status. `suspended` comes from the spec, which
/// the status alone does not know; waiting for approval shows in the phase.
pub fn desired_conditions(status: &IdentityMigrationStatus, suspended: bool) -> [Desired; 3] {
    let phase = status.phase;
    match phase {
        Phase::Completed => [
            desired(READY, true, "Completed", completed_message(status)),
            desired(PROGRESSING, false, "Completed", "the migration is complete"),
            desired(DEGRADED, false, "Completed", "no problems"),
        ],
        Phase::RolledBack => [
            desired(READY, true, "RolledBack", "the original table is back in place"),
            desired(PROGRESSING, false, "RolledBack", "the rollback is complete"),
            desired(DEGRADED, false, "RolledBack", "no problems"),
        ],
        _ if status.cutover.as_ref().is_some_and(|c| c.table_missing) => {
            let message = "the table name is absent: renaming the table back after a failed window has not \
                           succeeded yet; the engine retries until it does"
                .to_string();
            [
                desired(READY, false, "TableMissing", message.clone()),
                desired(PROGRESSING, true, "TableMissing", "giving the original table its name back"),
                desired(DEGRADED, true, "TableMissing", message),
            ]
        }
        Phase::Failed => {
            let (reason, message) = match &status.last_error {
                Some(e) if e.invalid_data => ("InvalidData", e.message.clone()),
                Some(e) if e.invalid_input => ("InvalidSpec", e.message.clone()),
                Some(e) => ("Failed", format!("{} failed: {}", e.phase, e.message)),
                None => ("Failed", "the migration failed".to_string()),
            };
            [
                desired(READY, false, reason, message.clone()),
                desired(PROGRESSING, false, reason, "stopped; fix the cause and the migration retries"),
                desired(DEGRADED, true, reason, message),
            ]
        }
        _ if suspended => [
            desired(READY, false, "Suspended", format!("suspended in {phase}")),
            desired(PROGRESSING, false, "Suspended", format!("spec.suspend is true; paused in {phase}")),
            desired(DEGRADED, false, "Suspended", "no problems"),
        ],
        _ if status.queued.is_some() => {
            let q = status.queued.clone().unwrap_or_default();
            let endpoint = status.endpoint.as_deref().unwrap_or("its database");
            let message = format!(
                "queued: number {} in line for {endpoint}, where {} migrations run at once (maxConcurrentPerTarget)",
                q.position, q.limit
            );
            [
                desired(READY, false, "Queued", message.clone()),
                desired(PROGRESSING, false, "Queued", message),
                desired(DEGRADED, false, "Queued", "no problems"),
            ]
        }
        _ if status.cutover.as_ref().is_some_and(|c| !c.blocked_by.is_empty()) => {
            let blockers = status.cutover.as_ref().map(|c| c.blocked_by.join("; ")).unwrap_or_default();
            let message = format!("the cut-over waits for sessions that would block its lock: {blockers}");
            [
                desired(READY, false, "BlockedBy", message.clone()),
                desired(PROGRESSING, true, "BlockedBy", message.clone()),
                desired(DEGRADED, true, "BlockedBy", message),
            ]
        }
        Phase::AwaitingCutover if status.cutover.as_ref().and_then(|c| c.next_window.as_ref()).is_some() => {
            let opens = status.cutover.as_ref().and_then(|c| c.next_window.as_ref()).map(|t| t.0.to_string());
            let message = format!("verified; the cut-over window opens at {}", opens.unwrap_or_default());
            [
                desired(READY, false, "AwaitingWindow", message.clone()),
                desired(PROGRESSING, false, "AwaitingWindow", message),
                desired(DEGRADED, false, "AwaitingWindow", "no problems"),
            ]
        }
        Phase::AwaitingCutover => [
            desired(READY, false, "AwaitingApproval", "verified; waiting for spec.cutover.approved"),
            desired(
                PROGRESSING,
                false,
                "AwaitingApproval",
                "the cut-over needs approval: set spec.cutover.approved to true",
            ),
            desired(DEGRADED, false, "AwaitingApproval", "no problems"),
        ],
        _ => {
            let message = match (&status.progress, phase) {
                (Some(p), Phase::Copying) => {
                    let copied = format!("copied {} of {} rows ({}%)", p.rows_copied, p.rows_total, p.percent);
                    match &p.pace {
                        Some(pace) if pace.reason != "Clear" => format!("{copied}; slowed: {}", pace.message),
                        _ => copied,
                    }
                }
                _ => format!("{phase}"),
            };
            let still_changing = status.verification.as_ref().map(|v| v.unresolved.as_slice()).unwrap_or_default();
            let degraded = if still_changing.is_empty() {
                desired(DEGRADED, false, phase.as_str(), "no problems")
            } else {
                let ranges = still_changing.join(", ");
                desired(
                    DEGRADED,
                    true,
                    "StillChanging",
                    format!(
                        "rows in id ranges {ranges} changed during every verification pass; the cut-over window will sync them"
                    ),
                )
            };
            [
                desired(READY, false, phase.as_str(), "the migration is in progress"),
                desired(PROGRESSING, true, phase.as_str(), message),
                degraded,
            ]
        }
    }
}

fn completed_message(status: &IdentityMigrationStatus) -> String {
    if let Some(changes) = &status.changes {
        let how = match status.strategy.as_ref().map(|s| s.taken) {
            Some(super::TakenStrategy::Copy) => "by the rebuild",
            _ => "in place",
        };
        let next = status.identity.as_ref().map(|i| format!("; the next generated id is {}", i.next_value));
        return format!("the table has its {} changes, made {how}{}", changes.planned.len(), next.unwrap_or_default());
    }
    match &status.identity {
        Some(id) => format!("the table uses its identity column; the next generated id is {}", id.next_value),
        None => "the table uses its identity column".to_string(),
    }
}

/// Writes `desired` into `conditions`, moving `lastTransitionTime` only when
/// a condition's status changes.
pub fn apply_conditions(conditions: &mut Vec<Condition>, desired: &[Desired], generation: Option<i64>, now: &Time) {
    for d in desired {
        let status = if d.status { "True" } else { "False" }.to_string();
        match conditions.iter_mut().find(|c| c.type_ == d.type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.clone();
                    c.status = status;
                }
                c.reason = d.reason.clone();
                c.message = d.message.clone();
                c.observed_generation = generation;
            }
            None => conditions.push(Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                last_transition_time: now.clone(),
                observed_generation: generation,
            }),
        }
    }
}

/// Sets the status's conditions for its current phase.
pub fn refresh_conditions(status: &mut IdentityMigrationStatus, suspended: bool, now: &Time) {
    let desired = desired_conditions(status, suspended);
    let generation = status.observed_generation;
    apply_conditions(&mut status.conditions, &desired, generation, now);
}

pub fn condition<'a>(status: &'a IdentityMigrationStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LastError;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut s =
            IdentityMigrationStatus { phase: Phase::Copying, observed_generation: Some(3), ..Default::default() };
        refresh_conditions(&mut s, false, &at(100));
        let ready = condition(&s, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.last_transition_time.clone()), ("False", at(100)));
        assert_eq!(ready.observed_generation, Some(3));

        s.phase = Phase::Verifying;
        refresh_conditions(&mut s, false, &at(200));
        let progressing = condition(&s, PROGRESSING).unwrap();
        assert_eq!(progressing.reason, "Verifying");
        assert_eq!(progressing.last_transition_time, at(100), "still True: no transition");

        s.phase = Phase::Completed;
        refresh_conditions(&mut s, false, &at(300));
        let ready = condition(&s, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.last_transition_time.clone()), ("True", at(300)));
        assert_eq!(condition(&s, PROGRESSING).unwrap().status, "False");
        assert_eq!(s.conditions.len(), 3);
    }

    #[test]
    fn failures_are_degraded_with_the_reason() {
        let s = IdentityMigrationStatus {
            phase: Phase::Failed,
            last_error: Some(LastError {
                phase: Phase::Validating,
                message: "spec.table: table \"public\".\"nope\" does not exist".into(),
                invalid_input: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let [ready, _, degraded] = desired_conditions(&s, false);
        assert!(!ready.status);
        assert!(degraded.status);
        assert_eq!(degraded.reason, "InvalidSpec");
        assert!(degraded.message.contains("nope"));
    }

    #[test]
    fn a_missing_table_and_blocking_sessions_are_said_loudly() {
        let missing = IdentityMigrationStatus {
            phase: Phase::Failed,
            cutover: Some(crate::api::CutoverStatus { table_missing: true, ..Default::default() }),
            ..Default::default()
        };
        let [ready, _, degraded] = desired_conditions(&missing, false);
        assert_eq!((ready.reason.as_str(), degraded.status), ("TableMissing", true));
        let blocked = IdentityMigrationStatus {
            phase: Phase::Swapping,
            cutover: Some(crate::api::CutoverStatus {
                blocked_by: vec!["pid 42 (pg_dump), in a transaction for 95s".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let [_, progressing, degraded] = desired_conditions(&blocked, false);
        assert_eq!((progressing.reason.as_str(), degraded.status), ("BlockedBy", true));
        assert!(progressing.message.contains("pg_dump"), "{}", progressing.message);
    }

    #[test]
    fn ranges_that_never_settle_are_degraded_and_named() {
        let mut s = IdentityMigrationStatus { phase: Phase::Swapping, ..Default::default() };
        s.verification = Some(crate::api::Verification { unresolved: vec!["1-20000".into()], ..Default::default() });
        let [_, progressing, degraded] = desired_conditions(&s, false);
        assert!(progressing.status, "still progressing");
        assert!(degraded.status);
        assert_eq!(degraded.reason, "StillChanging");
        assert!(degraded.message.contains("1-20000"));
    }

    #[test]
    fn approval_and_suspension_are_said_plainly() {
        let s = IdentityMigrationStatus { phase: Phase::AwaitingCutover, ..Default::default() };
        let [ready, progressing, _] = desired_conditions(&s, false);
        assert_eq!(ready.reason, "AwaitingApproval");
        assert!(progressing.message.contains("spec.cutover.approved"));
        let s = IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() };
        let [_, progressing, _] = desired_conditions(&s, true);
        assert_eq!((progressing.status, progressing.reason.as_str()), (false, "Suspended"));
    }

    #[test]
    fn a_queued_migration_says_where_it_stands_and_a_slowed_copy_says_why() {
        let mut s = IdentityMigrationStatus {
            phase: Phase::Pending,
            endpoint: Some("db.example.com:5432".into()),
            queued: Some(crate::api::QueuedStatus { position: 2, limit: 4, since: None }),
            ..Default::default()
        };
        let [ready, progressing, degraded] = desired_conditions(&s, false);
        assert_eq!((ready.reason.as_str(), progressing.status, degraded.status), ("Queued", false, false));
        assert!(ready.message.contains("number 2 in line for db.example.com:5432"), "{}", ready.message);
        assert!(ready.message.contains("4 migrations run at once"), "{}", ready.message);
        s.queued = None;
        s.phase = Phase::Copying;
        s.progress = Some(crate::api::Progress {
            rows_copied: 10,
            rows_total: 100,
            percent: 10,
            pace: Some(crate::api::PaceStatus {
                rows_per_second: Some(500),
                reason: "CommitLatency".into(),
                message: "commit latency p95 240 ms > 100 ms".into(),
            }),
            ..Default::default()
        });
        let [_, progressing, _] = desired_conditions(&s, false);
        assert!(progressing.message.ends_with("slowed: commit latency p95 240 ms > 100 ms"), "{}", progressing.message);
    }
}

//! The line of migrations waiting for an endpoint (`maxConcurrentPerTarget`):
//! who is ahead of whom, in creation order, from what every replica's cache
//! shows. Pure; the slots themselves are Leases ([`super::target_slots`]).

use std::time::Duration;

use super::decide::{Decision, Task, decide};
use super::kind::{MigrationResource, MigrationSpec};
use super::supervisor::Key;
use crate::api::{IdentityMigrationStatus, Phase};
use crate::engine::plan::window::{self, WindowState};

/// One migration as the line sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// Creation time, then kind, namespace and name: creation order.
    pub order: (i128, Key),
    /// `host:port`; None while no replica has resolved it yet.
    pub endpoint: Option<String>,
    /// Runs now or is ready to run (not finished, suspended, waiting for
    /// approval or backing off after a failure).
    pub wants_to_run: bool,
    /// Its status says it waits in line.
    pub queued: bool,
}

impl Place {
    pub fn of<K: MigrationResource>(m: &K, failed_for: impl Fn(&IdentityMigrationStatus) -> Duration) -> Self {
        let meta = m.meta();
        let created = meta.creation_timestamp.as_ref().map_or(i128::MAX, |t| t.0.as_nanosecond());
        let order = (created, Key::of(m));
        let status = m.status().cloned().unwrap_or_default();
        let endpoint = status.endpoint.clone().or_else(|| {
            // A DSQL endpoint is in the spec; a PostgreSQL one only in a Secret.
            let d = m.spec().target().dsql.as_ref()?;
            let (host, port) = d.endpoint.rsplit_once(':').unwrap_or((&d.endpoint, "5432"));
            Some(format!("{}:{port}", host.to_ascii_lowercase()))
        });
        let generation = meta.generation.unwrap_or(0);
        // One waiting for its cut-over window only re-syncs now and then: it
        // takes no slot, so it is not in the line either.
        let wants_to_run = meta.deletion_timestamp.is_none()
            && status.phase != Phase::AwaitingCutover
            && decide(m.spec(), &status, generation, Task::None, failed_for(&status)) == Decision::Start;
        Self { order, endpoint, wants_to_run, queued: status.queued.is_some() }
    }

    pub fn key(&self) -> &Key {
        &self.order.1
    }
}

/// Verified and waiting for its cut-over window, closed at `now`: the engine
/// only re-syncs now and then, and takes neither room in a replica nor a slot
/// of its endpoint. Once the window opens the cut-over (with its catch-up
/// pass) takes both, like a copy.
pub fn waits_for_window(spec: &impl MigrationSpec, status: &IdentityMigrationStatus, now: jiff::Timestamp) -> bool {
    let closed = spec
        .cutover()
        .window
        .as_ref()
        .and_then(|w| window::parse(w).ok())
        .is_some_and(|w| matches!(window::state(&w, now), WindowState::Closed { .. }));
    status.phase == Phase::AwaitingCutover && closed
}

pub fn failed_for(status: &IdentityMigrationStatus) -> Duration {
    let at = status.last_error.as_ref().and_then(|e| e.at.as_ref());
    at.map_or(Duration::MAX, |t| jiff::Timestamp::now().duration_since(t.0).try_into().unwrap_or(Duration::ZERO))
}

/// How many migrations come before `me` on `endpoint`: those created earlier
/// that run or want to. One whose endpoint is not known yet counts, so that
/// nobody overtakes it while its first reconciliation resolves it.
pub fn ahead_of(me: &Place, endpoint: &str, others: &[Place]) -> usize {
    others
        .iter()
        .filter(|o| o.order < me.order && o.wants_to_run)
        .filter(|o| o.endpoint.as_deref().is_none_or(|e| e == endpoint))
        .count()
}

/// Whether a migration created before `me` still waits in line at
/// `endpoint`: then `me` does not overtake it, even for a second slot.
pub fn older_waiting(me: &Place, endpoint: &str, others: &[Place]) -> bool {
    others.iter().any(|o| o.order < me.order && o.wants_to_run && o.queued && o.endpoint.as_deref() == Some(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::IdentityMigration;

    fn place(created: i128, name: &str, endpoint: Option<&str>, wants_to_run: bool) -> Place {
        Place {
            order: (created, Key::new("IdentityMigration", "ns", name)),
            endpoint: endpoint.map(str::to_string),
            wants_to_run,
            queued: false,
        }
    }

    #[test]
    fn only_a_closed_window_frees_a_verified_migration_from_room_and_slots() {
        let mut spec = crate::engine::testing::spec_for("t");
        let waiting = IdentityMigrationStatus { phase: Phase::AwaitingCutover, ..Default::default() };
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        assert!(!waits_for_window(&spec, &waiting, at("2026-12-01T01:00:00Z")), "no window: a cut-over");
        spec.cutover.window = Some(crate::api::CutoverWindow {
            start: "02:00".into(),
            duration: "1h".into(),
            time_zone: "UTC".into(),
            days: vec![],
        });
        assert!(waits_for_window(&spec, &waiting, at("2026-12-01T01:00:00Z")));
        assert!(!waits_for_window(&spec, &waiting, at("2026-12-01T02:10:00Z")), "open: the cut-over takes both");
    }

    #[test]
    fn the_line_is_in_creation_order_per_endpoint() {
        let a = place(1, "a", Some("db:5432"), true);
        let b = place(2, "b", Some("db:5432"), true);
        let other_db = place(2, "x", Some("other:5432"), true);
        let finished = place(1, "done", Some("db:5432"), false);
        let c = place(3, "c", Some("db:5432"), true);
        let all = vec![a.clone(), b.clone(), other_db, finished, c.clone()];
        assert_eq!(ahead_of(&a, "db:5432", &all), 0);
        assert_eq!(ahead_of(&b, "db:5432", &all), 1);
        assert_eq!(ahead_of(&c, "db:5432", &all), 2, "another server's and a finished migration do not count");
        // Created in the same second: by namespace and name.
        let c2 = place(3, "c2", Some("db:5432"), true);
        assert_eq!(ahead_of(&c2, "db:5432", &[c.clone(), c2.clone()]), 1);
        assert_eq!(ahead_of(&c, "db:5432", &[c.clone(), c2]), 0);
    }

    #[test]
    fn nobody_overtakes_an_older_migration_still_in_line() {
        let waiting = Place { queued: true, ..place(1, "a", Some("db:5432"), true) };
        let b = place(2, "b", Some("db:5432"), true);
        assert!(older_waiting(&b, "db:5432", std::slice::from_ref(&waiting)));
        assert!(!older_waiting(&waiting, "db:5432", std::slice::from_ref(&b)), "only older ones count");
        let elsewhere = Place { endpoint: Some("other:5432".into()), ..waiting.clone() };
        assert!(!older_waiting(&b, "db:5432", &[elsewhere]));
    }

    #[test]
    fn an_older_migration_whose_endpoint_is_not_known_yet_keeps_its_place() {
        let unknown = place(1, "a", None, true);
        let b = place(2, "b", Some("db:5432"), true);
        assert_eq!(ahead_of(&b, "db:5432", &[unknown, b.clone()]), 1);
    }

    #[test]
    fn whether_a_migration_wants_to_run_follows_its_status() {
        let mut m = IdentityMigration::new("m", crate::engine::testing::spec_for("t"));
        m.metadata.namespace = Some("ns".into());
        let never = |_: &IdentityMigrationStatus| Duration::MAX;
        assert!(Place::of(&m, never).wants_to_run, "new");
        m.status = Some(IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() });
        assert!(Place::of(&m, never).wants_to_run, "running somewhere");
        m.status = Some(IdentityMigrationStatus { phase: Phase::Completed, ..Default::default() });
        assert!(!Place::of(&m, never).wants_to_run, "finished");
        m.status = Some(IdentityMigrationStatus { phase: Phase::AwaitingCutover, ..Default::default() });
        assert!(!Place::of(&m, never).wants_to_run, "verified, waiting to cut over");
        m.status = Some(IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() });
        m.spec.suspend = true;
        assert!(!Place::of(&m, never).wants_to_run, "suspended");
    }
}

//! Whether a migration that is ready to start may start now: it needs a slot
//! of its endpoint (`maxConcurrentPerTarget`), and waits its turn for one in
//! creation order. The line comes from this replica's cache of every
//! migration ([`super::queue`]); the slots are entries tied to the migrations'
//! Leases ([`super::target_slots`]). A migration whose table is renamed away
//! goes ahead of every limit: nothing may keep a table name absent.

use kube::runtime::reflector::Store;

use super::kind::MigrationResource;
use super::queue::{Place, ahead_of, failed_for, older_waiting, waits_for_window};
use super::supervisor::Key;
use super::target_slots::TargetSlots;
use crate::api::{IdentityMigration, IdentityMigrationStatus, Phase, TableMigration};

/// Every migration this replica watches, of both kinds: the line at each
/// endpoint is one line for both.
#[derive(Clone, Default)]
pub struct Known {
    pub identity: Vec<Store<IdentityMigration>>,
    pub table: Vec<Store<TableMigration>>,
}

impl Known {
    /// Every known migration's place but `except`'s.
    pub fn places(&self, except: &Key) -> Vec<Place> {
        let identity = self.identity.iter().flat_map(|s| s.state()).map(|m| Place::of(m.as_ref(), failed_for));
        let table = self.table.iter().flat_map(|s| s.state()).map(|m| Place::of(m.as_ref(), failed_for));
        identity.chain(table).filter(|p| p.key() != except).collect()
    }
}

/// Whether the table may be renamed away now: a failed put-back
/// (`TableMissing`), or a cut-over or rollback window that its engine opened
/// and may not have closed (its replica died or lost the Lease inside it).
/// Such a migration is started at once, without room, slot or turn. Pure.
pub fn table_may_be_absent(status: &IdentityMigrationStatus) -> bool {
    let Some(cutover) = status.cutover.as_ref() else { return false };
    let opened = cutover.window_opened_at.as_ref().map(|t| t.0);
    let swapped = cutover.swapped_at.as_ref().map(|t| t.0);
    cutover.table_missing
        || match status.phase {
            Phase::Swapping => opened.is_some() && swapped.is_none(),
            // The rollback's window opens after the swap it undoes.
            Phase::RollingBack => opened.zip(swapped).is_some_and(|(opened, swapped)| opened > swapped),
            _ => false,
        }
}

/// Where a migration stands in the line of its endpoint, from the cache
/// alone: no API request. Pure but for reading the caches.
pub enum Turn {
    /// It may try for a slot now (or needs none).
    Now,
    /// Number `position` in line.
    Wait { position: usize },
}

/// The turn of `obj` at `endpoint`.
pub fn turn<K: MigrationResource>(
    obj: &K,
    status: &IdentityMigrationStatus,
    limit: usize,
    known: &Known,
    key: &Key,
    endpoint: &str,
) -> Turn {
    if limit == 0 || table_may_be_absent(status) || waits_for_window(obj.spec(), status, jiff::Timestamp::now()) {
        return Turn::Now;
    }
    let me = Place { wants_to_run: true, ..Place::of(obj, failed_for) };
    let others = known.places(key);
    let ahead = ahead_of(&me, endpoint, &others);
    if ahead < limit && !older_waiting(&me, endpoint, &others) {
        Turn::Now
    } else {
        // Those ahead mostly run already: the line proper starts after them.
        Turn::Wait { position: (ahead + 1).saturating_sub(limit).max(1) }
    }
}

pub enum Admission {
    /// Start: the migration holds what it needs (its slot when limited).
    Run,
    /// Wait: number `position` in line.
    Queued { position: usize },
}

/// Admits `obj` (migration `uid`, whose Lease this replica holds) to `endpoint`.
#[allow(clippy::too_many_arguments)]
pub async fn admit<K: MigrationResource>(
    obj: &K,
    uid: &str,
    status: &IdentityMigrationStatus,
    slots: &TargetSlots,
    known: &Known,
    key: &Key,
    endpoint: &str,
) -> Result<Admission, kube::Error> {
    if waits_for_window(obj.spec(), status, jiff::Timestamp::now()) {
        // Its copy is done: the slot goes to the next in line.
        slots.release(key);
        return Ok(Admission::Run);
    }
    if slots.limit == 0 || table_may_be_absent(status) || slots.holding(key) {
        return Ok(Admission::Run);
    }
    match turn(obj, status, slots.limit, known, key, endpoint) {
        Turn::Now if slots.take(key, uid, endpoint).await? => {
            tracing::info!(endpoint, lease = slots.lease_of(key), "took a slot of the endpoint");
            Ok(Admission::Run)
        }
        Turn::Now => Ok(Admission::Queued { position: 1 }),
        Turn::Wait { position } => Ok(Admission::Queued { position }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CutoverStatus;
    use crate::api::now;

    #[test]
    fn only_a_table_that_may_be_renamed_away_goes_ahead_of_the_limits() {
        let status = |phase, cutover| IdentityMigrationStatus { phase, cutover, ..Default::default() };
        assert!(!table_may_be_absent(&status(Phase::Copying, None)));
        assert!(!table_may_be_absent(&status(Phase::Swapping, None)), "the window not opened yet");
        let opened = CutoverStatus { window_opened_at: Some(now()), ..Default::default() };
        assert!(table_may_be_absent(&status(Phase::Swapping, Some(opened.clone()))));
        let at = |t: &str| Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.parse().unwrap()));
        let swapped = CutoverStatus {
            window_opened_at: at("2026-12-01T10:00:00Z"),
            swapped_at: at("2026-12-01T10:00:01Z"),
            ..Default::default()
        };
        assert!(!table_may_be_absent(&status(Phase::Swapping, Some(swapped.clone()))), "swapped: the name is there");
        assert!(!table_may_be_absent(&status(Phase::RollingBack, Some(swapped.clone()))), "its window not opened yet");
        let undoing = CutoverStatus { window_opened_at: at("2026-12-02T10:00:00Z"), ..swapped };
        assert!(table_may_be_absent(&status(Phase::RollingBack, Some(undoing))));
        assert!(!table_may_be_absent(&status(Phase::Completed, Some(opened))));
        let missing = CutoverStatus { table_missing: true, ..Default::default() };
        assert!(table_may_be_absent(&status(Phase::Failed, Some(missing))));
    }
}

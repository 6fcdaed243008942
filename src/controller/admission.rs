//! Whether a migration that is ready to start may start now: it needs a slot
//! of its endpoint (`maxConcurrentPerTarget`), and waits its turn for one in
//! creation order. The line comes from this replica's cache of every
//! migration ([`super::queue`]); the slots are Leases ([`super::target_slots`]).

use tokio::sync::watch;

use kube::runtime::reflector::Store;
use kube_lease_manager::LeaseManagerError;

use super::kind::MigrationResource;
use super::queue::{Place, ahead_of, failed_for, older_waiting, waits_for_window};
use super::supervisor::Key;
use super::target_slots::{TargetSlots, both};
use crate::api::{IdentityMigration, IdentityMigrationStatus, TableMigration};

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

pub enum Admission {
    /// Start, holding this (the migration's Lease, and its slot when limited).
    Run(watch::Receiver<bool>),
    /// Wait: number `position` in line.
    Queued { position: usize },
}

/// Admits `obj` (whose Lease `held` this replica holds) to `endpoint`.
pub async fn admit<K: MigrationResource>(
    obj: &K,
    status: &IdentityMigrationStatus,
    slots: &TargetSlots,
    known: &Known,
    key: &Key,
    endpoint: &str,
    held: watch::Receiver<bool>,
) -> Result<Admission, LeaseManagerError> {
    let limit = slots.limit;
    if waits_for_window(obj.spec(), status, jiff::Timestamp::now()) {
        // Its copy is done: the slot goes to the next in line.
        slots.release(key);
        return Ok(Admission::Run(held));
    }
    if limit == 0 {
        return Ok(Admission::Run(held));
    }
    if let Some(slot) = slots.holding(key) {
        return Ok(Admission::Run(both(held, slot)));
    }
    let me = Place { wants_to_run: true, ..Place::of(obj, failed_for) };
    let others = known.places(key);
    let ahead = ahead_of(&me, endpoint, &others);
    if ahead < limit
        && !older_waiting(&me, endpoint, &others)
        && let Some(slot) = slots.take(key, endpoint).await?
    {
        tracing::info!(endpoint, lease = slots.lease_of(key), "took a slot of the endpoint");
        return Ok(Admission::Run(both(held, slot)));
    }
    // Those ahead mostly run already: the line proper starts after them.
    Ok(Admission::Queued { position: (ahead + 1).saturating_sub(limit).max(1) })
}

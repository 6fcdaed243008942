//! The slots of a database endpoint (`maxConcurrentPerTarget`): one Lease
//! object per endpoint, `idmig-slot-<endpoint>`, in the operator's namespace,
//! whose annotation lists the migrations that hold a slot, each with the
//! replica that runs it. A migration runs only while its entry is there.
//!
//! An entry costs nothing while held: it counts exactly as long as its
//! migration's own Lease is held by that replica and has not lapsed, and that
//! Lease is renewed anyway. So a held slot is never renewed, a dead replica's
//! slots free themselves when its migration Leases lapse, and the engine's
//! one deadline (its migration Lease's, see [`crate::engine::Licence`]) ends
//! before any other replica may count the slot free. Waiting replicas read
//! the object from the operator's one watch of its Leases: a slot costs API
//! requests only when it changes hands (one write to take it, one to give it
//! back). Every write names the version it read, so two replicas never both
//! take the last slot.
//! Which waiting migration may try for a slot is [`super::queue`]'s business.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use super::leases::{LABEL_KIND, MANAGED_BY, lease_name};
use super::supervisor::Key;

/// The annotation that lists the holders of an endpoint's slots.
pub const HOLDERS_ANNOTATION: &str = "migrations.dsql.dev/slot-holders";

/// How many times a take is tried when another replica wrote the object in
/// between: each try reads the object again.
const TRIES: usize = 3;

/// Lease names are DNS subdomains of at most 253 characters.
const MAX_ENDPOINT_IN_NAME: usize = 200;

/// The slot object of `endpoint`, readable in `kubectl get lease`.
pub fn slot_name(endpoint: &str) -> String {
    let mut cleaned: String = endpoint
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
        .collect();
    cleaned.truncate(MAX_ENDPOINT_IN_NAME);
    let cleaned = cleaned.trim_matches(|c| c == '-' || c == '.');
    format!("idmig-slot-{cleaned}")
}

/// One held slot: the migration (by uid) and the replica that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHolder {
    pub uid: String,
    pub replica: String,
}

/// The holders an object lists; an unreadable annotation lists none (its
/// entries then count only once rewritten, which a take does).
pub fn holders_of(lease: Option<&Lease>) -> Vec<SlotHolder> {
    lease
        .and_then(|l| l.metadata.annotations.as_ref())
        .and_then(|a| a.get(HOLDERS_ANNOTATION))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// Whether `replica` holds the migration Lease `lease` at `now`: a slot entry
/// counts exactly that long. Pure.
pub fn lease_held_by(lease: Option<&Lease>, replica: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else { return false };
    if spec.holder_identity.as_deref() != Some(replica) {
        return false;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.is_some_and(|at| now <= at + jiff::SignedDuration::from_secs(lasts))
}

/// What a take decides from what it read. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum TakePlan {
    /// The entry is there already.
    Held,
    /// Every slot is held by a live entry.
    Full,
    /// Write these holders (the live ones and `me`), replacing the stale ones.
    Write(Vec<SlotHolder>),
    /// These entries look stale in the cache, which may lag: read their
    /// migration Leases from the server before writing them away.
    Confirm(Vec<SlotHolder>),
}

/// Decides a take for `me` among `holders`, `live` telling which entries
/// count; `confirmed` when the stale ones were read from the server. Pure.
pub fn plan_take(
    me: &SlotHolder,
    holders: &[SlotHolder],
    live: impl Fn(&SlotHolder) -> bool,
    limit: usize,
    confirmed: bool,
) -> TakePlan {
    if holders.contains(me) {
        return TakePlan::Held;
    }
    let (alive, stale): (Vec<SlotHolder>, Vec<SlotHolder>) =
        holders.iter().filter(|h| h.uid != me.uid).cloned().partition(|h| live(h));
    if alive.len() >= limit {
        return TakePlan::Full;
    }
    if !stale.is_empty() && !confirmed {
        return TakePlan::Confirm(stale);
    }
    let mut next = alive;
    next.push(me.clone());
    TakePlan::Write(next)
}

pub struct TargetSlots {
    api: Api<Lease>,
    namespace: String,
    /// This replica's identity (the pod name), as in the migration Leases.
    replica: String,
    /// The operator's Leases, slot objects included, from its one watch.
    store: Store<Lease>,
    /// Migrations that run against one endpoint at once; 0 for no limit.
    pub limit: usize,
    /// The slot object each migration holds an entry in, on this replica.
    held: Mutex<HashMap<Key, (String, SlotHolder)>>,
    /// Releases under way, awaited at shutdown.
    releasing: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

impl TargetSlots {
    pub fn new(client: Client, namespace: &str, replica: &str, store: Store<Lease>, limit: usize) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            replica: replica.to_string(),
            store,
            limit,
            held: Mutex::new(HashMap::new()),
            releasing: Arc::default(),
        }
    }

    /// Whether `key` holds a slot through this replica.
    pub fn holding(&self, key: &Key) -> bool {
        self.held.lock().expect("slots lock").contains_key(key)
    }

    /// The slot object `key` holds an entry in, for logs.
    pub fn lease_of(&self, key: &Key) -> Option<String> {
        self.held.lock().expect("slots lock").get(key).map(|(name, _)| name.clone())
    }

    fn cached(&self, name: &str) -> Option<Arc<Lease>> {
        self.store.get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// Takes a slot of `endpoint` for `key` (migration `uid`, whose Lease this
    /// replica holds). False when every slot is held.
    pub async fn take(&self, key: &Key, uid: &str, endpoint: &str) -> Result<bool, kube::Error> {
        if self.holding(key) {
            return Ok(true);
        }
        let name = slot_name(endpoint);
        let me = SlotHolder { uid: uid.to_string(), replica: self.replica.clone() };
        let mut seen: Option<Lease> = self.cached(&name).map(|l| l.as_ref().clone());
        for _ in 0..TRIES {
            let holders = holders_of(seen.as_ref());
            let now = jiff::Timestamp::now();
            let in_cache = |h: &SlotHolder| lease_held_by(self.cached(&lease_name(&h.uid)).as_deref(), &h.replica, now);
            let mut plan = plan_take(&me, &holders, in_cache, self.limit, false);
            if let TakePlan::Confirm(stale) = &plan {
                let mut alive_now = Vec::new();
                for h in stale {
                    let lease = self.api.get_opt(&lease_name(&h.uid)).await?;
                    if lease_held_by(lease.as_ref(), &h.replica, jiff::Timestamp::now()) {
                        alive_now.push(h.clone());
                    }
                }
                let live = |h: &SlotHolder| in_cache(h) || alive_now.contains(h);
                plan = plan_take(&me, &holders, live, self.limit, true);
            }
            let next = match plan {
                TakePlan::Held => {
                    self.note_held(key, &name, me);
                    return Ok(true);
                }
                TakePlan::Full => return Ok(false),
                TakePlan::Write(next) => next,
                TakePlan::Confirm(_) => unreachable!("confirmed above"),
            };
            match self.write(&name, seen.as_ref(), &next).await? {
                true => {
                    tracing::debug!(lease = %name, "took a slot of the endpoint");
                    self.note_held(key, &name, me);
                    return Ok(true);
                }
                // Written by another replica in between: read it again.
                false => seen = self.api.get_opt(&name).await?,
            }
        }
        Ok(false)
    }

    fn note_held(&self, key: &Key, name: &str, me: SlotHolder) {
        self.held.lock().expect("slots lock").insert(key.clone(), (name.to_string(), me));
    }

    /// Writes `holders` over the version `seen` (creating the object when
    /// there was none). False when another replica wrote first.
    async fn write(&self, name: &str, seen: Option<&Lease>, holders: &[SlotHolder]) -> Result<bool, kube::Error> {
        write_holders(&self.api, &self.namespace, name, seen, holders).await
    }

    /// Gives the slot of `key` back: its entry is written out in the
    /// background. Should that write fail, the entry still stops counting
    /// once the migration's Lease is given up or lapses.
    pub fn release(&self, key: &Key) {
        let Some((name, me)) = self.held.lock().expect("slots lock").remove(key) else { return };
        let (api, namespace) = (self.api.clone(), self.namespace.clone());
        self.releasing.lock().expect("slots lock").spawn(async move {
            for _ in 0..TRIES {
                let seen = match api.get_opt(&name).await {
                    Ok(seen) => seen,
                    Err(e) => {
                        tracing::debug!(error = %e, lease = %name, "could not read the slots to give one back");
                        return;
                    }
                };
                let holders = holders_of(seen.as_ref());
                if !holders.contains(&me) {
                    return;
                }
                let rest: Vec<SlotHolder> = holders.into_iter().filter(|h| *h != me).collect();
                match write_holders(&api, &namespace, &name, seen.as_ref(), &rest).await {
                    Ok(true) => return,
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, lease = %name, "could not give the slot back; it frees itself");
                        return;
                    }
                }
            }
        });
    }

    /// Releases every slot (shutdown) and waits for the writes.
    pub async fn release_all(&self) {
        let keys: Vec<Key> = self.held.lock().expect("slots lock").keys().cloned().collect();
        for key in keys {
            self.release(&key);
        }
        let mut writes = std::mem::take(&mut *self.releasing.lock().expect("slots lock"));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while writes.join_next().await.is_some() {}
        })
        .await;
    }
}

fn slot_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()), (LABEL_KIND.to_string(), "slots".into())])
}

/// Writes the holders of slot object `name` over the version `seen`, or
/// creates it. False on a conflict (409): another replica wrote first.
async fn write_holders(
    api: &Api<Lease>,
    namespace: &str,
    name: &str,
    seen: Option<&Lease>,
    holders: &[SlotHolder],
) -> Result<bool, kube::Error> {
    let json = serde_json::to_string(holders).expect("holders serialize");
    let result = match seen {
        Some(lease) => {
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": lease.metadata.resource_version,
                    "annotations": {HOLDERS_ANNOTATION: json},
                },
            });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(namespace.to_string()),
                    labels: Some(slot_labels()),
                    annotations: Some(BTreeMap::from([(HOLDERS_ANNOTATION.to_string(), json)])),
                    ..Default::default()
                },
                spec: Some(LeaseSpec::default()),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn slot_names_are_valid_lease_names_that_show_the_endpoint() {
        assert_eq!(slot_name("DB.example.com:5432"), "idmig-slot-db.example.com-5432");
        assert_eq!(slot_name("/var/run/postgresql:5432"), "idmig-slot-var-run-postgresql-5432");
        let long = format!("{}.on.aws:5432", "a".repeat(300));
        assert!(slot_name(&long).len() <= 253);
    }

    fn lease(holder: &str, renewed_secs_ago: i64, lasts: i32, now: jiff::Timestamp) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(now - jiff::SignedDuration::from_secs(renewed_secs_ago))),
                lease_duration_seconds: Some(lasts),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_entry_counts_exactly_while_its_replica_holds_the_migration_lease() {
        let now = jiff::Timestamp::now();
        assert!(lease_held_by(Some(&lease("r1", 1, 15, now)), "r1", now));
        assert!(!lease_held_by(Some(&lease("r1", 20, 15, now)), "r1", now), "lapsed: the replica died");
        assert!(!lease_held_by(Some(&lease("r2", 1, 15, now)), "r1", now), "taken over by another replica");
        assert!(!lease_held_by(Some(&lease("", 1, 15, now)), "r1", now), "given up");
        assert!(!lease_held_by(None, "r1", now), "the migration is gone");
    }

    fn h(uid: &str, replica: &str) -> SlotHolder {
        SlotHolder { uid: uid.into(), replica: replica.into() }
    }

    #[test]
    fn a_take_never_exceeds_the_limit_and_confirms_stale_entries_before_writing_them_away() {
        let me = h("m", "r1");
        let holders = vec![h("a", "r1"), h("b", "r2")];
        let all_live = |_: &SlotHolder| true;
        assert_eq!(plan_take(&me, &holders, all_live, 2, false), TakePlan::Full);
        assert_eq!(
            plan_take(&me, &holders, all_live, 3, false),
            TakePlan::Write(vec![h("a", "r1"), h("b", "r2"), me.clone()])
        );
        let b_dead = |x: &SlotHolder| x.uid != "b";
        assert_eq!(plan_take(&me, &holders, b_dead, 2, false), TakePlan::Confirm(vec![h("b", "r2")]));
        assert_eq!(plan_take(&me, &holders, b_dead, 2, true), TakePlan::Write(vec![h("a", "r1"), me.clone()]));
        assert_eq!(plan_take(&me, &[h("m", "r1")], all_live, 1, false), TakePlan::Held);
        // The same migration's entry from a replica that held it before is replaced, never counted twice.
        assert_eq!(plan_take(&me, &[h("m", "r0")], all_live, 1, false), TakePlan::Write(vec![me.clone()]));
        assert_eq!(plan_take(&me, &[], all_live, 1, false), TakePlan::Write(vec![me]));
    }

    #[test]
    fn an_unreadable_annotation_lists_nobody() {
        let mut lease = Lease::default();
        assert!(holders_of(Some(&lease)).is_empty());
        lease.metadata.annotations = Some(BTreeMap::from([(HOLDERS_ANNOTATION.to_string(), "not json".into())]));
        assert!(holders_of(Some(&lease)).is_empty());
        let listed = serde_json::to_string(&[h("a", "r1")]).unwrap();
        lease.metadata.annotations = Some(BTreeMap::from([(HOLDERS_ANNOTATION.to_string(), listed)]));
        assert_eq!(holders_of(Some(&lease)), vec![h("a", "r1")]);
    }
}

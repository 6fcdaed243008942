//! The slots of a database endpoint (`maxConcurrentPerTarget`): Leases
//! `idmig-slot-<endpoint>-<n>` for n below the limit, in the operator's
//! namespace. A migration runs only while it holds one, so the limit holds
//! across replicas: the API server lets one holder update a Lease at a time.
//! Which waiting migration may try for a slot is [`super::queue`]'s business.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use kube_lease_manager::LeaseManagerBuilder;

use super::lease_terms::{LeaseTerms, takeable};
use super::supervisor::Key;

/// How often a try for a slot that looked free looks at the Lease again
/// while its answer has not come. An acquisition is several round trips
/// (two writes and a read): on a loaded API server it takes longer than any
/// fixed wait, and a try given up too early loses every slot it wins, for
/// ever. So a try ends only when the slot is won, when the Lease shows
/// another holder, or after the Lease's duration.
const SLOT_LOOK_AGAIN: Duration = Duration::from_millis(500);

/// Lease names are DNS subdomains of at most 253 characters.
const MAX_ENDPOINT_IN_NAME: usize = 200;

/// The Lease of slot `n` of `endpoint`, readable in `kubectl get lease`.
pub fn slot_name(endpoint: &str, n: usize) -> String {
    let mut cleaned: String = endpoint
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
        .collect();
    cleaned.truncate(MAX_ENDPOINT_IN_NAME);
    let cleaned = cleaned.trim_matches(|c| c == '-' || c == '.');
    format!("idmig-slot-{cleaned}-{n}")
}

/// Whether the Lease names a holder, and not `identity`.
fn holder_other_than(lease: Option<&Lease>, identity: &str) -> bool {
    let holder = lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.as_deref()).unwrap_or("");
    !holder.is_empty() && holder != identity
}

struct Held {
    lease: String,
    held: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

pub struct TargetSlots {
    client: Client,
    namespace: String,
    /// This replica's identity (the pod name).
    replica: String,
    terms: LeaseTerms,
    /// Migrations that run against one endpoint at once; 0 for no limit.
    pub limit: usize,
    held: Mutex<HashMap<Key, Held>>,
}

impl TargetSlots {
    pub fn new(client: Client, namespace: &str, replica: &str, terms: LeaseTerms, limit: usize) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            replica: replica.to_string(),
            terms,
            limit,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The slot `key` holds on this replica, while held.
    pub fn holding(&self, key: &Key) -> Option<watch::Receiver<bool>> {
        let held = self.held.lock().expect("slots lock");
        held.get(key).filter(|h| *h.held.borrow() && !h.task.is_finished()).map(|h| h.held.clone())
    }

    /// The slot Lease `key` holds, for logs and status.
    pub fn lease_of(&self, key: &Key) -> Option<String> {
        self.held.lock().expect("slots lock").get(key).map(|h| h.lease.clone())
    }

    /// Takes a free slot of `endpoint` for `key`, or None when every slot is held.
    pub async fn take(&self, key: &Key, endpoint: &str) -> Result<Option<watch::Receiver<bool>>, LeaseManagerError> {
        if let Some(held) = self.holding(key) {
            return Ok(Some(held));
        }
        self.release(key);
        let identity = format!("{key}@{}", self.replica);
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        for n in 0..self.limit {
            let name = slot_name(endpoint, n);
            let lease = api.get_opt(&name).await.map_err(LeaseManagerError::KubeError)?;
            if !takeable(lease.as_ref(), &identity, jiff::Timestamp::now()) {
                continue;
            }
            let manager = lease_manager(&self.client, &self.namespace, &name, &identity, self.terms).await?;
            let (held, task) = watch_with_expiry(manager, Duration::from_secs(self.terms.grace_seconds));
            let mut first = held.clone();
            let give_up = std::time::Instant::now() + Duration::from_secs(self.terms.duration_seconds);
            loop {
                if tokio::time::timeout(SLOT_LOOK_AGAIN, first.wait_for(|h| *h)).await.is_ok()
                    || std::time::Instant::now() > give_up
                {
                    break;
                }
                let now = api.get_opt(&name).await.map_err(LeaseManagerError::KubeError)?;
                if holder_other_than(now.as_ref(), &identity) {
                    break;
                }
            }
            if *held.borrow() {
                tracing::debug!(lease = %name, "took a slot of the endpoint");
                self.held
                    .lock()
                    .expect("slots lock")
                    .insert(key.clone(), Held { lease: name, held: held.clone(), task });
                return Ok(Some(held));
            }
            // Another replica took it first: dropping the receiver ends the contention.
        }
        Ok(None)
    }

    /// Gives the slot of `key` back once its engine (which holds a receiver) ended.
    pub fn release(&self, key: &Key) {
        self.held.lock().expect("slots lock").remove(key);
    }

    /// Releases every slot (shutdown) and waits for the releases.
    pub async fn release_all(&self) {
        let all: Vec<Held> = self.held.lock().expect("slots lock").drain().map(|(_, h)| h).collect();
        for Held { held, task, .. } in all {
            drop(held);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// True while both `a` and `b` are: the engine's licence to change anything
/// is its migration's Lease and its endpoint slot together.
pub fn both(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow() && *b.borrow());
    tokio::spawn(async move {
        loop {
            let gone = tokio::select! {
                r = a.changed() => r.is_err(),
                r = b.changed() => r.is_err(),
                () = tx.closed() => return,
            };
            let now = !gone && *a.borrow() && *b.borrow();
            if tx.send(now).is_err() || gone {
                return;
            }
        }
    });
    rx
}

/// Like `LeaseManager::watch`, with a local expiry. A holder cut off from
/// the API server cannot renew, and cannot learn that it lost the Lease. It
/// renews `grace` before the Lease lapses, so once every call has failed for
/// `grace` another replica may take it: the holder says it lost it and stops
/// contending (its engine stops; a later reconcile contends afresh).
/// Otherwise the state follows the manager's, and dropping every receiver
/// releases the Lease.
pub fn watch_with_expiry(
    manager: LeaseManager,
    grace: Duration,
) -> (watch::Receiver<bool>, JoinHandle<Result<LeaseManager, LeaseManagerError>>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut failing_since: Option<std::time::Instant> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                biased;
                () = tx.closed() => return manager.release().await.map(|()| manager),
                changed = manager.changed() => match changed {
                    Ok(state) => {
                        failing_since = None;
                        backoff = Duration::from_millis(100);
                        if tx.send(state).is_err() {
                            return manager.release().await.map(|()| manager);
                        }
                    }
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                        if *tx.borrow() && since.elapsed() >= grace {
                            tracing::warn!(error = %e, "the Lease could not be renewed before it lapses; \
                                taking it as lost");
                            let _ = tx.send(false);
                            return Err(e);
                        }
                        tracing::debug!(error = %e, "the Lease could not be renewed; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    });
    (rx, task)
}

/// A manager of Lease `name` for `identity`. Replicas reconciling a new
/// migration together race to create its Lease: the losers get 409
/// (AlreadyExists or a conflict), the ordinary outcome of that race, and try again.
pub async fn lease_manager(
    client: &Client,
    namespace: &str,
    name: &str,
    identity: &str,
    terms: LeaseTerms,
) -> Result<LeaseManager, LeaseManagerError> {
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let built = LeaseManagerBuilder::new(client.clone(), name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(terms.duration_seconds)
            .with_grace(terms.grace_seconds)
            .build()
            .await;
        match built {
            Err(e) if lease_race(&e) && attempt < 10 => {
                tracing::debug!(error = %e, attempt, lease = name, "another replica created the lease first; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// A create race or an update conflict on a Lease (HTTP 409).
pub fn lease_race(e: &LeaseManagerError) -> bool {
    use kube_lease_manager::LeaseManagerError as E;
    match e {
        E::LeaseAlreadyExists(_) => true,
        E::KubeError(kube::Error::Api(status)) => status.code == 409,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn slot_names_are_valid_lease_names_that_show_the_endpoint() {
        assert_eq!(slot_name("DB.example.com:5432", 0), "idmig-slot-db.example.com-5432-0");
        assert_eq!(slot_name("/var/run/postgresql:5432", 3), "idmig-slot-var-run-postgresql-5432-3");
        let long = format!("{}.on.aws:5432", "a".repeat(300));
        assert!(slot_name(&long, 1).len() <= 253);
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
    fn a_slot_is_free_when_missing_unheld_lapsed_or_ours() {
        let now = jiff::Timestamp::now();
        assert!(takeable(None, "me", now));
        assert!(takeable(Some(&Lease::default()), "me", now));
        assert!(takeable(Some(&lease("", 1, 15, now)), "me", now));
        assert!(!takeable(Some(&lease("other", 1, 15, now)), "me", now), "held and renewed");
        assert!(takeable(Some(&lease("other", 20, 15, now)), "me", now), "lapsed");
        assert!(takeable(Some(&lease("me", 1, 15, now)), "me", now));
    }

    #[test]
    fn a_try_ends_as_lost_only_when_another_holds_the_lease() {
        let now = jiff::Timestamp::now();
        assert!(holder_other_than(Some(&lease("other", 1, 15, now)), "me"));
        assert!(!holder_other_than(Some(&lease("me", 1, 15, now)), "me"), "ours: the answer is on its way");
        assert!(!holder_other_than(Some(&lease("", 1, 15, now)), "me"), "free: not lost yet");
        assert!(!holder_other_than(None, "me"));
    }

    #[tokio::test]
    async fn both_is_true_only_while_both_are_and_false_once_either_ends() {
        let (a_tx, a) = watch::channel(true);
        let (b_tx, b) = watch::channel(false);
        let mut joined = both(a, b);
        assert!(!*joined.borrow());
        b_tx.send(true).unwrap();
        joined.wait_for(|v| *v).await.unwrap();
        a_tx.send(false).unwrap();
        joined.wait_for(|v| !*v).await.unwrap();
        a_tx.send(true).unwrap();
        joined.wait_for(|v| *v).await.unwrap();
        drop(b_tx);
        joined.wait_for(|v| !*v).await.unwrap();
    }
}

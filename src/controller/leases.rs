//! A Lease per migration (`idmig-<uid>`, in the operator's namespace), so that
//! every replica works: a replica with a free slot contends for a migration's
//! Lease and runs its engine only while it holds it. When the holder dies its
//! Lease expires and another replica takes the migration over from the status
//! checkpoint; when the engine ends, the Lease is released.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::supervisor::Key;

/// How long a reconcile waits for a free Lease to be taken before it looks again later.
const FIRST_ANSWER: Duration = Duration::from_secs(2);

/// The Lease of the migration with `uid`.
pub fn lease_name(uid: &str) -> String {
    format!("idmig-{uid}")
}

/// A contention for one migration's Lease, running until dropped.
struct Contender {
    held: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    /// Ends the task that reports the Lease won (which holds a receiver).
    _won: Option<tokio::sync::oneshot::Sender<()>>,
}

pub struct MigrationLeases {
    client: Client,
    namespace: String,
    identity: String,
    duration_seconds: u64,
    grace_seconds: u64,
    contenders: Mutex<HashMap<Key, Contender>>,
    /// Told when a contended Lease is won, so the migration is reconciled at
    /// once instead of at its next poll.
    won: Option<tokio::sync::broadcast::Sender<()>>,
}

impl MigrationLeases {
    pub fn new(client: Client, namespace: &str, identity: &str, duration_seconds: u64, grace_seconds: u64) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            duration_seconds,
            grace_seconds,
            contenders: Mutex::new(HashMap::new()),
            won: None,
        }
    }

    /// Reports every Lease won to `won`.
    pub fn reporting_wins(mut self, won: tokio::sync::broadcast::Sender<()>) -> Self {
        self.won = Some(won);
        self
    }

    /// The Lease's state for the engine when this instance holds it; None
    /// while another replica holds it (the contention goes on meanwhile, so a
    /// Lease that expires is taken at once).
    pub async fn hold(&self, key: &Key, uid: &str) -> Result<Option<watch::Receiver<bool>>, LeaseManagerError> {
        let existing = {
            let contenders = self.contenders.lock().expect("leases lock");
            contenders.get(key).filter(|c| !c.task.is_finished()).map(|c| c.held.clone())
        };
        let held = match existing {
            Some(held) => held,
            None => {
                let manager = self.manager(uid).await?;
                let (held, task) = watch_with_expiry(manager, Duration::from_secs(self.grace_seconds));
                let mut first = held.clone();
                let _ = tokio::time::timeout(FIRST_ANSWER, first.wait_for(|h| *h)).await;
                let won = (!*held.borrow()).then(|| self.report_win(held.clone())).flatten();
                self.contenders
                    .lock()
                    .expect("leases lock")
                    .insert(key.clone(), Contender { held: held.clone(), task, _won: won });
                held
            }
        };
        let holds = *held.borrow();
        Ok(holds.then_some(held))
    }

    /// Reports when `held` turns true, unless the returned sender is dropped
    /// first (the contention ended): the report task must not outlive it, or
    /// its receiver would keep the Lease from being released.
    fn report_win(&self, mut held: watch::Receiver<bool>) -> Option<tokio::sync::oneshot::Sender<()>> {
        let won = self.won.clone()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                r = held.wait_for(|h| *h) => if r.is_ok() { let _ = won.send(()); },
                _ = stopped => {}
            }
        });
        Some(stop)
    }

    /// Stops contending for the Lease of `key`; a held Lease is released once
    /// the engine (which holds a receiver of its own) has ended too.
    pub fn release(&self, key: &Key) {
        self.contenders.lock().expect("leases lock").remove(key);
    }

    /// Whether this instance holds the Lease of `key` now.
    pub fn holds_now(&self, key: &Key) -> bool {
        self.contenders.lock().expect("leases lock").get(key).is_some_and(|c| *c.held.borrow())
    }

    /// How many migration Leases this instance holds.
    pub fn held(&self) -> usize {
        self.contenders.lock().expect("leases lock").values().filter(|c| *c.held.borrow()).count()
    }

    /// Releases every Lease (shutdown) and waits for the releases.
    pub async fn release_all(&self) {
        let all: Vec<Contender> = self.contenders.lock().expect("leases lock").drain().map(|(_, c)| c).collect();
        for Contender { held, task, .. } in all {
            drop(held);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Deletes the Lease of a deleted migration (best effort).
    pub async fn delete(&self, key: &Key, uid: &str) {
        if let Some(Contender { held, task, .. }) = self.contenders.lock().expect("leases lock").remove(key) {
            drop(held);
            task.abort();
        }
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Err(e) = api.delete(&lease_name(uid), &DeleteParams::default()).await {
            tracing::debug!(error = %e, "could not delete the migration's lease");
        }
    }

    async fn manager(&self, uid: &str) -> Result<LeaseManager, LeaseManagerError> {
        let terms = LeaseTerms { duration_seconds: self.duration_seconds, grace_seconds: self.grace_seconds };
        lease_manager(&self.client, &self.namespace, &lease_name(uid), &self.identity, terms).await
    }
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

/// How long a Lease lasts without renewal, and how long before expiry it is renewed.
#[derive(Clone, Copy, Debug)]
pub struct LeaseTerms {
    pub duration_seconds: u64,
    pub grace_seconds: u64,
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

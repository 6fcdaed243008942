//! A Lease per migration (`idmig-<uid>`, in the operator's namespace), so that
//! every replica works: a replica with room for a migration takes its Lease
//! when it is free or has lapsed, and runs its engine only while it holds it.
//! When the holder dies its Lease lapses and another replica takes the
//! migration over from the status checkpoint; when the engine ends, the Lease
//! is released.
//!
//! What this costs the API server follows the running migrations: each
//! replica watches the operator's Leases once (by label) and decides from that
//! cache; only a holder writes (a renewal every `duration - grace` seconds), and
//! a replica that wants a Lease another holds writes nothing until it lapses.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerError;
use tokio::sync::watch;

use crate::engine::Licence;
use crate::engine::licence::HeldUntil;

pub use super::lease_terms::LeaseTerms;
use super::lease_terms::takeable;
use super::supervisor::Key;

/// The label every object of the operator carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "identity-migrator");
/// The label that says which of the operator's Leases an object is:
/// `migration` (a migration's) or `slots` (an endpoint's slots).
pub const LABEL_KIND: &str = "migrations.dsql.dev/lease";

/// The labels of the migrations' Leases.
pub const LEASE_LABELS: [(&str, &str); 2] = [MANAGED_BY, (LABEL_KIND, "migration")];

/// How often the held Leases are looked at (renewed when due) and the
/// wanted ones looked for in the cache.
const TICK: Duration = Duration::from_millis(500);

/// How much longer a replica waits before taking a free Lease for each Lease
/// it holds already, up to this many steps: the work spreads over replicas.
const SPREAD_STEP: Duration = Duration::from_millis(100);
const MAX_SPREAD_STEPS: usize = 20;

/// The Lease of the migration with `uid`.
pub fn lease_name(uid: &str) -> String {
    format!("idmig-{uid}")
}

/// What each replica watches: the migrations' Leases and the endpoints' slots.
fn selector() -> String {
    format!("{}={},{LABEL_KIND}", MANAGED_BY.0, MANAGED_BY.1)
}

/// A migration's Lease as this replica sees it.
enum Entry {
    /// Wanted while another replica holds it: taken once it lapses.
    Wanted {
        uid: String,
    },
    /// A write that takes it is under way, by `hold` or by a tick: the only
    /// one, so that this replica never writes over its own take. `released`
    /// when the migration stopped wanting it meanwhile: a win is given back.
    Taking {
        released: bool,
    },
    Held(Holding),
}

struct Holding {
    uid: String,
    /// Until when the engine may count on the Lease: moved on by each
    /// accepted renewal, None once lost.
    tx: watch::Sender<HeldUntil>,
    /// The Lease's version after this replica's last write: a renewal that
    /// finds another version lost the Lease to another replica.
    version: String,
    /// When this holding began: an engine's status from before it is stale.
    since: Instant,
    /// When the last write the API server accepted (the take or a renewal)
    /// was sent: the `renewTime` it wrote, from which the others count.
    renewed: Instant,
    /// Released once no engine holds a receiver any more.
    letting_go: bool,
    /// A renewal is under way: the next is not sent before its answer.
    renewing: bool,
}

/// What a write of a Lease came to.
enum Wrote {
    /// Written: the Lease's new version.
    Done(String),
    /// Another replica wrote first (409), or holds it.
    Lost,
}

struct Book {
    api: Api<Lease>,
    namespace: String,
    identity: String,
    terms: LeaseTerms,
    store: Store<Lease>,
    /// True once the cache has its first full list. Waiters wait on this,
    /// not on the store: the store wakes only the last task that polled it.
    ready: watch::Sender<bool>,
    entries: Mutex<HashMap<Key, Entry>>,
    won: std::sync::OnceLock<tokio::sync::broadcast::Sender<()>>,
}

pub struct MigrationLeases {
    book: Arc<Book>,
    /// The watch and the renewals, started with the first Lease wanted.
    started: std::sync::OnceLock<Vec<tokio::task::AbortHandle>>,
    writer: Mutex<Option<reflector::store::Writer<Lease>>>,
}

impl Drop for MigrationLeases {
    fn drop(&mut self) {
        for task in self.started.get().into_iter().flatten() {
            task.abort();
        }
    }
}

impl MigrationLeases {
    pub fn new(client: Client, namespace: &str, identity: &str, duration_seconds: u64, grace_seconds: u64) -> Self {
        let (store, writer) = reflector::store();
        let book = Book {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            terms: LeaseTerms { duration_seconds, grace_seconds },
            store,
            ready: watch::Sender::new(false),
            entries: Mutex::new(HashMap::new()),
            won: std::sync::OnceLock::new(),
        };
        Self { book: Arc::new(book), started: std::sync::OnceLock::new(), writer: Mutex::new(Some(writer)) }
    }

    /// Reports every Lease won after waiting to `won`.
    pub fn reporting_wins(self, won: tokio::sync::broadcast::Sender<()>) -> Self {
        let _ = self.book.won.set(won);
        self
    }

    /// The one watch of the operator's Leases, and the ticks that renew the
    /// held ones and take the wanted ones that lapsed.
    fn start(&self) {
        self.started.get_or_init(|| {
            let writer = self.writer.lock().expect("leases lock").take().expect("started once");
            let config = watcher::Config::default().labels(&selector());
            let stream = reflector::reflector(writer, watcher(self.book.api.clone(), config));
            let watch = tokio::spawn(async move {
                stream.default_backoff().for_each(|_| async {}).await;
            });
            let book = self.book.clone();
            let ready = tokio::spawn(async move {
                if book.store.wait_until_ready().await.is_ok() {
                    book.ready.send_replace(true);
                }
            });
            let book = self.book.clone();
            let ticks = tokio::spawn(async move {
                // Each write runs on its own: one slow answer must not hold
                // back the others (a renewal past its Lease's lapse). Aborting
                // this task drops the set, and the writes under way with it.
                let mut writes = tokio::task::JoinSet::new();
                loop {
                    tokio::time::sleep(TICK).await;
                    while writes.try_join_next().is_some() {}
                    book.tick(&mut writes);
                }
            });
            vec![watch.abort_handle(), ready.abort_handle(), ticks.abort_handle()]
        });
    }

    /// The Lease's state for the engine when this instance holds it; None
    /// while another replica holds it (it is taken once it lapses, and the
    /// win reported, without a write meanwhile).
    pub async fn hold(&self, key: &Key, uid: &str) -> Result<Option<Licence>, LeaseManagerError> {
        self.start();
        let mut ready = self.book.ready.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|r| *r)).await;
        let load = {
            let mut entries = self.book.entries.lock().expect("leases lock");
            match entries.get_mut(key) {
                Some(Entry::Held(h)) => {
                    h.letting_go = false;
                    return Ok(Some(Licence::new(h.tx.subscribe())));
                }
                // A tick is taking it: its win is reported.
                Some(Entry::Taking { released }) => {
                    *released = false;
                    return Ok(None);
                }
                _ => {}
            }
            if !takeable(self.book.cached(uid).as_deref(), &self.book.identity, jiff::Timestamp::now()) {
                entries.insert(key.clone(), Entry::Wanted { uid: uid.to_string() });
                return Ok(None);
            }
            let load = entries.values().filter(|e| !matches!(e, Entry::Wanted { .. })).count();
            entries.insert(key.clone(), Entry::Taking { released: false });
            load
        };
        // Every replica sees a new migration at once: each waits a step for
        // every Lease it holds or is taking, so the one with the least work
        // goes first and the others find the Lease taken.
        tokio::time::sleep(SPREAD_STEP * load.min(MAX_SPREAD_STEPS) as u32).await;
        let cached = self.book.cached(uid);
        let taken = if takeable(cached.as_deref(), &self.book.identity, jiff::Timestamp::now()) {
            self.book.take(uid, cached.as_deref()).await
        } else {
            Ok(None)
        };
        match taken {
            Ok(holding) => Ok(self.book.settle(key, uid, holding).await),
            Err(e) => {
                self.book.settle(key, uid, None).await;
                Err(LeaseManagerError::KubeError(e))
            }
        }
    }

    /// Stops wanting the Lease of `key`; a held Lease is released once the
    /// engine (which holds a receiver) has ended too.
    pub fn release(&self, key: &Key) {
        let mut entries = self.book.entries.lock().expect("leases lock");
        match entries.get_mut(key) {
            Some(Entry::Held(h)) => h.letting_go = true,
            Some(Entry::Taking { released }) => *released = true,
            Some(Entry::Wanted { .. }) => {
                entries.remove(key);
            }
            None => {}
        }
    }

    /// The operator's Leases as its one watch sees them, slot objects included.
    pub fn store(&self) -> Store<Lease> {
        self.book.store.clone()
    }

    /// Since when this instance holds the Lease of `key`, if it does.
    pub fn held_since(&self, key: &Key) -> Option<Instant> {
        match self.book.entries.lock().expect("leases lock").get(key) {
            Some(Entry::Held(h)) => Some(h.since),
            _ => None,
        }
    }

    /// How many migration Leases this instance holds.
    pub fn held(&self) -> usize {
        let entries = self.book.entries.lock().expect("leases lock");
        entries.values().filter(|e| matches!(e, Entry::Held(_))).count()
    }

    /// Releases every Lease (shutdown), each with one write.
    pub async fn release_all(&self) {
        let all: Vec<Entry> = self.book.entries.lock().expect("leases lock").drain().map(|(_, e)| e).collect();
        for entry in all {
            if let Entry::Held(h) = entry {
                h.tx.send_replace(None);
                let _ = tokio::time::timeout(Duration::from_secs(5), self.book.let_go(&h.uid, &h.version)).await;
            }
        }
    }

    /// Deletes the Lease of a deleted migration (best effort).
    pub async fn delete(&self, key: &Key, uid: &str) {
        if let Some(Entry::Held(h)) = self.book.entries.lock().expect("leases lock").remove(key) {
            h.tx.send_replace(None);
        }
        if let Err(e) = self.book.api.delete(&lease_name(uid), &DeleteParams::default()).await {
            tracing::debug!(error = %e, "could not delete the migration's lease");
        }
    }
}

fn labels() -> BTreeMap<String, String> {
    LEASE_LABELS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn version(lease: &Lease) -> String {
    lease.metadata.resource_version.clone().unwrap_or_default()
}

fn holder(lease: &Lease) -> &str {
    lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).unwrap_or("")
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Book {
    fn cached(&self, uid: &str) -> Option<Arc<Lease>> {
        self.store.get(&reflector::ObjectRef::new(&lease_name(uid)).within(&self.namespace))
    }

    fn holding(&self, uid: &str, version: String, sent: Instant) -> Holding {
        Holding {
            uid: uid.to_string(),
            tx: watch::Sender::new(Some(sent + self.terms.held_for())),
            version,
            since: Instant::now(),
            renewed: sent,
            letting_go: false,
            renewing: false,
        }
    }

    /// Takes the Lease of `uid`, free or lapsed as `cached` shows it: creates
    /// it, or writes this replica in over that version. None when another
    /// replica was first.
    async fn take(&self, uid: &str, cached: Option<&Lease>) -> Result<Option<Holding>, kube::Error> {
        let name = lease_name(uid);
        let sent = Instant::now();
        let wrote = match cached {
            Some(lease) => self.write_holder(&name, lease).await?,
            None => self.create(&name).await?,
        };
        Ok(match wrote {
            Wrote::Done(version) => {
                tracing::debug!(lease = %name, "took the migration's lease");
                Some(self.holding(uid, version, sent))
            }
            Wrote::Lost => None,
        })
    }

    async fn create(&self, name: &str) -> Result<Wrote, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.terms.duration_seconds as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(lease) => Ok(Wrote::Done(version(&lease))),
            // Created meanwhile by another replica, or made before the Leases
            // had labels (so not in the cache): as the server has it.
            Err(e) if conflict(&e) => match self.api.get_opt(name).await? {
                Some(lease) if takeable(Some(&lease), &self.identity, jiff::Timestamp::now()) => {
                    self.write_holder(name, &lease).await
                }
                _ => Ok(Wrote::Lost),
            },
            Err(e) => Err(e),
        }
    }

    /// Writes this replica in as the holder of `lease`, if it is still the
    /// version this replica saw (another replica's write in between wins).
    async fn write_holder(&self, name: &str, lease: &Lease) -> Result<Wrote, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
        let moved = holder(lease) != self.identity;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": version(lease), "labels": labels()},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.terms.duration_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": transitions + i32::from(moved),
            },
        });
        match self.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(lease) => Ok(Wrote::Done(version(&lease))),
            Err(e) if conflict(&e) => Ok(Wrote::Lost),
            Err(e) => Err(e),
        }
    }

    /// Renews a held Lease over the version of this replica's last write.
    async fn renew(&self, uid: &str, at: &str) -> Result<Wrote, kube::Error> {
        let name = lease_name(uid);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": at},
            "spec": {"holderIdentity": self.identity, "renewTime": MicroTime(jiff::Timestamp::now())},
        });
        match self.api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(lease) => Ok(Wrote::Done(version(&lease))),
            // Written by someone else since: still ours (an edit by hand), or taken.
            Err(e) if conflict(&e) => match self.api.get_opt(&name).await? {
                Some(lease) if holder(&lease) == self.identity => self.write_holder(&name, &lease).await,
                _ => Ok(Wrote::Lost),
            },
            Err(e) => Err(e),
        }
    }

    /// Gives a held Lease up: no holder, so the next replica takes it at once.
    async fn let_go(&self, uid: &str, at: &str) {
        let patch = serde_json::json!({"metadata": {"resourceVersion": at}, "spec": {"holderIdentity": null}});
        if let Err(e) = self.api.patch(&lease_name(uid), &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(error = %e, uid, "could not release the migration's lease; it lapses");
        }
    }

    /// Ends the take of `key` under way with what it came to: held when won
    /// and still wanted (a receiver for the engine), given back when won but
    /// released meanwhile, wanted again when lost.
    async fn settle(&self, key: &Key, uid: &str, won: Option<Holding>) -> Option<Licence> {
        let give_back = {
            let mut entries = self.entries.lock().expect("leases lock");
            let wanted = matches!(entries.get(key), Some(Entry::Taking { released: false }));
            if matches!(entries.get(key), Some(Entry::Taking { .. })) {
                entries.remove(key);
            }
            match won {
                Some(holding) if wanted => {
                    let licence = Licence::new(holding.tx.subscribe());
                    entries.insert(key.clone(), Entry::Held(holding));
                    return Some(licence);
                }
                Some(holding) => Some(holding.version),
                None => {
                    if wanted {
                        entries.insert(key.clone(), Entry::Wanted { uid: uid.to_string() });
                    }
                    None
                }
            }
        };
        if let Some(at) = give_back {
            self.let_go(uid, &at).await;
        }
        None
    }

    /// Marks the Lease of `key` lost: its engine stops at its next checkpoint.
    fn lose(&self, key: &Key) {
        if let Some(Entry::Held(h)) = self.entries.lock().expect("leases lock").remove(key) {
            tracing::warn!(lease = %lease_name(&h.uid), "lost the migration's lease");
            h.tx.send_replace(None);
        }
    }

    /// Renews what is due, releases what no engine uses any more, and takes
    /// the wanted Leases that are free or lapsed in the cache: each write a
    /// task of `writes`.
    fn tick(self: &Arc<Self>, writes: &mut tokio::task::JoinSet<()>) {
        let now = jiff::Timestamp::now();
        let mut entries = self.entries.lock().expect("leases lock");
        entries.retain(|key, entry| match entry {
            // Not while a renewal is under way: its answer moves the version
            // the release must name.
            Entry::Held(h) if h.letting_go && h.tx.receiver_count() == 0 && !h.renewing => {
                let (book, uid, at) = (self.clone(), h.uid.clone(), h.version.clone());
                writes.spawn(async move { book.let_go(&uid, &at).await });
                false
            }
            Entry::Held(h) => {
                if !h.renewing && h.renewed.elapsed() >= self.terms.renew_every() {
                    h.renewing = true;
                    let (book, key, uid, at, renewed) =
                        (self.clone(), key.clone(), h.uid.clone(), h.version.clone(), h.renewed);
                    writes.spawn(async move { book.renew_held(key, uid, at, renewed).await });
                }
                true
            }
            // Only a Lease the cache shows: one that is not there belongs to a
            // migration deleted meanwhile (or not yet made, which its next
            // reconcile does), and must not be made again here.
            Entry::Wanted { uid } => {
                if self.cached(uid).is_some_and(|lease| takeable(Some(&lease), &self.identity, now)) {
                    let (book, key, uid) = (self.clone(), key.clone(), uid.clone());
                    writes.spawn(async move { book.take_wanted(key, uid).await });
                    *entry = Entry::Taking { released: false };
                }
                true
            }
            Entry::Taking { .. } => true,
        });
    }

    /// Renews a held Lease; lost when another replica took it, or when no
    /// renewal was accepted before it would lapse in the others' eyes
    /// (cut off from the API server, or an answer too slow): the holder
    /// cannot know it still holds it then.
    async fn renew_held(&self, key: Key, uid: String, at: String, renewed: Instant) {
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(renewed + self.terms.held_for());
        let answer = tokio::time::timeout_at(deadline, self.renew(&uid, &at)).await;
        if let Some(Entry::Held(h)) = self.entries.lock().expect("leases lock").get_mut(&key) {
            h.renewing = false;
            if let Ok(Ok(Wrote::Done(at))) = &answer {
                h.version = at.clone();
                h.renewed = sent;
                // The engine's deadline moves on only with an accepted renewal.
                h.tx.send_replace(Some(sent + self.terms.held_for()));
            }
        }
        match answer {
            Ok(Ok(Wrote::Done(_))) => {}
            Ok(Ok(Wrote::Lost)) => self.lose(&key),
            // The next tick tries again, until the deadline.
            Ok(Err(e)) => tracing::debug!(error = %e, uid, "could not renew the migration's lease"),
            Err(_) => self.lose(&key),
        }
    }

    /// Takes a wanted Lease that lapsed, and says so when won.
    async fn take_wanted(&self, key: Key, uid: String) {
        let cached = self.cached(&uid);
        let holding = match self.take(&uid, cached.as_deref()).await {
            Ok(holding) => holding,
            Err(e) => {
                tracing::debug!(error = %e, "could not take the migration's lease");
                None
            }
        };
        if self.settle(&key, &uid, holding).await.is_some()
            && let Some(won) = self.won.get()
        {
            let _ = won.send(());
        }
    }
}

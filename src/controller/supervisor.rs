//! The engine tasks of the migrations this instance runs: started, told to
//! suspend or stop, and remembered with their last status when they end. A
//! migration's long copy runs here, never inside a reconciliation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::decide::Task;
use crate::api::IdentityMigrationStatus;
use crate::engine::{Directive, Outcome};

/// A migration: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: &'static str, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { kind, namespace: namespace.into(), name: name.into() }
    }

    pub fn of<K: super::kind::MigrationResource>(obj: &K) -> Self {
        let meta = obj.meta();
        Self::new(K::KIND, meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
    }
}

/// `namespace/name` for an IdentityMigration, `namespace/kind/name` for another kind.
impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            "IdentityMigration" => write!(f, "{}/{}", self.namespace, self.name),
            kind => write!(f, "{}/{}/{}", self.namespace, kind, self.name),
        }
    }
}

struct Running {
    generation: i64,
    control: watch::Sender<Directive>,
    handle: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    running: HashMap<Key, Running>,
    /// The status each finished task left, and when that task started:
    /// fresher than a watch event that may lag, while the Lease it ran under
    /// is still held.
    finished: HashMap<Key, Finished>,
}

struct Finished {
    started: Instant,
    outcome: Outcome,
    status: IdentityMigrationStatus,
}

/// The room an engine takes in this replica (`maxConcurrentMigrations`).
pub enum Room {
    /// A slot reserved beforehand ([`Supervisor::try_reserve`]).
    Reserved(OwnedSemaphorePermit),
    /// Waits for a free slot before it runs.
    WaitForOne,
    /// Takes none: a verified migration waiting for its cut-over window,
    /// which only re-syncs now and then.
    NotNeeded,
}

pub struct Supervisor {
    state: Arc<Mutex<State>>,
    permits: Arc<Semaphore>,
}

impl Supervisor {
    pub fn new(max_concurrent: usize) -> Self {
        Self { state: Arc::default(), permits: Arc::new(Semaphore::new(max_concurrent.max(1))) }
    }

    pub fn task(&self, key: &Key) -> Task {
        let state = self.state.lock().expect("supervisor lock");
        match state.running.get(key) {
            Some(r) if !r.handle.is_finished() => Task::Running { generation: r.generation },
            _ => Task::None,
        }
    }

    /// The status the last finished task of `key` left, if no task runs now.
    pub fn last_status(&self, key: &Key) -> Option<(Outcome, IdentityMigrationStatus)> {
        let state = self.state.lock().expect("supervisor lock");
        state.finished.get(key).map(|f| (f.outcome.clone(), f.status.clone()))
    }

    /// Forgets what the last task of `key` left unless it started while the
    /// Lease held now was already held (`held_since`): a Lease lost and taken
    /// again means another replica may have run the migration in between,
    /// and only the resource's status knows what it did.
    pub fn forget_unless_held_since(&self, key: &Key, held_since: Option<Instant>) {
        let mut state = self.state.lock().expect("supervisor lock");
        let trusted = match (state.finished.get(key), held_since) {
            (Some(f), Some(since)) => since <= f.started,
            _ => false,
        };
        if !trusted {
            state.finished.remove(key);
        }
    }

    pub fn running_count(&self) -> usize {
        self.state.lock().expect("supervisor lock").running.values().filter(|r| !r.handle.is_finished()).count()
    }

    /// A free slot, reserved now: a replica takes a migration's Lease only
    /// with a slot in hand, so it never holds more Leases than it can run.
    pub fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Starts `engine` for `key` in `room`.
    pub fn start<F>(&self, key: Key, generation: i64, room: Room, engine: impl FnOnce(watch::Receiver<Directive>) -> F)
    where
        F: Future<Output = (Outcome, IdentityMigrationStatus)> + Send + 'static,
    {
        let (control, receiver) = watch::channel(Directive::Run);
        let work = engine(receiver);
        let (state, permits) = (self.state.clone(), self.permits.clone());
        let task_key = key.clone();
        let started = Instant::now();
        let handle = tokio::spawn(async move {
            let _permit = match room {
                Room::Reserved(permit) => Some(permit),
                Room::WaitForOne => Some(permits.acquire_owned().await.expect("the semaphore is never closed")),
                Room::NotNeeded => None,
            };
            let (outcome, status) = work.await;
            state.lock().expect("supervisor lock").finished.insert(task_key, Finished { started, outcome, status });
        });
        let mut state = self.state.lock().expect("supervisor lock");
        state.finished.remove(&key);
        if let Some(old) = state.running.insert(key, Running { generation, control, handle }) {
            old.handle.abort();
        }
    }

    /// Passes a directive to the running task of `key`, if any.
    pub fn direct(&self, key: &Key, directive: Directive) {
        if let Some(r) = self.state.lock().expect("supervisor lock").running.get(key) {
            let _ = r.control.send(directive);
        }
    }

    /// Stops the task of `key` at its next checkpoint and waits for it.
    pub async fn stop(&self, key: &Key) {
        let running = self.state.lock().expect("supervisor lock").running.remove(key);
        if let Some(r) = running {
            let _ = r.control.send(Directive::Stop);
            let _ = r.handle.await;
        }
    }

    /// Stops every task at its next checkpoint (shutdown, lost leadership).
    pub async fn stop_all(&self) {
        let all: Vec<Running> = self.state.lock().expect("supervisor lock").running.drain().map(|(_, r)| r).collect();
        for r in &all {
            let _ = r.control.send(Directive::Stop);
        }
        for r in all {
            let _ = r.handle.await;
        }
    }

    pub fn forget(&self, key: &Key) {
        self.state.lock().expect("supervisor lock").finished.remove(key);
    }
}

impl Drop for Supervisor {
    /// An operator that is dropped without `stop_all` (a crash, in tests) takes
    /// its tasks with it, as a dead process would.
    fn drop(&mut self) {
        if let Ok(state) = self.state.lock() {
            for r in state.running.values() {
                r.handle.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::api::Phase;

    /// An engine that holds its permit until stopped, counting how many run at once.
    fn engine(
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    ) -> impl FnOnce(watch::Receiver<Directive>) -> futures::future::BoxFuture<'static, (Outcome, IdentityMigrationStatus)>
    {
        move |mut control| {
            Box::pin(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let _ = control.wait_for(|d| *d != Directive::Run).await;
                running.fetch_sub(1, Ordering::SeqCst);
                (Outcome::Stopped, IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() })
            })
        }
    }

    #[tokio::test]
    async fn the_concurrency_limit_makes_later_migrations_wait() {
        let supervisor = Supervisor::new(1);
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let a = Key::new("IdentityMigration", "ns", "a");
        let b = Key::new("IdentityMigration", "ns", "b");
        supervisor.start(a.clone(), 1, Room::WaitForOne, engine(running.clone(), peak.clone()));
        supervisor.start(b.clone(), 1, Room::WaitForOne, engine(running.clone(), peak.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(running.load(Ordering::SeqCst), 1, "the second waits for a permit");
        assert_eq!(supervisor.task(&b), Task::Running { generation: 1 }, "waiting counts as running");
        supervisor.stop(&a).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(running.load(Ordering::SeqCst), 1, "the second started when the first stopped");
        supervisor.stop_all().await;
        assert_eq!(peak.load(Ordering::SeqCst), 1);
        assert_eq!(supervisor.task(&a), Task::None);
        assert_eq!(supervisor.last_status(&a).map(|(o, s)| (o, s.phase)), Some((Outcome::Stopped, Phase::Copying)));
    }

    #[tokio::test]
    async fn what_a_task_left_is_kept_only_under_the_lease_it_ran_under() {
        let supervisor = Supervisor::new(2);
        let key = Key::new("IdentityMigration", "ns", "a");
        let finished = || {
            |_control: watch::Receiver<Directive>| async {
                (Outcome::Stopped, IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() })
            }
        };
        let run = |since_before: bool| {
            let supervisor = &supervisor;
            let key = key.clone();
            async move {
                let held_since = Instant::now();
                supervisor.start(key.clone(), 1, Room::NotNeeded, finished());
                while supervisor.last_status(&key).is_none() {
                    tokio::task::yield_now().await;
                }
                if since_before { Some(held_since) } else { Some(Instant::now()) }
            }
        };
        let since = run(true).await;
        supervisor.forget_unless_held_since(&key, since);
        assert!(supervisor.last_status(&key).is_some(), "held since before the task started: still true");
        supervisor.forget_unless_held_since(&key, None);
        assert!(supervisor.last_status(&key).is_none(), "not held now: the resource's status rules");
        let taken_again = run(false).await;
        supervisor.forget_unless_held_since(&key, taken_again);
        assert!(
            supervisor.last_status(&key).is_none(),
            "taken again after the task started: another replica may have run it"
        );
    }
}

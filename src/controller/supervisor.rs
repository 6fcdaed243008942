//! The engine tasks of the migrations this instance runs: started, told to
//! suspend or stop, and remembered with their last status when they end. A
//! migration's long copy runs here, never inside a reconciliation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::decide::Task;
use crate::api::IdentityMigrationStatus;
use crate::engine::{Directive, Outcome};

/// `(namespace, name)`.
pub type Key = (String, String);

struct Running {
    generation: i64,
    control: watch::Sender<Directive>,
    handle: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    running: HashMap<Key, Running>,
    /// The status each finished task left: fresher than a watch event that may lag.
    finished: HashMap<Key, (Outcome, IdentityMigrationStatus)>,
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
        self.state.lock().expect("supervisor lock").finished.get(key).cloned()
    }

    pub fn running_count(&self) -> usize {
        self.state.lock().expect("supervisor lock").running.values().filter(|r| !r.handle.is_finished()).count()
    }

    /// Starts `engine` for `key`; it runs once a concurrency permit is free.
    pub fn start<F>(&self, key: Key, generation: i64, engine: impl FnOnce(watch::Receiver<Directive>) -> F)
    where
        F: Future<Output = (Outcome, IdentityMigrationStatus)> + Send + 'static,
    {
        let (control, receiver) = watch::channel(Directive::Run);
        let work = engine(receiver);
        let (state, permits) = (self.state.clone(), self.permits.clone());
        let task_key = key.clone();
        let handle = tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
            let result = work.await;
            state.lock().expect("supervisor lock").finished.insert(task_key, result);
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

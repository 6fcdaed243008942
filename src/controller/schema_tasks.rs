//! The SchemaMigration runs under way on this replica ([`super::schema`]):
//! started, told to stop after their step, awaited at shutdown.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::supervisor::Key;
use crate::engine::Directive;

pub struct Task {
    pub generation: i64,
    pub control: watch::Sender<Directive>,
    pub handle: JoinHandle<()>,
}

/// The runs this replica has under way.
#[derive(Default)]
pub struct SchemaTasks {
    running: Mutex<HashMap<Key, Task>>,
}

impl SchemaTasks {
    pub fn running(&self, key: &Key) -> Option<i64> {
        let running = self.running.lock().expect("tasks lock");
        running.get(key).filter(|t| !t.handle.is_finished()).map(|t| t.generation)
    }

    pub fn stop(&self, key: &Key) {
        if let Some(t) = self.running.lock().expect("tasks lock").get(key) {
            let _ = t.control.send(Directive::Stop);
        }
    }

    /// Records a run started for `key` (one that ran before is ended).
    pub fn insert(&self, key: Key, task: Task) {
        if let Some(old) = self.running.lock().expect("tasks lock").insert(key, task) {
            old.handle.abort();
        }
    }

    /// Stops every run after its step under way (shutdown) and waits.
    pub async fn stop_all(&self) {
        let all: Vec<Task> = self.running.lock().expect("tasks lock").drain().map(|(_, t)| t).collect();
        for t in &all {
            let _ = t.control.send(Directive::Stop);
        }
        for t in all {
            let _ = t.handle.await;
        }
    }
}

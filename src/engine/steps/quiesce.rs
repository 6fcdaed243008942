//! `spec.cutover.quiesce`: application workloads scaled to zero for the
//! cut-over window, for writers that cannot retry. Only the operator can do
//! it (it needs the Kubernetes API): the engine asks through [`Workloads`].
//! The replica counts are saved in the status before anything is scaled, so
//! they are restored even after a crash.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::api::{SavedReplicas, WorkloadKind, WorkloadRef};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a workload could not be read or scaled.
#[derive(Debug, thiserror::Error)]
pub enum QuiesceError {
    /// The API server refused or could not be reached.
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The engine was told to stop (a deletion, a shutdown) while waiting.
    #[error("stopped while waiting for the workloads to scale down")]
    Halted,
    #[error("{kind} {name} still runs {running} replicas after {waited:?}")]
    StillRunning { kind: &'static str, name: String, running: i32, waited: Duration },
}

/// How long the engine waits for workloads to reach zero running replicas.
pub const SCALE_DOWN_TIMEOUT: Duration = Duration::from_secs(300);

/// Scaling Deployments and StatefulSets in the migration's namespace.
pub trait Workloads: Send + Sync {
    /// The desired replica count.
    fn replicas(&self, workload: &WorkloadRef) -> BoxFuture<'_, Result<i32, QuiesceError>>;
    fn scale(&self, workload: &WorkloadRef, replicas: i32) -> BoxFuture<'_, Result<(), QuiesceError>>;
    /// Replicas still running (the workload's status).
    fn running(&self, workload: &WorkloadRef) -> BoxFuture<'_, Result<i32, QuiesceError>>;
    /// Writes the count to restore on the workload itself ([`SAVED_REPLICAS`]),
    /// or removes it (None): it outlives the migration's resource.
    fn note_saved(&self, workload: &WorkloadRef, replicas: Option<i32>) -> BoxFuture<'_, Result<(), QuiesceError>>;
    /// The count noted on the workload, if any.
    fn noted(&self, workload: &WorkloadRef) -> BoxFuture<'_, Result<Option<i32>, QuiesceError>>;
}

/// The annotation that keeps a quiesced workload's replica count on the
/// workload, so that it can be scaled back even after the migration's
/// resource is gone.
pub const SAVED_REPLICAS: &str = "migrations.dsql.dev/saved-replicas";

pub fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Deployment => "Deployment",
        WorkloadKind::StatefulSet => "StatefulSet",
    }
}

/// Reads the counts to restore later (before anything is scaled).
pub async fn save_replicas(w: &dyn Workloads, targets: &[WorkloadRef]) -> Result<Vec<SavedReplicas>, QuiesceError> {
    let mut saved = Vec::with_capacity(targets.len());
    for t in targets {
        // A count noted by an earlier attempt whose status was lost is the true one.
        let replicas = match w.noted(t).await? {
            Some(noted) => noted,
            None => w.replicas(t).await?,
        };
        w.note_saved(t, Some(replicas)).await?;
        saved.push(SavedReplicas { kind: kind_name(t.kind).into(), name: t.name.clone(), replicas });
    }
    Ok(saved)
}

/// Scales every target to zero and waits until none runs, or until `halted`
/// says the engine must stop (nothing was renamed yet: it may).
pub async fn scale_down(
    w: &dyn Workloads,
    targets: &[WorkloadRef],
    halted: impl Fn() -> bool,
) -> Result<(), QuiesceError> {
    for t in targets {
        w.scale(t, 0).await?;
    }
    let deadline = Instant::now() + SCALE_DOWN_TIMEOUT;
    for t in targets {
        loop {
            let running = w.running(t).await?;
            if running == 0 {
                break;
            }
            if halted() {
                return Err(QuiesceError::Halted);
            }
            if Instant::now() > deadline {
                return Err(QuiesceError::StillRunning {
                    kind: kind_name(t.kind),
                    name: t.name.clone(),
                    running,
                    waited: SCALE_DOWN_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// Scales every saved workload back to its saved count.
pub async fn restore(w: &dyn Workloads, saved: &[SavedReplicas]) -> Result<(), QuiesceError> {
    for s in saved {
        let kind = if s.kind == "StatefulSet" { WorkloadKind::StatefulSet } else { WorkloadKind::Deployment };
        let target = WorkloadRef { kind, name: s.name.clone() };
        w.scale(&target, s.replicas).await?;
        w.note_saved(&target, None).await?;
    }
    Ok(())
}

/// What deleting a migration puts back: the counts its status saved, else
/// those noted on the workloads of `spec.cutover.quiesce` (a status lost
/// with the resource, or never written).
pub async fn saved_anywhere(
    w: &dyn Workloads,
    in_status: &[SavedReplicas],
    targets: &[WorkloadRef],
) -> Result<Vec<SavedReplicas>, QuiesceError> {
    let mut saved = in_status.to_vec();
    for t in targets {
        if saved.iter().any(|s| s.name == t.name && s.kind == kind_name(t.kind)) {
            continue;
        }
        if let Some(replicas) = w.noted(t).await? {
            saved.push(SavedReplicas { kind: kind_name(t.kind).into(), name: t.name.clone(), replicas });
        }
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Workloads whose pods stop as soon as they are scaled.
    #[derive(Default)]
    struct Fake(Mutex<HashMap<String, i32>>, Mutex<HashMap<String, i32>>);

    impl Workloads for Fake {
        fn replicas(&self, w: &WorkloadRef) -> BoxFuture<'_, Result<i32, QuiesceError>> {
            let n = self.0.lock().unwrap().get(&w.name).copied();
            let name = w.name.clone();
            Box::pin(async move {
                n.ok_or_else(|| QuiesceError::Api {
                    action: "reading",
                    kind: "Deployment",
                    name,
                    source: "not found".into(),
                })
            })
        }
        fn scale(&self, w: &WorkloadRef, replicas: i32) -> BoxFuture<'_, Result<(), QuiesceError>> {
            self.0.lock().unwrap().insert(w.name.clone(), replicas);
            Box::pin(async { Ok(()) })
        }
        fn running(&self, w: &WorkloadRef) -> BoxFuture<'_, Result<i32, QuiesceError>> {
            self.replicas(w)
        }
        fn note_saved(&self, w: &WorkloadRef, replicas: Option<i32>) -> BoxFuture<'_, Result<(), QuiesceError>> {
            let mut notes = self.1.lock().unwrap();
            match replicas {
                Some(n) => notes.insert(w.name.clone(), n),
                None => notes.remove(&w.name),
            };
            Box::pin(async { Ok(()) })
        }
        fn noted(&self, w: &WorkloadRef) -> BoxFuture<'_, Result<Option<i32>, QuiesceError>> {
            let n = self.1.lock().unwrap().get(&w.name).copied();
            Box::pin(async move { Ok(n) })
        }
    }

    #[tokio::test]
    async fn counts_are_saved_scaled_to_zero_and_restored() {
        let fake = Fake::default();
        fake.0.lock().unwrap().extend([("api".to_string(), 3), ("worker".to_string(), 2)]);
        let targets = vec![
            WorkloadRef { kind: WorkloadKind::Deployment, name: "api".into() },
            WorkloadRef { kind: WorkloadKind::StatefulSet, name: "worker".into() },
        ];
        let saved = save_replicas(&fake, &targets).await.unwrap();
        assert_eq!(saved[1], SavedReplicas { kind: "StatefulSet".into(), name: "worker".into(), replicas: 2 });
        scale_down(&fake, &targets, || false).await.unwrap();
        assert_eq!(fake.0.lock().unwrap()["api"], 0);
        assert_eq!(fake.1.lock().unwrap()["api"], 3, "the count is noted on the workload too");
        // The resource (and its status) gone: the notes on the workloads still say it.
        let from_notes = saved_anywhere(&fake, &[], &targets).await.unwrap();
        assert_eq!(from_notes, saved);
        restore(&fake, &saved).await.unwrap();
        let counts = fake.0.lock().unwrap().clone();
        assert_eq!((counts["api"], counts["worker"]), (3, 2));
        assert!(fake.1.lock().unwrap().is_empty(), "restored: the notes are removed");
        assert!(saved_anywhere(&fake, &[], &targets).await.unwrap().is_empty());
        let missing = WorkloadRef { kind: WorkloadKind::Deployment, name: "nope".into() };
        assert!(save_replicas(&fake, &[missing]).await.is_err());
    }
}

//! The operator's life: wait for the leader lease, run the controller while
//! holding it, and on losing it or on shutdown stop every engine at its next
//! checkpoint. Only the lease holder ever touches a database.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter as EventReporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use super::reconcile::{ReconcileContext, error_policy, reconcile};
use super::supervisor::Supervisor;
use super::target::DsqlEndpoints;
use crate::api::IdentityMigration;
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// This instance's name in the lease and in events (the pod name).
    pub identity: String,
    /// Namespaces to watch; empty for all.
    pub watch_namespaces: Vec<String>,
    pub max_concurrent_migrations: usize,
    pub lease_name: String,
    pub lease_namespace: String,
    /// How long the lease lasts without renewal, and how long before expiry it is renewed.
    pub lease_duration_seconds: u64,
    pub lease_grace_seconds: u64,
    /// The DSQL endpoints each namespace may name (the chart's `dsqlEndpoints`).
    pub dsql_endpoints: DsqlEndpoints,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("the leader election task ended")]
    LeaseTaskEnded,
}

enum Stop {
    Shutdown,
    LostLease,
}

/// Runs until `shutdown` resolves. `ready` turns true once the lease can be
/// contended for (the API server answers).
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), OperatorError> {
    let manager = lease_manager(&client, &config).await?;
    let (mut leader, lease_task) = manager.watch().await;
    ready.store(true, Ordering::SeqCst);
    tokio::pin!(shutdown);
    loop {
        tracing::info!(identity = %config.identity, "waiting for the leader lease");
        while !*leader.borrow_and_update() {
            tokio::select! {
                () = &mut shutdown => return release(leader, lease_task).await,
                changed = leader.changed() => changed.map_err(|_| OperatorError::LeaseTaskEnded)?,
            }
        }
        tracing::info!(identity = %config.identity, "leading: reconciling IdentityMigrations");
        metrics.leader.set(1);
        let recorder = Recorder::new(
            client.clone(),
            EventReporter { controller: "identity-migrator".into(), instance: Some(config.identity.clone()) },
        );
        // The engines' view of the lease: a channel of its own, since a clone
        // of the lease's receiver would keep the lease task from releasing.
        let (leading, _) = tokio::sync::watch::channel(true);
        let ctx = Arc::new(ReconcileContext {
            client: client.clone(),
            supervisor: Supervisor::new(config.max_concurrent_migrations),
            metrics: metrics.clone(),
            recorder,
            application_name: format!("identity-migrator/{}", config.identity),
            leading: leading.subscribe(),
            dsql_endpoints: config.dsql_endpoints.clone(),
        });
        let stop = tokio::select! {
            () = controllers(client.clone(), &config.watch_namespaces, ctx.clone()) => Stop::LostLease,
            () = lost(&mut leader) => Stop::LostLease,
            () = &mut shutdown => Stop::Shutdown,
        };
        if let Stop::LostLease = stop {
            // Engines inside a cut-over window stop before their next schema change.
            let _ = leading.send(false);
        }
        // Every engine finishes or abandons its batch and saves its checkpoint.
        ctx.supervisor.stop_all().await;
        metrics.leader.set(0);
        metrics.running_migrations.set(0);
        match stop {
            Stop::Shutdown => return release(leader, lease_task).await,
            Stop::LostLease => {
                tracing::warn!(identity = %config.identity, "lost the leader lease; stopped all migrations")
            }
        }
    }
}

/// Replicas starting together race to create the Lease: the losers get 409
/// (AlreadyExists or a conflict), which is the ordinary outcome of that race
/// and is tried again, not a reason to exit.
async fn lease_manager(client: &Client, config: &OperatorConfig) -> Result<LeaseManager, OperatorError> {
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let built = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.lease_namespace)
            .with_identity(&config.identity)
            .with_duration(config.lease_duration_seconds)
            .with_grace(config.lease_grace_seconds)
            .build()
            .await;
        match built {
            Err(e) if lease_race(&e) && attempt < 10 => {
                tracing::info!(error = %e, attempt, "another replica created the lease first; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
            other => return Ok(other?),
        }
    }
}

/// A create race or an update conflict on the Lease (HTTP 409).
fn lease_race(e: &kube_lease_manager::LeaseManagerError) -> bool {
    use kube_lease_manager::LeaseManagerError as E;
    match e {
        E::LeaseAlreadyExists(_) => true,
        E::KubeError(kube::Error::Api(status)) => status.code == 409,
        _ => false,
    }
}

async fn lost(leader: &mut tokio::sync::watch::Receiver<bool>) {
    while *leader.borrow_and_update() {
        if leader.changed().await.is_err() {
            return;
        }
    }
}

/// Closing the channel makes the lease task release the lease; wait for it.
async fn release(
    leader: tokio::sync::watch::Receiver<bool>,
    lease_task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) -> Result<(), OperatorError> {
    drop(leader);
    match lease_task.await {
        Ok(Ok(_)) => {
            tracing::info!("released the leader lease");
            Ok(())
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(OperatorError::LeaseTaskEnded),
    }
}

/// One controller per watched namespace, or one for all.
async fn controllers(client: Client, namespaces: &[String], ctx: Arc<ReconcileContext>) {
    let apis: Vec<Api<IdentityMigration>> = if namespaces.is_empty() {
        vec![Api::all(client)]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    let runs = apis.into_iter().map(|api| {
        Controller::new(api, watcher::Config::default().any_semantic())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "controller event");
                }
            })
    });
    futures::future::join_all(runs).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_lease_manager::LeaseManagerError as E;

    #[test]
    fn the_race_to_create_the_lease_is_ordinary() {
        assert!(lease_race(&E::LeaseAlreadyExists("identity-migrator".into())));
        let conflict =
            kube::core::Status::failure("leases \"identity-migrator\" already exists", "AlreadyExists").with_code(409);
        assert!(lease_race(&E::KubeError(kube::Error::Api(conflict.boxed()))));
        let forbidden = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        assert!(!lease_race(&E::KubeError(kube::Error::Api(forbidden.boxed()))));
    }
}

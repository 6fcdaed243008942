//! The operator's life: every replica reconciles every migration of both kinds and
//! runs the migrations whose Lease it takes ([`MigrationLeases`]), up to its
//! own limit; on shutdown it stops every engine at its next checkpoint and
//! releases its Leases, so the other replicas take the migrations over.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter as EventReporter};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};

use super::admission::Known;
use super::kind::MigrationResource;
use super::leases::MigrationLeases;
use super::reconcile::{ReconcileContext, error_policy, reconcile};
use super::schema::{reconcile_schema, schema_error_policy};
use super::supervisor::Supervisor;
use super::target::DsqlEndpoints;
use super::target_slots::TargetSlots;
use crate::api::schema::SchemaMigration;
use crate::api::{IdentityMigration, TableMigration};
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// This instance's name in Leases and in events (the pod name).
    pub identity: String,
    /// Namespaces to watch; empty for all.
    pub watch_namespaces: Vec<String>,
    pub max_concurrent_migrations: usize,
    /// Migrations that run against one database endpoint at once, across
    /// every replica; 0 for no limit.
    pub max_concurrent_per_target: usize,
    /// The namespace of the migrations' Leases (the operator's own).
    pub lease_namespace: String,
    /// How long a Lease lasts without renewal, and how long before expiry it is renewed.
    pub lease_duration_seconds: u64,
    pub lease_grace_seconds: u64,
    /// The DSQL endpoints each namespace may name (the chart's `dsqlEndpoints`).
    pub dsql_endpoints: DsqlEndpoints,
    /// How often a verified migration re-syncs while its cut-over window is closed.
    pub resync_while_waiting: std::time::Duration,
}

/// CPU and memory a running migration takes from its replica, for the default
/// of `maxConcurrentMigrations`: the engine waits on the database most of the
/// time; one `run` peaked at 12-13 MiB resident (docs/benchmarks.md).
pub const CPU_PER_MIGRATION_MILLICORES: u64 = 12;
pub const MEMORY_PER_MIGRATION_MIB: u64 = 16;
/// Without requests to go by.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// `maxConcurrentPerTarget` unless set: a few copies at once, each paced and
/// with its own `parallelism`, are as much as a production database should
/// carry beside its traffic.
pub const DEFAULT_PER_TARGET: usize = 4;

/// Migrations a replica runs at once when not set: what its CPU and memory
/// requests allow, between 1 and 32.
pub fn default_concurrency(cpu_millicores: Option<u64>, memory_mib: Option<u64>) -> usize {
    let by_cpu = cpu_millicores.filter(|c| *c > 0).map(|c| c / CPU_PER_MIGRATION_MILLICORES);
    let by_memory = memory_mib.filter(|m| *m > 0).map(|m| m / MEMORY_PER_MIGRATION_MIB);
    match (by_cpu, by_memory) {
        (None, None) => DEFAULT_CONCURRENCY,
        (a, b) => a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX)).clamp(1, 32) as usize,
    }
}

/// Runs until `shutdown` resolves. `ready` turns true once the controllers run.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) {
    let recorder = Recorder::new(
        client.clone(),
        EventReporter { controller: "identity-migrator".into(), instance: Some(config.identity.clone()) },
    );
    // A Lease won after waiting (its holder died) reconciles at once.
    let (won, _) = tokio::sync::broadcast::channel::<()>(64);
    let leases = MigrationLeases::new(
        client.clone(),
        &config.lease_namespace,
        &config.identity,
        config.lease_duration_seconds,
        config.lease_grace_seconds,
    )
    .reporting_wins(won.clone());
    let slots = TargetSlots::new(
        client.clone(),
        &config.lease_namespace,
        &config.identity,
        leases.store(),
        config.max_concurrent_per_target,
    );
    let identity: Vec<Controller<IdentityMigration>> = controllers(&client, &config.watch_namespaces, &won);
    let table: Vec<Controller<TableMigration>> = controllers(&client, &config.watch_namespaces, &won);
    let known = Known {
        identity: identity.iter().map(Controller::store).collect(),
        table: table.iter().map(Controller::store).collect(),
    };
    let ctx = Arc::new(ReconcileContext {
        client: client.clone(),
        supervisor: Supervisor::new(config.max_concurrent_migrations),
        leases,
        slots,
        known,
        metrics: metrics.clone(),
        recorder,
        application_name: format!("identity-migrator/{}", config.identity),
        dsql_endpoints: config.dsql_endpoints.clone(),
        resync_while_waiting: config.resync_while_waiting,
        schema_tasks: Default::default(),
    });
    let schema: Vec<Controller<SchemaMigration>> = controllers(&client, &config.watch_namespaces, &won);
    tracing::info!(identity = %config.identity, "reconciling IdentityMigrations, TableMigrations and SchemaMigrations");
    ready.store(true, Ordering::SeqCst);
    tokio::select! {
        () = run_both(identity, table, ctx.clone()) => {}
        () = run_schema(schema, ctx.clone()) => {}
        () = shutdown => {}
    }
    // Every engine finishes or abandons its batch and saves its checkpoint,
    // then its Lease is released for another replica.
    ctx.schema_tasks.stop_all().await;
    ctx.supervisor.stop_all().await;
    ctx.leases.release_all().await;
    ctx.slots.release_all().await;
    metrics.held_leases.set(0);
    metrics.running_migrations.set(0);
    tracing::info!(identity = %config.identity, "stopped; migration leases released");
}

/// A stream of the wins reported to `rx`; wins missed by a lagging
/// receiver are one win (every migration is reconciled either way).
fn wins(rx: tokio::sync::broadcast::Receiver<()>) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(((), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// One controller of kind `K` per watched namespace, or one for all; a
/// Lease won reconciles them all.
fn controllers<K>(
    client: &Client,
    namespaces: &[String],
    won: &tokio::sync::broadcast::Sender<()>,
) -> Vec<Controller<K>>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let apis: Vec<Api<K>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    apis.into_iter()
        .map(|api| {
            Controller::new(api, watcher::Config::default().any_semantic()).reconcile_all_on(wins(won.subscribe()))
        })
        .collect()
}

async fn run_both(
    identity: Vec<Controller<IdentityMigration>>,
    table: Vec<Controller<TableMigration>>,
    ctx: Arc<ReconcileContext>,
) {
    futures::join!(run_controllers(identity, ctx.clone()), run_controllers(table, ctx));
}

async fn run_schema(controllers: Vec<Controller<SchemaMigration>>, ctx: Arc<ReconcileContext>) {
    let runs = controllers.into_iter().map(|controller| {
        controller.run(reconcile_schema, schema_error_policy, ctx.clone()).for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
    });
    futures::future::join_all(runs).await;
}

async fn run_controllers<K: MigrationResource>(controllers: Vec<Controller<K>>, ctx: Arc<ReconcileContext>) {
    let runs = controllers.into_iter().map(|controller| {
        controller.run(reconcile, error_policy, ctx.clone()).for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
    });
    futures::future::join_all(runs).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_concurrency_follows_the_requests() {
        use super::default_concurrency;
        assert_eq!(default_concurrency(None, None), 4);
        assert_eq!(default_concurrency(Some(50), Some(64)), 4, "the chart's requests");
        assert_eq!(default_concurrency(Some(500), Some(64)), 4, "memory limits");
        assert_eq!(default_concurrency(Some(100), Some(1024)), 8, "CPU limits");
        assert_eq!(default_concurrency(Some(1), Some(1)), 1, "never below one");
        assert_eq!(default_concurrency(Some(8000), Some(8192)), 32, "never above 32");
    }
}

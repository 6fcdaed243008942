//! `identity-migrator controller`: the command-line glue around the operator.
//! Builds the Kubernetes client and the HTTP endpoints, turns SIGTERM into the
//! operator's shutdown future, and maps the result to an exit code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;

use super::Failure;
use super::signal::shutdown_signal;
use crate::controller::operator::DEFAULT_PER_TARGET;
use crate::controller::target::DsqlEndpoints;
use crate::controller::{OperatorConfig, default_concurrency, run};
use crate::http::{HttpState, serve};
use crate::metrics::Metrics;

#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Address of the /metrics, /healthz and /readyz port.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Namespaces to watch, comma separated; all namespaces when empty.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Migrations run at the same time by this instance; more wait their
    /// turn. 0 or unset: from the pod's CPU and memory requests (4 without them).
    #[arg(long, env = "MAX_CONCURRENT_MIGRATIONS")]
    pub max_concurrent_migrations: Option<usize>,
    /// Migrations that run against one database endpoint (`host:port`) at
    /// once, across every replica; the others wait, Queued, in creation order.
    /// 0: no limit.
    #[arg(long, env = "MAX_CONCURRENT_PER_TARGET", default_value_t = DEFAULT_PER_TARGET)]
    pub max_concurrent_per_target: usize,
    /// The pod's CPU request in millicores (the chart sets it from the Downward API).
    #[arg(long, env = "CPU_REQUEST_MILLICORES")]
    pub cpu_request_millicores: Option<u64>,
    /// The pod's memory request in MiB (the chart sets it from the Downward API).
    #[arg(long, env = "MEMORY_REQUEST_MIB")]
    pub memory_request_mib: Option<u64>,
    /// This instance's identity in Leases and events (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Namespace of the migrations' Leases; default: the pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    #[arg(long, env = "LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// While an approved cut-over waits for its window, the shadow is
    /// re-synced this often (each pass reads the table once).
    #[arg(long, env = "WINDOW_RESYNC_SECONDS", default_value_t = 300)]
    pub window_resync_seconds: u64,
    /// DSQL endpoints each namespace may name, as JSON: {"blog": ["host"], "*": []}.
    /// A namespace with no entry may use DSQL only if it is the operator's own.
    #[arg(long, env = "DSQL_ENDPOINTS", default_value = "{}")]
    pub dsql_endpoints: String,
}

pub async fn main(args: ControllerArgs) -> Result<(), Failure> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Failure::Input(format!("cannot configure a Kubernetes client: {e}")))?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("identity-migrator-{}", std::process::id()))
    });
    let dsql_endpoints = DsqlEndpoints::parse(&args.dsql_endpoints, &args.lease_namespace)
        .map_err(|e| Failure::Input(format!("--dsql-endpoints (DSQL_ENDPOINTS): {e}")))?;
    let config = OperatorConfig {
        identity,
        watch_namespaces: args.watch_namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
        max_concurrent_migrations: match args.max_concurrent_migrations {
            Some(n) if n > 0 => n,
            _ => default_concurrency(args.cpu_request_millicores, args.memory_request_mib),
        },
        max_concurrent_per_target: args.max_concurrent_per_target,
        lease_namespace: args.lease_namespace,
        lease_duration_seconds: args.lease_duration_seconds.max(2),
        lease_grace_seconds: (args.lease_duration_seconds / 3).max(1),
        dsql_endpoints,
        resync_while_waiting: std::time::Duration::from_secs(args.window_resync_seconds.max(1)),
    };
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let http =
        tokio::spawn(serve(args.http_addr, HttpState { metrics: metrics.clone(), ready: ready.clone() }, http_stop));
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: stopping migrations at their next checkpoint");
    };
    run(client, config, metrics, ready, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = http.await;
    Ok(())
}

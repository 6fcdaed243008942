//! Operator instances for the controller tests: the real operator, against
//! the fake API server and a real PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use identity_migrator::api::{IdentityMigration, IdentityMigrationSpec, TableMigration, TableMigrationSpec};
use identity_migrator::controller::target::DsqlEndpoints;
use identity_migrator::controller::{OperatorConfig, run};
use identity_migrator::metrics::Metrics;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::fake_api::FakeApi;

pub const NS: &str = "blog";

pub struct Operator {
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// Set at a crash: whatever the dead instance's tasks still send is lost.
    severed: Arc<AtomicBool>,
}

impl Operator {
    pub fn start(api: &FakeApi, identity: &str) -> Self {
        Self::start_with(api, identity, 4)
    }

    /// An instance that runs at most `max_concurrent` migrations at once.
    pub fn start_with(api: &FakeApi, identity: &str, max_concurrent: usize) -> Self {
        Self::start_limited(api, identity, max_concurrent, 0)
    }

    /// An instance that also runs at most `per_target` migrations against one
    /// database endpoint, counting those of every instance (0: no limit).
    pub fn start_limited(api: &FakeApi, identity: &str, max_concurrent: usize, per_target: usize) -> Self {
        init_logging();
        let config = OperatorConfig {
            identity: identity.to_string(),
            watch_namespaces: vec![],
            max_concurrent_migrations: max_concurrent,
            max_concurrent_per_target: per_target,
            lease_namespace: "identity-migrator".into(),
            // Long enough not to lapse on a busy machine, short for takeovers.
            lease_duration_seconds: 6,
            lease_grace_seconds: 2,
            // No namespace listed: only the operator's own may name DSQL endpoints.
            dsql_endpoints: DsqlEndpoints { home: "identity-migrator".into(), ..Default::default() },
            // Often, so that a test sees passes while a window is closed.
            resync_while_waiting: Duration::from_secs(1),
        };
        let metrics = Metrics::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let severed = Arc::new(AtomicBool::new(false));
        let (client, m) = (api.severable_client(severed.clone()), metrics.clone());
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            run(client, config, m, Arc::new(AtomicBool::new(false)), shutdown).await;
        });
        Self { metrics, stop: Some(stop), task, severed }
    }

    /// SIGTERM: engines stop at their next checkpoint, their leases are released.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task).await.expect("graceful shutdown").unwrap();
    }

    /// The process dies: nothing is saved or released.
    /// Aborting the task alone would not do: tasks it spawned live on, and
    /// dropped Lease watches release their Leases, which a dead process never does.
    pub async fn crash(self) {
        self.severed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.abort();
        let _ = self.task.await;
    }
}

pub fn migrations(api: &FakeApi) -> Api<IdentityMigration> {
    Api::namespaced(api.client(), NS)
}

pub async fn create_url_secret(api: &FakeApi, name: &str, url: &str) {
    let secrets: Api<Secret> = Api::namespaced(api.client(), NS);
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(BTreeMap::from([("url".to_string(), ByteString(url.as_bytes().to_vec()))])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.unwrap();
}

/// A migration of `table` whose URL is in Secret `db`; `extra` is merged into the spec.
pub async fn create_migration(api: &FakeApi, name: &str, table: &str, extra: Value) -> IdentityMigration {
    let mut spec = serde_json::json!({"target": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}, "table": table,
                           "strategy": "Copy"});
    merge(&mut spec, &extra);
    let spec: IdentityMigrationSpec = serde_json::from_value(spec).unwrap();
    let mut object = IdentityMigration::new(name, spec);
    object.metadata.namespace = Some(NS.into());
    migrations(api).create(&PostParams::default(), &object).await.unwrap()
}

/// A SchemaMigration of `source` (the spec's `source`) whose URL is in
/// Secret `db`, applied without approval; `extra` is merged into the spec.
pub async fn create_schema_migration(api: &FakeApi, name: &str, source: Value, extra: Value) {
    let mut spec = serde_json::json!({"target": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}},
                                      "source": source, "policy": {"approval": "Never"}});
    merge(&mut spec, &extra);
    let object: identity_migrator::api::schema::SchemaMigration = serde_json::from_value(serde_json::json!({
        "apiVersion": "migrations.dsql.dev/v1alpha1", "kind": "SchemaMigration",
        "metadata": {"name": name, "namespace": NS}, "spec": spec
    }))
    .unwrap();
    let api: Api<identity_migrator::api::schema::SchemaMigration> = Api::namespaced(api.client(), NS);
    api.create(&PostParams::default(), &object).await.unwrap();
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = patch.clone(),
    }
}

pub async fn patch_spec(api: &FakeApi, name: &str, spec: Value) {
    let patch = serde_json::json!({"spec": spec});
    migrations(api).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

pub async fn delete(api: &FakeApi, name: &str) {
    migrations(api).delete(name, &DeleteParams::default()).await.unwrap();
}

/// A TableMigration of `table` whose URL is in Secret `db`, making `changes`;
/// `extra` is merged into the spec.
pub async fn create_table_migration(
    api: &FakeApi,
    name: &str,
    table: &str,
    changes: Value,
    extra: Value,
) -> TableMigration {
    let mut spec = serde_json::json!({"target": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}},
                                      "table": table, "changes": changes});
    merge(&mut spec, &extra);
    let spec: TableMigrationSpec = serde_json::from_value(spec).unwrap();
    let mut object = TableMigration::new(name, spec);
    object.metadata.namespace = Some(NS.into());
    Api::<TableMigration>::namespaced(api.client(), NS).create(&PostParams::default(), &object).await.unwrap()
}

/// The IdentityMigration as stored, once `check` holds (panics after `secs`).
pub async fn wait_for(api: &FakeApi, name: &str, secs: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for_in(api, "identitymigrations", name, secs, what, check).await
}

/// The migration of kind `plural` as stored, once `check` holds (panics after `secs`).
pub async fn wait_for_in(
    api: &FakeApi,
    plural: &str,
    name: &str,
    secs: u64,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let object = api.get("migrations.dsql.dev/v1alpha1", plural, NS, name).unwrap_or(Value::Null);
        if check(&object) {
            return object;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; object: {object:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The holder of the Lease of the migration `object`.
pub fn lease_holder(api: &FakeApi, object: &Value) -> Option<String> {
    let uid = object["metadata"]["uid"].as_str()?;
    let lease = api.get("coordination.k8s.io/v1", "leases", "identity-migrator", &format!("idmig-{uid}"))?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The entries of an endpoint's slot object (`idmig-slot-<endpoint>`) that
/// count now: those whose replica holds their migration's Lease, renewed
/// within its duration. Read independently of the operator's own rule.
pub fn live_slot_holders(api: &FakeApi, endpoint_in_name: &str) -> Vec<String> {
    let now = jiff::Timestamp::now();
    let lease = |name: &str| api.get("coordination.k8s.io/v1", "leases", "identity-migrator", name);
    let Some(slots) = lease(&format!("idmig-slot-{endpoint_in_name}")) else { return Vec::new() };
    let listed = slots["metadata"]["annotations"]["migrations.dsql.dev/slot-holders"].as_str().unwrap_or("[]");
    let holders: Vec<Value> = serde_json::from_str(listed).expect("the slot holders are a JSON list");
    holders
        .iter()
        .filter_map(|h| {
            let (uid, replica) = (h["uid"].as_str()?, h["replica"].as_str()?);
            let migration = lease(&format!("idmig-{uid}"))?;
            let spec = &migration["spec"];
            let renewed: jiff::Timestamp = spec["renewTime"].as_str()?.parse().ok()?;
            let lasts = spec["leaseDurationSeconds"].as_i64()?;
            (spec["holderIdentity"] == replica && renewed + jiff::SignedDuration::from_secs(lasts) > now)
                .then(|| format!("{uid}@{replica}"))
        })
        .collect()
}

pub fn phase(object: &Value) -> &str {
    object["status"]["phase"].as_str().unwrap_or("")
}

pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Logs for the operator tests, shown with `RUST_LOG=identity_migrator=debug`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A Deployment or StatefulSet with `replicas`, for quiesce.
pub async fn create_workload(api: &FakeApi, kind: &str, name: &str, replicas: i32) {
    let object = serde_json::json!({
        "apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "app"}]}}}
    });
    let plural = if kind == "Deployment" { "deployments" } else { "statefulsets" };
    let api_resource = kube::core::ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: "apps/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let objects: Api<kube::core::DynamicObject> = Api::namespaced_with(api.client(), NS, &api_resource);
    let object: kube::core::DynamicObject = serde_json::from_value(object).unwrap();
    objects.create(&PostParams::default(), &object).await.unwrap();
}

/// `(spec.replicas, status.replicas)` of a workload.
pub fn workload_replicas(api: &FakeApi, plural: &str, name: &str) -> (i64, i64) {
    let o = api.get("apps/v1", plural, NS, name).expect("workload");
    (o["spec"]["replicas"].as_i64().unwrap_or(-1), o["status"]["replicas"].as_i64().unwrap_or(-1))
}

/// The first quoted `"<prefix><digits>` in `query` (a test's table, not a
/// column such as `"tag_id"`), without the quote.
fn numbered_name(query: &str, prefix: &str) -> Option<String> {
    let quoted = format!("\"{prefix}");
    query.match_indices(&quoted).find_map(|(at, _)| {
        let digits: String = query[at + quoted.len()..].chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty()).then(|| format!("{prefix}{digits}"))
    })
}

/// Which replicas' connections are busy with which table now, from the
/// database's side: every non-idle connection of the migrator, by the first
/// quoted `<prefix><n>` in its query, to its `application_name`s.
pub async fn busy_tables(
    client: &tokio_postgres::Client,
    prefix: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let rows = client
        .query(
            "SELECT application_name, query FROM pg_stat_activity \
             WHERE application_name LIKE 'identity-migrator/%' AND datname = current_database() AND state <> 'idle'",
            &[],
        )
        .await
        .unwrap();
    let mut busy: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for row in rows {
        let (app, query): (String, String) = (row.get(0), row.get(1));
        if let Some(table) = numbered_name(&query, prefix) {
            busy.entry(table).or_default().insert(app);
        }
    }
    busy
}

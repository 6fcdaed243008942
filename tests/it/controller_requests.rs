//! Exact API requests of single reconciliations, with tower-test: the
//! reconciler talks to a scripted API server that checks each request's
//! method, path and body in order.

use std::sync::Arc;

use http::{Request, Response};
use identity_migrator::api::{IdentityMigration, IdentityMigrationSpec, IdentityMigrationStatus, Phase, QueuedStatus};
use identity_migrator::controller::admission::Known;
use identity_migrator::controller::leases::MigrationLeases;
use identity_migrator::controller::reconcile::{FINALIZER, ReconcileContext, reconcile};
use identity_migrator::controller::supervisor::Supervisor;
use identity_migrator::controller::target_slots::TargetSlots;
use identity_migrator::metrics::Metrics;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// An IdentityMigration in namespace `blog`, with builders that read like the situation.
struct Fixture(IdentityMigration);

impl Fixture {
    fn migration(spec: Value) -> Self {
        let mut base =
            json!({"target": {"postgres": {"urlSecretRef": {"name": "db", "key": "url"}}}, "table": "post_tag"});
        base.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        let spec: IdentityMigrationSpec = serde_json::from_value(base).unwrap();
        let mut m = IdentityMigration::new("post-tag", spec);
        m.metadata.namespace = Some("blog".into());
        m.metadata.uid = Some("uid-1".into());
        m.metadata.generation = Some(1);
        m.metadata.resource_version = Some("7".into());
        Self(m)
    }

    fn finalized(mut self) -> Self {
        self.0.metadata.finalizers = Some(vec![FINALIZER.into()]);
        self
    }

    fn in_phase(mut self, phase: Phase) -> Self {
        self.0.status = Some(IdentityMigrationStatus { phase, observed_generation: Some(1), ..Default::default() });
        self
    }

    fn deleted(mut self) -> Self {
        self.0.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        self
    }
}

fn context() -> (Arc<ReconcileContext>, ApiHandle) {
    context_limited(0, Known::default())
}

/// A context whose endpoints take `limit` migrations at once, with `known`
/// as the migrations this replica's cache shows.
fn context_limited(limit: usize, known: Known) -> (Arc<ReconcileContext>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "identity-migrator".into(), instance: Some("test".into()) },
    );
    let leases = MigrationLeases::new(client.clone(), "identity-migrator", "test", 3, 1);
    let ctx = ReconcileContext {
        slots: TargetSlots::new(client.clone(), "identity-migrator", "test", leases.store(), limit),
        leases,
        known,
        client,
        supervisor: Supervisor::new(1),
        metrics: Metrics::default(),
        recorder,
        application_name: "identity-migrator/test".into(),
        dsql_endpoints: Default::default(),
        resync_while_waiting: std::time::Duration::from_secs(300),
        schema_tasks: Default::default(),
    };
    (Arc::new(ctx), handle)
}

/// Takes the next request, checks its method and path, answers with `reply`,
/// and returns the request's JSON body.
async fn expect(handle: &mut ApiHandle, method: &str, path: &str, reply: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method().as_str(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
    body
}

const OBJECT: &str = "/apis/migrations.dsql.dev/v1alpha1/namespaces/blog/identitymigrations/post-tag";

#[tokio::test]
async fn a_new_migration_first_gets_the_finalizer() {
    let (ctx, mut api) = context();
    let object = Fixture::migration(json!({})).0;
    let reply = serde_json::to_value(Fixture::migration(json!({})).finalized().0).unwrap();
    let server = tokio::spawn(async move {
        let patch = expect(&mut api, "PATCH", OBJECT, reply).await;
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
            ])
        );
        api
    });
    reconcile(Arc::new(object), ctx).await.expect("reconcile");
    server.await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_writes_a_failed_status_then_a_warning_event() {
    let (ctx, mut api) = context();
    let object = Fixture::migration(json!({"identity": {"cache": 1000}})).finalized().0;
    let reply = serde_json::to_value(&object).unwrap();
    let server = tokio::spawn(async move {
        let patch = expect(&mut api, "PATCH", &format!("{OBJECT}/status"), reply.clone()).await;
        assert_eq!(patch[0]["op"], "add");
        assert_eq!(patch[0]["path"], "/status");
        let status = &patch[0]["value"];
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["lastError"]["invalidInput"], true);
        let degraded = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap();
        assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("InvalidSpec")));
        assert!(degraded["message"].as_str().unwrap().starts_with("spec.identity.cache: 1000 is not allowed"));

        let event = expect(&mut api, "POST", "/apis/events.k8s.io/v1/namespaces/blog/events", json!({})).await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("InvalidSpec")));
        assert_eq!(event["regarding"]["name"], "post-tag");
        assert_eq!(event["reportingController"], "identity-migrator");
        api
    });
    reconcile(Arc::new(object), ctx).await.expect("reconcile");
    server.await.unwrap();
}

#[tokio::test]
async fn deleting_a_completed_migration_only_removes_its_lease_and_the_finalizer() {
    let (ctx, mut api) = context();
    let object = Fixture::migration(json!({})).finalized().in_phase(Phase::Completed).deleted().0;
    let mut reply = serde_json::to_value(&object).unwrap();
    reply["metadata"]["finalizers"] = json!([]);
    let server = tokio::spawn(async move {
        let lease = "/apis/coordination.k8s.io/v1/namespaces/identity-migrator/leases/idmig-uid-1";
        let gone = json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}});
        expect(&mut api, "DELETE", lease, gone).await;
        let patch = expect(&mut api, "PATCH", OBJECT, reply).await;
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ])
        );
        api
    });
    reconcile(Arc::new(object), ctx).await.expect("reconcile");
    let mut api = server.await.unwrap();
    // Nothing else: no status write, no event (the client is gone or silent).
    let next = tokio::time::timeout(std::time::Duration::from_millis(200), api.next_request()).await;
    assert!(
        matches!(next, Err(_) | Ok(None)),
        "unexpected request: {:?}",
        next.ok().flatten().map(|(r, _)| r.uri().clone())
    );
}

/// One older migration that copies against `db:5432`, in the cache.
fn line_ahead() -> Known {
    let mut older = Fixture::migration(json!({})).finalized().in_phase(Phase::Copying).0;
    older.metadata.name = Some("older".into());
    older.metadata.uid = Some("uid-0".into());
    older.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-01T00:00:00Z".parse().unwrap()));
    older.status.as_mut().unwrap().endpoint = Some("db:5432".into());
    let (store, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(older));
    Known { identity: vec![store], table: vec![] }
}

fn waiting_in_line(queued: Option<QueuedStatus>) -> IdentityMigration {
    let mut m = Fixture::migration(json!({})).finalized().in_phase(Phase::Pending).0;
    m.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-02T00:00:00Z".parse().unwrap()));
    let status = m.status.as_mut().unwrap();
    status.endpoint = Some("db:5432".into());
    status.queued = queued;
    m
}

/// Nothing more is asked of the API server within a moment.
async fn assert_silent(api: &mut ApiHandle) {
    let next = tokio::time::timeout(std::time::Duration::from_millis(300), api.next_request()).await;
    assert!(
        matches!(next, Err(_) | Ok(None)),
        "unexpected request: {:?}",
        next.ok().flatten().map(|(r, _)| (r.method().clone(), r.uri().clone()))
    );
}

#[tokio::test]
async fn a_migration_that_waits_its_turn_writes_nothing_and_takes_no_lease() {
    let (ctx, mut api) = context_limited(1, line_ahead());
    let place = QueuedStatus { position: 1, limit: 1, since: Some(identity_migrator::api::now()) };
    let mut object = waiting_in_line(Some(place));
    let conditions = {
        let mut status = object.status.clone().unwrap();
        identity_migrator::api::conditions::refresh_conditions(&mut status, false, &identity_migrator::api::now());
        status.conditions
    };
    object.status.as_mut().unwrap().conditions = conditions;
    let action = reconcile(Arc::new(object), ctx).await.expect("reconcile");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(identity_migrator::controller::reconcile::LEASE_POLL)
    );
    // No Lease read, taken or renewed, no slot, no status: it already says where it waits.
    assert_silent(&mut api).await;
}

#[tokio::test]
async fn a_migration_that_joins_the_line_writes_its_place_only_over_the_version_it_read() {
    let (ctx, mut api) = context_limited(1, line_ahead());
    let object = waiting_in_line(None);
    let reply = serde_json::to_value(&object).unwrap();
    let server = tokio::spawn(async move {
        let patch = expect(&mut api, "PATCH", &format!("{OBJECT}/status"), reply).await;
        assert_eq!(patch[0], json!({"op": "test", "path": "/metadata/resourceVersion", "value": "7"}));
        assert_eq!(patch[1]["path"], "/status");
        assert_eq!(patch[1]["value"]["queued"]["position"], 1);
        assert_eq!(patch[1]["value"]["queued"]["limit"], 1);
        let event = expect(&mut api, "POST", "/apis/events.k8s.io/v1/namespaces/blog/events", json!({})).await;
        assert_eq!(event["reason"], "Queued");
        api
    });
    reconcile(Arc::new(object), ctx).await.expect("reconcile");
    let mut api = server.await.unwrap();
    assert_silent(&mut api).await;
}

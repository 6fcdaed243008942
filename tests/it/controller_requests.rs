//! Exact API requests of single reconciliations, with tower-test: the
//! reconciler talks to a scripted API server that checks each request's
//! method, path and body in order.

use std::sync::Arc;

use http::{Request, Response};
use identity_migrator::api::{IdentityMigration, IdentityMigrationSpec, IdentityMigrationStatus, Phase};
use identity_migrator::controller::leases::{LeaseTerms, MigrationLeases};
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
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "identity-migrator".into(), instance: Some("test".into()) },
    );
    let ctx = ReconcileContext {
        leases: MigrationLeases::new(client.clone(), "identity-migrator", "test", 3, 1),
        slots: TargetSlots::new(
            client.clone(),
            "identity-migrator",
            "test",
            LeaseTerms { duration_seconds: 3, grace_seconds: 1 },
            0,
        ),
        known: Default::default(),
        client,
        supervisor: Supervisor::new(1),
        metrics: Metrics::default(),
        recorder,
        application_name: "identity-migrator/test".into(),
        dsql_endpoints: Default::default(),
        resync_while_waiting: std::time::Duration::from_secs(300),
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

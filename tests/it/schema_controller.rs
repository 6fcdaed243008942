//! SchemaMigration in the operator (issue 33): files from a ConfigMap,
//! applied by the replica that holds the Lease, the status kstatus reads
//! (Ready, Reconciling, Stalled, AwaitingApproval, Drifted), and a changed
//! applied file seen as Drifted.

use std::path::Path;

use identity_migrator::api::schema::SchemaMigration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::schema::assert_example_applied;
use crate::support::TestDb;
use crate::support::fake_api::FakeApi;
use crate::support::operator::{NS, Operator, condition, create_schema_migration, create_url_secret};

fn get(api: &FakeApi, name: &str) -> Value {
    api.get("migrations.dsql.dev/v1alpha1", "schemamigrations", NS, name).unwrap_or(Value::Null)
}

fn holds(o: &Value, type_: &str) -> bool {
    condition(o, type_).is_some_and(|c| c["status"] == "True")
}

async fn wait_for(api: &FakeApi, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let o = get(api, name);
        if check(&o) {
            return o;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {}", o["status"]);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn example_files() -> serde_json::Map<String, Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrations");
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), json!(std::fs::read_to_string(&p).unwrap())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_migration_applies_its_configmap_and_a_changed_applied_file_shows_drifted() {
    let db = TestDb::new("schema_operator").await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let client = api.client();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "shop-migrations"}, "data": example_files()})).unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    let schemas: Api<SchemaMigration> = Api::namespaced(client.clone(), NS);
    let source = json!({"configMapRef": {"name": "shop-migrations"}});
    create_schema_migration(&api, "shop", source, json!({"format": "Flyway"})).await;
    let operator = Operator::start(&api, "pod-a");
    let done = wait_for(&api, "shop", "Ready", |o| holds(o, "Ready")).await;
    assert_eq!(done["status"]["currentVersion"], "7");
    assert_eq!(done["status"]["pending"], 0);
    assert!(!holds(&done, "Reconciling") && !holds(&done, "Stalled") && !holds(&done, "Drifted"));
    assert_example_applied(&db).await;
    let events: Vec<String> =
        api.events_of(NS, Some("SchemaMigration"), "shop").into_iter().map(|(_, r, _)| r).collect();
    assert!(events.contains(&"Applied".to_string()), "{events:?}");

    // An applied file edited in the ConfigMap: the next run stops on it.
    let mut edited = example_files();
    edited.insert(
        "V1__create_tables.sql".into(),
        json!("-- rewritten after it ran\nCREATE TABLE customers (id bigint);\n"),
    );
    maps.patch("shop-migrations", &PatchParams::default(), &Patch::Merge(json!({"data": edited}))).await.unwrap();
    schemas.patch("shop", &PatchParams::default(), &Patch::Merge(json!({"spec": {"outOfOrder": true}}))).await.unwrap();
    let drifted = wait_for(&api, "shop", "Drifted", |o| holds(o, "Drifted")).await;
    let message = condition(&drifted, "Drifted").unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains("version 1 (V1__create_tables.sql)"), "{message}");
    assert!(holds(&drifted, "Stalled") && !holds(&drifted, "Ready"));
    operator.shutdown().await;
}

/// A SchemaMigration's backfill loads the endpoint as a copy does: with one
/// slot per endpoint, it waits while an IdentityMigration copies, saying so
/// in its status, and runs once the copy is done and the slot free.
#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_waits_for_a_slot_of_its_endpoint_while_a_copy_holds_it() {
    use crate::support::PostTag;
    use crate::support::operator::{create_migration, phase, wait_for as wait_for_migration};
    let db = TestDb::new("schema_slot").await;
    PostTag::rows(20_000).create(&db).await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let operator = Operator::start_limited(&api, "pod-a", 4, 1);
    let slow = json!({"copy": {"parallelism": 1, "batchRows": 500, "maxRowsPerSecond": 2000}});
    create_migration(&api, "post-tag", "post_tag", slow).await;
    wait_for_migration(&api, "post-tag", 60, "Copying", |o| phase(o) == "Copying").await;

    let source = json!({"migrations": [
        {"version": "1", "description": "tables", "sql": "CREATE TABLE counters (id bigint PRIMARY KEY, n integer NOT NULL);\nINSERT INTO counters SELECT g, 0 FROM generate_series(1, 2000) g;"},
        {"version": "2", "description": "bump", "sql": "UPDATE counters SET n = n + 1;"}
    ]});
    create_schema_migration(&api, "counters", source, json!({})).await;
    let waiting = wait_for(&api, "counters", "waiting for the slot", |o| {
        o["status"]["inFlight"]["step"].as_str().is_some_and(|s| s.contains("waiting for one of the 1 slots"))
    })
    .await;
    assert_eq!(waiting["status"]["inFlight"]["version"], "2", "{}", waiting["status"]);
    let copying = api.get("migrations.dsql.dev/v1alpha1", "identitymigrations", NS, "post-tag").unwrap();
    assert_ne!(phase(&copying), "Completed", "the copy holds the slot while the backfill waits");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM counters WHERE n <> 0").await, 0, "the backfill has not begun");

    let done = wait_for(&api, "counters", "Ready", |o| holds(o, "Ready")).await;
    assert_eq!(done["status"]["currentVersion"], "2");
    let copied = api.get("migrations.dsql.dev/v1alpha1", "identitymigrations", NS, "post-tag").unwrap();
    assert!(
        matches!(phase(&copied), "Verifying" | "AwaitingCutover" | "Swapping" | "Completed"),
        "the backfill ran once the copy gave its slot back: {}",
        phase(&copied)
    );
    assert_eq!(db.scalar_i64("SELECT count(*) FROM counters WHERE n = 1").await, 2_000);
    operator.shutdown().await;
}

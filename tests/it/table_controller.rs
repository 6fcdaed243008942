//! TableMigrations in the operator (issue 22): the same reconciler, Leases,
//! finalizer, status and events as IdentityMigrations, against the fake API
//! server and a real PostgreSQL.

use serde_json::{Value, json};

use crate::support::TestDb;
use crate::support::fake_api::FakeApi;
use crate::support::operator::{
    NS, Operator, condition, create_migration, create_table_migration, create_url_secret, phase, wait_for, wait_for_in,
};

const TABLES: &str = "tablemigrations";

/// `orders (id, amount, email, code)` with `rows` rows; the URL Secret `db`.
async fn setup(name: &str, rows: i64) -> (TestDb, FakeApi) {
    let db = TestDb::new(name).await;
    db.exec(&format!(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount integer, email text, code text);
         INSERT INTO orders SELECT g, g * 3, 'u' || g || '@example.com', g::text FROM generate_series(1, {rows}) g;"
    ))
    .await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    (db, api)
}

fn rebuild_changes() -> Value {
    json!([
        {"alterColumn": {"column": "amount", "type": "numeric(12,2)"}},
        {"alterColumn": {"column": "email", "notNull": true}},
        {"addColumn": {"name": "status", "type": "text", "notNull": true, "default": "'new'"}},
        {"dropColumn": {"name": "code"}},
    ])
}

async fn columns(db: &TestDb, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position"
    );
    db.client.query(&sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

/// A rebuild and an in-place change as resources, beside an IdentityMigration
/// of the same name: each runs to Completed with its own Lease, status and events.
#[tokio::test(flavor = "multi_thread")]
async fn table_migrations_run_to_completed_beside_an_identity_migration_of_the_same_name() {
    let (db, api) = setup("tblctl_complete", 3_000).await;
    db.exec(
        "CREATE TABLE notes (id bigint PRIMARY KEY, body text);
         INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 500) g;
         CREATE TABLE post_tag (id bigint PRIMARY KEY, post_id bigint NOT NULL);
         INSERT INTO post_tag SELECT g, g FROM generate_series(1, 500) g;",
    )
    .await;
    let before =
        db.scalar_text("SELECT string_agg(id || ':' || amount || ':' || email, ',' ORDER BY id) FROM orders").await;
    let operator = Operator::start(&api, "pod-a");
    create_table_migration(&api, "orders", "orders", rebuild_changes(), json!({})).await;
    create_table_migration(
        &api,
        "notes",
        "notes",
        json!([{"alterColumn": {"column": "body", "notNull": true}}]),
        json!({}),
    )
    .await;
    create_migration(&api, "orders", "post_tag", json!({})).await;

    let done = wait_for_in(&api, TABLES, "orders", 120, "the rebuild Completed", |o| phase(o) == "Completed").await;
    let notes = wait_for_in(&api, TABLES, "notes", 120, "in place Completed", |o| phase(o) == "Completed").await;
    let identity = wait_for(&api, "orders", 120, "the identity Completed", |o| phase(o) == "Completed").await;
    operator.shutdown().await;

    // The rebuild: the new shape, every row, the old table kept.
    assert_eq!(columns(&db, "orders").await, ["id bigint NO", "amount numeric YES", "email text NO", "status text NO"]);
    let after = db
        .scalar_text("SELECT string_agg(id || ':' || amount::integer || ':' || email, ',' ORDER BY id) FROM orders")
        .await;
    assert_eq!(after, before, "every row, each value through its change");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders WHERE status = 'new'").await, 3_000);
    assert!(db.exists("public", "orders_old").await, "the original rows are kept");
    let status = &done["status"];
    assert_eq!(status["strategy"]["taken"], "Copy");
    assert_eq!(status["verification"]["sourceRows"], 3_000);
    assert_eq!(status["changes"]["planned"].as_array().map(Vec::len), Some(4));
    let ready = condition(&done, "Ready").unwrap();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("Completed")));

    // In place: no shadow table, the statements counted as applied.
    assert_eq!(columns(&db, "notes").await, ["id bigint NO", "body text NO"]);
    assert!(!db.exists("public", "notes_new").await && !db.exists("public", "notes_old").await);
    let changes = &notes["status"]["changes"];
    assert_eq!(notes["status"]["strategy"]["taken"], "InPlace");
    assert_eq!(changes["applied"], changes["statements"].as_array().map(|s| s.len()).unwrap());

    // The IdentityMigration of the same name is a migration of its own.
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "d");
    assert_ne!(identity["metadata"]["uid"], done["metadata"]["uid"]);
    let events = |kind: &str| -> Vec<String> {
        api.events_of(NS, Some(kind), "orders").into_iter().map(|(_, reason, _)| reason).collect()
    };
    for kind in ["TableMigration", "IdentityMigration"] {
        assert_eq!(events(kind).iter().filter(|r| *r == "Completed").count(), 1, "{kind}: {:?}", events(kind));
    }
    for uid in [&done["metadata"]["uid"], &identity["metadata"]["uid"]] {
        let lease = format!("idmig-{}", uid.as_str().unwrap());
        assert!(api.get("coordination.k8s.io/v1", "leases", "identity-migrator", &lease).is_some(), "{lease}");
    }
}

/// Rows that do not fit are refused by id, the condition says InvalidData,
/// and nothing changes; a table that is not there is bad input on spec.table.
#[tokio::test(flavor = "multi_thread")]
async fn bad_data_and_a_missing_table_are_degraded_by_name_and_nothing_changes() {
    let (db, api) = setup("tblctl_bad", 1_000).await;
    db.exec("UPDATE orders SET email = NULL WHERE id IN (17, 404)").await;
    let snapshot = db.catalog_snapshot().await;
    let operator = Operator::start(&api, "pod-a");
    create_table_migration(&api, "orders", "orders", rebuild_changes(), json!({})).await;
    create_table_migration(&api, "ghost", "ghost", rebuild_changes(), json!({})).await;

    let failed = wait_for_in(&api, TABLES, "orders", 60, "InvalidData", |o| {
        condition(o, "Degraded").is_some_and(|c| c["reason"] == "InvalidData")
    })
    .await;
    let ghost = wait_for_in(&api, TABLES, "ghost", 60, "InvalidSpec", |o| {
        condition(o, "Degraded").is_some_and(|c| c["reason"] == "InvalidSpec")
    })
    .await;
    operator.shutdown().await;

    assert_eq!(phase(&failed), "Failed");
    let message = failed["status"]["lastError"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.changes[1].alterColumn") && message.contains("17") && message.contains("404"),
        "{message}"
    );
    assert_eq!(failed["status"]["lastError"]["invalidData"], true);
    let missing = ghost["status"]["lastError"]["message"].as_str().unwrap();
    assert!(missing.contains("spec.table") && missing.contains("does not exist"), "{missing}");
    assert_eq!(db.catalog_snapshot().await, snapshot, "nothing changed");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders WHERE email IS NULL").await, 2);
}

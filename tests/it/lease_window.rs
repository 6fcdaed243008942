//! A migration's Lease lost inside its cut-over window (issue 32, item 16):
//! the table must not stay renamed away until another replica takes the
//! migration over. The engine that still holds the claim on the table gives
//! the name back itself, at once, even with the API server out of reach.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::controller::setup;
use crate::support::operator::{Operator, create_migration, patch_spec, phase, wait_for};

/// Waits until `check` holds, polling; panics with `what` after `secs`.
async fn until(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_lost_inside_the_window_gives_the_table_its_name_back_at_once() {
    let (db, api, before) = setup("lease_window", 5_000).await;
    let operator = Operator::start(&api, "pod-a");
    create_migration(&api, "post-tag", "post_tag", json!({"cutover": {"approval": "Manual"}})).await;
    wait_for(&api, "post-tag", 60, "AwaitingCutover", |o| phase(o) == "AwaitingCutover").await;

    // A session that reads the new table holds it in ACCESS SHARE: the
    // window's identity restart on it (ACCESS EXCLUSIVE) waits inside the
    // window, with the original renamed away.
    let (reader, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    reader.batch_execute("BEGIN; SELECT count(*) FROM post_tag_new").await.unwrap();
    patch_spec(&api, "post-tag", json!({"cutover": {"approved": true}})).await;
    let waiting_on_new_table = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                                WHERE c.relname = 'post_tag_new' AND NOT l.granted";
    until(60, "the window to wait on the new table", async || {
        !db.exists("public", "post_tag").await && db.scalar_i64(waiting_on_new_table).await > 0
    })
    .await;

    // The API server goes out of reach: no renewal, and no other replica
    // could take the migration over either. Once the replica counts its
    // Lease lost (its own deadline passed), the reader lets go.
    api.set_outage(true);
    until(30, "the replica to count its Lease lost", async || operator.metrics.held_leases.get() == 0).await;
    reader.batch_execute("COMMIT").await.unwrap();
    until(30, "the table's name to come back during the outage", async || db.exists("public", "post_tag").await).await;
    assert!(db.exists("public", "post_tag_new").await, "the new table waits for the next attempt");

    // The API server comes back: the migration is taken again and finishes.
    api.set_outage(false);
    wait_for(&api, "post-tag", 90, "Completed", |o| phase(o) == "Completed").await;
    operator.shutdown().await;
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_licence_runs_out_by_itself_when_nothing_renews_the_lease() {
    use identity_migrator::controller::leases::MigrationLeases;
    use identity_migrator::controller::supervisor::Key;
    let api = crate::support::fake_api::FakeApi::new();
    let leases = MigrationLeases::new(api.client(), "identity-migrator", "pod-a", 2, 1);
    let key = Key::new("IdentityMigration", "blog", "m");
    let licence = leases.hold(&key, "uid-m").await.unwrap().expect("a free Lease is taken");
    assert!(licence.holds());
    // The renewals stop (their task is gone) but nobody says the Lease is
    // lost: the engine's own reading of the deadline must end it.
    drop(leases);
    until(10, "the licence to run out", async || !licence.holds()).await;
    assert!(licence.until().is_some(), "nobody gave it up: it ran out");
}

//! Many migrations over many replicas (issue 15): the line at one database
//! endpoint, a verified migration kept in step while its window is closed,
//! the takeover after a replica dies, and what `kubectl get -o wide` shows.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fake_api::FakeApi;
use crate::support::operator::{
    NS, Operator, busy_tables, condition, create_migration, create_url_secret, lease_holder, live_slot_holders, phase,
    wait_for,
};
use crate::support::{PostTag, TestDb};

fn get(api: &FakeApi, name: &str) -> Value {
    api.get("migrations.dsql.dev/v1alpha1", "identitymigrations", NS, name).unwrap_or(Value::Null)
}

fn ready_reason(o: &Value) -> String {
    condition(o, "Ready").and_then(|c| c["reason"].as_str()).unwrap_or("").to_string()
}

/// Phases in which an engine works the database.
fn working(o: &Value) -> bool {
    matches!(phase(o), "Validating" | "CreatingTarget" | "Copying" | "Verifying" | "Swapping")
        && o["status"]["queued"].is_null()
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_on_one_endpoint_wait_their_turn_in_creation_order_across_replicas() {
    const N: usize = 6;
    let db = TestDb::new("fleet_queue").await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let mut before = Vec::new();
    for i in 1..=N {
        PostTag::rows(3_000).named("public", &format!("q{i}"), "id").create(&db).await;
        before.push(db.fingerprint(&format!("public.q{i}"), "id").await);
    }
    // Room for four each, but two at a time against the one PostgreSQL.
    let a = Operator::start_limited(&api, "pod-a", 4, 2);
    let b = Operator::start_limited(&api, "pod-b", 4, 2);
    let spec = json!({"copy": {"parallelism": 1, "batchRows": 500, "maxRowsPerSecond": 1500}});
    for i in 1..=N {
        create_migration(&api, &format!("q{i}"), &format!("q{i}"), spec.clone()).await;
    }
    // Watch the whole run from the status side and from the database side.
    let (mut most_working, mut most_busy) = (0, 0);
    let mut seen_queued = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let objects: Vec<Value> = (1..=N).map(|i| get(&api, &format!("q{i}"))).collect();
        most_working = most_working.max(objects.iter().filter(|o| working(o)).count());
        most_busy = most_busy.max(busy_tables(&db.client, "q").await.len());
        let holders = live_slot_holders(&api, "127.0.0.1-5432");
        assert!(holders.len() <= 2, "more slots held than the limit: {holders:?}");
        for (i, o) in objects.iter().enumerate() {
            if ready_reason(o) == "Queued" {
                let message = condition(o, "Ready").unwrap()["message"].as_str().unwrap().to_string();
                assert!(
                    message.contains("127.0.0.1:5432") && message.contains("2 migrations run at once"),
                    "{message}"
                );
                seen_queued.insert(i + 1);
            }
        }
        if objects.iter().all(|o| phase(o) == "Completed") {
            break;
        }
        assert!(Instant::now() < deadline, "not all completed: {:?}", objects.iter().map(phase).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
    assert!(most_working <= 2, "{most_working} migrations worked at once");
    assert!(most_busy <= 2, "the database saw {most_busy} tables worked at once");
    assert!(most_busy >= 1, "the sampling saw the work");
    assert!(seen_queued.len() >= N - 2, "the later ones showed Queued: {seen_queued:?}");
    // They started in creation order: the first two together (both found a
    // free slot before there was a line), then none before an older one
    // (startedAt has whole seconds).
    let started: Vec<jiff::Timestamp> = (1..=N)
        .map(|i| get(&api, &format!("q{i}"))["status"]["startedAt"].as_str().unwrap().parse().unwrap())
        .collect();
    for i in 2..N {
        let older = started[..i].iter().max().unwrap();
        assert!(started[i] >= *older, "q{} started before an older one: {started:?}", i + 1);
    }
    assert!(started[N - 1] > started[0], "not all at once: {started:?}");
    for (i, fingerprint) in before.iter().enumerate() {
        let o = get(&api, &format!("q{}", i + 1));
        assert_eq!(o["status"]["endpoint"], "127.0.0.1:5432");
        assert!(o["status"]["queued"].is_null(), "no longer queued");
        assert_eq!(&db.fingerprint(&format!("public.q{}", i + 1), "id").await, fingerprint);
    }
    // The slots are one Lease object anyone can list; once every engine
    // ended, no entry in it counts.
    let slots = api.get("coordination.k8s.io/v1", "leases", "identity-migrator", "idmig-slot-127.0.0.1-5432");
    assert!(slots.is_some_and(|s| s["metadata"]["labels"]["migrations.dsql.dev/lease"] == "slots"));
    let released = Instant::now() + Duration::from_secs(30);
    while !live_slot_holders(&api, "127.0.0.1-5432").is_empty() {
        assert!(Instant::now() < released, "slots still held: {:?}", live_slot_holders(&api, "127.0.0.1-5432"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events: Vec<String> = api.events_for(NS, "q6").into_iter().map(|(_, r, _)| r).collect();
    assert!(events.contains(&"Queued".to_string()), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_migration_keeps_its_shadow_in_step_while_the_window_is_closed() {
    let db = TestDb::new("fleet_window").await;
    PostTag::rows(5_000).create(&db).await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    // One replica with room for one: the waiting migration must not take it.
    let a = Operator::start_limited(&api, "pod-a", 1, 1);
    // A window that opens 40 s from now (the copy takes a second or two).
    let opens = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(40);
    let start = opens.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M:%S").to_string();
    let window = json!({"cutover": {"window": {"start": start, "duration": "1h", "timeZone": "UTC"}}});
    create_migration(&api, "post-tag", "post_tag", window).await;
    let waiting = wait_for(&api, "post-tag", 60, "waiting for the window", |o| {
        phase(o) == "AwaitingCutover" && ready_reason(o) == "AwaitingWindow"
    })
    .await;
    let resynced_before = waiting["status"]["verification"]["rowsResynced"].as_i64().unwrap_or(0);
    assert!(
        waiting["status"]["cutover"]["nextWindow"].as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
        "{waiting}"
    );

    // Writes while it waits: the shadow catches up without the window.
    db.client
        .batch_execute(
            "UPDATE post_tag SET tag_id = 'changed' WHERE id % 50 = 0;
             DELETE FROM post_tag WHERE id % 97 = 0;
             INSERT INTO post_tag (id, post_id, tag_id) SELECT 10000000 + g, 'late', 'x' FROM generate_series(1, 40) g;",
        )
        .await
        .unwrap();
    let source = db.fingerprint("public.post_tag", "id").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.fingerprint("public.post_tag_new", "id").await != source {
        assert!(Instant::now() < deadline, "the shadow never caught up while the window was closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pass saves its count once it has compared every chunk, a moment
    // after the rows it re-synced are in.
    let counted =
        |o: &serde_json::Value| o["status"]["verification"]["rowsResynced"].as_i64().unwrap_or(0) > resynced_before;
    let caught_up = wait_for(&api, "post-tag", 30, "the status to count the re-synced rows", counted).await;
    assert_eq!(phase(&caught_up), "AwaitingCutover", "caught up before the window, not in it");
    assert!(!db.exists("public", "post_tag_old").await, "no cut-over while the window is closed");

    // Another migration can run meanwhile: the waiting one holds no room.
    PostTag::rows(2_000).named("public", "other", "id").create(&db).await;
    let other_before = db.fingerprint("public.other", "id").await;
    create_migration(&api, "other", "other", json!({})).await;
    wait_for(&api, "other", 60, "the other migration Completed", |o| phase(o) == "Completed").await;
    assert_eq!(phase(&get(&api, "post-tag")), "AwaitingCutover");

    // The window opens: the cut-over follows by itself.
    let done = wait_for(&api, "post-tag", 90, "Completed", |o| phase(o) == "Completed").await;
    a.shutdown().await;
    let swapped_at: jiff::Timestamp = done["status"]["cutover"]["swappedAt"].as_str().unwrap().parse().unwrap();
    assert!(swapped_at >= opens - jiff::SignedDuration::from_secs(1), "cut over at {swapped_at}, window {opens}");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, source);
    assert_eq!(db.fingerprint("public.other", "id").await, other_before);
}

fn rows_copied(o: &Value) -> i64 {
    o["status"]["progress"]["rowsCopied"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_replicas_migration_resumes_once_its_lease_expires_within_one_reconcile() {
    let db = TestDb::new("fleet_failover").await;
    PostTag::rows(30_000).create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let a = Operator::start(&api, "pod-a");
    let spec = json!({"copy": {"parallelism": 1, "batchRows": 500, "maxRowsPerSecond": 3000}});
    create_migration(&api, "post-tag", "post_tag", spec).await;
    let copying = wait_for(&api, "post-tag", 60, "pod-a copying", |o| {
        phase(o) == "Copying" && rows_copied(o) > 0 && lease_holder(&api, o).as_deref() == Some("pod-a")
    })
    .await;
    let b = Operator::start(&api, "pod-b");
    a.crash().await;
    let at_crash = rows_copied(&get(&api, "post-tag"));
    // When the Lease lapses, from its own record: its last renewal plus its duration.
    let uid = copying["metadata"]["uid"].as_str().unwrap();
    let lease = api.get("coordination.k8s.io/v1", "leases", "identity-migrator", &format!("idmig-{uid}")).unwrap();
    let renewed: jiff::Timestamp = lease["spec"]["renewTime"].as_str().unwrap().parse().unwrap();
    let lasts = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap();
    let lapses = renewed + jiff::SignedDuration::from_secs(lasts);
    wait_for(&api, "post-tag", 60, "pod-b copying", |o| {
        rows_copied(o) > at_crash && lease_holder(&api, o).as_deref() == Some("pod-b")
    })
    .await;
    let after_lapse = jiff::Timestamp::now().duration_since(lapses);
    // One reconcile is LEASE_POLL (2 s); the rest is slack for a busy machine.
    // Without the takeover poll the next look would be the 15 s error requeue.
    assert!(after_lapse.as_secs_f64() < 8.0, "resumed {after_lapse:?} after the lease lapsed");
    wait_for(&api, "post-tag", 90, "Completed", |o| phase(o) == "Completed").await;
    b.shutdown().await;
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
}

/// The API server's load follows the running migrations: while pod-a runs a
/// migration and renews its Lease, pod-b (with room for it) writes nothing to
/// that Lease and reads it only from its one watch of the operator's Leases;
/// pod-a writes it about once per renewal interval.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_holder_writes_a_lease_while_it_renews_it() {
    let db = TestDb::new("fleet_lease_load").await;
    PostTag::rows(30_000).create(&db).await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let a = Operator::start(&api, "pod-a");
    let spec = json!({"copy": {"parallelism": 1, "batchRows": 500, "maxRowsPerSecond": 2000}});
    let created = create_migration(&api, "post-tag", "post_tag", spec).await;
    wait_for(&api, "post-tag", 60, "pod-a copying", |o| {
        phase(o) == "Copying" && lease_holder(&api, o).as_deref() == Some("pod-a")
    })
    .await;
    let b = Operator::start(&api, "pod-b");
    let lease = format!("/leases/idmig-{}", created.metadata.uid.clone().unwrap());
    let from = api.requests().len();
    let began = std::time::Instant::now();
    // Three renewal intervals (6 s Leases renewed 2 s before they lapse).
    wait_for(&api, "post-tag", 60, "twelve seconds of copying", |_| began.elapsed() >= Duration::from_secs(12)).await;
    let seconds = began.elapsed().as_secs_f64();
    let window: Vec<_> = api.requests().into_iter().skip(from).filter(|r| r.path.ends_with(&lease)).collect();
    b.shutdown().await;
    a.shutdown().await;
    let by_b = window.iter().filter(|r| r.body.to_string().contains("pod-b")).count();
    assert_eq!(by_b, 0, "pod-b contended for a renewed Lease: {window:#?}");
    let reads = window.iter().filter(|r| r.method == "GET").count();
    assert_eq!(reads, 0, "the Lease is read from the watch: {window:#?}");
    let writes = window.iter().filter(|r| r.method == "PATCH").count();
    assert!((1..=4).contains(&writes), "{writes} writes in {seconds:.1} s: {window:#?}");
}

//! Real `controller` processes over HTTP (issue 20): the line after a replica
//! dies while migrations are queued, slots that are given back, a failed
//! cut-over that waits for its approval again, and cut-overs that share a
//! window within the endpoint's limit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fake_api::FakeApi;
use crate::support::operator::{
    NS, condition, create_migration, create_url_secret, lease_holder, live_slot_holders, patch_spec, phase, wait_for,
};
use crate::support::processes::Replicas;
use crate::support::{PostTag, TestDb};

const LEASE_SECONDS: u64 = 6;
const ENDPOINT: &str = "127.0.0.1-5432";

/// The binary the replicas run: this build's, or `IDMIG_BIN` (to run these
/// tests against another build, e.g. an older one that had the defect).
fn bin() -> String {
    std::env::var("IDMIG_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_identity-migrator").to_string())
}

fn get(api: &FakeApi, name: &str) -> Value {
    api.get("migrations.dsql.dev/v1alpha1", "identitymigrations", NS, name).unwrap_or(Value::Null)
}

fn ready_reason(o: &Value) -> String {
    condition(o, "Ready").and_then(|c| c["reason"].as_str()).unwrap_or("").to_string()
}

async fn tables(db: &TestDb, prefix: &str, n: usize, rows: i64) -> Vec<(i64, String)> {
    let mut before = Vec::new();
    for i in 1..=n {
        PostTag::rows(rows).named("public", &format!("{prefix}{i}"), "id").create(db).await;
        before.push(db.fingerprint(&format!("public.{prefix}{i}"), "id").await);
    }
    before
}

/// Six migrations on one endpoint with the default limit of four, three
/// replicas, and the busiest one killed while two wait in line, against an
/// API server that answers some Lease writes late (so live replicas lose
/// Leases now and then): the line moves on, every migration completes, and no
/// slot stays held afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn the_line_moves_on_when_a_replica_dies_while_migrations_are_queued() {
    const N: usize = 6;
    let db = TestDb::new("proc_line").await;
    let api = FakeApi::new();
    // Every fifth Lease write answers later than a slot try used to wait
    // (500 ms) and than the renewal's slack (2 s): tries must wait for their
    // answer, and live replicas lose a Lease now and then.
    api.slow_lease_writes(5, Duration::from_millis(2_500));
    create_url_secret(&api, "db", &db.url).await;
    let before = tables(&db, "l", N, 6_000).await;
    // IDMIG_TEST_LOGS: a directory that keeps the replicas' logs.
    let logs = std::env::var("IDMIG_TEST_LOGS").ok().map(std::path::PathBuf::from);
    let mut replicas = Replicas::serve(&api, &bin(), logs).await;
    for name in ["pod-a", "pod-b", "pod-c"] {
        replicas.start(name, LEASE_SECONDS, &[("MAX_CONCURRENT_MIGRATIONS", "4")]);
    }
    let spec = json!({"copy": {"parallelism": 1, "batchRows": 500, "maxRowsPerSecond": 1500}});
    for i in 1..=N {
        create_migration(&api, &format!("l{i}"), &format!("l{i}"), spec.clone()).await;
    }
    // Wait for a line (some queued) while copies run; kill the replica that copies the most.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        let objects: Vec<Value> = (1..=N).map(|i| get(&api, &format!("l{i}"))).collect();
        let queued = objects.iter().filter(|o| ready_reason(o) == "Queued").count();
        let mut copying: BTreeMap<String, usize> = BTreeMap::new();
        for o in
            objects.iter().filter(|o| phase(o) == "Copying" && o["status"]["progress"]["rowsCopied"].as_i64() > Some(0))
        {
            if let Some(holder) = lease_holder(&api, o) {
                *copying.entry(holder).or_default() += 1;
            }
        }
        if queued >= 1
            && let Some((holder, _)) = copying.iter().max_by_key(|(_, n)| **n)
        {
            break holder.clone();
        }
        assert!(
            Instant::now() < deadline,
            "never a line with copies running: {:?}",
            objects.iter().map(phase).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    replicas.kill(&victim);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let objects: Vec<Value> = (1..=N).map(|i| get(&api, &format!("l{i}"))).collect();
        if objects.iter().all(|o| phase(o) == "Completed" && o["status"]["queued"].is_null()) {
            break;
        }
        if Instant::now() > deadline {
            // What the line looks like when it stalls, for the one who reads this.
            let line: Vec<String> = objects
                .iter()
                .map(|o| {
                    format!(
                        "{} {} {} lease={:?} error={}",
                        o["metadata"]["name"].as_str().unwrap_or("?"),
                        phase(o),
                        ready_reason(o),
                        lease_holder(&api, o),
                        o["status"]["lastError"]
                    )
                })
                .collect();
            let slots = api
                .get("coordination.k8s.io/v1", "leases", "identity-migrator", &format!("idmig-slot-{ENDPOINT}"))
                .map(|l| l["metadata"]["annotations"].to_string());
            let slots = [format!("slots: {slots:?}, live: {:?}", live_slot_holders(&api, ENDPOINT))];
            let logs: Vec<String> = ["pod-a", "pod-b", "pod-c"]
                .iter()
                .filter(|n| **n != victim)
                .map(|n| {
                    let log = replicas.log(n);
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    format!("--- {n} (killed: {victim})\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
                })
                .collect();
            panic!(
                "the line stalled after {victim} died:\n{}\n{}\n{}",
                line.join("\n"),
                slots.join("\n"),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No slot stays held for an engine that ended.
    let released = Instant::now() + Duration::from_secs(LEASE_SECONDS + 10);
    loop {
        let held = live_slot_holders(&api, ENDPOINT);
        if held.is_empty() {
            break;
        }
        assert!(Instant::now() < released, "slots still held after every migration completed: {held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replicas.stop_all();
    for i in 1..=N {
        assert_eq!(db.fingerprint(&format!("public.l{i}"), "id").await, before[i - 1], "l{i}");
    }
}

/// A failed cut-over on a real replica: withdrawing the approval holds it in
/// AwaitingCutover with the original table untouched; approving again completes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_cut_over_waits_for_its_approval_again_on_a_real_replica() {
    let db = TestDb::new("proc_approval").await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let before = tables(&db, "a", 1, 3_000).await;
    db.refuse_rename_in("a1_new").await;
    let mut replicas = Replicas::serve(&api, &bin(), None).await;
    replicas.start("pod-a", LEASE_SECONDS, &[]);
    create_migration(&api, "a1", "a1", json!({"cutover": {"approval": "Manual", "approved": true}})).await;
    wait_for(&api, "a1", 90, "a failed swap", |o| {
        phase(o) == "Failed" && o["status"]["lastError"]["phase"] == "Swapping"
    })
    .await;
    patch_spec(&api, "a1", json!({"cutover": {"approved": false}})).await;
    let held = wait_for(&api, "a1", 60, "AwaitingCutover", |o| phase(o) == "AwaitingCutover").await;
    assert_eq!(ready_reason(&held), "AwaitingApproval");
    assert!(db.exists("public", "a1").await && !db.exists("public", "a1_old").await, "the original has its name");
    db.exec("DROP EVENT TRIGGER refuse_rename_in").await;
    patch_spec(&api, "a1", json!({"cutover": {"approved": true}})).await;
    wait_for(&api, "a1", 90, "Completed", |o| phase(o) == "Completed").await;
    replicas.stop_all();
    assert_eq!(db.fingerprint("public.a1", "id").await, before[0]);
}

/// Verified migrations sharing a window that opens while they wait: their
/// cut-overs take the endpoint's slot (limit 1) one after another instead of
/// starting together.
#[tokio::test(flavor = "multi_thread")]
async fn cut_overs_that_share_a_window_keep_the_endpoint_limit() {
    const N: usize = 3;
    let db = TestDb::new("proc_window").await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let before = tables(&db, "w", N, 2_000).await;
    let mut replicas = Replicas::serve(&api, &bin(), None).await;
    for name in ["pod-a", "pod-b"] {
        replicas.start(name, LEASE_SECONDS, &[("MAX_CONCURRENT_PER_TARGET", "1"), ("WINDOW_RESYNC_SECONDS", "1")]);
    }
    // The window opens 40 s from now (UTC, to the second), long enough for all to verify.
    let opens = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(40);
    let start = opens.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M:%S").to_string();
    let spec = json!({"cutover": {"window": {"start": start, "duration": "1h", "timeZone": "UTC"}}});
    for i in 1..=N {
        create_migration(&api, &format!("w{i}"), &format!("w{i}"), spec.clone()).await;
    }
    for i in 1..=N {
        wait_for(&api, &format!("w{i}"), 40, "AwaitingWindow", |o| ready_reason(o) == "AwaitingWindow").await;
    }
    // From the window's opening on: how many cut over at once, and who waited in line.
    let mut most_swapping = 0;
    let mut queued_after_opening = BTreeSet::new();
    // Requests from here on came after the window opened (set at the first look past it).
    let mut opened_at_request = None;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let objects: Vec<Value> = (1..=N).map(|i| get(&api, &format!("w{i}"))).collect();
        most_swapping = most_swapping.max(objects.iter().filter(|o| phase(o) == "Swapping").count());
        if jiff::Timestamp::now() >= opens && opened_at_request.is_none() {
            opened_at_request = Some(api.requests().len());
        }
        for (i, o) in objects.iter().enumerate() {
            if jiff::Timestamp::now() >= opens && ready_reason(o) == "Queued" {
                queued_after_opening.insert(i + 1);
            }
        }
        if objects.iter().all(|o| phase(o) == "Completed") {
            break;
        }
        assert!(Instant::now() < deadline, "not all cut over: {:?}", objects.iter().map(phase).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replicas.stop_all();
    assert!(most_swapping <= 1, "{most_swapping} cut-overs at once with maxConcurrentPerTarget 1");
    // Every status write counts, not only what the polling happened to see.
    for r in &api.requests()[opened_at_request.unwrap_or(0)..] {
        let queued = r.body.as_array().and_then(|ops| ops.first()).is_some_and(|op| op["value"]["queued"].is_object());
        if r.path.ends_with("/status") && queued {
            queued_after_opening.insert(0);
        }
    }
    // The slot is held through each cut-over: their windows never overlap.
    // (Whether a loser of the race was ever seen queued depends on timing: on
    // a busy machine each window may end before the next engine looks.)
    // `windowOpenedAt` has whole seconds, and two windows of 40 ms fit in
    // one: the order of the status writes decides. Each engine writes
    // `windowOpenedAt` before it renames the table away and Completed after
    // the new table has the name, so the writes enclose its window.
    let requests = api.requests();
    let mut windows: Vec<(usize, usize, usize)> = (1..=N)
        .map(|i| {
            let path = format!("/w{i}/status");
            let writes: Vec<(usize, String)> = requests
                .iter()
                .enumerate()
                .filter(|(_, r)| r.path.ends_with(&path))
                .map(|(k, r)| (k, r.body.to_string()))
                .collect();
            let opened = writes.iter().find(|(_, b)| b.contains("windowOpenedAt")).expect("windowOpenedAt written").0;
            let closed =
                writes.iter().find(|(_, b)| b.contains("\"phase\":\"Completed\"")).expect("Completed written").0;
            (opened, closed, i)
        })
        .collect();
    windows.sort();
    for pair in windows.windows(2) {
        assert!(
            pair[1].0 > pair[0].1,
            "two cut-over windows overlap (request numbers opened, closed, migration): {pair:?} \
             (queued seen: {queued_after_opening:?})"
        );
    }
    for i in 1..=N {
        assert_eq!(db.fingerprint(&format!("public.w{i}"), "id").await, before[i - 1], "w{i}");
    }
}

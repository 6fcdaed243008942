//! The fleet benchmarks (`./scripts/bench --fleet`, ignored in the suite),
//! three `identity-migrator controller` processes served by the fake API
//! server over HTTP:
//! - [`fleet_bench`]: 24 migrations, one process killed mid-copy. Prints the
//!   total time, each replica's peak RSS, the status writes per second of each
//!   migration, and how long the killed replica's migrations took to resume.
//! - [`fleet_load`]: the requests the API server gets at 6, 24 and 96
//!   migrations, per replica and per running migration.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fake_api::FakeApi;
use crate::support::operator::{NS, create_migration, create_url_secret, lease_holder, phase};
use crate::support::processes::Replicas;
use crate::support::{PostTag, TestDb};

const MIGRATIONS: usize = 24;
const ROWS: i64 = 50_000;
const LEASE_SECONDS: u64 = 6;

fn get(api: &FakeApi, name: &str) -> Value {
    api.get("migrations.dsql.dev/v1alpha1", "identitymigrations", NS, name).unwrap_or(Value::Null)
}

fn copied(o: &Value) -> i64 {
    o["status"]["progress"]["rowsCopied"].as_i64().unwrap_or(0)
}

/// Peak resident memory of a live process, in MiB.
fn peak_rss_mib(child: &Child) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: ./scripts/bench --fleet"]
async fn fleet_bench() {
    let bin = std::env::var("IDMIG_BIN").expect("IDMIG_BIN: the identity-migrator binary to run as replicas");
    let db = TestDb::new("fleet_bench").await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    for i in 1..=MIGRATIONS {
        PostTag::rows(ROWS).named("public", &format!("f{i}"), "id").create(&db).await;
    }
    // IDMIG_BENCH_LOGS: a directory that keeps the replicas' logs.
    let logs = std::env::var("IDMIG_BENCH_LOGS").ok().map(std::path::PathBuf::from);
    let mut replicas = Replicas::serve(&api, &bin, logs).await;
    let names = ["pod-a", "pod-b", "pod-c"];
    // Room for all 24 on any replica: the resume measures the failover, not a
    // wait for room on the survivors (a replica contends for a Lease only
    // with room for the migration).
    for n in names {
        replicas.start(n, LEASE_SECONDS, &[("MAX_CONCURRENT_MIGRATIONS", "24"), ("MAX_CONCURRENT_PER_TARGET", "0")]);
    }

    let spec = json!({"copy": {"parallelism": 2, "maxRowsPerSecond": 5000}});
    let began = Instant::now();
    for i in 1..=MIGRATIONS {
        create_migration(&api, &format!("f{i}"), &format!("f{i}"), spec.clone()).await;
    }
    // Kill pod-a once it copies: its migrations resume elsewhere.
    let mut victims: BTreeMap<String, i64> = BTreeMap::new();
    while victims.is_empty() {
        for i in 1..=MIGRATIONS {
            let o = get(&api, &format!("f{i}"));
            if phase(&o) == "Copying" && copied(&o) > 0 && lease_holder(&api, &o).as_deref() == Some("pod-a") {
                victims.insert(format!("f{i}"), copied(&o));
            }
        }
        assert!(began.elapsed() < Duration::from_secs(120), "pod-a never copied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak_a = peak_rss_mib(replicas.child("pod-a"));
    replicas.kill("pod-a");
    let killed = Instant::now();
    // When each victim's Lease lapses, from its own record.
    let lapses: BTreeMap<String, jiff::Timestamp> = victims
        .keys()
        .map(|name| {
            let o = get(&api, name);
            let uid = o["metadata"]["uid"].as_str().unwrap();
            let lease =
                api.get("coordination.k8s.io/v1", "leases", "identity-migrator", &format!("idmig-{uid}")).unwrap();
            let renewed: jiff::Timestamp = lease["spec"]["renewTime"].as_str().unwrap().parse().unwrap();
            let lasts = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap();
            (name.clone(), renewed + jiff::SignedDuration::from_secs(lasts))
        })
        .collect();
    let mut after_lapse: Vec<f64> = Vec::new();
    println!("  killed pod-a at {} while it copied {:?}", jiff::Timestamp::now(), victims.keys().collect::<Vec<_>>());
    let mut resumed: BTreeMap<String, Duration> = BTreeMap::new();
    let mut finished: BTreeMap<String, Duration> = BTreeMap::new();
    while finished.len() < MIGRATIONS {
        for i in 1..=MIGRATIONS {
            let name = format!("f{i}");
            let o = get(&api, &name);
            if let Some(&at_kill) = victims.get(&name)
                && !resumed.contains_key(&name)
                && (copied(&o) > at_kill || phase(&o) != "Copying")
                && lease_holder(&api, &o).is_some_and(|h| h != "pod-a")
            {
                resumed.insert(name.clone(), killed.elapsed());
                after_lapse.push(jiff::Timestamp::now().duration_since(lapses[&name]).as_secs_f64());
            }
            if phase(&o) == "Completed" && !finished.contains_key(&name) {
                finished.insert(name, began.elapsed());
            }
        }
        assert!(began.elapsed() < Duration::from_secs(900), "not done: {} of {MIGRATIONS}", finished.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = began.elapsed();
    let peaks: Vec<f64> =
        std::iter::once(peak_a).chain(names[1..].iter().map(|n| peak_rss_mib(replicas.child(n)))).collect();
    replicas.stop_all();

    // Status writes per second of each migration, over its own run.
    let requests = api.requests();
    let mut rates = Vec::new();
    for i in 1..=MIGRATIONS {
        let name = format!("f{i}");
        let o = get(&api, &name);
        let writes = requests
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/identitymigrations/{name}/status")))
            .count();
        let at = |k: &str| o["status"][k].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
        let seconds = at("completedAt").duration_since(at("startedAt")).as_secs_f64().max(1.0);
        rates.push(writes as f64 / seconds);
    }
    rates.sort_by(f64::total_cmp);
    let started: Vec<usize> = names.iter().map(|n| replicas.log(n).matches("starting the engine").count()).collect();
    let worst_resume = resumed.values().max().copied().unwrap_or_default();
    println!("fleet: {MIGRATIONS} migrations x {ROWS} rows over 3 replicas (room for 24 each), pod-a killed mid-copy");
    println!("  total time: {:.1} s", total.as_secs_f64());
    for ((name, peak), started) in names.iter().zip(&peaks).zip(&started) {
        println!("  {name}: peak RSS {peak:.1} MiB, {started} engines started");
    }
    println!(
        "  status writes per second per migration: min {:.2}, median {:.2}, max {:.2}",
        rates[0],
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
    let worst_after_lapse = after_lapse.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "  the killed replica's {} migrations copied again: slowest {:.1} s after the kill, {:.1} s after its Lease \
         lapsed ({LEASE_SECONDS} s Lease; one reconcile is 2 s)",
        resumed.len(),
        worst_resume.as_secs_f64(),
        worst_after_lapse
    );
    assert_eq!(resumed.len(), victims.len(), "every migration of the killed replica resumed");
}

/// What the API server carries against the migrations that run: 6, 24 and 96
/// migrations over three replicas with room for 8 each (so at most 24 run),
/// each copy paced to last through the measurement. Requests are counted
/// over a window once the first engines run.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: ./scripts/bench --fleet"]
async fn fleet_load() {
    let bin = std::env::var("IDMIG_BIN").expect("IDMIG_BIN: the identity-migrator binary to run as replicas");
    println!("API load: three replicas, room for 8 each, {LEASE_SECONDS} s Leases; requests over {WINDOW:?}");
    println!(
        "| endpoint limit | migrations | running | requests/s | per replica | Lease requests/s | Lease per running | status writes/s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    // The default a user gets (4 at once against one endpoint, so most wait
    // in line), then no limit (24 run).
    let mut limits: Vec<(&str, Option<&str>, usize)> = vec![("default (4)", None, 4), ("none", Some("0"), 24)];
    if let Ok(only) = std::env::var("IDMIG_BENCH_LIMITS") {
        limits.retain(|l| l.0.starts_with(only.as_str()));
    }
    for (count, (label, per_target, runs)) in limits.iter().flat_map(|l| counts().into_iter().map(move |c| (c, *l))) {
        let db = TestDb::new(&format!("fleet_load_{count}")).await;
        let api = FakeApi::new();
        create_url_secret(&api, "db", &db.url).await;
        for i in 1..=count {
            PostTag::rows(LOAD_ROWS).named("public", &format!("f{i}"), "id").create(&db).await;
        }
        let mut replicas = Replicas::serve(&api, &bin, None).await;
        for n in ["pod-a", "pod-b", "pod-c"] {
            let mut env = vec![("MAX_CONCURRENT_MIGRATIONS", "8")];
            env.extend(per_target.map(|p| ("MAX_CONCURRENT_PER_TARGET", p)));
            replicas.start(n, LEASE_SECONDS, &env);
        }
        let spec = json!({"copy": {"parallelism": 1, "maxRowsPerSecond": LOAD_PACE}});
        for i in 1..=count {
            create_migration(&api, &format!("f{i}"), &format!("f{i}"), spec.clone()).await;
        }
        let expected = count.min(runs);
        let began = Instant::now();
        while running(&api, count) < expected {
            assert!(began.elapsed() < Duration::from_secs(120), "only {} of {expected} run", running(&api, count));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The line settles first: with an endpoint limit every migration runs
        // or shows its place (without one, those waiting for room show nothing).
        while per_target.is_none()
            && !(1..=count).all(|i| {
                let o = get(&api, &format!("f{i}"));
                o["status"]["queued"].is_object()
                    || matches!(phase(&o), "Validating" | "CreatingTarget" | "Copying" | "Verifying" | "Swapping")
            })
        {
            assert!(began.elapsed() < Duration::from_secs(180), "the line never settled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = api.requests().len();
        let start = Instant::now();
        let mut samples = Vec::new();
        while start.elapsed() < WINDOW {
            samples.push(running(&api, count));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let seconds = start.elapsed().as_secs_f64();
        let window: Vec<_> = api.requests().into_iter().skip(before).collect();
        replicas.stop_all();
        let mean_running = samples.iter().sum::<usize>() as f64 / samples.len() as f64;
        let leases = window.iter().filter(|r| r.path.contains("/leases")).count() as f64 / seconds;
        let status =
            window.iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/status")).count() as f64 / seconds;
        let total = window.len() as f64 / seconds;
        if std::env::var_os("IDMIG_BENCH_BREAKDOWN").is_some() {
            let mut by: BTreeMap<String, usize> = BTreeMap::new();
            for r in window.iter().filter(|r| r.path.contains("/leases") || r.path.ends_with("/status")) {
                let what = if r.path.contains("idmig-slot") {
                    "slots"
                } else if r.path.ends_with("/status") {
                    "status"
                } else if r.path.ends_with("/leases") {
                    "list/watch"
                } else {
                    "migration"
                };
                *by.entry(format!("{} {what}", r.method)).or_default() += 1;
            }
            println!("  requests by kind: {by:?}");
        }
        let holders = crate::support::operator::live_slot_holders(&api, "127.0.0.1-5432");
        assert!(holders.len() <= runs, "the endpoint limit was exceeded: {holders:?}");
        println!(
            "| {label} | {count} | {mean_running:.1} | {total:.1} | {:.1} | {leases:.2} | {:.3} | {status:.1} |",
            total / 3.0,
            leases / mean_running.max(1.0)
        );
    }
}

/// 6, 24 and 96, or those in `IDMIG_BENCH_COUNTS` (`96` or `6,24`).
fn counts() -> Vec<usize> {
    std::env::var("IDMIG_BENCH_COUNTS")
        .ok()
        .map(|c| c.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![6, 24, 96])
}

const LOAD_ROWS: i64 = 40_000;
const LOAD_PACE: i64 = 1_000;
const WINDOW: Duration = Duration::from_secs(20);

/// Migrations whose engine works now: an engine started, not finished.
fn running(api: &FakeApi, count: usize) -> usize {
    (1..=count)
        .map(|i| get(api, &format!("f{i}")))
        .filter(|o| matches!(phase(o), "Validating" | "CreatingTarget" | "Copying" | "Verifying" | "Swapping"))
        .count()
}

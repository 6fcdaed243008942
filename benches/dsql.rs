//! The copy through the DSQL stand-in at several network latencies
//! (`./scripts/bench --dsql` prepares the table and runs this): for each
//! latency and parallelism, the copy phase's wall time, round trips and
//! statements per batch, and the bound a protocol of that many round trips
//! per batch cannot beat: batches × round trips per batch × latency ÷
//! parallelism, plus the same copy's time at 0 ms.
//!
//! Every round trip is the stand-in's message group (a simple query, or
//! extended-protocol messages up to Sync), delayed by `--latency-ms` from its
//! arrival, as a network would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use dsql_sim::jobs::BuildPace;
use dsql_sim::{Config, Credentials, Sim, Stats};
use serde_json::Value;
use tokio_postgres::NoTls;

const KEY_ID: &str = "AKIDBENCH0000000TEST";
const SECRET: &str = "bench-secret-key-for-the-stand-in-only";

struct Args {
    url: String,
    bin: PathBuf,
    latencies: Vec<u64>,
    parallelism: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        url: "postgres://postgres@127.0.0.1:5432/idmig_bench".into(),
        bin: PathBuf::from("target/release/identity-migrator"),
        latencies: vec![0, 2, 10],
        parallelism: vec![4],
    };
    let mut it = std::env::args().skip(1);
    let list = |v: Option<String>| -> Vec<String> { v.expect("a list").split(',').map(str::to_string).collect() };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--url" => a.url = it.next().expect("--url URL"),
            "--bin" => a.bin = it.next().expect("--bin PATH").into(),
            "--latencies" => a.latencies = list(it.next()).iter().map(|l| l.parse().unwrap()).collect(),
            "--parallelism" => a.parallelism = list(it.next()).iter().map(|p| p.parse().unwrap()).collect(),
            _ => {} // cargo passes --bench
        }
    }
    a
}

/// What the stand-in counted at one moment.
#[derive(Clone, Copy, Default)]
struct Counts {
    round_trips: u64,
    statements: u64,
    at: Option<Instant>,
}

fn counts(sim: &Sim) -> Counts {
    Counts {
        round_trips: Stats::get(&sim.stats().round_trips),
        statements: sim.executed_total(),
        at: Some(Instant::now()),
    }
}

/// One measured copy.
struct Copy {
    latency_ms: u64,
    parallelism: usize,
    batches: u64,
    rows: i64,
    seconds: f64,
    round_trips: u64,
    statements: u64,
}

/// Puts the original table back, and empties the stand-in's job table.
async fn reset(url: &str) {
    let (db, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    support::put_back_post_tag(&db, "").await;
    // The stand-in's job table, once it has made it.
    let _ = db.batch_execute("TRUNCATE sys.jobs").await;
}

fn manifest(dir: &Path, endpoint: &str, parallelism: usize) -> PathBuf {
    let path = dir.join(format!("dsql-p{parallelism}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: migrations.dsql.dev/v1alpha1\nkind: IdentityMigration\nmetadata: {{name: bench}}\nspec:\n  \
             target: {{dsql: {{endpoint: \"{endpoint}\", region: us-east-1, user: admin}}}}\n  table: post_tag\n  \
             strategy: Copy\n  copy: {{parallelism: {parallelism}}}\n"
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(state_path(&path));
    path
}

fn state_path(manifest: &Path) -> PathBuf {
    manifest.with_file_name(format!("{}.state.json", manifest.file_name().unwrap().to_string_lossy()))
}

fn phase(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_path(manifest)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["status"]["phase"].as_str().map(str::to_string)
}

async fn copy(args: &Args, dir: &Path, latency_ms: u64, parallelism: usize) -> Copy {
    reset(&args.url).await;
    let mut config =
        Config::new(args.url.clone(), Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() });
    config.latency = Duration::from_millis(latency_ms);
    config.builds = BuildPace::After(Duration::ZERO);
    let sim = Arc::new(Sim::start(config).await.expect("start dsql-sim"));
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, sim.ca_pem()).unwrap();
    let m = manifest(dir, &sim.endpoint(), parallelism);

    // The copy phase: from Copying to Verifying, as the state file says.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (sim, m, done) = (sim.clone(), m.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut start, mut end) = (None, None);
            while !done.load(Ordering::SeqCst) && end.is_none() {
                match phase(&m).as_deref() {
                    Some("Copying") if start.is_none() => start = Some(counts(&sim)),
                    Some("Verifying" | "AwaitingCutover" | "Swapping" | "Completed") if start.is_some() => {
                        end = Some(counts(&sim))
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (start.unwrap_or_default(), end.unwrap_or_default())
        })
    };
    let mut cmd = Command::new(&args.bin);
    cmd.args(["run", "-f"]).arg(&m).arg("--ca-file").arg(&ca);
    cmd.env("NO_PROGRESS", "1")
        .env("RUST_LOG", "error")
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the engine")).await.unwrap();
    done.store(true, Ordering::SeqCst);
    let (start, end) = watcher.join().unwrap();
    assert!(out.status.success(), "the engine failed: {}", String::from_utf8_lossy(&out.stderr));
    let st: Value = serde_json::from_str(&std::fs::read_to_string(state_path(&m)).unwrap()).unwrap();
    let progress = &st["status"]["progress"];
    let seconds = match (start.at, end.at) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    Copy {
        latency_ms,
        parallelism,
        batches: progress["batches"].as_u64().unwrap_or(0).max(1),
        rows: progress["rowsCopied"].as_i64().unwrap_or(0),
        seconds,
        round_trips: end.round_trips - start.round_trips,
        statements: end.statements - start.statements,
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = args();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "| latency | parallelism | batches | round trips / batch | statements / batch | copy phase | bound | ratio |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &parallelism in &args.parallelism {
        let mut zero: Option<f64> = None;
        for &latency in &args.latencies {
            let c = copy(&args, dir.path(), latency, parallelism).await;
            let per_batch = c.round_trips as f64 / c.batches as f64;
            let base = *zero.get_or_insert(if latency == 0 { c.seconds } else { 0.0 });
            let bound = c.batches as f64 * per_batch * (latency as f64 / 1000.0) / parallelism as f64 + base;
            println!(
                "| {} ms | {} | {} | {:.2} | {:.2} | {:.2} s | {:.2} s | {:.2} |",
                c.latency_ms,
                c.parallelism,
                c.batches,
                per_batch,
                c.statements as f64 / c.batches as f64,
                c.seconds,
                bound,
                c.seconds / bound
            );
            eprintln!("({} rows copied)", c.rows);
        }
    }
}

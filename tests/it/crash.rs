//! Crash and resume: the process is killed with SIGKILL at every phase
//! boundary, inside the copy and inside the cut-over window, then run again.
//! The result must equal an uninterrupted run: no row lost, duplicated or
//! changed, and at most one batch per worker redone per crash.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::stand_in::Through;
use crate::support::{PostTag, TestDb, binary, text};

const ROWS: i64 = 12_000;
const BATCH: i64 = 500;
const WORKERS: i64 = 3;

/// Migrates a fresh seed table, killed at `point`, then resumed; checks the
/// result. Straight on PostgreSQL, then through the DSQL stand-in.
async fn crash_and_resume(point: &str) {
    for via in Through::each("crash").await {
        crash_and_resume_through(point, &via).await;
    }
}

async fn crash_and_resume_through(point: &str, via: &Through) {
    // Verification on PostgreSQL is the change capture's catch-up (armed
    // before the copy); through the stand-in, checksums of every range.
    let point = match (point, via) {
        ("verification", Through::Postgres(_)) => "capture-taken:1",
        ("verification", Through::StandIn(_)) => "verify-chunk:1",
        (point, _) => point,
    };
    let db = via.db();
    let point = &format!("{point} ({})", via.name());
    let crash_at = point.split(' ').next().unwrap();
    let t = PostTag::rows(ROWS);
    t.create(db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let max_id = db.scalar_i64("SELECT max(id) FROM post_tag").await;
    db.install_dsql_harness(0).await;
    let m = via.manifest(&t, &format!("  copy: {{batchRows: {BATCH}, parallelism: {WORKERS}}}\n"));

    let out = via.run(&m, &[("IDENTITY_MIGRATOR_CRASH_AT", crash_at)]);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: the process must die at the crash point; output:\n{}",
        text(&out)
    );

    let out = via.run(&m, &[]);
    assert!(out.status.success(), "{point}: resume failed:\n{}", text(&out));
    assert!(text(&out).contains("resuming from"), "{point}: {}", text(&out));
    assert_result(db, point, &before, max_id).await;
    let redone = db.harness_counter("rows_written").await - ROWS;
    assert!(redone <= WORKERS * BATCH, "{point}: {redone} rows written twice, more than one batch per worker");
    let status = m.status();
    assert_eq!(status["phase"], "Completed", "{point}");
    let recopied = status["progress"]["rowsRecopied"].as_i64().unwrap();
    assert!(recopied <= WORKERS * BATCH, "{point}: {recopied} rows copied again, more than one batch per worker");
}

async fn assert_result(db: &TestDb, point: &str, before: &(i64, String), max_id: i64) {
    assert_eq!(&db.fingerprint("public.post_tag", "id").await, before, "{point}: rows differ from the original");
    assert_eq!(&db.fingerprint("public.post_tag_old", "id").await, before, "{point}: the old table changed");
    assert!(!db.exists("public", "post_tag_new").await, "{point}: the shadow name is left over");
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "d", "{point}");
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert!(id > max_id, "{point}: generated {id}, highest id {max_id}");
    assert_eq!(db.harness_counter("violations").await, 0, "{point}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_each_phase_boundary() {
    for point in [
        "enter-Validating",
        "enter-CreatingTarget",
        "enter-Copying",
        "enter-Verifying",
        "enter-Swapping",
        "enter-Completed",
    ] {
        crash_and_resume(point).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_the_copy() {
    for point in ["copy-batch:1", "copy-batch:9", "copy-batch:23", "index-built"] {
        crash_and_resume(point).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_inside_verification_and_the_cutover_window() {
    for point in ["verification", "swap-renamed-out", "swap-identity-restarted", "swap-renamed-in"] {
        crash_and_resume(point).await;
    }
}

/// Kills the running process from outside, three times while it copies (the
/// copy is throttled so that the kills land in it), then lets it finish.
#[tokio::test(flavor = "multi_thread")]
async fn killed_from_outside_several_times_while_copying() {
    for via in Through::each("kill9").await {
        killed_from_outside_through(&via).await;
    }
}

async fn killed_from_outside_through(via: &Through) {
    let rows = 30_000;
    let db = via.db();
    let t = PostTag::rows(rows);
    t.create(db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let max_id = db.scalar_i64("SELECT max(id) FROM post_tag").await;
    db.install_dsql_harness(0).await;
    let m =
        via.manifest(&t, &format!("  copy: {{batchRows: {BATCH}, parallelism: {WORKERS}, maxRowsPerSecond: 15000}}\n"));
    let (args, env) = via.run_args(&m);
    let mut kills = 0;
    for threshold in [4_000, 11_000, 19_000] {
        let mut child = Command::new(binary())
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_PROGRESS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let copied = if db.exists("public", "post_tag_new").await {
                db.scalar_i64("SELECT count(*) FROM post_tag_new").await
            } else {
                0
            };
            if copied >= threshold {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "the run ended before reaching {threshold} rows");
            assert!(Instant::now() < deadline, "no progress past {copied} rows");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9));
        kills += 1;
        let copied = db.scalar_i64("SELECT count(*) FROM post_tag_new").await;
        assert!(copied < rows, "killed after the copy finished ({copied} rows); the kill must land mid-copy");
    }
    let out = via.run(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_result(db, &format!("kill -9 ({})", via.name()), &before, max_id).await;
    let redone = db.harness_counter("rows_written").await - rows;
    assert!(redone <= kills * WORKERS * BATCH, "{redone} rows written twice over {kills} kills");
    let progress = &m.status()["progress"];
    assert_eq!(progress["rowsCopied"].as_i64(), Some(rows), "progress counts every row once: {progress}");
    let recopied = progress["rowsRecopied"].as_i64().unwrap();
    assert!(recopied <= kills * WORKERS * BATCH, "{recopied} rows copied again over {kills} kills");
}

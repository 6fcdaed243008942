//! The retry policy under fire: the engine's connections are terminated from
//! the server side again and again during a migration, and OCC failures are
//! injected on top; the migration still completes with every row intact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use crate::support::{Manifest, PostTag, TestDb, connect, run_migration, text};

#[tokio::test(flavor = "multi_thread")]
async fn terminated_connections_and_occ_conflicts_are_retried_to_a_correct_result() {
    let db = TestDb::new("retry").await;
    let rows = 24_000;
    let t = PostTag::rows(rows);
    t.create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let max_id = db.scalar_i64("SELECT max(id) FROM post_tag").await;
    db.install_dsql_harness(7).await;
    // Throttled so that the run lasts long enough to be hit many times.
    let m = Manifest::for_table(&t, "  copy: {batchRows: 400, parallelism: 3, maxRowsPerSecond: 12000}\n");

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicI64::new(0));
    let killer = {
        let (stop, killed, url) = (stop.clone(), killed.clone(), db.url.clone());
        tokio::spawn(async move {
            let client = connect(&url).await;
            // Twenty rounds that hit the engine: longer than the whole run on
            // an idle machine (about 3 s). On a busy one a cut-over's steps
            // cannot all fit between two kills 250 ms apart, and the engine
            // rightly stops each time it loses its claim; without an end to
            // the kills the test measured the machine's speed, not the engine.
            let mut rounds = 0;
            while !stop.load(Ordering::SeqCst) && rounds < 20 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let row = client
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE application_name = 'identity-migrator' AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap();
                let hit = row.get::<_, i64>(0);
                killed.fetch_add(hit, Ordering::SeqCst);
                rounds += i32::from(hit > 0);
            }
        })
    };
    let url = db.url.clone();
    let (out, m) = tokio::task::spawn_blocking(move || (run_migration(&m, &url, &[], &[]), m)).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    killer.await.unwrap();

    assert!(out.status.success(), "{}", text(&out));
    let killed = killed.load(Ordering::SeqCst);
    assert!(killed >= 5, "only {killed} connections were terminated; the test must hit the engine");
    assert!(db.harness_counter("occ_injected").await > 0);
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(db.fingerprint("public.post_tag_old", "id").await, before);
    // The test's own insert does not retry: the harness's conflicts are for the engine.
    db.inject_conflicts_every(0).await;
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert!(id > max_id);
    assert_eq!(db.harness_counter("violations").await, 0);
    let retries = m.status()["retries"].as_i64().unwrap();
    assert!(retries >= killed.min(5), "retries are counted in status ({retries} for {killed} kills)");
}

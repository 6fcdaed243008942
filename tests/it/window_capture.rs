//! The cut-over window on PostgreSQL re-syncs only the rows written since
//! the last pass, as a trigger noted them (issue 34), instead of re-reading
//! the renamed table: writes made in the last moment before the window
//! (deletes among them) all arrive, and nothing of the capture stays.

use std::time::{Duration, Instant};

use crate::support::writer::{Writer, read_table};
use crate::support::{Manifest, PostTag, TestDb, connect, run_cli, text};

/// Polls the saved status until `check` holds.
async fn until_status(m: &Manifest, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = std::fs::read_to_string(m.state_path())
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["status"].clone());
        if status.as_ref().is_some_and(&check) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_in_the_last_moment_before_the_window_arrive_by_the_capture_alone() {
    let db = TestDb::new("window_capture").await;
    let t = PostTag::rows(20_000);
    t.create(&db).await;
    let m = Manifest::for_table(&t, "");
    // A report holds the table open: after its last pass the engine waits
    // for it, the table still live, before it renames anything.
    let report = connect(&db.url).await;
    report
        .batch_execute("SET application_name = 'report'; BEGIN; LOCK TABLE post_tag IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let run = {
        let (path, url) = (m.path.to_str().unwrap().to_string(), db.url.clone());
        tokio::task::spawn_blocking(move || {
            run_cli(&["run", "-f", &path, "--database-url", &url], &[("RUST_LOG", "info")])
        })
    };
    until_status(&m, "the engine to wait for the report", |s| {
        s["cutover"]["blockedBy"].as_array().is_some_and(|b| !b.is_empty())
    })
    .await;
    let before = read_table(&db.client).await;

    // The last moment: inserts, updates and deletes after the last pass.
    let mut writer = Writer::new(&db.url, 34).await;
    for _ in 0..120 {
        writer.step().await;
    }
    assert!(writer.stats.deletes > 5 && writer.stats.updates > 5, "{:?}", writer.stats);
    report.batch_execute("COMMIT").await.unwrap();
    let out = run.await.unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");

    let after = read_table(&db.client).await;
    assert_eq!(after.len(), writer.ledger.len());
    let differing: Vec<_> = writer.ledger.iter().filter(|(id, row)| after.get(id) != Some(row)).take(5).collect();
    assert!(differing.is_empty(), "rows not as written: {differing:?}");
    let ids: std::collections::BTreeSet<_> = writer.ledger.keys().chain(before.keys()).collect();
    let touched = ids.into_iter().filter(|id| before.get(id) != writer.ledger.get(id)).count();
    assert!(touched > 0);

    // The window re-synced the written rows, by the capture, not the table.
    assert!(said.contains("change capture armed"), "{said}");
    assert!(said.contains("re-synced the rows written since the last pass"), "{said}");
    let status = m.status();
    let in_window = status["cutover"]["rowsInWindow"].as_i64().unwrap();
    assert!(
        in_window as usize >= touched && in_window <= 120,
        "{in_window} rows in the window, {touched} touched: {:?}",
        writer.stats
    );

    // Nothing of the capture stays: no trigger, no function, no log.
    let left = db
        .scalar_i64(
            "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'idmig_capture%') \
             + (SELECT count(*) FROM pg_proc WHERE proname LIKE '%\\_log\\_fn') \
             + (SELECT count(*) FROM pg_class WHERE relname LIKE 'post\\_tag%\\_log')",
        )
        .await;
    assert_eq!(left, 0, "capture objects left behind");
}

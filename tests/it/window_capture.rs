//! The cut-over window on PostgreSQL re-syncs only the rows written since
//! the last pass, as a trigger noted them (issue 34), instead of re-reading
//! the renamed table: writes made in the last moment before the window
//! (deletes among them) all arrive, and nothing of the capture stays.

use crate::support::writer::{Writer, read_table};
use crate::support::{Manifest, PostTag, TestDb, connect, run_cli, text, until_state};

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
    until_state(&m.state_path(), "the engine to wait for the report", |s| {
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
    assert_eq!(capture_objects(&db).await, 0, "capture objects left behind");
}

/// How many of the capture's objects are in the database.
async fn capture_objects(db: &TestDb) -> i64 {
    db.scalar_i64(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'idmig_capture%') \
         + (SELECT count(*) FROM pg_proc WHERE proname LIKE '%\\_log\\_fn') \
         + (SELECT count(*) FROM pg_attribute WHERE attname = 'idmig_noted_id')",
    )
    .await
}

/// Writes do not pay for the capture while the cut-over waits for approval:
/// the engine takes it off when it stops there, and arms it again to cut over.
#[tokio::test(flavor = "multi_thread")]
async fn the_capture_is_off_while_the_cut_over_waits_for_approval() {
    let db = TestDb::new("window_capture_wait").await;
    let t = PostTag::rows(5_000);
    t.create(&db).await;
    let waiting = Manifest::for_table(&t, "  cutover: {approval: Manual}\n");
    let out = crate::support::run_migration(&waiting, &db.url, &[], &[("RUST_LOG", "info")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(waiting.status()["phase"], "AwaitingCutover");
    assert!(text(&out).contains("change capture armed"), "armed for the verification: {}", text(&out));
    assert_eq!(capture_objects(&db).await, 0, "the capture stays on while nobody cuts over");

    let spec =
        std::fs::read_to_string(&waiting.path).unwrap().replace("approval: Manual", "approval: Manual, approved: true");
    std::fs::write(&waiting.path, spec).unwrap();
    let out = crate::support::run_migration(&waiting, &db.url, &[], &[("RUST_LOG", "info")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(waiting.status()["phase"], "Completed");
    assert!(text(&out).contains("re-synced the rows written since the last pass"), "{}", text(&out));
    assert_eq!(capture_objects(&db).await, 0);
}

/// On DSQL (no triggers) and without a change tracking column the window
/// re-reads every row: its length is estimated from the table's size before
/// anything starts, in the plan and the status, and a long one is a Warning
/// naming the column that would make it short.
#[tokio::test(flavor = "multi_thread")]
async fn dsql_a_long_window_is_said_before_it_starts_with_the_column_that_shortens_it() {
    let s = crate::support::stand_in::StandIn::start("window_estimate", |_| {}).await;
    // The statistics say 20M rows (DSQL plans by them); autovacuum must not
    // count the real ones meanwhile.
    let table = |name: &str| PostTag::rows(2_000).named("public", name, "id");
    for t in [table("post_tag"), table("tracked")] {
        t.create(&s.db).await;
        s.db.exec(&format!(
            "ALTER TABLE {q} ADD COLUMN updated_at timestamptz DEFAULT now();
             ALTER TABLE {q} SET (autovacuum_enabled = false);
             UPDATE pg_class SET reltuples = 20000000 WHERE oid = '{q}'::regclass;",
            q = t.qualified()
        ))
        .await;
    }
    let m = s.manifest(&table("post_tag"), "  strategy: Copy\n");
    let out = s.run(&m, &[], &[]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let estimate = m.status()["plan"]["windowEstimateMillis"].as_i64().unwrap();
    assert_eq!(estimate, 22_000, "20M rows re-read at 1.1 s a million with 4 workers");
    assert!(said.contains("the cut-over window will keep the table renamed away for about 22.0 s"), "{said}");
    assert!(said.contains("set spec.copy.changeTrackingColumn: updated_at"), "{said}");

    // With the column, the window follows the writes: no estimate, no warning.
    let tracked = s.manifest(&table("tracked"), "  strategy: Copy\n  copy: {changeTrackingColumn: updated_at}\n");
    let out = s.run(&tracked, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(tracked.status()["plan"]["windowEstimateMillis"].is_null());
    assert!(!text(&out).contains("renamed away for about"), "{}", text(&out));
}

//! Migrating a table that is being written to: a writer inserts, updates and
//! deletes for the whole migration (retrying through the cut-over window) and
//! keeps a ledger; at the end the table equals the ledger exactly.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::stand_in::{Through, run_owned};
use crate::support::writer::{Writer, read_table};
use crate::support::{PostTag, TestDb, text};

/// The writer wrote enough, also without ids after the cut-over, and the
/// table holds exactly what its ledger says.
pub(crate) async fn assert_table_matches_ledger(db: &TestDb, writer: &Writer) {
    let table = read_table(&db.client).await;
    let stats = &writer.stats;
    assert!(
        stats.inserts_with_id > 50 && stats.updates > 50 && stats.deletes > 20,
        "the writer must have written: {stats:?}"
    );
    assert!(stats.inserts_without_id > 0, "inserts without id after the cut-over: {stats:?}");
    let missing: Vec<_> = writer.ledger.keys().filter(|id| !table.contains_key(id)).take(5).collect();
    let extra: Vec<_> = table.keys().filter(|id| !writer.ledger.contains_key(id)).take(5).collect();
    let changed: Vec<_> =
        writer.ledger.iter().filter(|(id, row)| table.get(id).is_some_and(|r| r != *row)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && changed.is_empty(),
        "lost {missing:?}, resurrected {extra:?}, changed {changed:?} ({stats:?})"
    );
    assert_eq!(table.len(), writer.ledger.len());
}

/// Runs the migration (several runs when crash points are given) while the
/// writer writes; returns the final status.
async fn migrate_under_writes(name: &str, spec: &str, crash_at: &[&str]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for via in Through::each(name).await {
        last = migrate_under_writes_through(&via, spec, crash_at).await;
    }
    last
}

async fn migrate_under_writes_through(via: &Through, spec: &str, crash_at: &[&str]) -> serde_json::Value {
    let db = via.db();
    let t = PostTag::rows(30_000);
    t.create(db).await;
    db.install_dsql_harness(9).await;
    let m = via.manifest(&t, spec);
    let (args, env) = via.run_args(&m);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(Writer::new(&db.url, 7).await.run_until(stop.clone(), 200));
    for point in crash_at {
        let (args, mut env) = (args.clone(), env.clone());
        env.push(("IDENTITY_MIGRATOR_CRASH_AT".into(), point.to_string()));
        let out = tokio::task::spawn_blocking(move || run_owned(args, env)).await.unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point} ({}): {}", via.name(), text(&out));
    }
    let out = tokio::task::spawn_blocking(move || run_owned(args, env)).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let writer = writer.await.unwrap();
    assert!(out.status.success(), "{}: {}", via.name(), text(&out));

    assert_table_matches_ledger(db, &writer).await;
    assert_eq!(db.harness_counter("violations").await, 0);
    let status = m.status();
    assert_eq!(status["phase"], "Completed");
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn no_write_is_lost_duplicated_or_changed_under_a_live_writer() {
    let status =
        migrate_under_writes("live", "  copy: {parallelism: 3, batchRows: 500, maxRowsPerSecond: 12000}\n", &[]).await;
    assert!(status["cutover"]["windowMillis"].as_i64().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_twice_with_a_live_writer_once_inside_the_window() {
    migrate_under_writes(
        "live_kill",
        "  copy: {parallelism: 3, batchRows: 500, maxRowsPerSecond: 12000}\n",
        &["copy-batch:12", "swap-renamed-out"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn change_tracking_copies_only_changed_rows_in_the_window() {
    let status = migrate_under_writes(
        "live_tracked",
        "  copy: {parallelism: 3, batchRows: 500, maxRowsPerSecond: 12000, changeTrackingColumn: created_at}\n",
        &[],
    )
    .await;
    // The window copied changed rows, not every row.
    let in_window = status["cutover"]["rowsInWindow"].as_i64().unwrap();
    assert!(in_window < 30_000, "{in_window} rows copied in the window");
}

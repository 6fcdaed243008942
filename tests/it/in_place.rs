//! The identity added in place, where the server accepts it: with a live
//! writer, behind a lock another session holds, across a crash right after
//! the change, and falling back to the copy where the server refuses it.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::live::assert_table_matches_ledger;
use crate::support::writer::Writer;
use crate::support::{Manifest, PostTag, TestDb, connect, run_migration, text};

#[tokio::test(flavor = "multi_thread")]
async fn in_place_with_a_live_writer_loses_nothing() {
    let db = TestDb::new("in_place_live").await;
    let t = PostTag::rows(30_000);
    t.create(&db).await;
    // The writer works before the change (ids of its own) and through it.
    let mut writer = Writer::new(&db.url, 11).await;
    for _ in 0..300 {
        writer.step().await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writer.run_until(stop.clone(), 300));
    // An insert that chose its id from the application's counter before the
    // change and waited on the lock lands after it: in place there is no
    // window that refuses it, so the identity starts above the counter's
    // range (what startAfter is for; the README says so).
    let m = Manifest::for_table(&t, "  strategy: Auto\n  identity: {startAfter: 60000000}\n");
    let url = db.url.clone();
    let (out, m) = tokio::task::spawn_blocking(move || (run_migration(&m, &url, &[], &[]), m)).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let writer = writer.await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_table_matches_ledger(&db, &writer).await;
    let status = m.status();
    assert_eq!(status["strategy"]["taken"], "InPlace", "{status}");
    assert!(status["cutover"]["windowMillis"].as_i64().is_some(), "the lock's length is reported");
    assert_eq!(status["progress"]["rowsCopied"], 0, "nothing was copied: {status}");
    assert!(!db.exists("public", "post_tag_new").await && !db.exists("public", "post_tag_old").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_place_keeps_the_table_and_replaces_a_serial_default() {
    let db = TestDb::new("in_place").await;
    db.exec(
        "CREATE TABLE orders (id serial PRIMARY KEY, note text);
         INSERT INTO orders (note) SELECT 'n' || g FROM generate_series(1, 5000) g;
         INSERT INTO orders (id, note) VALUES (90000, 'far');
         CREATE VIEW recent AS SELECT * FROM orders WHERE id > 4000;
         COMMENT ON TABLE orders IS 'kept';",
    )
    .await;
    let oid = db.scalar_i64("SELECT 'orders'::regclass::oid::bigint").await;
    let before = db.fingerprint("public.orders", "id").await;
    let m = Manifest::new("public", "orders", "id", "  strategy: InPlace\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["strategy"]["taken"], "InPlace");
    assert_eq!(status["identity"]["replacedDefault"], "nextval('orders_id_seq'::regclass)", "{status}");
    assert_eq!(db.scalar_i64("SELECT 'orders'::regclass::oid::bigint").await, oid, "the same table, not a copy");
    assert_eq!(db.fingerprint("public.orders", "id").await, before);
    assert_eq!(db.identity_of("public", "orders", "id").await.0, "d");
    assert!(db.exists("public", "orders_id_seq").await, "the old sequence is kept, never dropped");
    let id = db.scalar_i64("INSERT INTO orders (note) VALUES ('new') RETURNING id::bigint").await;
    assert_eq!(id, 90_001);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM recent").await, 1_002, "the view works on, unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_elsewhere_is_waited_out_without_queueing_behind_it() {
    let db = TestDb::new("in_place_lock").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let holder = connect(&db.url).await;
    holder
        .batch_execute("SET application_name = 'report'; BEGIN; LOCK TABLE post_tag IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let m = Manifest::for_table(&t, "  strategy: Auto\n");
    let state = m.state_path();
    let url = db.url.clone();
    let run = tokio::task::spawn_blocking(move || (run_migration(&m, &url, &[], &[]), m));
    // The engine sees the session idle in its transaction and waits, saying
    // so, instead of queueing every reader and writer behind its own lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(std::time::Instant::now() < deadline, "the engine never reported the blocker");
        // Read while the engine may be rewriting it: a torn read is tried again.
        let saved: serde_json::Value =
            std::fs::read_to_string(&state).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        if let Some(who) = saved["status"]["cutover"]["blockedBy"][0].as_str() {
            assert!(who.contains("report") && who.contains("idle in a transaction"), "{who}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'identity-migrator' AND wait_event_type = 'Lock'";
    assert_eq!(db.scalar_i64(queued).await, 0, "nobody queues behind the engine");
    holder.batch_execute("COMMIT").await.unwrap();
    let (out, m) = run.await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["strategy"]["taken"], "InPlace");
    assert!(status["cutover"]["blockedBy"].is_null(), "cleared once unblocked: {status}");
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "d");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_right_after_the_change_resumes_to_completed() {
    let db = TestDb::new("in_place_crash").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let max_id = db.scalar_i64("SELECT max(id) FROM post_tag").await;
    let m = Manifest::for_table(&t, "  strategy: Auto\n  identity: {generation: Always}\n");
    let out = run_migration(&m, &db.url, &[], &[("IDENTITY_MIGRATOR_CRASH_AT", "in-place-added")]);
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "a", "the change committed before the crash");

    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["phase"], "Completed");
    assert!(status["identity"]["nextValue"].as_i64().unwrap() > max_id, "{status}");
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert!(id > max_id);
}

/// A server that refuses `ADD GENERATED` the way DSQL did in February 2026.
async fn refuse_add_identity(db: &TestDb) {
    db.exec(
        "CREATE FUNCTION refuse_add_identity() RETURNS event_trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF current_query() ILIKE '%ADD GENERATED%' THEN
             RAISE EXCEPTION 'unsupported ALTER TABLE ALTER COLUMN ... ADD IDENTITY statement' USING ERRCODE = '0A000';
           END IF;
         END $$;
         CREATE EVENT TRIGGER refuse_add_identity ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
           EXECUTE FUNCTION refuse_add_identity();",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_add_identity_falls_back_to_the_copy_or_fails_when_in_place_is_demanded() {
    let db = TestDb::new("in_place_refused").await;
    let t = PostTag::rows(3_000);
    t.create(&db).await;
    refuse_add_identity(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;

    let demanded = Manifest::for_table(&t, "  strategy: InPlace\n");
    let out = run_migration(&demanded, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("spec.strategy: InPlace: the server refused ADD IDENTITY"), "{}", text(&out));
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before, "a refusal changes nothing");

    let auto = Manifest::for_table(&t, "  strategy: Auto\n");
    let out = run_migration(&auto, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = auto.status();
    assert_eq!(status["strategy"]["taken"], "Copy");
    assert!(status["strategy"]["reason"].as_str().unwrap().starts_with("server refused ADD IDENTITY"), "{status}");
    assert!(text(&out).contains("copying instead") || text(&out).contains("Strategy"), "{}", text(&out));
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(db.fingerprint("public.post_tag_old", "id").await, before, "the copy ran: the old table is kept");
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "d");
}

#[tokio::test(flavor = "multi_thread")]
async fn strategy_copy_still_builds_a_new_table() {
    let db = TestDb::new("in_place_copy").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let m = Manifest::for_table(&t, "  strategy: Copy\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["strategy"]["taken"], "Copy");
    assert!(db.exists("public", "post_tag_old").await);
    assert_eq!(m.status()["progress"]["rowsCopied"], 2_000);
}

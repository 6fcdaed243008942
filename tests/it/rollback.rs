//! Rollback of a completed migration, and rolling forward again.

use crate::support::stand_in::Through;
use crate::support::{Manifest, PostTag, TestDb, run_migration, text};

fn set_spec(m: &Manifest, base: &str, extra: &str) {
    std::fs::write(&m.path, format!("{base}{extra}")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_brings_back_the_old_table_with_new_rows_and_rolling_forward_works() {
    for via in Through::each("rollback").await {
        rollback_and_forward(&via).await;
    }
}

/// The test's own writes, as the application's: the harness's conflicts are
/// for the engine (which commit they hit depends on how many the engine
/// made), so they pause for these writes, which do not retry.
async fn application_writes(via: &Through, sql: &str) {
    let db = via.db();
    db.inject_conflicts_every(0).await;
    db.exec(sql).await;
    db.inject_conflicts_every(occ_every(via)).await;
}

fn occ_every(via: &Through) -> i32 {
    if matches!(via, Through::Postgres(_)) { 5 } else { 0 }
}

async fn rollback_and_forward(via: &Through) {
    let db = via.db();
    let t = PostTag::rows(6_000).id_type("INTEGER").jump(1_000);
    t.create(db).await;
    // The stand-in's conflicts hit only its clients; the harness's are
    // paused for this test's own writes (`application_writes`).
    db.install_dsql_harness(occ_every(via)).await;
    let m = via.manifest(&t, "");
    let base = std::fs::read_to_string(&m.path).unwrap();
    let out = via.run(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // The application writes to the new table: generated ids, updates, deletes.
    application_writes(
        via,
        "INSERT INTO post_tag (post_id, tag_id) SELECT 'after-cutover', 'new' FROM generate_series(1, 50);
         UPDATE post_tag SET tag_id = 'changed' WHERE id % 97 = 0;
         DELETE FROM post_tag WHERE id % 89 = 0;",
    )
    .await;
    let new_rows = db.fingerprint("public.post_tag", "id").await;

    set_spec(&m, &base, "  rollback: true\n");
    let out = via.run(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Rolled back"), "{}", text(&out));
    assert_eq!(m.status()["phase"], "RolledBack");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, new_rows, "the old table got every write");
    assert_eq!(db.identity_of("public", "post_tag_new", "id").await.0, "d", "the new table waits aside");
    let old_type = db.scalar_i64("SELECT count(*) FROM pg_attribute WHERE attrelid = 'post_tag'::regclass AND attname = 'id' AND atttypid = 'int4'::regtype AND attidentity = ''").await;
    assert_eq!(old_type, 1, "post_tag is the original table again (integer id, no identity)");
    assert!(!db.exists("public", "post_tag_old").await);
    assert_eq!(db.harness_counter("violations").await, 0);

    // Running again changes nothing.
    let out = via.run(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));

    // Back on the old table the application gives ids itself.
    application_writes(via, "INSERT INTO post_tag (id, post_id, tag_id) VALUES (2000000, 'rolled-back', 'old')").await;
    let old_rows = db.fingerprint("public.post_tag", "id").await;

    set_spec(&m, &base, "  rollback: false\n");
    let out = via.run(&m, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["phase"], "Completed");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, old_rows, "rolled forward with every row");
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('forward', 'again') RETURNING id").await;
    assert_eq!(id, 2_000_001, "the identity moved past the rows written while rolled back");
    assert_eq!(db.harness_counter("violations").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_is_refused_without_an_old_table_or_before_completion() {
    let db = TestDb::new("rollback_refused").await;
    let t = PostTag::rows(1_000);
    t.create(&db).await;
    // Unfinished: refused, nothing changed.
    let m = Manifest::for_table(&t, "  rollback: true\n");
    let catalog = db.catalog_snapshot().await;
    let out = run_migration(&m, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("spec.rollback: applies only to a completed migration"), "{}", text(&out));
    assert_eq!(db.catalog_snapshot().await, catalog);

    // The old table was dropped at completion: nothing to roll back to.
    let m = Manifest::for_table(&t, "  oldTable: {retain: false}\n");
    let base = std::fs::read_to_string(&m.path).unwrap();
    assert!(run_migration(&m, &db.url, &[], &[]).status.success());
    set_spec(&m, &base, "  rollback: true\n");
    let before = db.fingerprint("public.post_tag", "id").await;
    let out = run_migration(&m, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("oldTable.retain: false"), "{}", text(&out));
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
}

/// A rolled-back table whose id defaults to a sequence takes inserts again:
/// the rows copied back carry ids the identity generated, and the sequence
/// is moved past them instead of handing them out again (23505).
#[tokio::test(flavor = "multi_thread")]
async fn after_a_rollback_the_old_default_sequence_is_past_every_copied_id() {
    let db = TestDb::new("rollback_sequence").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    db.exec(
        "CREATE SEQUENCE post_tag_id_seq OWNED BY post_tag.id;
         SELECT setval('post_tag_id_seq', (SELECT max(id) FROM post_tag));
         ALTER TABLE post_tag ALTER COLUMN id SET DEFAULT nextval('post_tag_id_seq');",
    )
    .await;
    let m = Manifest::for_table(&t, "");
    let base = std::fs::read_to_string(&m.path).unwrap();
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    db.exec("INSERT INTO post_tag (post_id, tag_id) SELECT 'new', 'n' FROM generate_series(1, 20)").await;
    let highest = db.scalar_i64("SELECT max(id) FROM post_tag").await;

    set_spec(&m, &base, "  rollback: true\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["phase"], "RolledBack");
    // The application's inserts on the old table use its default again.
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('rolled-back', 'x') RETURNING id").await;
    assert!(id > highest, "the old sequence gave {id}, not above the copied ids (up to {highest})");
}

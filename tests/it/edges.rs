//! The edges of a migration that a green run must not hide: crashes around
//! the drop of the old table and inside a rollback, `generation: Always` after
//! a rollback, quoting under either string setting, row data kept out of
//! errors, and checksums that see case-only changes.

use std::os::unix::process::ExitStatusExt;

use identity_migrator::api::Generation;
use identity_migrator::db::{DbError, Dialect};
use identity_migrator::engine::plan::quote::literal;
use identity_migrator::engine::plan::shape::TableName;
use identity_migrator::engine::plan::sql::RowStatements;
use identity_migrator::engine::steps::change_tracking::{CLOCK_MARGIN_SECONDS, TrackedStatements};

use crate::support::{Manifest, PostTag, TestDb, connect, run_migration, text};

fn set_spec(m: &Manifest, base: &str, extra: &str) {
    std::fs::write(&m.path, format!("{base}{extra}")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_old_table_is_dropped_resumes_to_completed() {
    let db = TestDb::new("edge_drop").await;
    let t = PostTag::rows(3_000);
    t.create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let m = Manifest::for_table(&t, "  oldTable: {retain: false}\n");
    let out = run_migration(&m, &db.url, &[], &[("IDENTITY_MIGRATOR_CRASH_AT", "swap-old-dropped")]);
    assert_eq!(out.status.signal(), Some(9), "must die after the drop:\n{}", text(&out));
    assert!(!db.exists("public", "post_tag_old").await, "the crash came after the drop");

    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "resume must not demand the dropped original:\n{}", text(&out));
    assert_eq!(m.status()["phase"], "Completed");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "d");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_inside_the_rollback_window_gives_the_table_its_name_back() {
    let db = TestDb::new("edge_rollback_error").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let m = Manifest::for_table(&t, "");
    let base = std::fs::read_to_string(&m.path).unwrap();
    assert!(run_migration(&m, &db.url, &[], &[]).status.success());
    set_spec(&m, &base, "  rollback: true\n");
    let out = run_migration(&m, &db.url, &[], &[("IDENTITY_MIGRATOR_CRASH_AT", "rollback-renamed-out")]);
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    assert!(!db.exists("public", "post_tag").await, "the crash left the rollback window open");
    // A row the window must copy, and a copy into the old table that fails.
    db.exec("INSERT INTO post_tag_new (post_id, tag_id) VALUES ('late', 'write')").await;
    db.exec(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON post_tag_old FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await;
    let out = run_migration(&m, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(db.exists("public", "post_tag").await, "the table name is never left empty:\n{}", text(&out));
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "d", "the new table has the name again");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM post_tag").await, 2_001);
}

#[tokio::test(flavor = "multi_thread")]
async fn asking_for_a_rollback_while_a_crashed_swap_is_in_its_window_puts_the_table_back() {
    let db = TestDb::new("edge_rollback_window").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let m = Manifest::for_table(&t, "");
    let base = std::fs::read_to_string(&m.path).unwrap();
    let out = run_migration(&m, &db.url, &[], &[("IDENTITY_MIGRATOR_CRASH_AT", "swap-renamed-out")]);
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    assert!(!db.exists("public", "post_tag").await, "the crash left the window open");

    set_spec(&m, &base, "  rollback: true\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "the rollback is refused: {}", text(&out));
    assert!(db.exists("public", "post_tag").await, "but the original has its name back:\n{}", text(&out));
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_always_rolls_forward_after_a_rollback() {
    let db = TestDb::new("edge_always").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let m = Manifest::for_table(&t, "  identity: {generation: Always}\n");
    let base = std::fs::read_to_string(&m.path).unwrap();
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "a");

    set_spec(&m, &base, "  rollback: true\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Rows written while rolled back reach the GENERATED ALWAYS table on the way forward.
    db.exec("INSERT INTO post_tag (id, post_id, tag_id) VALUES (9000000, 'while', 'back')").await;
    db.exec("UPDATE post_tag SET tag_id = 'changed' WHERE id % 7 = 0").await;
    let rows = db.fingerprint("public.post_tag", "id").await;

    set_spec(&m, &base, "  rollback: false\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "roll forward into a GENERATED ALWAYS table:\n{}", text(&out));
    assert_eq!(db.fingerprint("public.post_tag", "id").await, rows);
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "a");
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert!(id > 9_000_000, "{id}");
}

#[tokio::test(flavor = "multi_thread")]
async fn literals_read_back_unchanged_under_either_string_setting() {
    let db = TestDb::new("edge_literal").await;
    for setting in ["on", "off"] {
        db.exec(&format!("SET standard_conforming_strings = {setting}; SET escape_string_warning = off")).await;
        for value in ["it's", "a\\'); SELECT 1; --", "\\", "\\\\'x"] {
            let rows = db.client.simple_query(&format!("SELECT {}", literal(value))).await.unwrap();
            let got = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            });
            assert_eq!(got.as_deref(), Some(value), "standard_conforming_strings = {setting}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_keep_the_constraint_and_drop_the_row_data() {
    let db = TestDb::new("edge_detail").await;
    db.exec("CREATE TABLE users (id bigint PRIMARY KEY, email text CONSTRAINT users_email_key UNIQUE)").await;
    db.exec("INSERT INTO users VALUES (1, 'alice@example.com')").await;
    let err = db.client.batch_execute("INSERT INTO users VALUES (2, 'alice@example.com')").await.unwrap_err();
    assert!(err.as_db_error().unwrap().detail().unwrap().contains("alice@example.com"), "the server said it");
    let message = DbError::from_pg("copy batch", &err).to_string();
    assert!(!message.contains("alice"), "{message}");
    assert!(message.contains("23505") && message.contains("users_email_key"), "{message}");

    let err = db.client.batch_execute("SELECT '4111 1111 1111 1111'::bigint").await.unwrap_err();
    let message = DbError::from_pg("copy batch", &err).to_string();
    assert!(!message.contains("4111"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn checksums_see_case_only_changes_under_a_nondeterministic_collation() {
    let db = TestDb::new("edge_collation").await;
    db.exec(
        "CREATE COLLATION case_blind (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE people (id bigint PRIMARY KEY, name text COLLATE case_blind NOT NULL);
         INSERT INTO people VALUES (1, 'Alice'), (2, 'Bob');",
    )
    .await;
    let table = TableName::new("public", "people");
    let shape =
        identity_migrator::engine::steps::catalog::read_shape(&db.client, &table).await.unwrap().expect("the table");
    let s = RowStatements::new(&table, &table, "id", &shape, Dialect::Postgres, Generation::ByDefault);
    let sql = s.source_summary.as_str();
    let before: String = db.client.query_one(sql, &[&0i64, &10i64]).await.unwrap().get(1);
    db.exec("UPDATE people SET name = 'alice' WHERE id = 1").await;
    let after: String = db.client.query_one(sql, &[&0i64, &10i64]).await.unwrap().get(1);
    assert_ne!(after, before, "'Alice' became 'alice': the chunk must differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_change_tracking_mark_never_passes_an_open_transaction() {
    let db = TestDb::new("edge_mark").await;
    let t = PostTag::rows(100);
    t.create(&db).await;
    // A writer stamps a row with its transaction's start and stays open
    // longer than the clock margin: it commits after any pass that starts now.
    let writer = connect(&db.url).await;
    writer.batch_execute("BEGIN; UPDATE post_tag SET created_at = now() WHERE id = 13").await.unwrap();
    let stamped: String = writer.query_one("SELECT now()::timestamp::text", &[]).await.unwrap().get(0);
    let older = format!(
        "SELECT clock_timestamp()::timestamp - '{stamped}'::timestamp > interval '{} seconds'",
        CLOCK_MARGIN_SECONDS + 1
    );
    while !db.client.query_one(&older, &[]).await.unwrap().get::<_, bool>(0) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let table = TableName::new("public", "post_tag");
    let shape = identity_migrator::engine::steps::catalog::read_shape(&db.client, &table).await.unwrap().unwrap();
    let tracked =
        TrackedStatements::new(&table, &table, "id", &shape, "created_at", Generation::ByDefault, Dialect::Postgres);
    let mark: String = db.client.query_one(&tracked.mark, &[]).await.unwrap().get(0);
    let covered: bool = db
        .client
        .query_one("SELECT $1::text::timestamp <= $2::text::timestamp", &[&mark, &stamped])
        .await
        .unwrap()
        .get(0);
    assert!(covered, "the mark {mark} is after the open transaction's stamp {stamped}: its row would be lost");
    writer.batch_execute("COMMIT").await.unwrap();
}

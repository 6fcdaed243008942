//! The seed article's migration, end to end through `identity-migrator run`,
//! under the DSQL-strict harness.

use crate::support::{Manifest, PostTag, TestDb, q, run_migration, text};

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_table_moves_onto_an_identity_column_under_dsql_rules_with_occ_failures() {
    let db = TestDb::new("seed").await;
    let t = PostTag::rows(40_000);
    t.create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let max_id = db.scalar_i64("SELECT max(id) FROM post_tag").await;
    // One commit in five fails with OC000, as DSQL reports write conflicts.
    db.install_dsql_harness(5).await;

    let m = Manifest::for_table(&t, "  identity: {cache: 65536, startAfter: 100}\n  copy: {parallelism: 3}\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Completed"), "{}", text(&out));

    // Every row kept its id and its values; the original rows stay in post_tag_old.
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(db.fingerprint("public.post_tag_old", "id").await, before);
    // The identity: BY DEFAULT, CACHE 65536, bigint, and it starts above every id.
    assert_eq!(db.identity_of("public", "post_tag", "id").await, ("d".into(), 65536, "bigint".into()));
    // The test's own insert is not the engine's: no conflict is injected into it.
    db.inject_conflicts_every(0).await;
    let new_id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert!(new_id > max_id, "generated {new_id}, highest id was {max_id}");
    // The secondary index came along.
    let indexes = db.scalar_i64("SELECT count(*) FROM pg_index WHERE indrelid = 'post_tag'::regclass").await;
    assert_eq!(indexes, 2, "primary key and the post_id index");

    // The harness saw OCC failures injected and retried, and no broken rule.
    assert!(db.harness_counter("occ_injected").await > 0, "the OCC injection must have fired");
    assert_eq!(db.harness_counter("violations").await, 0, "no transaction broke a DSQL rule");
    let widest = db.scalar_i64("SELECT max(mutated_rows)::bigint FROM dsql_harness.txn_log").await;
    assert!(widest <= 3000, "a transaction mutated {widest} rows counting index rows");

    let status = m.status();
    assert_eq!(status["phase"], "Completed");
    assert!(status["retries"].as_i64().unwrap() > 0, "OCC failures are counted as retries");
    assert_eq!(status["identity"]["nextValue"].as_i64().unwrap(), max_id + 1);
    assert_eq!(status["verification"]["sourceRows"].as_i64().unwrap(), 40_000);
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
}

#[tokio::test(flavor = "multi_thread")]
async fn always_generation_start_after_and_dropping_the_old_table() {
    let db = TestDb::new("always").await;
    let t = PostTag::rows(5_000);
    t.create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    db.install_dsql_harness(0).await;
    let m = Manifest::for_table(
        &t,
        "  identity: {generation: Always, cache: 1, startAfter: 1200000}\n  oldTable: {retain: false}\n",
    );
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));

    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    assert!(!db.exists("public", "post_tag_old").await, "retain: false drops the old table");
    assert_eq!(db.identity_of("public", "post_tag", "id").await, ("a".into(), 1, "bigint".into()));
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert_eq!(id, 1_200_001, "startAfter is above every id here");
    let explicit = db.client.execute("INSERT INTO post_tag (id, post_id, tag_id) VALUES (7, 'p', 't')", &[]).await;
    assert!(explicit.is_err(), "GENERATED ALWAYS refuses explicit ids");
    assert_eq!(db.harness_counter("violations").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn integer_and_smallint_ids_are_widened_to_bigint() {
    for ty in ["INTEGER", "SMALLINT"] {
        let db = TestDb::new("narrow").await;
        let t = PostTag::rows(3_000).id_type(ty).jump(1_000);
        t.create(&db).await;
        let before = db.fingerprint("public.post_tag", "id").await;
        let m = Manifest::for_table(&t, "");
        let out = run_migration(&m, &db.url, &[], &[]);
        assert!(out.status.success(), "{ty}: {}", text(&out));
        assert_eq!(db.fingerprint("public.post_tag", "id").await, before, "{ty}");
        assert_eq!(db.identity_of("public", "post_tag", "id").await.2, "bigint", "{ty}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identifiers_with_case_spaces_quotes_and_semicolons_are_quoted_everywhere() {
    let db = TestDb::new("idents").await;
    db.exec("CREATE TABLE canary (x int); INSERT INTO canary VALUES (1)").await;
    let t = PostTag::rows(2_000).named("My Schema", "Post \"Tag\"; DROP TABLE canary; --", "Id Col");
    t.create(&db).await;
    let before = db.fingerprint(&t.qualified(), &q(&t.id)).await;
    db.install_dsql_harness(0).await;
    let m = Manifest::for_table(&t, "  oldTable: {name: \"old'; DROP TABLE canary; --\"}\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.fingerprint(&t.qualified(), &q(&t.id)).await, before);
    assert!(db.exists("My Schema", "old'; DROP TABLE canary; --").await);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM canary").await, 1, "nothing was injected");
    assert_eq!(db.identity_of("My Schema", &t.table, "Id Col").await.0, "d");
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_approval_waits_in_awaiting_cutover_until_approved() {
    let db = TestDb::new("manual").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let m = Manifest::for_table(&t, "  cutover: {approval: Manual}\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("waiting for approval"), "{}", text(&out));
    assert_eq!(m.status()["phase"], "AwaitingCutover");
    assert!(db.exists("public", "post_tag_new").await && !db.exists("public", "post_tag_old").await);
    assert_eq!(db.identity_of("public", "post_tag_new", "id").await.0, "d", "the shadow is ready");

    // Rows written while waiting are caught up at the cut-over.
    db.exec(
        "INSERT INTO post_tag (id, post_id, tag_id) VALUES (999999, 'late', 'row'); DELETE FROM post_tag WHERE id = 13",
    )
    .await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let out = run_migration(&m, &db.url, &["--approve-cutover"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["phase"], "Completed");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    let id = db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert_eq!(id, 1_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_cut_over_window_holds_the_swap_and_an_open_one_lets_it_through() {
    let db = TestDb::new("window").await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    // A window that opened an hour and a half ago for an hour: closed now,
    // opening again tomorrow at the same time.
    let start = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC) - jiff::SignedDuration::from_mins(90);
    let hhmm = start.strftime("%H:%M").to_string();
    let closed = format!("  cutover: {{window: {{start: \"{hhmm}\", duration: 1h, timeZone: UTC}}}}\n");
    let m = Manifest::for_table(&t, &closed);
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("waiting for the cut-over window"), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["phase"], "AwaitingCutover");
    let opens: jiff::Timestamp = status["cutover"]["nextWindow"].as_str().unwrap().parse().unwrap();
    let wait = opens.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((21 * 3600..=23 * 3600).contains(&wait), "opens in {wait} s");
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["reason"], "AwaitingWindow", "{ready}");
    assert!(!db.exists("public", "post_tag_old").await, "no cut-over outside the window");

    // The same migration with a window open now cuts over.
    let open = format!("  cutover: {{window: {{start: \"{hhmm}\", duration: 2h, timeZone: UTC}}}}\n");
    let base = std::fs::read_to_string(&m.path).unwrap();
    std::fs::write(&m.path, base.replace(&closed, &open)).unwrap();
    let before = db.fingerprint("public.post_tag", "id").await;
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["phase"], "Completed");
    assert!(status["cutover"]["nextWindow"].is_null(), "{status}");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
}

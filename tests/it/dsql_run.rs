//! Migrations through the DSQL stand-in with the `dsql` dialect: every
//! statement of the DSQL plan executed, not only linted.

use std::process::Stdio;
use std::time::Duration;

use dsql_sim::BuildPace;

use std::collections::BTreeSet;

use dsql_sim::sql::Statement;

use crate::support::stand_in::StandIn;
use crate::support::{Manifest, PostTag, TestDb, run_cli, text};

/// The seed table with a second, unique secondary index.
async fn seed_with_two_indexes(s: &StandIn, rows: i64) -> PostTag {
    let t = PostTag::rows(rows);
    t.create(&s.db).await;
    s.db.exec("CREATE UNIQUE INDEX post_tag_pair ON post_tag (post_id, tag_id, created_at)").await;
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_table_migrates_through_the_stand_in_with_two_indexes_and_conflicts() {
    let s = StandIn::start("sim_seed", |c| c.conflict_fraction = 0.2).await;
    let t = seed_with_two_indexes(&s, 20_000).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let max_id = s.db.scalar_i64("SELECT max(id) FROM post_tag").await;

    let m = s.manifest(&t, "  identity: {cache: 65536}\n  copy: {parallelism: 2}\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));

    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(s.db.identity_of("public", "post_tag", "id").await, ("d".into(), 65536, "bigint".into()));
    let defs = s.db.scalar_i64(
        "SELECT count(*) FROM pg_index i WHERE i.indrelid = 'post_tag'::regclass AND i.indisvalid AND NOT i.indisprimary",
    ).await;
    assert_eq!(defs, 2, "both secondary indexes built and valid");
    let unique = s.db.scalar_i64(
        "SELECT count(*) FROM pg_index i WHERE i.indrelid = 'post_tag'::regclass AND i.indisunique AND NOT i.indisprimary",
    ).await;
    assert_eq!(unique, 1, "the unique index stays unique");
    let jobs = s.db.scalar_i64("SELECT count(*) FROM sys.jobs WHERE status = 'completed'").await;
    assert_eq!(jobs, 2, "one async build job per secondary index");
    let status = m.status();
    assert_eq!(status["identity"]["nextValue"].as_i64().unwrap(), max_id + 1);
    assert!(
        dsql_sim::Stats::get(&s.sim.stats().conflicts) > 0,
        "conflicts were injected and retried: {:?}\n{}",
        s.sim.stats(),
        text(&out)
    );
    assert!(status["retries"].as_i64().unwrap() > 0);
    assert_eq!(dsql_sim::Stats::get(&s.sim.stats().row_limit_errors), 0, "no transaction passed 3,000 rows");
    let done = s.sim.executed();
    for kind in ["CREATE INDEX ASYNC", "CALL", "CREATE TABLE", "ALTER TABLE ... RENAME", "ALTER TABLE ... RESTART"] {
        assert!(done.contains(kind), "{kind} not executed: {done:?}");
    }
}

fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    dsql_sim::Stats::get(counter)
}

async fn valid_secondary_indexes(s: &StandIn) -> i64 {
    s.db.scalar_i64(
        "SELECT count(*) FROM pg_index i WHERE i.indrelid = 'post_tag'::regclass AND i.indisvalid AND NOT i.indisprimary",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_longer_than_one_wait_is_waited_for_again_and_a_lost_reply_is_found() {
    let s = StandIn::start("sim_waits", |c| {
        c.builds = BuildPace::After(Duration::from_millis(1500));
        c.wait_for_job = Duration::from_millis(200);
    })
    .await;
    let t = seed_with_two_indexes(&s, 3_000).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    // The reply to the first CREATE INDEX ASYNC is lost after its commit.
    s.sim.lose_reply("CREATE INDEX ASYNC");
    let m = s.manifest(&t, "");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(stat(&s.sim.stats().lost_replies), 1);
    assert_eq!(valid_secondary_indexes(&s).await, 2);
    // The retry found the index of the lost reply (42P07) instead of building it twice.
    let jobs = s.db.scalar_i64("SELECT count(*) FROM sys.jobs").await;
    assert_eq!(jobs, 2, "one build per index");
    // Each wait of 200 ms answered false while the build ran: waited again.
    let calls = s.sim.count("CALL");
    assert!(calls > 2, "{calls} waits for builds of 1.5 s each");
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_in_both_forms_and_a_row_limit_below_the_plan_are_absorbed() {
    let s = StandIn::start("sim_limits", |c| {
        c.conflict_fraction = 0.3;
        c.limits.rows_per_transaction = 1000;
    })
    .await;
    let t = seed_with_two_indexes(&s, 6_000).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let m = s.manifest(&t, "  copy: {parallelism: 1}\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    let stats = s.sim.stats();
    assert!(stat(&stats.conflicts_as_oc000) > 0, "conflicts sent as SQLSTATE OC000 were retried: {stats:?}");
    assert!(stat(&stats.row_limit_errors) > 0, "batches over 1,000 rows were refused and halved: {stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_memory_fails_at_once_instead_of_being_retried() {
    let s = StandIn::start("sim_oom", |_| {}).await;
    let t = PostTag::rows(3_000);
    t.create(&s.db).await;
    s.sim.fail("INSERT", "53200", "out of memory", 100);
    let m = s.manifest(&t, "  copy: {parallelism: 1}\n");
    let out = s.run(&m, &[], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("out of memory"), "{}", text(&out));
    assert_eq!(stat(&s.sim.stats().faults), 1, "53200 is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn collated_columns_are_copied_without_collate_in_the_dsql_ddl() {
    let s = StandIn::start("sim_collate", |_| {}).await;
    let t = PostTag::rows(2_000);
    t.create(&s.db).await;
    s.db.exec("ALTER TABLE post_tag ALTER COLUMN tag_id TYPE varchar COLLATE \"C\"").await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let m = s.manifest(&t, "  identity: {generation: Always, cache: 1}\n  oldTable: {retain: false}\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(s.refused_documented(), Vec::<String>::new(), "no statement was refused");
    assert_eq!(s.db.identity_of("public", "post_tag", "id").await, ("a".into(), 1, "bigint".into()));
    assert!(!s.db.exists("public", "post_tag_old").await, "oldTable.retain: false dropped it");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_outlived_and_tokens_expiring_during_the_copy_are_replaced() {
    let s = StandIn::start("sim_lifetime", |c| {
        c.limits.connection_lifetime = Duration::from_secs(1);
        c.token_max_age = Some(Duration::from_secs(2));
    })
    .await;
    let t = PostTag::rows(20_000);
    t.create(&s.db).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    // About five seconds of copy: longer than a connection and than a token.
    let m = s.manifest(&t, "  copy: {parallelism: 2, batchRows: 500, maxRowsPerSecond: 4000}\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    let stats = s.sim.stats();
    assert!(stat(&stats.lifetime_closes) >= 2, "connections were ended at their lifetime: {stats:?}");
    assert_eq!(stat(&stats.refused_tokens), 0, "every new connection came with a fresh token: {stats:?}");
    assert!(s.sim.distinct_tokens() > 2, "tokens were generated again");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_in_place_probe_refused_falls_back_to_the_copy_and_accepted_adds_identity_in_place() {
    // Refused, as the seed saw DSQL in February 2026: Auto copies.
    let s = StandIn::start("sim_probe_no", |c| c.refuse_add_identity = true).await;
    let t = PostTag::rows(3_000);
    t.create(&s.db).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let m = s.manifest(&t, "  strategy: Auto\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["strategy"]["taken"], "Copy", "{status}");
    let reason = status["strategy"]["reason"].as_str().unwrap();
    assert!(reason.contains("refused ADD IDENTITY"), "{reason}");
    assert!(text(&out).contains("refused ADD IDENTITY"), "{}", text(&out));
    assert!(s.db.exists("public", "post_tag_old").await, "the copy ran");
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    // `InPlace` on the same server fails clearly and changes nothing.
    let s2 = StandIn::start("sim_probe_strict", |c| c.refuse_add_identity = true).await;
    t.create(&s2.db).await;
    // (The claims table is the engines' own, kept for every later run.)
    let user_catalog = |all: Vec<String>| -> Vec<String> {
        all.into_iter().filter(|o| !o.starts_with("public.identity_migrator_claims")).collect()
    };
    let catalog = user_catalog(s2.db.catalog_snapshot().await);
    let m = s2.manifest(&t, "  strategy: InPlace\n");
    let out = s2.run(&m, &[], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ADD IDENTITY"), "{}", text(&out));
    assert_eq!(user_catalog(s2.db.catalog_snapshot().await), catalog);

    // Accepted, as AWS's current reference says: Auto adds the identity in place.
    let s = StandIn::start("sim_probe_yes", |_| {}).await;
    t.create(&s.db).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let max_id = s.db.scalar_i64("SELECT max(id) FROM post_tag").await;
    let oid = s.db.scalar_i64("SELECT 'post_tag'::regclass::oid::bigint").await;
    let m = s.manifest(&t, "  strategy: Auto\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["strategy"]["taken"], "InPlace", "{}", m.status());
    assert_eq!(s.db.scalar_i64("SELECT 'post_tag'::regclass::oid::bigint").await, oid, "the same table");
    assert!(!s.db.exists("public", "post_tag_new").await && !s.db.exists("public", "post_tag_old").await);
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(s.db.identity_of("public", "post_tag", "id").await, ("d".into(), 65536, "bigint".into()));
    let id = s.db.scalar_i64("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't') RETURNING id").await;
    assert!(id > max_id, "generated {id}, highest id {max_id}");
}

/// Polls `check` until it holds, failing after `limit`.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_an_index_build_is_resumed_by_waiting_for_that_build() {
    let s = StandIn::start("sim_kill_build", |c| c.builds = BuildPace::Held).await;
    let t = seed_with_two_indexes(&s, 3_000).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let m = s.manifest(&t, "");
    let mut first = s.command(&m).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Running, and its index in the catalog (not valid yet).
    let running = "SELECT count(*) FROM sys.jobs j JOIN pg_class c ON c.relname = j.object_name \
                   WHERE j.status = 'processing'";
    wait_until("a build runs", Duration::from_secs(120), || async { s.db.scalar_i64(running).await > 0 }).await;
    first.kill().unwrap(); // SIGKILL, the build still running
    first.wait().unwrap();

    let log = tempfile::NamedTempFile::new().unwrap();
    let mut resumed =
        s.command(&m).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
    let waiting = || async {
        std::fs::read_to_string(log.path()).unwrap_or_default().contains("earlier build of the index is not finished")
    };
    wait_until("the resumed run waits for the build", Duration::from_secs(120), waiting).await;
    assert_eq!(s.db.scalar_i64(running).await, 1, "the build is still running, not dropped");
    s.sim.release_builds();
    let status = resumed.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(log.path()).unwrap());

    let cancelled = s.db.scalar_i64("SELECT count(*) FROM sys.jobs WHERE status <> 'completed'").await;
    assert_eq!(cancelled, 0, "no build was cancelled by a DROP INDEX");
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM sys.jobs").await, 2, "each index built once");
    assert_eq!(valid_secondary_indexes(&s).await, 2);
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
}

/// The kinds of statement in the DSQL plan of the seed table (two secondary
/// indexes, one unique) for `spec_extra`.
async fn plan_kinds(db: &TestDb, spec_extra: &str) -> Vec<String> {
    let m = Manifest::new("public", "post_tag", "id", spec_extra);
    let out = run_cli(&["plan", "-f", m.path.to_str().unwrap(), "--database-url", &db.url, "--dialect", "dsql"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    dsql_sim::sql::split(&script).iter().map(|s| Statement::parse(s).label()).filter(|l| !l.is_empty()).collect()
}

/// Run by `scripts/test` after the whole suite, which records in
/// `DSQL_SIM_LEDGER` every kind of statement its stand-ins ran.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the ledger of a whole suite run (scripts/test)"]
async fn dsql_plan_statements_were_each_executed_through_the_stand_in() {
    let path = std::env::var("DSQL_SIM_LEDGER").expect("DSQL_SIM_LEDGER names the ledger of the suite's run");
    let ledger = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let executed: BTreeSet<&str> = ledger.lines().collect();
    let db = TestDb::new("plan_kinds").await;
    crate::fidelity::ensure_roles(&db).await;
    let t = PostTag::rows(1_000);
    t.create(&db).await;
    db.exec("CREATE UNIQUE INDEX post_tag_pair ON post_tag (post_id, tag_id, created_at)").await;
    db.exec(EXTRAS).await;
    let mut planned = BTreeSet::new();
    for spec in [
        "  strategy: Auto\n",
        "  strategy: Copy\n  identity: {generation: Always, cache: 1}\n  oldTable: {retain: false}\n",
        "  strategy: Copy\n  copy: {changeTrackingColumn: created_at}\n",
    ] {
        planned.extend(plan_kinds(&db, spec).await);
    }
    assert!(planned.len() >= 8, "the plan names too few kinds: {planned:?}");
    let missing: Vec<&String> = planned.iter().filter(|k| !executed.contains(k.as_str())).collect();
    assert!(missing.is_empty(), "kinds of the DSQL plan no test executed: {missing:?}\nexecuted: {executed:?}");
}

/// What DSQL lets a table carry besides rows: owner, privileges, comments.
const EXTRAS: &str = "ALTER TABLE post_tag OWNER TO idmig_owner;
     GRANT SELECT, INSERT ON post_tag TO idmig_app;
     GRANT UPDATE (tag_id) ON post_tag TO idmig_auditor;
     COMMENT ON TABLE post_tag IS 'tags of posts';
     COMMENT ON COLUMN post_tag.tag_id IS 'the tag';
     COMMENT ON INDEX post_tag_post_idx IS 'by post';
     CREATE STATISTICS post_tag_pairs (ndistinct) ON post_id, tag_id FROM post_tag";

#[tokio::test(flavor = "multi_thread")]
async fn owner_privileges_and_comments_survive_the_swap_on_dsql() {
    let s = StandIn::start("sim_extras", |_| {}).await;
    crate::fidelity::ensure_roles(&s.db).await;
    let t = PostTag::rows(2_000);
    t.create(&s.db).await;
    s.db.exec(EXTRAS).await;
    let before = crate::fidelity::carried(&s.db, "post_tag").await;
    let m = s.manifest(&t, "");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let after = crate::fidelity::carried(&s.db, "post_tag").await;
    if crate::support::stand_in::strict_by_default() {
        // Comments and column grants are not in AWS's pages: the strict
        // stand-in refuses them, and the migration reports each one.
        let documented = |all: &[String]| -> Vec<String> {
            let undocumented = ["comment", "column comment", "column grant", "index comment"];
            all.iter().filter(|l| !undocumented.iter().any(|u| l.starts_with(u))).cloned().collect()
        };
        assert_eq!(documented(&after), documented(&before));
        let reported = m.status()["plan"]["notCarried"].to_string();
        for what in ["COMMENT ON TABLE", "COMMENT ON COLUMN", "COMMENT ON INDEX", "GRANT UPDATE (\\\"tag_id\\\")"] {
            assert!(reported.contains(what), "{what} not reported: {reported}");
        }
    } else {
        assert_eq!(after, before);
    }
    assert!(s.sim.executed().iter().any(|k| k.starts_with("GRANT")), "{:?}", s.sim.executed());
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_without_statistics_are_counted_by_id_slices_and_a_slice_past_the_age_limit_is_halved() {
    let s = StandIn::start("sim_slices", |_| {}).await;
    let t = PostTag::rows(5_000);
    t.create(&s.db).await;
    // DSQL has no statistics for the table: the engine must count the rows.
    s.db.exec("ALTER TABLE post_tag SET (autovacuum_enabled = false); UPDATE pg_class SET reltuples = -1 WHERE relname = 'post_tag'").await;
    let age = "transaction age limit of 300s exceeded";
    // On a large table one count(*) of every row passes DSQL's 5 minutes:
    // here it always does, and the first count of a slice does once.
    let whole = |sql: &str| sql.contains("count(*)") && sql.contains("\"post_tag\"") && !sql.contains("WHERE");
    s.sim.fail_when(whole, "54000", age, 100);
    let sliced = |sql: &str| sql.contains("count(*)") && sql.contains("FROM \"public\".\"post_tag\" WHERE");
    s.sim.fail_when(sliced, "54000", age, 1);
    let m = s.manifest(&t, "");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stat(&s.sim.stats().faults), 1, "no whole-table count ran; one slice was halved");
    assert_eq!(m.status()["verification"]["sourceRows"].as_i64(), Some(5_000));
}

/// The saved status, or None while the file is missing or being written.
fn saved_status(m: &Manifest) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(m.state_path()).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok().map(|v| v["status"].clone())
}

fn pace_of(m: &Manifest) -> Option<(String, i64)> {
    let status = saved_status(m)?;
    let pace = &status["progress"]["pace"];
    Some((pace["reason"].as_str()?.to_string(), pace["rowsPerSecond"].as_i64().unwrap_or(i64::MAX)))
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_commits_halve_the_pace_within_seconds_and_it_recovers_after() {
    let s = StandIn::start("sim_pace", |_| {}).await;
    let t = PostTag::rows(40_000);
    t.create(&s.db).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let spec = "  copy: {parallelism: 1, batchRows: 500, maxRowsPerSecond: 4000, pace: {maxCommitLatencyMs: 150}}\n";
    let m = s.manifest(&t, spec);
    let mut child = s.command(&m).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let clear = || async { pace_of(&m).is_some_and(|(reason, _)| reason == "Clear") };
    wait_until("the copy runs at its pace", Duration::from_secs(120), clear).await;

    // The database gets slow: every commit takes 300 ms more.
    s.sim.set_commit_delay(Duration::from_millis(300));
    let halved = || async { pace_of(&m).is_some_and(|(reason, rate)| reason == "CommitLatency" && rate <= 2000) };
    wait_until("the pace is halved for the commit latency", Duration::from_secs(30), halved).await;
    let low = pace_of(&m).unwrap().1;

    // Fast again: the pace climbs back.
    s.sim.set_commit_delay(Duration::ZERO);
    let recovered = || async { pace_of(&m).is_some_and(|(reason, rate)| reason == "Clear" && rate > low) };
    wait_until("the pace recovers", Duration::from_secs(30), recovered).await;

    assert!(child.wait().unwrap().success());
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
}

//! The DSQL stand-in itself, reached as the engine reaches a cluster: TLS
//! verified with its CA, IAM tokens checked, DSQL's refusals, limits and
//! catalog. The migrations through it are in `dsql_run`.

use std::time::Duration;

use tokio_postgres::Client;

use crate::support::stand_in::StandIn;

async fn open(s: &StandIn, user: &str) -> Client {
    s.connector(user).connect().await.unwrap_or_else(|e| panic!("connect through the stand-in: {e}"))
}

/// The SQLSTATE and message of a failed statement.
async fn refusal(c: &Client, sql: &str) -> (String, String) {
    let e = c.batch_execute(sql).await.expect_err(sql);
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: not a database error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn it_reads_as_dsql_and_refuses_what_dsql_refuses() {
    let s = StandIn::start("sim_rules", |_| {}).await;
    s.db.exec("CREATE TABLE t (id bigint PRIMARY KEY, a text NOT NULL); INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 10) g; CREATE INDEX t_a ON t (a)").await;
    let c = open(&s, "admin").await;
    let version: String = c.query_one("SHOW server_version", &[]).await.unwrap().get(0);
    assert!(version.starts_with("16."), "server_version {version}");
    let def: String = c.query_one("SELECT pg_get_indexdef('t_a'::regclass)", &[]).await.unwrap().get(0);
    assert!(def.ends_with("USING btree_index (a)"), "{def}");
    let am: String = c
        .query_one(
            "SELECT a.amname::text FROM pg_class i JOIN pg_am a ON a.oid = i.relam WHERE i.relname = 't_pkey'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(am, "btree_index");

    for (sql, code, words) in [
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "0A000", "unsupported statement: Lock"),
        ("TRUNCATE t", "0A000", "Truncate"),
        ("SELECT pg_advisory_lock(1)", "0A000", "advisory"),
        ("CREATE TEMP TABLE x (a int)", "0A000", "temporary"),
        ("CREATE TABLE c (a text COLLATE \"C\")", "0A000", "collation"),
        ("SET lock_timeout = '1s'", "0A000", "lock_timeout"),
        ("CREATE INDEX t_b ON t (a)", "0A000", "ASYNC"),
        ("SELECT sys.wait_for_job('x')", "42809", "procedure"),
    ] {
        let (got, message) = refusal(&c, sql).await;
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(words), "{sql}: {message}");
    }
    let trigger =
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()";
    assert_eq!(refusal(&c, trigger).await.0, "0A000");
    // One DDL statement per transaction, and never with DML.
    let (code, message) =
        refusal(&c, "BEGIN; CREATE TABLE u1 (id bigint PRIMARY KEY); CREATE TABLE u2 (id bigint PRIMARY KEY)").await;
    assert_eq!(code, "0A000", "{message}");
    c.batch_execute("ROLLBACK").await.unwrap();
    let (code, message) =
        refusal(&c, "BEGIN; INSERT INTO t VALUES (100, 'y'); CREATE TABLE u3 (id bigint PRIMARY KEY)").await;
    assert_eq!((code.as_str(), message.contains("DDL and DML")), ("0A000", true), "{message}");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM t").await, 10, "the refused transaction changed nothing");
    // What DSQL accepts passes.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (11, 'z'); COMMIT").await.unwrap();
    c.batch_execute("CREATE TABLE ok (id bigint PRIMARY KEY)").await.unwrap();
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM t").await, 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_checked_and_tls_is_required() {
    let s = StandIn::start("sim_tokens", |_| {}).await;
    let c = open(&s, "admin").await;
    c.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(s.sim.distinct_tokens(), 1);

    // A token signed with another secret is refused.
    let target = identity_migrator::db::target::dsql_target(
        &s.sim.endpoint(),
        Some("us-east-1"),
        "admin",
        "postgres",
        Duration::from_secs(900),
    )
    .unwrap();
    let wrong =
        aws_credential_types::Credentials::new(crate::support::stand_in::KEY_ID, "not-the-secret", None, None, "t");
    let connector = identity_migrator::db::Connector::new(
        identity_migrator::db::DatabaseTarget::Dsql(target.clone()),
        Some(s.sim.ca_pem().as_bytes().to_vec()),
    )
    .unwrap()
    .with_token_source(identity_migrator::db::TokenSource::with_credentials(target, wrong));
    let err = connector.connect().await.expect_err("refused").to_string();
    assert!(err.contains("access denied"), "{err}");

    // An expired token: the stand-in's clock is an hour ahead of the 900 s token.
    let late = StandIn::start("sim_expired", |c| c.clock_offset_secs = 3600).await;
    let err = late.connector("admin").connect().await.expect_err("refused").to_string();
    assert!(err.contains("access denied"), "{err}");
    assert_eq!(dsql_sim::Stats::get(&late.sim.stats().refused_tokens), 1);

    // Plain text is refused.
    let url = format!("postgres://admin:x@127.0.0.1:{}/postgres", s.sim.addr().port());
    let err = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.err().expect("refused");
    assert!(err.as_db_error().is_some_and(|e| e.message().contains("SSL is required")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn async_indexes_build_in_the_background_and_a_drop_cancels_one() {
    let s = StandIn::start("sim_jobs", |c| {
        c.builds = dsql_sim::BuildPace::Held;
        c.wait_for_job = Duration::from_millis(200);
    })
    .await;
    s.db.exec("CREATE TABLE t (id bigint PRIMARY KEY, a text NOT NULL); INSERT INTO t SELECT g, 'x' || g FROM generate_series(1, 100) g").await;
    let c = open(&s, "admin").await;
    let job = first(&c.simple_query("CREATE INDEX ASYNC t_a ON t (a)").await.unwrap());
    assert_eq!(job.len(), 26, "{job}");
    assert!(job.chars().all(|ch| ch.is_ascii_lowercase() || ('2'..='7').contains(&ch)), "{job}");
    let invalid = "SELECT count(*) FROM pg_index WHERE indexrelid = 't_a'::regclass AND NOT indisvalid";
    assert_eq!(s.db.scalar_i64(invalid).await, 1, "in the catalog at once, not valid");
    // The wait ends before the build: false, and sys.jobs says why.
    let wait = format!("CALL sys.wait_for_job('{job}')");
    assert_eq!(first(&c.simple_query(&wait).await.unwrap()), "f");
    let status = |id: String| {
        let c = &c;
        async move {
            let row = c.query_one("SELECT status FROM sys.jobs WHERE job_id = $1", &[&id]).await.unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(status(job.clone()).await, "processing");
    assert_eq!(refusal(&c, "CREATE INDEX ASYNC t_a ON t (a)").await.0, "42P07", "the same index again");
    // Dropping the index cancels its build.
    c.batch_execute("DROP INDEX t_a").await.unwrap();
    assert_eq!(status(job).await, "cancelled");
    // Another one completes once builds may finish.
    let job = first(&c.simple_query("CREATE UNIQUE INDEX ASYNC t_u ON t (a)").await.unwrap());
    s.sim.release_builds();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while first(&c.simple_query(&format!("CALL sys.wait_for_job('{job}')")).await.unwrap()) != "t" {
        assert!(std::time::Instant::now() < deadline, "the build never completed");
    }
    assert_eq!(status(job).await, "completed");
    let valid = "SELECT count(*) FROM pg_index WHERE indexrelid = 't_u'::regclass AND indisvalid AND indisunique";
    assert_eq!(s.db.scalar_i64(valid).await, 1);
}

fn first(messages: &[tokio_postgres::SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_that_read_a_table_whose_schema_changed_fails_with_oc001() {
    let s = StandIn::start("sim_oc001", |c| c.builds = dsql_sim::BuildPace::After(Duration::ZERO)).await;
    s.db.exec("CREATE TABLE t (id bigint PRIMARY KEY, a text NOT NULL); INSERT INTO t VALUES (1, 'x')").await;
    let reader = open(&s, "admin").await;
    let builder = open(&s, "admin").await;
    reader.batch_execute("BEGIN; SELECT count(*) FROM t").await.unwrap();
    // Another session's index build on t finishes: DSQL updates the catalog.
    let job = first(&builder.simple_query("CREATE INDEX ASYNC t_a ON t (a)").await.unwrap());
    assert_eq!(first(&builder.simple_query(&format!("CALL sys.wait_for_job('{job}')")).await.unwrap()), "t");
    reader.batch_execute("INSERT INTO t VALUES (2, 'y')").await.unwrap();
    let (code, message) = refusal(&reader, "COMMIT").await;
    assert_eq!(code, "40001", "{message}");
    assert!(message.contains("OC001"), "{message}");
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM t").await, 1, "the conflicting transaction was rolled back");
    // Retried, it commits.
    reader.batch_execute("BEGIN; INSERT INTO t VALUES (2, 'y'); COMMIT").await.unwrap();
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM t").await, 2);
}

/// `latency` delays every round trip, and each is counted: what the DSQL
/// bench measures the copy's protocol by.
#[tokio::test(flavor = "multi_thread")]
async fn every_round_trip_takes_the_latency_and_is_counted() {
    let latency = Duration::from_millis(40);
    let s = StandIn::start("sim_latency", |c| c.latency = latency).await;
    let c = open(&s, "admin").await;
    let before = dsql_sim::Stats::get(&s.sim.stats().round_trips);
    let started = std::time::Instant::now();
    for _ in 0..3 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    let took = started.elapsed();
    assert_eq!(dsql_sim::Stats::get(&s.sim.stats().round_trips) - before, 3, "one round trip per simple query");
    // A lower bound only: a busy machine is slower, never faster.
    assert!(took >= latency * 3, "3 round trips took {took:?}, less than 3 x {latency:?}");
}

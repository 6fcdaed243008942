//! The DSQL-strict harness itself: it must refuse what DSQL refuses, or the
//! engine tests that run under it would prove nothing.

use crate::support::TestDb;

async fn sqlstate(db: &TestDb, sql: &str) -> Option<String> {
    db.client.batch_execute(sql).await.err().and_then(|e| e.code().map(|c| c.code().to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_harness_refuses_what_dsql_refuses() {
    let db = TestDb::new("harness").await;
    db.install_dsql_harness(0).await;
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)").await;
    db.exec("CREATE INDEX t_v ON t (v)").await;

    // 1,500 rows with one secondary index is 3,000 mutations: allowed.
    assert_eq!(sqlstate(&db, "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1500) g").await, None);
    // 1,501 rows is 3,002: refused with DSQL's SQLSTATE.
    assert_eq!(
        sqlstate(&db, "INSERT INTO t SELECT g, 'x' FROM generate_series(2001, 3501) g").await.as_deref(),
        Some("54000")
    );
    // The limit counts the whole transaction, not one statement.
    let two = "BEGIN; INSERT INTO t SELECT g, 'x' FROM generate_series(5001, 6000) g; \
               INSERT INTO t SELECT g, 'x' FROM generate_series(6001, 7000) g; COMMIT";
    assert_eq!(sqlstate(&db, two).await.as_deref(), Some("54000"));
    db.exec("ROLLBACK").await;
    // DDL and DML in one transaction, and two DDL statements in one.
    let mixed = "BEGIN; INSERT INTO t VALUES (9001, 'y'); CREATE TABLE u (id int); COMMIT";
    assert_eq!(sqlstate(&db, mixed).await.as_deref(), Some("0A000"));
    db.exec("ROLLBACK").await;
    let two_ddl = "BEGIN; CREATE TABLE u1 (id int); CREATE TABLE u2 (id int); COMMIT";
    assert_eq!(sqlstate(&db, two_ddl).await.as_deref(), Some("0A000"));
    db.exec("ROLLBACK").await;
    assert_eq!(sqlstate(&db, "TRUNCATE t").await.as_deref(), Some("0A000"));
    assert_eq!(sqlstate(&db, "CREATE TEMPORARY TABLE tmp (id int)").await.as_deref(), Some("0A000"));
    assert_eq!(db.harness_counter("violations").await, 6);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM t").await, 1500);
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_occ_failures_look_like_dsql_conflicts() {
    let db = TestDb::new("occ").await;
    db.install_dsql_harness(2).await;
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY)").await;
    let mut failures = Vec::new();
    for i in 0..4i64 {
        if let Err(e) = db.client.execute("INSERT INTO t VALUES ($1)", &[&i]).await {
            let db_err = e.as_db_error().expect("a server error");
            failures.push((db_err.code().code().to_string(), db_err.message().to_string()));
        }
    }
    assert_eq!(failures.len(), 2, "every second commit fails");
    assert!(failures.iter().all(|(code, msg)| code == "40001" && msg.contains("OC000")), "{failures:?}");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM t").await, 2, "failed commits leave nothing");
    assert_eq!(db.harness_counter("rows_written").await, 4, "attempts are counted, committed or not");
}

//! One engine per table: two `run`s started together, a `run` beside the
//! operator, and an engine that loses its claim.

use std::process::Stdio;

use identity_migrator::db::target::parse_postgres_url;
use identity_migrator::db::{Connector, DatabaseTarget, Dialect};
use identity_migrator::engine::plan::shape::TableName;
use identity_migrator::engine::steps::claim::{Claim, ClaimError, advisory_key};
use serde_json::json;

use crate::support::fake_api::FakeApi;
use crate::support::operator::{Operator, create_migration, create_url_secret, phase, wait_for};
use crate::support::{Manifest, PostTag, TestDb, binary, run_migration, text};

fn connector(url: &str) -> Connector {
    Connector::new(DatabaseTarget::Postgres(parse_postgres_url(url).unwrap()), None).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_started_together_leave_the_table_to_one_of_them() {
    let db = TestDb::new("claim_two_runs").await;
    let t = PostTag::rows(6_000);
    t.create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let m = Manifest::for_table(&t, "  copy: {batchRows: 500, maxRowsPerSecond: 3000}\n");
    let spawn = |state: &str| {
        let state = m.dir.path().join(state);
        std::process::Command::new(binary())
            .args(["run", "-f", m.path.to_str().unwrap(), "--database-url", &db.url, "--state-file"])
            .arg(&state)
            .env("NO_PROGRESS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a.json"), spawn("b.json"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(codes.contains(&Some(0)) && codes.contains(&Some(1)), "one wins, one refuses: {codes:?}");
    let loser = if a.status.code() == Some(1) { &a } else { &b };
    assert!(text(loser).contains("is being migrated by another engine"), "{}", text(loser));
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(db.identity_of("public", "post_tag", "id").await.0, "d");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_beside_the_operator_is_refused_while_the_operator_migrates() {
    let db = TestDb::new("claim_operator").await;
    let t = PostTag::rows(20_000);
    t.create(&db).await;
    let before = db.fingerprint("public.post_tag", "id").await;
    let api = FakeApi::new();
    create_url_secret(&api, "db", &db.url).await;
    let operator = Operator::start(&api, "pod-a");
    let spec = json!({"copy": {"parallelism": 2, "batchRows": 500, "maxRowsPerSecond": 8000}});
    create_migration(&api, "post-tag", "post_tag", spec).await;
    wait_for(&api, "post-tag", 60, "copying", |o| phase(o) == "Copying").await;

    let m = Manifest::for_table(&t, "");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is being migrated by another engine"), "{}", text(&out));

    wait_for(&api, "post-tag", 120, "Completed", |o| phase(o) == "Completed").await;
    operator.shutdown().await;
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_is_exclusive_and_an_engine_that_loses_it_knows() {
    let db = TestDb::new("claim_lost").await;
    let table = TableName::new("public", "post_tag");
    let connector = std::sync::Arc::new(connector(&db.url));
    let claim = Claim::take(&connector, &table, Dialect::Postgres).await.unwrap();
    match Claim::take(&connector, &table, Dialect::Postgres).await {
        Err(ClaimError::Taken { holder, .. }) => assert!(holder.contains("pid"), "{holder}"),
        other => panic!("a second claim must be refused: {:?}", other.err()),
    }
    claim.check().await.unwrap();
    // The holder's connection dies (a network cut, pg_terminate_backend): the lock is gone.
    let key = advisory_key(&table);
    db.client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1",
            &[&key],
        )
        .await
        .unwrap();
    assert!(matches!(claim.check().await, Err(ClaimError::Lost { .. })), "the engine must stop before its next change");
    let again = Claim::take(&connector, &table, Dialect::Postgres).await.expect("free again");
    again.release(&connector).await;

    // DSQL's claim row, exercised on PostgreSQL: exclusive, released on stop.
    let first = Claim::take(&connector, &table, Dialect::Dsql).await.unwrap();
    assert!(matches!(Claim::take(&connector, &table, Dialect::Dsql).await, Err(ClaimError::Taken { .. })));
    first.check().await.unwrap();
    first.release(&connector).await;
    let second = Claim::take(&connector, &table, Dialect::Dsql).await.expect("released claims are free");
    second.release(&connector).await;
}

/// A DSQL claim row names its owner's host by an identity that no other
/// machine or pod shares: a row from elsewhere (an older `local/...`, another
/// pod) is never judged dead by pid, only one from this very PID namespace.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_from_another_machine_is_never_taken_over_by_pid() {
    let db = TestDb::new("claim_host").await;
    let table = TableName::new("public", "post_tag");
    let connector = std::sync::Arc::new(connector(&db.url));
    let mine = Claim::take(&connector, &table, Dialect::Dsql).await.unwrap();
    let owner: String = db
        .client
        .query_one("SELECT owner FROM identity_migrator_claims WHERE table_name = '\"public\".\"post_tag\"'", &[])
        .await
        .unwrap()
        .get(0);
    mine.release(&connector).await;
    let host = owner.split('/').next().unwrap().to_string();
    assert!(host != "local" && host.contains('@'), "{owner}");

    let claim_by = |owner: String| {
        let client = &db.client;
        async move {
            client
                .execute(
                    "INSERT INTO identity_migrator_claims (table_name, owner, expires_at) \
                     VALUES ('\"public\".\"post_tag\"', $1, now() + interval '1 minute') \
                     ON CONFLICT (table_name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at",
                    &[&owner],
                )
                .await
                .unwrap();
        }
    };
    // No process 999999 runs here; that proves nothing about other machines.
    for elsewhere in ["local/999999/0123456789abcdef", "worker-2@pod-1234-abcd/999999/0123456789abcdef"] {
        claim_by(elsewhere.to_string()).await;
        match Claim::take(&connector, &table, Dialect::Dsql).await {
            Err(ClaimError::Taken { holder, .. }) => assert_eq!(holder, elsewhere),
            other => panic!("{elsewhere}: a claim from elsewhere must be respected: {:?}", other.err()),
        }
    }
    // A run of this very machine that died is taken over at once.
    claim_by(format!("{host}/999999/0123456789abcdef")).await;
    let taken = Claim::take(&connector, &table, Dialect::Dsql).await.expect("a dead local owner's claim is taken over");
    taken.release(&connector).await;
}

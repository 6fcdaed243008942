//! Failure paths where features meet (issue 20): every way out of a phase
//! puts back what it changed, and says so.

use std::time::{Duration, Instant};

use crate::controller::setup;
use crate::support::operator::{
    NS, Operator, condition, create_migration, create_workload, delete, patch_spec, phase, wait_for, workload_replicas,
};
use crate::support::{PostTag, connect};
use serde_json::json;

/// Waits until `check` holds, polling the fake API server.
async fn until(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session that holds a lock on the table through the window (a pg_dump,
/// a report left open) arrives after the application was scaled to zero:
/// the application is scaled back at once and the engine waits, saying who
/// blocks it, instead of leaving it at zero while the rename times out.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_through_the_window_never_leaves_the_application_at_zero() {
    let (db, api, before) = setup("seam_quiesce_lock", 5_000).await;
    create_workload(&api, "Deployment", "blog-api", 3).await;
    api.set_scaling_frozen(true);
    let operator = Operator::start(&api, "pod-a");
    let quiesce = json!({"cutover": {"quiesce": [{"kind": "Deployment", "name": "blog-api"}]}});
    create_migration(&api, "post-tag", "post_tag", quiesce).await;
    // The engine scaled the application down and waits for its pods to stop.
    wait_for(&api, "post-tag", 60, "saved replica counts", |o| {
        o["status"]["cutover"]["savedReplicas"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
    until("scaled to zero", 10, || workload_replicas(&api, "deployments", "blog-api").0 == 0).await;
    let noted = api.get("apps/v1", "deployments", NS, "blog-api").unwrap();
    assert_eq!(
        noted["metadata"]["annotations"]["migrations.dsql.dev/saved-replicas"], "3",
        "the count is kept on the workload too"
    );

    // A dump opens its transaction on the table meanwhile.
    let dump = connect(&db.url).await;
    dump.batch_execute("SET application_name = 'pg_dump'; BEGIN; LOCK TABLE post_tag IN ACCESS SHARE MODE")
        .await
        .unwrap();
    api.set_scaling_frozen(false);

    let blocked = wait_for(&api, "post-tag", 60, "BlockedBy", |o| {
        o["status"]["cutover"]["blockedBy"].as_array().is_some_and(|b| !b.is_empty())
    })
    .await;
    let who = blocked["status"]["cutover"]["blockedBy"][0].as_str().unwrap().to_string();
    assert!(who.contains("pg_dump") && who.contains("idle in a transaction"), "{who}");
    assert_eq!(condition(&blocked, "Progressing").unwrap()["reason"], "BlockedBy");
    until("the application scaled back while blocked", 10, || {
        workload_replicas(&api, "deployments", "blog-api").0 == 3
    })
    .await;
    assert!(db.exists("public", "post_tag").await, "the table keeps its name while blocked");

    dump.batch_execute("COMMIT").await.unwrap();
    let done = wait_for(&api, "post-tag", 60, "Completed", |o| phase(o) == "Completed").await;
    operator.shutdown().await;
    assert_eq!(workload_replicas(&api, "deployments", "blog-api"), (3, 3));
    assert!(done["status"]["cutover"]["blockedBy"].is_null(), "cleared once unblocked");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
    let deployment = api.get("apps/v1", "deployments", NS, "blog-api").unwrap();
    assert!(deployment["metadata"]["annotations"]["migrations.dsql.dev/saved-replicas"].is_null());
    let reasons: Vec<String> = api.events_for(NS, "post-tag").into_iter().map(|(_, r, _)| r).collect();
    for reason in ["BlockedBy", "Restored", "Unblocked"] {
        assert!(reasons.contains(&reason.to_string()), "{reason} in {reasons:?}");
    }
}

/// Deleting a migration whose application is quiesced scales it back first.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_migration_in_its_quiesce_scales_the_application_back() {
    let (db, api, _) = setup("seam_quiesce_delete", 3_000).await;
    create_workload(&api, "Deployment", "blog-api", 2).await;
    api.set_scaling_frozen(true);
    let operator = Operator::start(&api, "pod-a");
    let quiesce = json!({"cutover": {"quiesce": [{"kind": "Deployment", "name": "blog-api"}]}});
    create_migration(&api, "post-tag", "post_tag", quiesce).await;
    until("scaled to zero", 60, || workload_replicas(&api, "deployments", "blog-api").0 == 0).await;
    // The scale-down never finishes (pods that will not stop); the user gives up.
    delete(&api, "post-tag").await;
    until("the migration is gone", 60, || {
        api.get("migrations.dsql.dev/v1alpha1", "identitymigrations", NS, "post-tag").is_none()
    })
    .await;
    operator.shutdown().await;
    assert_eq!(workload_replicas(&api, "deployments", "blog-api").0, 2, "scaled back before the resource went");
    assert!(db.exists("public", "post_tag").await);
}

/// Approval withdrawn after a failed cut-over: the retry does not touch the
/// table; the migration waits in AwaitingCutover again.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_cut_over_is_not_retried_once_its_approval_is_withdrawn() {
    let (db, api, before) = setup("seam_approval", 3_000).await;
    // The cut-over fails inside its window: the new table cannot take the name.
    db.refuse_rename_in("post_tag_new").await;
    let operator = Operator::start(&api, "pod-a");
    let spec = json!({"cutover": {"approval": "Manual", "approved": true}});
    create_migration(&api, "post-tag", "post_tag", spec).await;
    wait_for(&api, "post-tag", 60, "a failed swap", |o| {
        phase(o) == "Failed" && o["status"]["lastError"]["phase"] == "Swapping"
    })
    .await;
    assert!(db.exists("public", "post_tag").await, "the failed window put the table back");
    patch_spec(&api, "post-tag", json!({"cutover": {"approved": false}})).await;
    let held = wait_for(&api, "post-tag", 60, "AwaitingCutover", |o| phase(o) == "AwaitingCutover").await;
    assert_eq!(condition(&held, "Ready").unwrap()["reason"], "AwaitingApproval");
    assert!(db.exists("public", "post_tag").await && !db.exists("public", "post_tag_old").await);
    let original = "SELECT count(*) FROM pg_attribute WHERE attrelid = 'post_tag'::regclass AND attname = 'id' AND attidentity = ''";
    assert_eq!(db.scalar_i64(original).await, 1, "the original table, untouched");
    // The cause goes away; approved again, the cut-over completes.
    db.exec("DROP EVENT TRIGGER refuse_rename_in").await;
    patch_spec(&api, "post-tag", json!({"cutover": {"approved": true}})).await;
    wait_for(&api, "post-tag", 60, "Completed", |o| phase(o) == "Completed").await;
    operator.shutdown().await;
    assert_eq!(db.fingerprint("public.post_tag", "id").await, before);
}

/// The cut-over fails inside its window and renaming the original table back
/// fails too, for a while: the engine keeps trying until the table has its
/// name again, saying so, instead of exiting with the table absent.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_rename_back_is_retried_until_the_table_has_its_name() {
    use crate::support::stand_in::StandIn;
    use crate::support::text;
    let s = StandIn::start("seam_table_missing", |_| {}).await;
    let t = PostTag::rows(2_000);
    t.create(&s.db).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    s.sim.fail_when(|sql| sql.contains("\"post_tag_new\" RENAME TO"), "42501", "permission denied (test)", 1);
    s.sim.fail_when(|sql| sql.contains("\"post_tag_old\" RENAME TO"), "42501", "permission denied (test)", 3);
    let m = s.manifest(&t, "  copy: {parallelism: 1}\n");
    let out = s.run(&m, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "the cut-over failed: {}", text(&out));
    let said = text(&out);
    assert!(said.contains("is absent") && said.contains("has its name back"), "{said}");
    assert!(s.db.exists("public", "post_tag").await && !s.db.exists("public", "post_tag_old").await);
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    assert!(m.status()["cutover"]["tableMissing"].is_null(), "{}", m.status());
    // Run again: the cut-over completes.
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
}

/// `strategy: Auto` on a DSQL that refuses ADD IDENTITY, with a manual
/// approval: the refusal is learnt on a scratch table before the approval is
/// asked, so the copy and its verification run first, the approval is asked
/// once, for the real cut-over, and the table was never touched before it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_dsql_probe_copies_first_and_asks_for_approval_after_verification() {
    use crate::support::stand_in::StandIn;
    use crate::support::text;
    let s = StandIn::start("seam_probe_manual", |c| c.refuse_add_identity = true).await;
    let t = PostTag::rows(3_000);
    t.create(&s.db).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let m = s.manifest(&t, "  strategy: Auto\n  cutover: {approval: Manual}\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["phase"], "AwaitingCutover", "{status}");
    assert_eq!(status["strategy"]["taken"], "Copy", "{status}");
    assert_eq!(status["verification"]["sourceRows"], 3_000, "verified before asking: {status}");
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM post_tag_new").await, 3_000, "the copy ran");
    assert!(!s.db.exists("public", "post_tag_idmig_probe").await, "the scratch table is gone");
    // Approved once: the cut-over follows, without a second question.
    let out = s.run(&m, &["--approve-cutover"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["phase"], "Completed");
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
}

/// A sequence that several tables' defaults share is nobody's to own: the
/// swap leaves its ownership alone, so dropping the old table
/// (`retain: false`) does not take it with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_sequence_keeps_its_owner_and_outlives_the_old_table() {
    use crate::support::{Manifest, TestDb, run_migration, text};
    let db = TestDb::new("seam_shared_sequence").await;
    let t = PostTag::rows(1_000);
    t.create(&db).await;
    db.exec(
        "CREATE SEQUENCE ticket;
         ALTER TABLE post_tag ADD COLUMN ticket bigint DEFAULT nextval('ticket');
         CREATE TABLE other_user_of_ticket (n bigint DEFAULT nextval('ticket'));",
    )
    .await;
    let m = Manifest::for_table(&t, "  oldTable: {retain: false}\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM pg_class WHERE relname = 'ticket' AND relkind = 'S'").await, 1);
    let owned = "SELECT count(*) FROM pg_depend WHERE objid = 'ticket'::regclass AND deptype = 'a'";
    assert_eq!(db.scalar_i64(owned).await, 0, "still owned by no table");
    db.exec("INSERT INTO other_user_of_ticket DEFAULT VALUES").await;
}

/// A replica cut off from the API server cannot renew its Lease, nor learn
/// that another replica took it: it takes the Lease as lost once it could
/// have lapsed, and its engine stops writing.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_the_api_server_stops_its_engine() {
    let (db, api, _) = setup("seam_cut_off", 20_000).await;
    let operator = Operator::start(&api, "pod-a");
    let spec = json!({"copy": {"parallelism": 1, "batchRows": 500, "maxRowsPerSecond": 1000}});
    create_migration(&api, "post-tag", "post_tag", spec).await;
    wait_for(&api, "post-tag", 60, "copying", |o| {
        phase(o) == "Copying" && o["status"]["progress"]["rowsCopied"].as_i64() > Some(0)
    })
    .await;
    api.set_outage(true);
    // The copy goes on for at most the Lease's renewal slack, then stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = -1;
    let stopped_at = loop {
        let copied = db.scalar_i64("SELECT count(*) FROM post_tag_new").await;
        if copied == last {
            break copied;
        }
        assert!(Instant::now() < deadline, "the engine kept copying without its Lease");
        last = copied;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    };
    assert!(stopped_at < 20_000, "stopped before the copy ended: {stopped_at}");
    api.set_outage(false);
    wait_for(&api, "post-tag", 120, "Completed", |o| phase(o) == "Completed").await;
    operator.shutdown().await;
}

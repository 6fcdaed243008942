//! Migrations through the DSQL stand-in with the `dsql` dialect: every
//! statement of the DSQL plan executed, not only linted.

use crate::support::stand_in::StandIn;
use crate::support::{PostTag, text};

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

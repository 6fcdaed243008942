//! What real DSQL refuses, through the stand-in (issue 21): integer ids,
//! index key ordering, and `InPlace` where DSQL cannot do it.

use crate::support::stand_in::StandIn;
use crate::support::{PostTag, text};

/// An `integer` id with a DESC index, a comment, a column grant and a second
/// role: `Auto` takes the copy (DSQL identity is bigint only) and the shadow's
/// index keeps its keys without the order DSQL refuses. The stand-in refuses
/// nothing the engine knew DSQL refuses; in its strict mode it refuses what
/// AWS's pages do not list, and the migration completes and says what it
/// could not carry.
async fn integer_id_with_extras(test: &str, strict: bool) {
    let s = StandIn::start(test, |c| c.strict_undocumented = strict).await;
    let t = PostTag::rows(3_000).id_type("INTEGER");
    t.create(&s.db).await;
    let role = format!("{test}_reader");
    s.db.exec(&format!(
        "CREATE INDEX post_tag_recent ON post_tag (created_at DESC NULLS LAST);
         COMMENT ON TABLE post_tag IS 'tags of posts';
         DROP ROLE IF EXISTS {role}; CREATE ROLE {role};
         GRANT SELECT ON post_tag TO {role};
         GRANT UPDATE (post_id) ON post_tag TO {role};",
    ))
    .await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let m = s.manifest(&t, "  strategy: Auto\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = m.status();
    assert_eq!(status["strategy"]["taken"], "Copy", "{status}");
    assert!(status["strategy"]["reason"].as_str().unwrap().contains("bigint only"), "{status}");
    assert!(text(&out).contains("bigint only"), "said in the run: {}", text(&out));
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(s.db.identity_of("public", "post_tag", "id").await.2, "bigint", "widened to bigint");
    let def: String =
        s.db.client
            .query_one(
                "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'post_tag'::regclass \
             AND pg_get_indexdef(indexrelid) LIKE '%created_at%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert!(def.contains("created_at") && !def.contains("DESC"), "{def}");
    assert!(text(&out).contains("ASC/DESC"), "what was left out is said: {}", text(&out));
    let not_carried: Vec<String> = status["plan"]["notCarried"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    let said = |what: &str| not_carried.iter().any(|n| n.contains(what));
    assert!(said("post_tag_recent") && said("ASC/DESC"), "the index order in the status: {not_carried:?}");
    let privilege = |p: &str| format!("SELECT has_table_privilege('{role}', 'post_tag', '{p}')");
    let column_privilege = format!("SELECT has_column_privilege('{role}', 'post_tag', 'post_id', 'UPDATE')");
    assert!(s.db.scalar_bool(&privilege("SELECT")).await, "the second role's table grant is carried");
    let comment = "SELECT coalesce(obj_description('post_tag'::regclass, 'pg_class'), '')";
    let refused = s.sim.refused();
    if strict {
        // Only what the pages do not list was refused, and each is reported.
        for r in &refused {
            let undocumented =
                ["pg_trigger", "pg_rewrite", "aclexplode", "acldefault", "pg_policy", "Comment", "GRANT"];
            assert!(undocumented.iter().any(|u| r.contains(u)), "refused what DSQL documents: {r}");
        }
        assert!(refused.iter().any(|r| r.contains("Comment")) && refused.iter().any(|r| r.contains("column list")));
        assert!(said("COMMENT ON TABLE") && said("GRANT UPDATE (\"post_id\")"), "{not_carried:?}");
        assert!(said("triggers") && said("could not be read"), "the unread catalog is reported: {not_carried:?}");
        assert!(text(&out).contains("NotCarried") || text(&out).contains("not carried"), "{}", text(&out));
        assert_eq!(s.db.scalar_text(comment).await, "", "refused, so not carried");
        assert!(!s.db.scalar_bool(&column_privilege).await, "refused, so not carried");
    } else {
        assert!(refused.is_empty(), "nothing sent that DSQL refuses: {refused:?}");
        assert_eq!(s.db.scalar_text(comment).await, "tags of posts");
        assert!(s.db.scalar_bool(&column_privilege).await, "the column grant is carried");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_integer_id_with_a_desc_index_takes_the_copy_to_a_bigint_identity() {
    integer_id_with_extras("truth_integer", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strict_stand_in_refuses_the_undocumented_and_the_migration_reports_it() {
    integer_id_with_extras("truth_integer_strict", true).await;
}

/// The seed table through the strict stand-in, by the copy: it completes,
/// refused only what AWS's pages do not list.
#[tokio::test(flavor = "multi_thread")]
async fn the_seed_table_copies_through_a_strict_stand_in() {
    let s = StandIn::start("truth_seed_strict", |c| c.strict_undocumented = true).await;
    let t = PostTag::rows(5_000);
    t.create(&s.db).await;
    let before = s.db.fingerprint("public.post_tag", "id").await;
    let m = s.manifest(&t, "  strategy: Copy\n");
    let out = s.run(&m, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.db.fingerprint("public.post_tag", "id").await, before);
    assert_eq!(m.status()["phase"], "Completed");
    for r in s.sim.refused() {
        assert!(["pg_trigger", "pg_rewrite", "aclexplode", "acldefault"].iter().any(|u| r.contains(u)), "{r}");
    }
}

/// `InPlace` with an integer id on DSQL is refused up front, naming the rule,
/// and nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn in_place_on_an_integer_id_is_refused_before_anything_changes() {
    let s = StandIn::start("truth_in_place", |_| {}).await;
    let t = PostTag::rows(1_000).id_type("INTEGER");
    t.create(&s.db).await;
    let catalog = s.db.catalog_snapshot().await;
    let m = s.manifest(&t, "  strategy: InPlace\n");
    let out = s.run(&m, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("spec.strategy") && text(&out).contains("bigint only"), "{}", text(&out));
    let user = |all: Vec<String>| -> Vec<String> {
        all.into_iter().filter(|o| !o.starts_with("public.identity_migrator_claims")).collect()
    };
    assert_eq!(user(s.db.catalog_snapshot().await), user(catalog));
    assert_eq!(s.refused_documented(), Vec::<String>::new());
}

/// The DSQL probe's scratch table name taken by a user's table with rows:
/// refused by name, and the user's table is left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn the_probe_never_drops_a_users_table_of_its_name() {
    let s = StandIn::start("truth_probe_name", |_| {}).await;
    let t = PostTag::rows(500);
    t.create(&s.db).await;
    s.db.exec("CREATE TABLE post_tag_idmig_probe (id bigint PRIMARY KEY, note text); INSERT INTO post_tag_idmig_probe VALUES (1, 'mine')").await;
    let m = s.manifest(&t, "  strategy: Auto\n");
    let out = s.run(&m, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("post_tag_idmig_probe"), "{}", text(&out));
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM post_tag_idmig_probe").await, 1, "the user's row is still there");
}

/// `plan` says what the new table will not carry on DSQL, before anything runs.
#[tokio::test(flavor = "multi_thread")]
async fn the_dsql_plan_names_what_will_not_be_carried() {
    let db = crate::support::TestDb::new("truth_plan").await;
    let t = PostTag::rows(100);
    t.create(&db).await;
    db.exec(
        "CREATE INDEX post_tag_recent ON post_tag (created_at DESC);
         ALTER TABLE post_tag SET (fillfactor = 70);
         COMMENT ON TABLE post_tag IS 'tags';",
    )
    .await;
    let m = crate::support::Manifest::new("public", "post_tag", "id", "  strategy: Copy\n");
    let out = crate::support::run_cli(
        &["plan", "-f", m.path.to_str().unwrap(), "--database-url", &db.url, "--dialect", "dsql"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = plan.lines().filter(|l| l.contains("not carried over")).collect();
    assert!(lines.iter().any(|l| l.contains("post_tag_recent") && l.contains("ASC/DESC")), "{plan}");
    assert!(lines.iter().any(|l| l.contains("storage parameters")), "{plan}");
    assert!(plan.contains("COMMENT ON, column grants and WITH GRANT OPTION are not in AWS's pages"), "{plan}");
}

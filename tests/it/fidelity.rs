//! A table comes out of the swap as it was, for everything the application
//! or the database relies on besides rows; what cannot be carried is refused
//! before anything is touched.

use crate::support::{Manifest, PostTag, TestDb, run_migration, text};

/// Roles are the cluster's, shared by every test database.
pub(crate) async fn ensure_roles(db: &TestDb) {
    for role in ["idmig_app", "idmig_auditor", "idmig_owner"] {
        db.exec(&format!(
            "DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ))
        .await;
    }
}

/// Everything of `table` a reader of the catalog can see, in one comparable text.
pub(crate) async fn carried(db: &TestDb, table: &str) -> Vec<String> {
    let sql = format!(
        "SELECT 'owner ' || pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = '{table}'::regclass
         UNION ALL SELECT 'grant ' || coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'PUBLIC') || ' ' || a.privilege_type
                || CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END
           FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = '{table}'::regclass
         UNION ALL SELECT 'column grant ' || t.attname || ' ' || pg_get_userbyid(a.grantee) || ' ' || a.privilege_type
           FROM pg_attribute t, aclexplode(t.attacl) a WHERE t.attrelid = '{table}'::regclass AND t.attacl IS NOT NULL
         UNION ALL SELECT 'comment ' || coalesce(obj_description('{table}'::regclass, 'pg_class'), '')
         UNION ALL SELECT 'column comment ' || a.attname || ' ' || d.description FROM pg_description d
           JOIN pg_attribute a ON a.attrelid = d.objoid AND a.attnum = d.objsubid
           WHERE d.objoid = '{table}'::regclass AND d.objsubid > 0
         UNION ALL SELECT 'constraint comment ' || d.description FROM pg_constraint k
           JOIN pg_description d ON d.objoid = k.oid WHERE k.conrelid = '{table}'::regclass
         UNION ALL SELECT 'index comment ' || d.description FROM pg_index x
           JOIN pg_description d ON d.objoid = x.indexrelid WHERE x.indrelid = '{table}'::regclass
         UNION ALL SELECT 'options ' || coalesce(array_to_string(c.reloptions, ','), '') || ' replica ' || c.relreplident::text
                || ' persistence ' || c.relpersistence::text || ' rls ' || c.relrowsecurity
           FROM pg_class c WHERE c.oid = '{table}'::regclass
         UNION ALL SELECT 'statistics target ' || attname || ' ' || attstattarget FROM pg_attribute
           WHERE attrelid = '{table}'::regclass AND attnum > 0 AND attstattarget >= 0
         UNION ALL SELECT 'extended statistics ' || array_to_string(stxkind, ',') || ' on ' || stxkeys::text
           FROM pg_statistic_ext WHERE stxrelid = '{table}'::regclass
         UNION ALL SELECT 'policy ' || polname || ' ' || polcmd::text || ' ' || pg_get_expr(polqual, polrelid)
           FROM pg_policy WHERE polrelid = '{table}'::regclass
         ORDER BY 1"
    );
    db.client.query(&sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn owner_privileges_comments_options_statistics_and_policies_survive_the_swap() {
    let db = TestDb::new("fidelity").await;
    ensure_roles(&db).await;
    let t = PostTag::rows(3_000);
    t.create(&db).await;
    db.exec(
        "ALTER TABLE post_tag ADD COLUMN n serial;
         ALTER TABLE post_tag OWNER TO idmig_owner;
         GRANT SELECT, INSERT ON post_tag TO idmig_app;
         GRANT USAGE ON SEQUENCE post_tag_n_seq TO idmig_app;
         GRANT UPDATE (tag_id) ON post_tag TO idmig_auditor WITH GRANT OPTION;
         REVOKE DELETE ON post_tag FROM idmig_owner;
         COMMENT ON TABLE post_tag IS 'tags of posts; it''s shared';
         COMMENT ON COLUMN post_tag.tag_id IS 'the tag';
         COMMENT ON CONSTRAINT post_tag_pkey ON post_tag IS 'one row per id';
         COMMENT ON INDEX post_tag_post_idx IS 'by post';
         ALTER TABLE post_tag SET (fillfactor = 70, autovacuum_enabled = false);
         ALTER TABLE post_tag REPLICA IDENTITY FULL;
         ALTER TABLE post_tag SET UNLOGGED;
         ALTER TABLE post_tag ALTER COLUMN post_id SET STATISTICS 500;
         CREATE STATISTICS post_tag_stats (ndistinct, dependencies) ON post_id, tag_id FROM post_tag;
         CREATE POLICY visible ON post_tag FOR SELECT TO idmig_app USING (tag_id <> 'hidden');",
    )
    .await;
    let before = carried(&db, "post_tag").await;
    let rows = db.fingerprint("public.post_tag", "id").await;
    // retain: false drops the old table, which owns the serial column's sequence.
    let m = Manifest::for_table(&t, "  oldTable: {retain: false}\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["phase"], "Completed");
    assert!(!db.exists("public", "post_tag_old").await, "the old table was dropped");
    assert_eq!(db.fingerprint("public.post_tag", "id").await, rows);
    assert_eq!(carried(&db, "post_tag").await, before, "the new table carries what the old one did");

    // The application's role works on the new table as it did on the old one.
    db.exec("SET ROLE idmig_app").await;
    assert_eq!(db.scalar_i64("SELECT count(*) FROM post_tag WHERE tag_id <> 'hidden'").await, 3_000);
    db.exec("INSERT INTO post_tag (post_id, tag_id) VALUES ('p', 't')").await;
    db.exec("RESET ROLE").await;
    let owner = db
        .client
        .query_one("SELECT sequencename::text FROM pg_sequences WHERE sequencename = 'post_tag_n_seq'", &[])
        .await
        .unwrap();
    assert_eq!(owner.get::<_, String>(0), "post_tag_n_seq", "the serial column's sequence outlived the old table");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_during_the_migration_reaches_the_new_table() {
    let db = TestDb::new("fidelity_late").await;
    ensure_roles(&db).await;
    let t = PostTag::rows(2_000);
    t.create(&db).await;
    let m = Manifest::for_table(&t, "  cutover: {approval: Manual}\n");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.status()["phase"], "AwaitingCutover");
    // After the shadow table was made, before the cut-over.
    db.exec("GRANT SELECT ON post_tag TO idmig_app").await;
    let out = run_migration(&m, &db.url, &["--approve-cutover"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(carried(&db, "post_tag").await, carried(&db, "post_tag_old").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_bound_to_the_table_are_refused_by_name_before_anything_changes() {
    let db = TestDb::new("fidelity_refused").await;
    let t = PostTag::rows(500);
    t.create(&db).await;
    db.exec(
        "CREATE FUNCTION tag_count() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM post_tag; END;
         CREATE RULE keep AS ON DELETE TO post_tag DO ALSO NOTHING;
         CREATE TABLE other (id int);
         CREATE POLICY through ON other USING (id IN (SELECT length(tag_id) FROM post_tag));
         SET client_min_messages = error;
         CREATE PUBLICATION tags FOR TABLE post_tag;",
    )
    .await;
    let catalog = db.catalog_snapshot().await;
    let m = Manifest::for_table(&t, "");
    let out = run_migration(&m, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for named in [
        "function tag_count()",
        "rule keep on table post_tag",
        "policy through on table other",
        "publication of table post_tag in publication tags",
    ] {
        assert!(text(&out).contains(named), "{named} not named in:\n{}", text(&out));
    }
    assert_eq!(db.catalog_snapshot().await, catalog, "nothing changed");

    db.exec(
        "DROP FUNCTION tag_count(); DROP RULE keep ON post_tag; DROP POLICY through ON other; DROP PUBLICATION tags;",
    )
    .await;
    db.exec("ALTER TABLE post_tag ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY").await;
    let out = run_migration(&m, &db.url, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("forces row-level security"), "{}", text(&out));
}

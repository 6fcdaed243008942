//! `run -f` of a TableMigration on PostgreSQL (issue 22): the data proven to
//! fit before anything changes, and changes made in place without a shadow
//! table, resumably.

use std::path::PathBuf;

use crate::support::stand_in::{StandIn, credentials_env};
use crate::support::{TestDb, run_cli, text};

/// A TableMigration of `public.orders` with these `changes` (YAML list lines).
pub(crate) struct TableManifest {
    dir: tempfile::TempDir,
    path: PathBuf,
    target: String,
    changes: String,
}

impl TableManifest {
    pub(crate) fn new(changes: &str) -> Self {
        Self::with_target("{postgres: {urlSecretRef: {name: db, key: url}}}", changes)
    }

    pub(crate) fn with_target(target: &str, changes: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.yaml");
        let manifest = Self { dir, path, target: target.to_string(), changes: changes.to_string() };
        manifest.write("");
        manifest
    }

    /// Writes the manifest again with `extra` spec lines (`  rollback: true\n`).
    pub(crate) fn write(&self, extra: &str) {
        let (target, changes) = (&self.target, &self.changes);
        let yaml = format!(
            "apiVersion: migrations.dsql.dev/v1alpha1\nkind: TableMigration\nmetadata:\n  name: orders-v2\nspec:\n  \
             target: {target}\n  table: orders\n  changes:\n{changes}{extra}"
        );
        std::fs::write(&self.path, yaml).unwrap();
    }

    /// `run -f` of this manifest through the DSQL stand-in `s`.
    pub(crate) fn run_through(&self, s: &StandIn) -> std::process::Output {
        let args = ["run", "-f", self.path.to_str().unwrap(), "--ca-file", s.ca.path().to_str().unwrap()];
        run_cli(&args, &credentials_env())
    }

    pub(crate) fn run(&self, db: &TestDb, env: &[(&str, &str)]) -> std::process::Output {
        run_cli(&["run", "-f", self.path.to_str().unwrap(), "--database-url", &db.url], env)
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("orders.yaml.state.json")).expect("state file");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["status"].clone()
    }
}

/// `orders (id, amount, email, code, ref)` with 2,000 rows that fit every change below.
pub(crate) async fn orders(db: &TestDb) {
    db.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount integer, email text, code text, ref bigint);
         INSERT INTO orders SELECT g, g * 3, 'u' || g || '@example.com', g::text, g FROM generate_series(1, 2000) g;",
    )
    .await;
}

/// The first column of every row of `sql`, as text.
async fn texts(db: &TestDb, sql: &str) -> Vec<String> {
    db.client.query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

/// What a change could touch: relations, constraints and each column's type and nullability.
async fn schema_fingerprint(db: &TestDb) -> Vec<String> {
    let mut all = db.catalog_snapshot().await;
    let rows = db
        .client
        .query(
            "SELECT conname::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'orders'::regclass
             UNION ALL SELECT attname::text || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull::text \
             FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    all.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn not_null_is_made_in_place_with_no_shadow_table_and_a_brief_lock() {
    let db = TestDb::new("tblrun_not_null").await;
    orders(&db).await;
    let manifest = TableManifest::new("    - alterColumn: {column: email, notNull: true}\n");
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Completed in place: 1 changes in 4 statements"), "{}", text(&out));
    let not_null = "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'email'";
    assert!(db.scalar_bool(not_null).await, "email is NOT NULL now");
    assert!(!db.exists("public", "orders_new").await, "no shadow table is built");
    let constraints = db.scalar_i64("SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass").await;
    assert_eq!(constraints, 1, "the helper CHECK is gone; the primary key is left");
    let status = manifest.status();
    assert_eq!(status["phase"], "Completed");
    assert_eq!(status["changes"]["applied"], 4);
    assert_eq!(status["changes"]["planned"][0]["way"], "InPlace");
    assert!(status["changes"]["longestLockMillis"].as_i64().is_some(), "{status}");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders").await, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn nulls_uncastable_values_and_duplicates_are_refused_with_the_ids_and_nothing_changes() {
    let db = TestDb::new("tblrun_bad_data").await;
    orders(&db).await;
    db.exec(
        "UPDATE orders SET email = NULL WHERE id IN (7, 300);
         UPDATE orders SET code = 'x' || id WHERE id IN (5, 1234, 1999);
         UPDATE orders SET ref = 10 WHERE id = 11;
         UPDATE orders SET ref = 20 WHERE id IN (21, 22);",
    )
    .await;
    let before = schema_fingerprint(&db).await;
    let cases = [
        ("    - alterColumn: {column: email, notNull: true}\n", "2 rows have NULL in email (ids 7, 300)"),
        (
            "    - alterColumn: {column: code, type: integer, using: \"code::integer\"}\n",
            "3 rows have a code that does not convert to integer (ids 5, 1234, 1999)",
        ),
        (
            "    - addConstraint: {name: orders_ref_key, unique: [ref]}\n",
            "5 rows have a (ref) that another row has too (ids 10, 11, 20, 21, 22)",
        ),
    ];
    for (changes, said) in cases {
        let manifest = TableManifest::new(changes);
        let out = manifest.run(&db, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(said), "expected {said:?} in: {}", text(&out));
        assert!(text(&out).contains("nothing was changed"), "{}", text(&out));
        assert_eq!(schema_fingerprint(&db).await, before, "the database is unchanged after {changes}");
        let status = manifest.status();
        assert_eq!(status["lastError"]["invalidData"], true, "{status}");
        let degraded = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap();
        assert_eq!(degraded["reason"], "InvalidData");
    }
    // Without `using`, text has no assignment cast to integer: ALTER TABLE
    // refuses the change whatever the rows hold, and so does the engine.
    let out = TableManifest::new("    - alterColumn: {column: code, type: integer}\n").run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "spec.changes[0].alterColumn.type: ALTER TABLE refuses this change: column \"code\" cannot be cast \
             automatically to type integer; set `using`"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(schema_fingerprint(&db).await, before, "the database is unchanged");
    // The three together: every finding at once, each under its change's field.
    let all = TableManifest::new(&cases.iter().map(|c| c.0).collect::<String>());
    let out = all.run(&db, &[]);
    let said = text(&out);
    for (i, (_, finding)) in cases.iter().enumerate() {
        let field = ["alterColumn", "alterColumn", "addConstraint"][i];
        assert!(said.contains(&format!("spec.changes[{i}].{field}: {finding}")), "{said}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_using_expression_is_refused_by_its_field() {
    let db = TestDb::new("tblrun_bad_using").await;
    orders(&db).await;
    let manifest =
        TableManifest::new("    - alterColumn: {column: code, type: integer, using: \"no_such_column + 1\"}\n");
    let out = manifest.run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "spec.changes[0].alterColumn.using: ALTER TABLE refuses this change: column \"no_such_column\" does not exist"
        ),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_between_in_place_statements_resumes_and_finishes() {
    let db = TestDb::new("tblrun_crash").await;
    orders(&db).await;
    let manifest = TableManifest::new(
        "    - alterColumn: {column: email, notNull: true}\n    - addConstraint: {name: orders_ref_key, unique: [ref]}\n",
    );
    // Killed after the NOT VALID check and after the unique index committed,
    // each before the count was saved: the next run finds them made.
    for crash_at in ["change-made:1", "change-made:5"] {
        let out = manifest.run(&db, &[("IDENTITY_MIGRATOR_CRASH_AT", crash_at)]);
        assert!(!out.status.success(), "the crash point {crash_at} was reached: {}", text(&out));
    }
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest.status()["changes"]["applied"], 6);
    let defs = texts(
        &db,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'orders'::regclass ORDER BY 1",
    )
    .await;
    assert_eq!(defs, ["PRIMARY KEY (id)", "UNIQUE (ref)"]);
    assert!(
        db.scalar_bool("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'email'")
            .await
    );
}

/// Through the DSQL stand-in: the scan's reads and the changes DSQL makes in
/// place pass its rules (a CHECK is added NOT VALID and validated by an
/// `ALTER TABLE ASYNC` job, awaited); a NOT NULL with NULLs present is
/// refused by the scan before the planner's verdict (DSQL needs the rebuild).
#[tokio::test(flavor = "multi_thread")]
async fn dsql_makes_drops_renames_defaults_bare_columns_and_checks_in_place() {
    let s = StandIn::start("tblrun_dsql", |_| {}).await;
    orders(&s.db).await;
    s.db.exec("UPDATE orders SET email = NULL WHERE id = 42").await;
    let run = |m: &TableManifest| {
        let mut args = vec!["run", "-f", m.path.to_str().unwrap(), "--ca-file", s.ca.path().to_str().unwrap()];
        args.push("--approve-cutover");
        run_cli(&args, &credentials_env())
    };
    let refused = TableManifest::with_target(&s.target(), "    - alterColumn: {column: email, notNull: true}\n");
    let out = run(&refused);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("1 row has NULL in email (ids 42)"), "{}", text(&out));

    let m = TableManifest::with_target(
        &s.target(),
        "    - dropColumn: {name: ref}\n    - renameColumn: {from: code, to: sku}\n    \
         - alterColumn: {column: amount, default: \"0\"}\n    - addColumn: {name: note, type: text}\n    \
         - addConstraint: {name: amount_positive, check: \"amount >= 0\"}\n",
    );
    let out = run(&m);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.refused_documented(), Vec::<String>::new(), "nothing sent that DSQL refuses");
    let columns = texts(
        &s.db,
        "SELECT attname::text FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 \
         AND NOT attisdropped ORDER BY attnum",
    )
    .await;
    assert_eq!(columns, ["id", "amount", "email", "sku", "note"]);
    assert_eq!(
        s.db.scalar_text("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'orders'::regclass").await,
        "0"
    );
    assert_eq!(m.status()["changes"]["applied"], 6, "the check: NOT VALID, then an ASYNC validation job");
    let validated = "SELECT convalidated FROM pg_constraint WHERE conname = 'amount_positive'";
    assert!(s.db.scalar_bool(validated).await, "the validation job ran and was awaited");
}

/// The PostgreSQL case: a type change, NOT NULL, a defaulted column
/// and a dropped column, made in one rebuild.
const REBUILD: &str = "    - alterColumn: {column: amount, type: \"numeric(12,2)\"}\n    \
     - alterColumn: {column: email, notNull: true}\n    \
     - addColumn: {name: status, type: text, notNull: true, default: \"'new'\"}\n    \
     - dropColumn: {name: code}\n";

/// Every row of the new table is the old one through the changes: `(id,
/// amount, email)` as `ledger` says, `status` 'new', `code` gone.
async fn assert_rebuilt(db: &TestDb, ledger: &std::collections::BTreeMap<i64, (i32, String)>) {
    let columns = texts(
        db,
        "SELECT attname::text || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull::text \
         FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .await;
    assert_eq!(
        columns,
        ["id bigint true", "amount numeric(12,2) false", "email text true", "ref bigint false", "status text true"]
    );
    let rows = db.client.query("SELECT id, amount::integer, email, status FROM orders ORDER BY id", &[]).await.unwrap();
    let got: std::collections::BTreeMap<i64, (i32, String)> =
        rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
    assert_eq!(got.len(), ledger.len(), "no row lost or added");
    assert!(got == *ledger, "every row as written");
    assert!(rows.iter().all(|r| r.get::<_, String>(3) == "new"));
}

/// The table's rows as `(id, amount, email)`.
async fn ledger_of(db: &TestDb, table: &str) -> std::collections::BTreeMap<i64, (i32, String)> {
    let sql = format!("SELECT id, amount::integer, email FROM {table}");
    db.client.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
}

/// Inserts, updates and deletes `orders` through the run, writing only
/// columns that survive the changes and retrying while the table's name is
/// away (the window); returns what the table must hold.
async fn write_orders(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::collections::BTreeMap<i64, (i32, String)> {
    use std::sync::atomic::Ordering;
    let client = crate::support::connect(&url).await;
    let mut ledger: std::collections::BTreeMap<i64, (i32, String)> = client
        .query("SELECT id, amount, email FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let (mut next, mut step) = (10_000_i64, 0_i64);
    while !stop.load(Ordering::SeqCst) || step < 30 {
        step += 1;
        let target = 1 + (step * 7919) % 2000;
        let (sql, params): (&str, Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>) = match step % 3 {
            0 => (
                "INSERT INTO orders (id, amount, email) VALUES ($1, $2::integer, $3)",
                vec![Box::new(next), Box::new((step % 500) as i32), Box::new(format!("live{step}"))],
            ),
            1 => (
                "UPDATE orders SET amount = $2::integer, email = $3 WHERE id = $1",
                vec![Box::new(target), Box::new((step % 300) as i32), Box::new(format!("upd{step}"))],
            ),
            _ => (
                "DELETE FROM orders WHERE id = $1 AND $2::integer IS NOT NULL AND $3::text IS NOT NULL",
                vec![Box::new(target + 1), Box::new(0_i32), Box::new(String::new())],
            ),
        };
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        loop {
            match client.execute(sql, &refs).await {
                Ok(n) => {
                    match step % 3 {
                        0 => {
                            ledger.insert(next, ((step % 500) as i32, format!("live{step}")));
                            next += 1;
                        }
                        1 if n == 1 => {
                            ledger.insert(target, ((step % 300) as i32, format!("upd{step}")));
                        }
                        2 if n == 1 => {
                            ledger.remove(&(target + 1));
                        }
                        _ => {}
                    }
                    break;
                }
                // The window: the name is away for a moment.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("{sql}: {e}"),
            }
        }
    }
    ledger
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_changes_type_not_null_default_and_drops_with_a_live_writer_and_loses_nothing() {
    let db = TestDb::new("tblrun_rebuild").await;
    orders(&db).await;
    db.exec("CREATE INDEX orders_email_idx ON orders (email); CREATE INDEX orders_code_idx ON orders (code)").await;
    let manifest = TableManifest::new(REBUILD);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(write_orders(db.url.clone(), stop.clone()));
    let (path, url) = (manifest.path.clone(), db.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        run_cli(&["run", "-f", path.to_str().unwrap(), "--database-url", &url], &[])
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let ledger = writer.await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Completed by the rebuild: 4 changes"), "{}", text(&out));
    assert_rebuilt(&db, &ledger).await;
    let status = manifest.status();
    assert_eq!(status["strategy"]["taken"], "Copy");
    assert!(status["changes"]["planned"].as_array().unwrap().iter().all(|c| c["way"] == "Rebuild"), "{status}");
    let not_carried = status["plan"]["notCarried"].to_string();
    assert!(not_carried.contains("orders_code_idx"), "the index of the dropped column is said: {not_carried}");
    let indexes = texts(&db, "SELECT indexdef FROM pg_indexes WHERE tablename = 'orders' ORDER BY 1").await;
    assert!(indexes.iter().any(|i| i.contains("(email)")), "{indexes:?}");
    assert!(db.exists("public", "orders_old").await, "the original rows are kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_killed_while_copying_and_between_the_renames_resumes_and_loses_nothing() {
    for (i, crash_at) in ["copy-batch:1", "capture-taken:1", "swap-renamed-out"].into_iter().enumerate() {
        let db = TestDb::new(&format!("tblrun_rebuild_crash{i}")).await;
        orders(&db).await;
        let before = ledger_of(&db, "orders").await;
        let manifest = TableManifest::new(REBUILD);
        let out = manifest.run(&db, &[("IDENTITY_MIGRATOR_CRASH_AT", crash_at)]);
        assert!(!out.status.success(), "the crash point {crash_at} was reached: {}", text(&out));
        if crash_at == "swap-renamed-out" {
            assert!(!db.exists("public", "orders").await, "killed inside the window: the name is away");
        }
        let out = manifest.run(&db, &[]);
        assert!(out.status.success(), "after {crash_at}: {}", text(&out));
        assert_rebuilt(&db, &before).await;
    }
}

/// The same rebuild through the DSQL stand-in, which refuses ALTER COLUMN
/// TYPE, SET NOT NULL and ADD COLUMN with a default as DSQL does: nothing the
/// engine sends is refused, and every row comes through.
#[tokio::test(flavor = "multi_thread")]
async fn dsql_makes_the_same_rebuild_through_the_stand_in() {
    let s = StandIn::start("tblrun_dsql_rebuild", |_| {}).await;
    orders(&s.db).await;
    s.db.exec("CREATE INDEX orders_email_idx ON orders (email)").await;
    let before = ledger_of(&s.db, "orders").await;
    let m = TableManifest::with_target(&s.target(), REBUILD);
    let out = m.run_through(&s);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(s.refused_documented(), Vec::<String>::new(), "nothing sent that DSQL refuses");
    assert_rebuilt(&s.db, &before).await;
    let indexes = texts(&s.db, "SELECT indexdef FROM pg_indexes WHERE tablename = 'orders' ORDER BY 1").await;
    assert!(indexes.iter().any(|i| i.contains("(email)")), "built by an ASYNC job: {indexes:?}");
}

/// A row written after the scan that the new shape refuses (a NULL email)
/// stops the rebuild with its id, nothing lost; fixed, the run goes on from
/// its checkpoint and the fixed value comes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_write_that_breaks_the_new_shape_is_named_by_id_and_the_cut_over_waits() {
    let db = TestDb::new("tblrun_late_null").await;
    orders(&db).await;
    let manifest = TableManifest::new(REBUILD);
    let out = manifest.run(&db, &[("IDENTITY_MIGRATOR_CRASH_AT", "enter-Verifying")]);
    assert!(!out.status.success(), "stopped before verification: {}", text(&out));
    db.exec("UPDATE orders SET email = NULL WHERE id = 1500").await;
    let out = manifest.run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("rows written since the data scan do not fit the new shape"), "{said}");
    assert!(said.contains("spec.changes[1].alterColumn: 1 row has NULL in email (ids 1500)"), "{said}");
    assert!(db.exists("public", "orders").await && !db.exists("public", "orders_old").await, "no cut-over");
    assert_eq!(manifest.status()["lastError"]["invalidData"], true);
    db.exec("UPDATE orders SET email = 'fixed' WHERE id = 1500").await;
    let before = ledger_of(&db, "orders").await;
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_rebuilt(&db, &before).await;
}

/// A rebuild needs of the table what the identity copy does: a NOT VALID
/// check or forced row security is refused by name before anything changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_refuses_what_the_copy_cannot_carry_before_anything_changes() {
    let db = TestDb::new("tblrun_preflight").await;
    orders(&db).await;
    db.exec(
        "ALTER TABLE orders ADD CONSTRAINT orders_amount_check CHECK (amount > 0) NOT VALID;
         ALTER TABLE orders ENABLE ROW LEVEL SECURITY; ALTER TABLE orders FORCE ROW LEVEL SECURITY;",
    )
    .await;
    let before = schema_fingerprint(&db).await;
    let manifest = TableManifest::new(REBUILD);
    let out = manifest.run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("has a NOT VALID check constraint; validate it first"), "{said}");
    assert!(said.contains("forces row-level security on its owner"), "{said}");
    assert_eq!(schema_fingerprint(&db).await, before);
    assert!(!db.exists("public", "orders_new").await);
}

/// The rebuilt table carries the original's comments and privileges, each
/// column's by its new name; a grant on a dropped column is said, not carried.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_table_keeps_comments_and_grants_by_the_columns_new_names() {
    let db = TestDb::new("tblrun_extras").await;
    orders(&db).await;
    db.exec(
        "DO $$ BEGIN CREATE ROLE idmig_tbl_reader; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         COMMENT ON TABLE orders IS 'every order';
         COMMENT ON COLUMN orders.ref IS 'the outside reference';
         GRANT SELECT ON orders TO idmig_tbl_reader;
         GRANT UPDATE (ref, code) ON orders TO idmig_tbl_reader;",
    )
    .await;
    let manifest = TableManifest::new(&format!("{REBUILD}    - renameColumn: {{from: ref, to: reference}}\n"));
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.scalar_text("SELECT obj_description('orders'::regclass, 'pg_class')").await, "every order");
    let column_comment = "SELECT col_description('orders'::regclass, attnum) FROM pg_attribute \
                          WHERE attrelid = 'orders'::regclass AND attname = 'reference'";
    assert_eq!(db.scalar_text(column_comment).await, "the outside reference");
    assert!(db.scalar_bool("SELECT has_table_privilege('idmig_tbl_reader', 'orders', 'SELECT')").await);
    assert!(db.scalar_bool("SELECT has_column_privilege('idmig_tbl_reader', 'orders', 'reference', 'UPDATE')").await);
    let not_carried = manifest.status()["plan"]["notCarried"].to_string();
    assert!(not_carried.contains("UPDATE on column code to idmig_tbl_reader: the column is dropped"), "{not_carried}");
}

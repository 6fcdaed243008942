//! The TableMigration planner's SQL against a real PostgreSQL (issue 22): the
//! rebuild's SELECT gives the new shape's rows, and the in-place recipes run.

use identity_migrator::api::Strategy;
use identity_migrator::api::changes::Change;
use identity_migrator::db::Dialect;
use identity_migrator::engine::plan::changes::ways::{Way, plan_changes};
use identity_migrator::engine::plan::shape::TableName;
use identity_migrator::engine::steps::catalog::read_shape;

use crate::support::TestDb;

async fn orders(db: &TestDb) {
    db.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount integer, email text, legacy text, cust bigint);
         INSERT INTO orders SELECT g, g * 3, 'u' || g || '@example.com', 'old', g % 7 FROM generate_series(1, 500) g;",
    )
    .await;
}

fn changes(yaml: &str) -> Vec<Change> {
    serde_norway::from_str(yaml).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rebuilds_select_gives_every_row_in_the_new_shape() {
    let db = TestDb::new("changes_select").await;
    orders(&db).await;
    let table = TableName::new("public", "orders");
    let shape = read_shape(&db.client, &table).await.unwrap().unwrap();
    let list = changes(
        r#"
- alterColumn: {column: amount, type: "numeric(12,2)", using: "amount / 100.0"}
- alterColumn: {column: email, notNull: true}
- addColumn: {name: status, type: text, notNull: true, default: "'new'"}
- dropColumn: {name: legacy}
- renameColumn: {from: cust, to: customer_id}
"#,
    );
    let plan = plan_changes(&shape, &table, &list, Dialect::Postgres, Strategy::Auto, None).unwrap();
    assert!(plan.decided.iter().all(|d| d.way == Way::Rebuild));
    let rebuild = plan.rebuild.unwrap();
    let select = rebuild.select(&table.to_string());
    db.exec(&format!("CREATE TABLE orders_new AS {select}")).await;
    let columns = db
        .client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = 'orders_new'::regclass AND attnum > 0 ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect::<Vec<_>>();
    assert_eq!(columns, ["id bigint", "amount numeric(12,2)", "email text", "customer_id bigint", "status text"]);
    let differs = "SELECT count(*) FROM orders o FULL JOIN orders_new n USING (id) \
                   WHERE n.id IS NULL OR o.id IS NULL OR n.amount <> round(o.amount / 100.0, 2) \
                   OR n.email <> o.email OR n.customer_id <> o.cust OR n.status <> 'new'";
    assert_eq!(db.scalar_i64(differs).await, 0, "{select}");
}

#[tokio::test(flavor = "multi_thread")]
async fn not_null_alone_runs_in_place_and_leaves_no_shadow() {
    let db = TestDb::new("changes_not_null").await;
    orders(&db).await;
    let table = TableName::new("public", "orders");
    let shape = read_shape(&db.client, &table).await.unwrap().unwrap();
    let list = changes(
        r#"
- alterColumn: {column: email, notNull: true}
- addConstraint: {name: orders_email_key, unique: [email]}
- addConstraint: {name: amount_positive, check: "amount >= 0"}
- alterColumn: {column: legacy, default: "'none'"}
"#,
    );
    let plan = plan_changes(&shape, &table, &list, Dialect::Postgres, Strategy::Auto, None).unwrap();
    assert!(plan.rebuild.is_none());
    for decided in &plan.decided {
        assert_eq!(decided.way, Way::InPlace, "{decided:?}");
        for sql in &decided.statements {
            db.exec(sql).await;
        }
    }
    let not_null = "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'email'";
    assert!(db.scalar_bool(not_null).await);
    let constraints = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass \
                       AND conname IN ('orders_email_key', 'amount_positive') AND convalidated";
    assert_eq!(db.scalar_i64(constraints).await, 2);
    let leftover = "SELECT count(*) FROM pg_constraint WHERE conname = 'orders_email_not_null'";
    assert_eq!(db.scalar_i64(leftover).await, 0, "the helper check is gone");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders").await, 500);
}

/// A TableMigration manifest of `changes` (YAML list lines) for `orders`.
fn manifest(changes: &str, strategy: &str) -> crate::support::Manifest {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.yaml");
    let yaml = format!(
        "apiVersion: migrations.dsql.dev/v1alpha1\nkind: TableMigration\nmetadata: {{name: orders-v2}}\nspec:\n  \
         target: {{postgres: {{urlSecretRef: {{name: db, key: url}}}}}}\n  table: orders\n  strategy: {strategy}\n  \
         changes:\n{changes}"
    );
    std::fs::write(&path, yaml).unwrap();
    crate::support::Manifest { dir, path }
}

fn plan(db: &TestDb, m: &crate::support::Manifest, dialect: &str) -> std::process::Output {
    crate::support::run_cli(
        &["plan", "-f", m.path.to_str().unwrap(), "--database-url", &db.url, "--dialect", dialect],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_says_per_change_in_place_or_rebuild_and_why_for_each_server() {
    let db = TestDb::new("changes_plan").await;
    orders(&db).await;
    let before = db.catalog_snapshot().await;
    let changes = "    - dropColumn: {name: legacy}\n    - alterColumn: {column: email, notNull: true}\n    \
                   - addColumn: {name: status, type: text, notNull: true, default: \"'new'\"}\n";
    let m = manifest(changes, "Auto");
    let out = plan(&db, &m, "postgres");
    assert!(out.status.success(), "{}", crate::support::text(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        "-- change 0 (dropColumn): in place:",
        "-- change 1 (alterColumn): in place: a NOT VALID check",
        "VALIDATE CONSTRAINT \"orders_email_not_null\";",
        "-- change 2 (addColumn): in place: PostgreSQL keeps a constant default",
        "--   no NULL in email",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    assert!(!text.contains("the rebuild"), "{text}");
    let out = plan(&db, &m, "dsql");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("-- change 1 (alterColumn): rebuild: DSQL refuses SET NOT NULL"), "{text}");
    assert!(text.contains("CREATE TABLE \"public\".\"orders_new\""), "{text}");
    assert!(text.contains("\"status\" text DEFAULT ('new') NOT NULL"), "{text}");
    assert_eq!(db.catalog_snapshot().await, before, "plan changes nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_changes_and_a_forbidden_rebuild_exit_2_naming_the_field() {
    let db = TestDb::new("changes_bad").await;
    orders(&db).await;
    let cases = [
        ("    - alterColumn: {column: nope, notNull: true}\n", "Auto", "spec.changes[0].alterColumn.column"),
        ("    - alterColumn: {column: amount, type: bigint}\n", "InPlace", "spec.changes[0].alterColumn"),
        ("    - dropColumn: {name: legacy, extra: 1}\n", "Auto", "spec.changes[0].dropColumn"),
    ];
    for (changes, strategy, field) in cases {
        let m = manifest(changes, strategy);
        let out = plan(&db, &m, "postgres");
        assert_eq!(out.status.code(), Some(2), "{}", crate::support::text(&out));
        assert!(crate::support::text(&out).contains(field), "{field}: {}", crate::support::text(&out));
    }
    // `run` refuses a change to the key the rows are gone through by, with
    // nothing changed (the drop before it included).
    let m = manifest("    - dropColumn: {name: legacy}\n    - alterColumn: {column: id, type: integer}\n", "Auto");
    let out = crate::support::run_cli(&["run", "-f", m.path.to_str().unwrap(), "--database-url", &db.url], &[]);
    assert_eq!(out.status.code(), Some(2));
    let said = crate::support::text(&out);
    assert!(said.contains("spec.changes[1].alterColumn.type: \"id\" is the primary key"), "{said}");
    assert_eq!(
        db.scalar_i64("SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'legacy'")
            .await,
        1
    );
}

/// The example in examples/ is a TableMigration the planner accepts for DSQL.
#[tokio::test(flavor = "multi_thread")]
async fn the_dsql_example_plans_for_its_table() {
    let db = TestDb::new("changes_example").await;
    orders(&db).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/orders-table-dsql.yaml");
    let m = identity_migrator::cli::manifest::load_table(&path).unwrap();
    let table = TableName::new("public", "orders");
    let shape = read_shape(&db.client, &table).await.unwrap().unwrap();
    let plan = plan_changes(&shape, &table, &m.spec.changes, Dialect::Dsql, m.spec.strategy, None).unwrap();
    let ways: Vec<Way> = plan.decided.iter().map(|d| d.way).collect();
    // The drop alone would be in place; the rebuild the others need makes it too.
    assert_eq!(ways, [Way::Rebuild; 4]);
    assert!(plan.decided[0].why.contains("which another change needs anyway"), "{}", plan.decided[0].why);
}

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
    let plan = plan_changes(&shape, &table, &list, Dialect::Postgres, Strategy::Auto).unwrap();
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
    let plan = plan_changes(&shape, &table, &list, Dialect::Postgres, Strategy::Auto).unwrap();
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

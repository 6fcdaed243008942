use super::*;
use crate::versioned::files::{Version, checksum};
use crate::versioned::sql::statements;

fn file(sql: &str) -> VersionedFile {
    VersionedFile {
        version: Version::new("3"),
        description: "x".into(),
        file: "V3__x.sql".into(),
        sql: sql.into(),
        first_line: 1,
        checksum: checksum(sql),
        repeatable: false,
    }
}

fn plan(sql: &str, dialect: Dialect) -> Result<PlannedMigration, Refused> {
    let f = file(sql);
    plan_file(&f, &statements(&f).unwrap(), dialect)
}

fn kinds(m: &PlannedMigration) -> Vec<&'static str> {
    m.steps.iter().map(|s| s.kind.name()).collect()
}

#[test]
fn on_dsql_indexes_are_async_and_on_postgresql_concurrent() {
    let sql = "CREATE INDEX orders_customer ON orders (customer_id);";
    let dsql = plan(sql, Dialect::Dsql).unwrap();
    assert_eq!(
        dsql.steps[0].kind,
        StepKind::Index {
            sql: "CREATE INDEX ASYNC orders_customer ON orders (customer_id)".into(),
            index: TableName::new("public", "orders_customer")
        }
    );
    let pg = plan(sql, Dialect::Postgres).unwrap();
    assert!(matches!(&pg.steps[0].kind, StepKind::Index { sql, .. } if sql.starts_with("CREATE INDEX CONCURRENTLY")));
    let gin = plan("CREATE INDEX g ON docs USING gin (body);", Dialect::Dsql).unwrap_err();
    assert!(gin.rule.contains("B-tree") && gin.at == "V3__x.sql:1", "{gin}");
}

#[test]
fn consecutive_refused_alters_on_one_table_fold_into_one_rebuild() {
    let sql = "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2);\n\
               ALTER TABLE orders ALTER COLUMN email SET NOT NULL;\n\
               ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'new', DROP COLUMN legacy;\n\
               ALTER TABLE customers ALTER COLUMN name SET NOT NULL;\n";
    let m = plan(sql, Dialect::Dsql).unwrap();
    assert_eq!(kinds(&m), ["rebuild", "rebuild"]);
    let StepKind::Rebuild { table, changes } = &m.steps[0].kind else { panic!() };
    assert_eq!(table, &TableName::new("public", "orders"));
    assert_eq!(changes.len(), 4, "type, NOT NULL, added column and the dropped one: {changes:?}");
    assert!(changes[3].drop_column.is_some());
    assert!(m.destructive, "DROP COLUMN");
    assert!(m.steps[0].why.contains("4 changes"));
}

#[test]
fn a_plain_alter_between_two_refused_ones_keeps_its_place() {
    let sql = "ALTER TABLE t ALTER COLUMN a TYPE bigint;\n\
               ALTER TABLE t OWNER TO app;\n\
               ALTER TABLE t ALTER COLUMN b SET NOT NULL;\n";
    assert_eq!(kinds(&plan(sql, Dialect::Dsql).unwrap()), ["rebuild", "ddl", "rebuild"]);
}

#[test]
fn constraints_go_not_valid_then_validate_by_a_job_on_dsql() {
    let sql =
        "ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id);";
    let m = plan(sql, Dialect::Dsql).unwrap();
    assert_eq!(kinds(&m), ["ddl", "validate"]);
    assert!(matches!(&m.steps[0].kind, StepKind::Ddl { sql, .. } if sql.ends_with("NOT VALID")));
    assert_eq!(
        m.steps[1].kind,
        StepKind::Validate {
            sql: "ALTER TABLE ASYNC \"public\".\"orders\" VALIDATE CONSTRAINT \"orders_customer_fk\"".into(),
            table: TableName::new("public", "orders"),
            constraint: "orders_customer_fk".into()
        }
    );
    let pg = plan(sql, Dialect::Postgres).unwrap();
    assert!(
        matches!(&pg.steps[1].kind, StepKind::Validate { sql, .. } if sql.starts_with("ALTER TABLE \"public\".\"orders\""))
    );
}

#[test]
fn updates_and_deletes_are_backfills_and_single_rows_run_as_they_are() {
    let sql = "UPDATE orders SET n = n + 1;\nINSERT INTO orders VALUES (1);\nDELETE FROM audit;\n";
    let m = plan(sql, Dialect::Dsql).unwrap();
    assert_eq!(kinds(&m), ["backfill", "dml", "backfill"]);
    assert!(m.destructive, "a DELETE without WHERE");
    assert!(!plan("DELETE FROM audit WHERE at < now();", Dialect::Dsql).unwrap().destructive);
}

#[test]
fn an_insert_select_from_one_table_is_batched_by_that_tables_keys() {
    let m = plan(
        "INSERT INTO archive (id, total) SELECT o.id, o.total * 2 FROM orders o WHERE o.total > 0;",
        Dialect::Dsql,
    )
    .unwrap();
    assert_eq!(kinds(&m), ["backfill"]);
    assert!(matches!(&m.steps[0].kind, StepKind::Backfill { table, .. } if table.name == "orders"));
    assert!(m.steps[0].why.contains("key ranges of \"public\".\"orders\""), "{}", m.steps[0].why);
    // What batches would change runs whole: grouping, LIMIT, a join, a set
    // operation, an aggregate, the table written read again, no table at all.
    for whole in [
        "INSERT INTO totals SELECT customer, sum(total) FROM orders GROUP BY customer;",
        "INSERT INTO archive SELECT * FROM orders ORDER BY id LIMIT 10;",
        "INSERT INTO archive SELECT o.* FROM orders o JOIN customers c ON c.id = o.customer;",
        "INSERT INTO archive SELECT * FROM orders UNION SELECT * FROM old_orders;",
        "INSERT INTO counts SELECT count(*) FROM orders;",
        "INSERT INTO archive SELECT * FROM orders o WHERE NOT EXISTS (SELECT 1 FROM archive a WHERE a.id = o.id);",
        "INSERT INTO orders SELECT id + 1000000, total FROM orders;",
        "INSERT INTO t SELECT g FROM generate_series(1, 10) g;",
        "INSERT INTO archive SELECT DISTINCT * FROM orders;",
        "WITH x AS (SELECT * FROM orders) INSERT INTO archive SELECT * FROM x;",
    ] {
        assert_eq!(kinds(&plan(whole, Dialect::Dsql).unwrap()), ["dml"], "{whole}");
    }
}

#[test]
fn what_dsql_cannot_do_is_refused_with_file_line_and_rule_before_anything_runs() {
    let sql = "CREATE TABLE a (id bigint PRIMARY KEY);\n\nCREATE TABLE b (id serial PRIMARY KEY);\n";
    let refused = plan(sql, Dialect::Dsql).unwrap_err();
    assert_eq!(refused.at, "V3__x.sql:3");
    assert!(refused.rule.contains("SERIAL") && refused.page.starts_with("https://docs.aws.amazon.com/"), "{refused}");
    assert!(plan(sql, Dialect::Postgres).is_ok(), "PostgreSQL has SERIAL");
    let trigger = "CREATE TRIGGER t BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION f();";
    assert!(plan(trigger, Dialect::Dsql).unwrap_err().rule.contains("triggers"));
}

#[test]
fn a_files_transaction_is_kept_around_dml_and_replaced_around_ddl() {
    let dml = "BEGIN;\nINSERT INTO t VALUES (1);\nUPDATE t SET n = 2 WHERE id = 1;\nCOMMIT;\n";
    let m = plan(dml, Dialect::Dsql).unwrap();
    assert_eq!(kinds(&m), ["transaction"]);
    assert_eq!(m.steps[0].at, "V3__x.sql:1");
    let ddl = "BEGIN;\nCREATE TABLE t (id bigint PRIMARY KEY);\nCREATE INDEX t_n ON t (n);\nCOMMIT;\n";
    let m = plan(ddl, Dialect::Dsql).unwrap();
    assert_eq!(kinds(&m), ["ddl", "index"]);
    assert!(m.steps[0].why.contains("BEGIN at V3__x.sql:1 is replaced"), "{}", m.steps[0].why);
    let rolled_back = plan("BEGIN;\nDELETE FROM t;\nROLLBACK;\n", Dialect::Dsql).unwrap();
    assert!(rolled_back.steps.is_empty() && !rolled_back.destructive);
}

#[test]
fn the_rendered_plan_says_each_steps_kind_place_reason_and_sql_and_its_hash_follows_it() {
    let m =
        plan("CREATE TABLE t (id bigint PRIMARY KEY);\nALTER TABLE t ALTER COLUMN id TYPE numeric;\n", Dialect::Dsql)
            .unwrap();
    let text = render(std::slice::from_ref(&m));
    assert!(text.contains("-- version 3 (V3__x.sql): x [rebuilds a table]"), "{text}");
    assert!(text.contains("-- step 1/2 ddl at V3__x.sql:1: CREATE TABLE: one DDL statement, its own transaction"));
    assert!(text.contains("CREATE TABLE t (id bigint PRIMARY KEY);"));
    assert!(text.contains("-- step 2/2 rebuild at V3__x.sql:2"));
    let other = plan("CREATE TABLE t (id bigint PRIMARY KEY);\n", Dialect::Dsql).unwrap();
    assert_ne!(plan_hash(std::slice::from_ref(&m)), plan_hash(&[other]));
    assert_eq!(plan_hash(std::slice::from_ref(&m)), plan_hash(&[m]));
}

use super::*;

fn what(sql: &str) -> What {
    let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).unwrap();
    classify(parsed.protobuf.stmts[0].stmt.as_ref().unwrap().node.as_ref().unwrap()).unwrap()
}

fn parts(sql: &str) -> Vec<AlterPart> {
    match what(sql) {
        What::Alter { parts, .. } => parts,
        other => panic!("not an ALTER TABLE: {other:?}"),
    }
}

fn the_change(part: &AlterPart) -> &Change {
    match part {
        AlterPart::Change(c) => c,
        other => panic!("not a change: {other:?}"),
    }
}

#[test]
fn an_alter_table_splits_into_plain_parts_constraints_and_engine_changes() {
    let got = parts(
        "ALTER TABLE shop.orders ALTER COLUMN amount TYPE numeric(12,2) USING round(amount::numeric, 2), \
         ALTER COLUMN email SET NOT NULL, ALTER COLUMN note SET DEFAULT 'n/a', ADD COLUMN tag text, \
         DROP COLUMN legacy, ADD CONSTRAINT amount_positive CHECK (amount > 0)",
    );
    let amount = the_change(&got[0]).alter_column.clone().unwrap();
    assert_eq!(amount.column, "amount");
    assert_eq!(amount.data_type.as_deref(), Some("numeric(12, 2)"));
    assert_eq!(amount.using.as_deref(), Some("round(amount::numeric, 2)"));
    assert_eq!(the_change(&got[1]).alter_column.as_ref().unwrap().not_null, Some(true));
    let AlterPart::Plain { sql, destructive: false, as_change: Some(note) } = &got[2] else { panic!("{:?}", got[2]) };
    assert_eq!(sql, "ALTER TABLE shop.orders ALTER COLUMN note SET DEFAULT 'n/a'");
    assert_eq!(note.alter_column.as_ref().unwrap().default.as_deref(), Some("'n/a'"));
    let AlterPart::Plain { destructive: false, as_change: Some(tag), .. } = &got[3] else { panic!("{:?}", got[3]) };
    assert_eq!(tag.add_column.as_ref().map(|a| (a.name.as_str(), a.data_type.as_str())), Some(("tag", "text")));
    let AlterPart::Plain { destructive: true, as_change: Some(legacy), .. } = &got[4] else { panic!("{:?}", got[4]) };
    assert_eq!(legacy.drop_column.as_ref().unwrap().name, "legacy");
    assert_eq!(
        got[5],
        AlterPart::Constraint {
            name: "amount_positive".into(),
            add_not_valid: "ALTER TABLE shop.orders ADD CONSTRAINT amount_positive CHECK (amount > 0) NOT VALID".into(),
            validate: true
        }
    );
}

#[test]
fn a_column_added_with_a_default_not_null_and_constraints_becomes_engine_changes() {
    let got = parts("ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'new' UNIQUE CHECK (status <> '')");
    let added = the_change(&got[0]).add_column.clone().unwrap();
    assert_eq!((added.name.as_str(), added.data_type.as_str(), added.not_null), ("status", "text", true));
    assert_eq!(added.default.as_deref(), Some("'new'"));
    let unique = the_change(&got[1]).add_constraint.clone().unwrap();
    assert_eq!((unique.name.as_str(), unique.unique), ("orders_status_key", Some(vec!["status".to_string()])));
    assert!(matches!(&got[2], AlterPart::Constraint { name, validate: true, .. } if name == "orders_status_check"));
}

#[test]
fn foreign_keys_and_checks_without_names_get_postgresql_s_names_and_not_valid_stays_the_files_choice() {
    let got = parts("ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers (id)");
    let AlterPart::Constraint { name, add_not_valid, validate } = &got[0] else { panic!("{got:?}") };
    assert_eq!(name, "orders_customer_id_fkey");
    assert!(add_not_valid.ends_with("NOT VALID") && add_not_valid.contains("CONSTRAINT orders_customer_id_fkey"));
    assert!(validate);
    let got = parts("ALTER TABLE orders ADD CHECK (length(code) > 0) NOT VALID");
    assert!(matches!(&got[0], AlterPart::Constraint { name, validate: false, .. } if name == "orders_code_check"));
    assert_eq!(parts("ALTER TABLE orders VALIDATE CONSTRAINT c"), [AlterPart::Validate { name: "c".into() }]);
}

#[test]
fn keys_and_identity_are_engine_changes() {
    let got = parts("ALTER TABLE orders ADD PRIMARY KEY (id), ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY");
    assert_eq!(the_change(&got[0]).set_primary_key.as_ref().unwrap().columns, ["id"]);
    let identity = the_change(&got[1]).add_identity.clone().unwrap();
    assert_eq!((identity.column.as_str(), identity.generation), ("id", Generation::Always));
}

#[test]
fn what_dsql_refuses_is_known_from_the_tree() {
    let refused = |sql: &str| match what(sql) {
        What::Ddl(d) => d.dsql_refuses.map(|r| r.rule),
        other => panic!("{other:?}"),
    };
    assert!(refused("CREATE TABLE t (id serial PRIMARY KEY)").unwrap().contains("SERIAL"));
    assert!(refused("CREATE TEMP TABLE t (id int)").unwrap().contains("temporary"));
    assert!(
        refused("CREATE TRIGGER tr BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION f()").unwrap().contains("triggers")
    );
    assert!(refused("CREATE SEQUENCE s").unwrap().contains("CACHE"));
    assert_eq!(refused("CREATE SEQUENCE s CACHE 65536"), None);
    assert!(refused("TRUNCATE t").unwrap().contains("TRUNCATE"));
    assert!(refused("LOCK TABLE t").unwrap().contains("LOCK"));
    assert!(refused("CREATE EXTENSION pgcrypto").unwrap().contains("extensions"));
    assert!(refused("SELECT pg_advisory_lock(1)").unwrap().contains("advisory"));
    assert_eq!(refused("CREATE TABLE t (id bigint GENERATED BY DEFAULT AS IDENTITY (CACHE 65536) PRIMARY KEY)"), None);
    assert_eq!(what("SELECT 1"), What::Query);
}

#[test]
fn dml_says_its_table_and_whether_it_has_a_where() {
    let dml = |sql: &str| match what(sql) {
        What::Dml(d) => d,
        other => panic!("{other:?}"),
    };
    let update = dml("UPDATE shop.orders SET n = n + 1 WHERE n IS NOT NULL");
    assert_eq!(
        (update.kind, update.table, update.has_where),
        (DmlKind::Update, TableName::new("shop", "orders"), true)
    );
    assert!(!dml("DELETE FROM orders").has_where);
    assert_eq!(dml("INSERT INTO t VALUES (1), (2)").kind, DmlKind::InsertValues);
    assert_eq!(dml("INSERT INTO t SELECT * FROM s").kind, DmlKind::InsertSelect);
    assert_eq!(what("BEGIN"), What::Begin);
    assert_eq!(what("COMMIT"), What::Commit);
}

#[test]
fn an_index_keeps_its_definition_without_concurrently() {
    let What::CreateIndex(i) =
        what("CREATE UNIQUE INDEX CONCURRENTLY orders_code ON shop.orders (code) WHERE code IS NOT NULL")
    else {
        panic!()
    };
    assert!(i.unique && i.concurrently);
    assert_eq!(i.index, TableName::new("shop", "orders_code"));
    assert_eq!(i.plain_sql, "CREATE UNIQUE INDEX orders_code ON shop.orders (code) WHERE code IS NOT NULL");
}

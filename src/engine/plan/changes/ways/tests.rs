use super::*;
use crate::engine::plan::changes::tests::{changes, orders};

fn table() -> TableName {
    TableName::new("public", "orders")
}

fn ways(yaml: &str, dialect: Dialect) -> Vec<(Way, String)> {
    let plan = plan_changes(&orders(), &table(), &changes(yaml), dialect, Strategy::Auto, None).unwrap();
    plan.decided.iter().map(|d| (d.way, d.why.clone())).collect()
}

const ISSUE: &str = r#"
- alterColumn: {column: amount, type: "numeric(12,2)"}
- alterColumn: {column: email, notNull: true}
- addColumn: {name: status, type: text, notNull: true, default: "'new'"}
- dropColumn: {name: legacy}
"#;

#[test]
fn on_postgresql_a_rewriting_type_change_starts_the_rebuild_and_the_rest_joins_it() {
    let plan = plan_changes(&orders(), &table(), &changes(ISSUE), Dialect::Postgres, Strategy::Auto, None).unwrap();
    let ways: Vec<Way> = plan.decided.iter().map(|d| d.way).collect();
    assert_eq!(ways, [Way::Rebuild; 4]);
    assert!(plan.decided[0].why.contains("integer to numeric(12,2) rewrites the table"), "{}", plan.decided[0].why);
    assert!(plan.decided[1].why.contains("which another change needs anyway"), "{}", plan.decided[1].why);
    let rebuild = plan.rebuild.expect("one rebuild");
    assert_eq!(rebuild.target.columns.len(), 5);
}

#[test]
fn once_a_change_needs_the_rebuild_every_change_is_made_in_it() {
    let yaml = r#"
- alterColumn: {column: email, notNull: true}
- dropColumn: {name: legacy}
- alterColumn: {column: amount, type: "numeric(12,2)"}
"#;
    let plan = plan_changes(&orders(), &table(), &changes(yaml), Dialect::Postgres, Strategy::Auto, None).unwrap();
    let ways: Vec<Way> = plan.decided.iter().map(|d| d.way).collect();
    assert_eq!(ways, [Way::Rebuild; 3]);
    assert!(plan.decided.iter().all(|d| d.statements.is_empty()), "nothing is made on the table itself");
    assert!(plan.decided[2].why.contains("rewrites the table"), "{}", plan.decided[2].why);
    assert!(plan.in_place_checks.is_empty());
    let rebuild = plan.rebuild.unwrap();
    assert_eq!(rebuild.base, State::of(&orders()), "the rebuild starts from the table as the catalog shows it");
    assert!(rebuild.target.column("legacy").is_none());
    assert!(rebuild.target.column("email").unwrap().not_null);
    let checks: Vec<&DataCheck> = rebuild.data_checks.iter().map(|c| &c.check).collect();
    assert_eq!(checks[0], &DataCheck::NotNull { column: "email".into() });
}

#[test]
fn not_null_alone_on_postgresql_is_the_not_valid_check_recipe_and_no_rebuild() {
    let plan = plan_changes(
        &orders(),
        &table(),
        &changes("- alterColumn: {column: email, notNull: true}"),
        Dialect::Postgres,
        Strategy::Auto,
        None,
    )
    .unwrap();
    assert!(plan.rebuild.is_none());
    assert_eq!(
        plan.decided[0].statements,
        [
            "ALTER TABLE \"public\".\"orders\" ADD CONSTRAINT \"orders_email_not_null\" CHECK (\"email\" IS NOT NULL) NOT VALID",
            "ALTER TABLE \"public\".\"orders\" VALIDATE CONSTRAINT \"orders_email_not_null\"",
            "ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"email\" SET NOT NULL",
            "ALTER TABLE \"public\".\"orders\" DROP CONSTRAINT \"orders_email_not_null\"",
        ]
    );
}

/// The changes DSQL's ALTER TABLE makes.
fn dsql_in_place() -> String {
    r#"
- dropColumn: {name: legacy}
- renameColumn: {from: cust, to: customer_id}
- alterColumn: {column: email, default: "'none'"}
- addColumn: {name: note, type: text}
- addConstraint: {name: positive, check: "amount >= 0"}
"#
    .to_string()
}

#[test]
fn on_dsql_what_alter_table_refuses_is_rebuilt() {
    let refused =
        "- alterColumn: {column: email, notNull: true}\n- addColumn: {name: flag, type: boolean, default: \"false\"}\n";
    let dsql = ways(&format!("{}{refused}", dsql_in_place()), Dialect::Dsql);
    let got: Vec<Way> = dsql.iter().map(|w| w.0).collect();
    assert_eq!(got, [Way::Rebuild; 7], "two changes need the rebuild, so all are made in it");
    assert!(dsql[5].1.contains("DSQL refuses SET NOT NULL"), "{}", dsql[5].1);
    let in_place = ways(&dsql_in_place(), Dialect::Dsql);
    assert!(in_place.iter().all(|w| w.0 == Way::InPlace), "{in_place:?}");
    assert!(in_place[4].1.contains("DSQL job"), "{}", in_place[4].1);
    let plan = plan_changes(
        &orders(),
        &table(),
        &changes("- addConstraint: {name: positive, check: \"amount >= 0\"}"),
        Dialect::Dsql,
        Strategy::Auto,
        None,
    )
    .unwrap();
    assert_eq!(
        plan.decided[0].statements[1],
        "ALTER TABLE ASYNC \"public\".\"orders\" VALIDATE CONSTRAINT \"positive\""
    );
    for yaml in [
        "- alterColumn: {column: amount, type: bigint}",
        "- setPrimaryKey: {columns: [id, cust]}",
        "- addConstraint: {name: u, unique: [email]}",
        "- addColumn: {name: s, type: text, notNull: true, default: \"'x'\"}",
    ] {
        assert_eq!(ways(yaml, Dialect::Dsql)[0].0, Way::Rebuild, "{yaml}");
    }
    // An integer key: DSQL's identity is bigint only, so the rebuild widens it.
    let mut narrow = orders();
    narrow.columns[0].data_type = "integer".into();
    let plan =
        plan_changes(&narrow, &table(), &changes("- addIdentity: {column: id}"), Dialect::Dsql, Strategy::Auto, None)
            .unwrap();
    assert_eq!(plan.decided[0].way, Way::Rebuild);
    // DSQL refused ADD IDENTITY on the scratch table: the rebuild makes it.
    let plan = plan_changes(
        &orders(),
        &table(),
        &changes("- addIdentity: {column: id}"),
        Dialect::Dsql,
        Strategy::Auto,
        Some("no"),
    )
    .unwrap();
    assert_eq!(plan.decided[0].way, Way::Rebuild);
    assert!(plan.decided[0].why.contains("DSQL refused ADD IDENTITY: no"), "{:?}", plan.decided[0]);
}

#[test]
fn an_identity_goes_on_the_key_and_starts_past_the_highest_id_read_under_the_lock() {
    let refused = plan_changes(
        &orders(),
        &table(),
        &changes("- addIdentity: {column: cust}"),
        Dialect::Postgres,
        Strategy::Auto,
        None,
    )
    .unwrap_err();
    assert_eq!(refused.0[0].field, "spec.changes[0].addIdentity.column");
    assert!(refused.0[0].message.contains("not the table's one-column primary key (id)"), "{refused}");
    for dialect in [Dialect::Postgres, Dialect::Dsql] {
        let plan =
            plan_changes(&orders(), &table(), &changes("- addIdentity: {column: id}"), dialect, Strategy::Auto, None)
                .unwrap();
        let statement = &plan.decided[0].statements[0];
        let cache = if dialect == Dialect::Dsql { "CACHE 65536" } else { "CACHE 1" };
        assert!(statement.contains(super::IDENTITY_START_PLACEHOLDER) && statement.contains(cache), "{statement}");
    }
}

#[test]
fn postgresql_in_place_ways_for_types_defaults_keys_and_constraints() {
    let pg = |yaml: &str| {
        plan_changes(&orders(), &table(), &changes(yaml), Dialect::Postgres, Strategy::Auto, None)
            .unwrap()
            .decided
            .remove(0)
    };
    let widened = pg("- alterColumn: {column: legacy, type: text}");
    assert_eq!(widened.way, Way::InPlace);
    assert_eq!(widened.statements, ["ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"legacy\" TYPE text"]);
    assert_eq!(pg("- addColumn: {name: s, type: text, notNull: true, default: \"'new'\"}").way, Way::InPlace);
    let volatile = pg("- addColumn: {name: at, type: timestamptz, default: \"clock_timestamp()\"}");
    assert_eq!(volatile.way, Way::Rebuild, "{}", volatile.why);
    let unique = pg("- addConstraint: {name: orders_email_key, unique: [email]}");
    assert_eq!(
        unique.statements,
        [
            "CREATE UNIQUE INDEX CONCURRENTLY \"orders_email_key\" ON \"public\".\"orders\" (\"email\")",
            "ALTER TABLE \"public\".\"orders\" ADD CONSTRAINT \"orders_email_key\" UNIQUE USING INDEX \"orders_email_key\"",
        ]
    );
    let fk = pg(
        "- addConstraint: {name: fk, foreignKey: {columns: [cust], references: {table: sales.customers, columns: [id]}}}",
    );
    assert_eq!(
        fk.statements[0],
        "ALTER TABLE \"public\".\"orders\" ADD CONSTRAINT \"fk\" FOREIGN KEY (\"cust\") REFERENCES \"sales\".\"customers\" (\"id\") NOT VALID"
    );
    let key = pg("- setPrimaryKey: {columns: [id, cust]}");
    assert_eq!(key.way, Way::InPlace);
    assert!(key.statements.iter().any(|s| s.contains("CREATE UNIQUE INDEX CONCURRENTLY")));
    assert!(
        key.statements
            .last()
            .unwrap()
            .contains("DROP CONSTRAINT \"orders_pkey\", ADD CONSTRAINT \"orders_pkey\" PRIMARY KEY USING INDEX")
    );
    assert_eq!(pg("- addIdentity: {column: id}").way, Way::InPlace);
}

#[test]
fn the_strategy_forces_or_forbids_the_rebuild() {
    let refused =
        plan_changes(&orders(), &table(), &changes(ISSUE), Dialect::Postgres, Strategy::InPlace, None).unwrap_err();
    assert_eq!(refused.0[0].field, "spec.changes[0].alterColumn");
    assert!(refused.0[0].message.contains("spec.strategy: InPlace"), "{refused}");
    let copy = plan_changes(
        &orders(),
        &table(),
        &changes("- dropColumn: {name: legacy}"),
        Dialect::Postgres,
        Strategy::Copy,
        None,
    )
    .unwrap();
    assert_eq!(copy.decided[0].way, Way::Rebuild);
    assert!(copy.rebuild.is_some());
    let empty = plan_changes(&orders(), &table(), &[], Dialect::Postgres, Strategy::Auto, None).unwrap_err();
    assert_eq!(empty.0[0].field, "spec.changes");
}

use super::*;
use crate::engine::plan::shape::{Constraint, ConstraintKind};
use crate::engine::testing::column;

/// `orders (id bigint PRIMARY KEY, amount integer, email text, legacy text, cust bigint)`.
pub(crate) fn orders() -> TableShape {
    TableShape {
        kind: 'r',
        columns: vec![
            column("id", "bigint", true),
            column("amount", "integer", false),
            column("email", "text", false),
            column("legacy", "text", false),
            column("cust", "bigint", false),
        ],
        constraints: vec![Constraint {
            name: "orders_pkey".into(),
            kind: ConstraintKind::PrimaryKey,
            definition: "PRIMARY KEY (id)".into(),
            columns: vec!["id".into()],
        }],
        ..Default::default()
    }
}

pub(crate) fn changes(yaml: &str) -> Vec<Change> {
    serde_norway::from_str(yaml).unwrap()
}

#[test]
fn the_new_shape_and_the_copys_select_follow_each_change_in_order() {
    let list = changes(
        r#"
- alterColumn: {column: amount, type: "numeric(9,2)"}
- alterColumn: {column: email, notNull: true}
- addColumn: {name: status, type: text, notNull: true, default: "'new'"}
- dropColumn: {name: legacy}
- renameColumn: {from: cust, to: customer_id}
"#,
    );
    let rebuild = Rebuild::new(State::of(&orders()), &list, 0).unwrap();
    let target: Vec<(&str, &str, bool)> =
        rebuild.target.columns.iter().map(|c| (c.name.as_str(), c.data_type.as_str(), c.not_null)).collect();
    assert_eq!(
        target,
        [
            ("id", "bigint", true),
            ("amount", "numeric(9,2)", false),
            ("email", "text", true),
            ("customer_id", "bigint", false),
            ("status", "text", true),
        ]
    );
    assert_eq!(rebuild.target.column("status").unwrap().default.as_deref(), Some("'new'"));
    assert_eq!(
        rebuild.data_checks,
        [
            ScopedCheck {
                change: 0,
                depth: 0,
                check: DataCheck::Converts {
                    column: "amount".into(),
                    expression: "\"amount\"::numeric(9,2)".into(),
                    data_type: "numeric(9,2)".into(),
                }
            },
            ScopedCheck { change: 1, depth: 1, check: DataCheck::NotNull { column: "email".into() } },
        ]
    );
    assert_eq!(rebuild.layers.len(), 4, "type, added, dropped and renamed columns each add a layer");
    let select = rebuild.select("\"public\".\"orders\"");
    assert!(select.starts_with("SELECT \"id\", \"amount\", \"email\", \"customer_id\", \"status\" FROM "), "{select}");
    assert!(select.contains("\"amount\"::numeric(9,2) AS \"amount\""), "{select}");
    assert!(select.contains("('new')::text AS \"status\""), "{select}");
    assert!(select.contains("\"cust\" AS \"customer_id\""), "{select}");
    assert_eq!(select.matches("\"legacy\" AS").count(), 2, "carried by the two layers before its drop: {select}");
}

#[test]
fn a_using_expression_reads_the_row_as_the_earlier_changes_left_it() {
    let list = changes(
        r#"
- renameColumn: {from: amount, to: cents}
- alterColumn: {column: cents, type: "numeric(9,2)", using: "cents / 100.0"}
"#,
    );
    let rebuild = Rebuild::new(State::of(&orders()), &list, 0).unwrap();
    let select = rebuild.select("src");
    let rename = select.find("\"amount\" AS \"cents\"").expect("renamed in the first layer");
    let cast = select.find("(cents / 100.0)::numeric(9,2) AS \"cents\"").expect("converted in the second");
    assert!(cast < rename, "the outer layer reads the inner one: {select}");
    assert!(matches!(&rebuild.data_checks[0], ScopedCheck { change: 1, depth: 1, check: DataCheck::Converts { .. } }));
}

#[test]
fn each_wrong_change_is_named_by_its_field() {
    let problems = |yaml: &str| -> Vec<String> {
        let mut state = State::of(&orders());
        changes(yaml)
            .iter()
            .enumerate()
            .filter_map(|(i, c)| apply(&mut state, c, i).err())
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    };
    let found = problems(
        r#"
- alterColumn: {column: nope, notNull: true}
- {dropColumn: {name: legacy}, renameColumn: {from: cust, to: c}}
- addColumn: {name: flag, type: boolean, notNull: true}
- dropColumn: {name: id}
- renameColumn: {from: email, to: cust}
- setPrimaryKey: {columns: [id, missing]}
- addConstraint: {name: two, check: "amount > 0", unique: [email]}
- addIdentity: {column: email}
- alterColumn: {column: amount, using: "amount * 2"}
- {}
"#,
    );
    let expect = [
        "spec.changes[0].alterColumn.column: column \"nope\" does not exist",
        "spec.changes[1]: sets dropColumn and renameColumn",
        "spec.changes[2].addColumn.notNull: a NOT NULL column needs a default",
        "spec.changes[3].dropColumn.name: column \"id\" is in the primary key",
        "spec.changes[4].renameColumn.to: column \"cust\" already exists",
        "spec.changes[5].setPrimaryKey.columns: column \"missing\" does not exist",
        "spec.changes[6].addConstraint.name: set exactly one of check, unique and foreignKey",
        "spec.changes[7].addIdentity.column: column \"email\" has type text",
        "spec.changes[8].alterColumn.using: a using expression needs a type",
        "spec.changes[9]: names no change",
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for (got, want) in found.iter().zip(expect) {
        assert!(got.starts_with(want), "{got}\n  should start with\n{want}");
    }
}

#[test]
fn a_new_primary_key_needs_its_columns_filled_and_unique() {
    let mut state = State::of(&orders());
    let list = changes("- setPrimaryKey: {columns: [cust, id]}");
    let checks = apply(&mut state, &list[0], 0).unwrap();
    assert_eq!(
        checks,
        [DataCheck::NotNull { column: "cust".into() }, DataCheck::Unique { columns: vec!["cust".into(), "id".into()] }]
    );
    assert_eq!(state.primary_key, ["cust", "id"]);
    assert!(state.column("cust").unwrap().not_null);
}

#[test]
fn only_literal_defaults_are_constant() {
    for constant in
        ["'new'", "'new'::text", "'a''b'", "0", "-1.5", "(0)::numeric(9,2)", "true", "NULL", "'{}'::integer[]"]
    {
        assert!(is_constant(constant), "{constant}");
    }
    for changing in [
        "now()",
        "CURRENT_TIMESTAMP",
        "nextval('s'::regclass)",
        "'a' || now()",
        "random()",
        "'a' || 'b'",
        "",
        "'t-'::text || md5(random()::text)",
    ] {
        assert!(!is_constant(changing), "{changing}");
    }
}

#[test]
fn added_columns_are_followed_by_their_new_names() {
    let list = changes(
        r#"
- addColumn: {name: status, type: text, default: "'new'"}
- addColumn: {name: seen, type: timestamptz, default: "now()"}
- addColumn: {name: gone, type: text}
- renameColumn: {from: status, to: state}
- dropColumn: {name: gone}
"#,
    );
    let rebuild = Rebuild::new(State::of(&orders()), &list, 0).unwrap();
    assert_eq!(rebuild.added, [("state".to_string(), true), ("seen".to_string(), false)]);
}

#[test]
fn a_conversion_no_value_can_fail_asks_nothing_of_the_rows() {
    let widening =
        changes("- alterColumn: {column: amount, type: bigint}\n- alterColumn: {column: amount, type: numeric}");
    let rebuild = Rebuild::new(State::of(&orders()), &widening, 0).unwrap();
    assert!(rebuild.data_checks.is_empty(), "{:?}", rebuild.data_checks);
    let using = changes("- alterColumn: {column: amount, type: bigint, using: \"amount * 2\"}");
    let rebuild = Rebuild::new(State::of(&orders()), &using, 0).unwrap();
    assert_eq!(rebuild.data_checks.len(), 1, "a using expression may fail on a row");
}

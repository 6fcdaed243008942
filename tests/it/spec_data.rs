//! Spec fields are data, never statements (issue 32): a type or an
//! expression that carries a second statement is refused before anything is
//! planned, by field, with exit 2, and nothing runs; every statement that
//! carries spec text is sent alone through the extended protocol.

use crate::support::{TestDb, run_cli, text};
use crate::table_run::TableManifest;

const PAYLOAD: &str = "'; DROP TABLE precious; SELECT '";

async fn orders_and_precious(db: &TestDb) {
    db.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount integer, email text, code text, ref bigint);
         INSERT INTO orders SELECT g, g, 'u' || g, g::text, g FROM generate_series(1, 100) g;
         CREATE TABLE precious (x int); INSERT INTO precious VALUES (1);",
    )
    .await;
}

/// A YAML scalar holding `text` exactly.
fn yaml(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_field_carrying_a_second_statement_is_refused_by_name_and_nothing_runs() {
    let db = TestDb::new("spec_data").await;
    orders_and_precious(&db).await;
    let before = db.catalog_snapshot().await;
    let rows = db.fingerprint("public.orders", "id").await;
    let p = PAYLOAD;
    let cases = [
        (
            format!("{{column: email, default: {}}}", yaml("'n/a'; DROP TABLE precious; SELECT 1")),
            "alterColumn.default",
        ),
        (format!("{{column: email, default: {}}}", yaml(&format!("'n/a{p}"))), "alterColumn.default"),
        (format!("{{column: email, type: {}}}", yaml(&format!("text{p}"))), "alterColumn.type"),
        (format!("{{column: amount, type: text, using: {}}}", yaml(&format!("amount::text{p}"))), "alterColumn.using"),
        (
            format!("{{column: amount, type: bigint, reverseUsing: {}}}", yaml(&format!("amount::integer{p}"))),
            "alterColumn.reverseUsing",
        ),
        (format!("{{column: amount, default: {}}}", yaml(&format!("0{p}"))), "alterColumn.default"),
    ];
    let mut lines: Vec<(String, &str)> =
        cases.into_iter().map(|(body, field)| (format!("    - alterColumn: {body}\n"), field)).collect();
    lines.extend([
        (
            format!("    - addColumn: {{name: status, type: text, default: {}}}\n", yaml(&format!("'new{p}"))),
            "addColumn.default",
        ),
        (format!("    - addColumn: {{name: status, type: {}}}\n", yaml(&format!("text{p}"))), "addColumn.type"),
        (
            format!("    - addConstraint: {{name: positive, check: {}}}\n", yaml(&format!("amount > 0{p}"))),
            "addConstraint.check",
        ),
        (
            format!("    - addConstraint: {{name: positive, check: {}}}\n", yaml("amount > 0) OR (true")),
            "addConstraint.check",
        ),
    ]);
    for (changes, field) in &lines {
        let manifest = TableManifest::new(changes);
        for command in ["plan", "run"] {
            let path = manifest.path().to_str().unwrap().to_string();
            let out = run_cli(&[command, "-f", &path, "--database-url", &db.url], &[]);
            let said = text(&out);
            assert_eq!(out.status.code(), Some(2), "{command} {changes}: {said}");
            assert!(said.contains(&format!("spec.changes[0].{field}")), "{command} names the field: {said}");
            assert!(db.exists("public", "precious").await, "{command} {changes} dropped the table: {said}");
        }
    }
    assert_eq!(db.catalog_snapshot().await, before, "nothing changed");
    assert_eq!(db.fingerprint("public.orders", "id").await, rows);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_text_inside_a_string_constant_is_only_text() {
    let db = TestDb::new("spec_data_text").await;
    orders_and_precious(&db).await;
    let manifest = TableManifest::new(&format!("    - alterColumn: {{column: email, default: {}}}\n", yaml(PAYLOAD)));
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(db.exists("public", "precious").await);
    let default = "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'orders'::regclass";
    assert_eq!(db.scalar_text(default).await, "'; DROP TABLE precious; SELECT '::text");
}

/// A change counts as made only when the catalog shows what it makes: a
/// CHECK naming no column is refused even on an empty table, a helper
/// constraint never takes a user's name, and a key of another name is
/// dropped by its real name (issue 32).
#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_made_only_when_the_catalog_shows_it() {
    let db = TestDb::new("spec_evidence").await;
    db.exec(
        "CREATE TABLE orders (id bigint CONSTRAINT my_key PRIMARY KEY, amount integer, email text, code text, ref bigint);",
    )
    .await;
    let misspelt = TableManifest::new("    - addConstraint: {name: positive, check: \"amout > 0\"}\n");
    let out = misspelt.run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("spec.changes[0].addConstraint"), "{}", text(&out));
    let constraints =
        "SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'orders'::regclass";
    assert_eq!(db.scalar_text(constraints).await, "my_key");

    // The user's own constraint has the name the NOT NULL helper would take.
    db.exec(
        "INSERT INTO orders SELECT g, g, 'u' || g, g::text, g FROM generate_series(1, 50) g;
         ALTER TABLE orders ADD CONSTRAINT orders_email_not_null CHECK (email <> '');",
    )
    .await;
    let not_null = TableManifest::new("    - alterColumn: {column: email, notNull: true}\n");
    let out = not_null.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.scalar_text(constraints).await, "my_key,orders_email_not_null", "the user's constraint is kept");
    let email_not_null =
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'email'";
    assert!(db.scalar_bool(email_not_null).await);

    // A new key replaces the old one by its real name, as ALTER TABLE names it.
    let key = TableManifest::new("    - setPrimaryKey: {columns: [id, amount]}\n");
    let out = key.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let pk = "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint \
              WHERE conrelid = 'orders'::regclass AND contype = 'p'";
    assert_eq!(db.scalar_text(pk).await, "orders_pkey PRIMARY KEY (id, amount)");
}

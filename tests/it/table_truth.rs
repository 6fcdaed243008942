//! What the engine says of a change is what the server does (issue 32): a
//! conversion that would read differently at each pass is refused up front,
//! NOT NULL is checked after the change's own `using`, and "in place" is
//! said only where the server neither rewrites the table nor builds or
//! checks anything again under its lock.

use crate::support::{TestDb, run_cli, text};
use crate::table_run::TableManifest;

async fn events(db: &TestDb) {
    db.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, created text, qty integer, code varchar(20) CHECK (code <> ''),
             email varchar(20), ref bigint);
         CREATE INDEX orders_lower_email ON orders (lower(email));
         INSERT INTO orders SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE '2024-01-01' END, g % 9, 'c' || g,
             'u' || g, g FROM generate_series(1, 400) g;",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversion_that_differs_at_each_reading_is_refused_by_name_before_anything_changes() {
    let db = TestDb::new("truth_volatile").await;
    events(&db).await;
    let before = db.catalog_snapshot().await;
    for (using, said) in [
        ("coalesce(created, now()::text)", "now() is stable"),
        ("created || random()::text", "random() is volatile"),
        ("coalesce(created, CURRENT_TIMESTAMP::text)", "current_timestamp differs at each reading"),
    ] {
        let changes = format!(
            "    - alterColumn: {{column: created, type: text, using: {}}}\n",
            serde_json::to_string(using).unwrap()
        );
        let out = TableManifest::new(&changes).run(&db, &[]);
        assert_eq!(out.status.code(), Some(2), "{using}: {}", text(&out));
        assert!(
            text(&out).contains("spec.changes[0].alterColumn.using") && text(&out).contains(said),
            "{}",
            text(&out)
        );
    }
    assert_eq!(db.catalog_snapshot().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn not_null_is_checked_after_the_changes_own_using() {
    let db = TestDb::new("truth_using_not_null").await;
    events(&db).await;
    // The using fills the NULLs: NOT NULL holds for the converted value.
    let fills = "    - alterColumn: {column: created, type: timestamptz, using: \"coalesce(created, '2020-01-01')::timestamptz\", notNull: true}\n";
    let out = TableManifest::new(fills).run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders WHERE created IS NULL").await, 0);
    // The using makes NULLs: refused with the ids, nothing changed.
    let makes = "    - alterColumn: {column: qty, type: bigint, using: \"nullif(qty, 4)\", notNull: true}\n";
    let out = TableManifest::new(makes).run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("NULL in qty") && text(&out).contains("ids 4, 13"), "{}", text(&out));
    let qty = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'qty'";
    assert_eq!(db.scalar_text(qty).await, "integer");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_place_is_said_only_where_nothing_is_rewritten_rebuilt_or_checked_again() {
    let db = TestDb::new("truth_costs").await;
    events(&db).await;
    let plan = |changes: &str| {
        let m = TableManifest::new(changes);
        let out = run_cli(&["plan", "-f", m.path().to_str().unwrap(), "--database-url", &db.url], &[]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let widened_checked = plan("    - alterColumn: {column: code, type: \"varchar(50)\"}\n");
    assert!(
        widened_checked.contains("rebuild") && widened_checked.contains("the CHECK orders_code_check"),
        "{widened_checked}"
    );
    let widened_indexed = plan("    - alterColumn: {column: email, type: \"varchar(50)\"}\n");
    assert!(
        widened_indexed.contains("rebuild") && widened_indexed.contains("the index orders_lower_email"),
        "{widened_indexed}"
    );
    let volatile_default =
        plan("    - addColumn: {name: tag, type: text, default: \"'t-'::text || md5(random()::text)\"}\n");
    assert!(volatile_default.contains("change 0 (addColumn): rebuild"), "{volatile_default}");
    let plain = plan("    - alterColumn: {column: ref, default: \"0\"}\n");
    assert!(plain.contains("change 0 (alterColumn): in place"), "{plain}");
}

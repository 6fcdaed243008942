//! Rolling back a TableMigration's rebuild after its cut-over (issue 22):
//! the rows written to the new table since go back into the old one through
//! each change's inverse, a dropped column keeps the old table's values, and a
//! change without an inverse is refused by name with nothing changed.

use crate::support::stand_in::StandIn;
use crate::support::{TestDb, text};
use crate::table_run::{TableManifest, orders};

const CHANGES: &str = "    - alterColumn: {column: amount, type: \"numeric(12,2)\", reverseUsing: \"round(amount)\"}
    - alterColumn: {column: email, notNull: true}
    - addColumn: {name: status, type: text, notNull: true, default: \"'new'\"}
    - dropColumn: {name: code}
    - renameColumn: {from: ref, to: reference}
";

/// Every row of the table under the name `orders`, as text, in key order.
async fn rows(db: &TestDb) -> Vec<String> {
    let sql = "SELECT t::text FROM orders t ORDER BY id";
    db.client.query(sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_rolls_back_through_the_inverses_and_keeps_the_dropped_columns_values() {
    let db = TestDb::new("tblrb_back").await;
    orders(&db).await;
    let manifest = TableManifest::new(CHANGES);
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest.status()["phase"], "Completed");

    // The application writes to the new table after the cut-over.
    db.exec(
        "UPDATE orders SET amount = 99.60, status = 'paid' WHERE id = 5;
         UPDATE orders SET email = 'changed@example.com', reference = 77 WHERE id = 6;
         DELETE FROM orders WHERE id = 7;
         INSERT INTO orders (id, amount, email, status, reference) VALUES (2001, 12.40, 'new@example.com', 'paid', 9);",
    )
    .await;

    manifest.write("  rollback: true\n");
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest.status()["phase"], "RolledBack", "{}", text(&out));

    // The original table has the name again, in its original shape.
    let columns = "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
                   FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped";
    assert_eq!(db.scalar_text(columns).await, "id bigint, amount integer, email text, code text, ref bigint");
    let all = rows(&db).await;
    assert_eq!(all.len(), 2000, "one deleted, one inserted");
    assert!(
        all.contains(&"(5,100,u5@example.com,5,5)".to_string()),
        "the update, back through reverseUsing, code kept"
    );
    assert!(all.contains(&"(6,18,changed@example.com,6,77)".to_string()), "renamed back; code kept");
    assert!(!all.iter().any(|r| r.starts_with("(7,")), "the delete");
    assert!(all.contains(&"(2001,12,new@example.com,,9)".to_string()), "a new row: no code to keep");
    assert!(all.contains(&"(8,24,u8@example.com,8,8)".to_string()), "an untouched row as it was");
    // Writers keep working on the original.
    db.exec("INSERT INTO orders (id, amount, email, code, ref) VALUES (2002, 1, 'x@example.com', 'c', 1)").await;
    assert!(db.exists("public", "orders_new").await, "the new table steps aside under the shadow name");

    // Rolled forward: the old table's rows through the changes again, and
    // what was written to the added column before the rollback kept.
    db.exec("UPDATE orders SET email = 'again@example.com' WHERE id = 5").await;
    manifest.write("");
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest.status()["phase"], "Completed", "{}", text(&out));
    let all = rows(&db).await;
    assert_eq!(all.len(), 2001);
    assert!(all.contains(&"(5,100.00,again@example.com,5,paid)".to_string()), "status kept: {:?}", &all[..6]);
    assert!(all.contains(&"(2001,12.00,new@example.com,9,paid)".to_string()), "a row of the first forward");
    assert!(all.contains(&"(2002,1.00,x@example.com,1,new)".to_string()), "a row written while rolled back");
}

/// An added column whose default differs at each reading (`now()`) is read
/// once: verification compares the new table's values, not new ones.
#[tokio::test(flavor = "multi_thread")]
async fn an_added_column_with_a_changing_default_is_verified_and_kept() {
    let db = TestDb::new("tblrb_now").await;
    orders(&db).await;
    let manifest = TableManifest::new(
        "    - alterColumn: {column: amount, type: \"numeric(12,2)\"}
    - addColumn: {name: seen_at, type: timestamptz, notNull: true, default: \"clock_timestamp()\"}
",
    );
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = manifest.status();
    assert_eq!(status["phase"], "Completed");
    assert_eq!(status["verification"]["sourceRows"], 2000, "{status}");
    // Read afresh, every row would differ at each pass and be copied again.
    assert!(!text(&out).contains("changed again"), "{}", text(&out));
    assert_eq!(status["verification"]["mismatchedRanges"], 0, "{status}");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders WHERE seen_at IS NOT NULL").await, 2000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_change_without_reverse_using_refuses_the_rollback_by_name_and_changes_nothing() {
    let db = TestDb::new("tblrb_refused").await;
    orders(&db).await;
    let manifest =
        TableManifest::new("    - alterColumn: {column: amount, type: bigint}\n    - dropColumn: {name: code}\n");
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    db.exec("UPDATE orders SET amount = 5000000000 WHERE id = 9").await;
    let before = rows(&db).await;
    let snapshot = db.catalog_snapshot().await;

    manifest.write("  rollback: true\n");
    let out = manifest.run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("spec.changes[0].alterColumn.reverseUsing: is needed to roll back after the cut-over"),
        "{}",
        text(&out)
    );
    assert_eq!(rows(&db).await, before, "the new table keeps the name and every row");
    assert_eq!(db.catalog_snapshot().await, snapshot);
}

/// The same rollback through the DSQL stand-in: every statement within DSQL's rules.
#[tokio::test(flavor = "multi_thread")]
async fn dsql_rolls_a_rebuild_back_through_the_stand_in() {
    let s = StandIn::start("tblrb_dsql", |_| {}).await;
    orders(&s.db).await;
    let manifest = TableManifest::with_target(&s.target(), CHANGES);
    let out = manifest.run_through(&s);
    assert!(out.status.success(), "{}", text(&out));
    s.db.exec("UPDATE orders SET amount = 99.60, status = 'paid' WHERE id = 5; DELETE FROM orders WHERE id = 7;").await;
    manifest.write("  rollback: true\n");
    let out = manifest.run_through(&s);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest.status()["phase"], "RolledBack");
    assert_eq!(s.refused_documented(), Vec::<String>::new(), "nothing sent that DSQL refuses");
    let all = rows(&s.db).await;
    assert_eq!(all.len(), 1999);
    assert!(all.contains(&"(5,100,u5@example.com,5,5)".to_string()), "{:?}", &all[..5]);
}

/// Changes made in place roll back through their inverses, each its own
/// brief statement, and roll forward again; a change without an inverse in
/// place refuses the rollback by name.
#[tokio::test(flavor = "multi_thread")]
async fn changes_made_in_place_roll_back_and_forward_and_a_drop_is_refused_by_name() {
    let db = TestDb::new("tblrb_in_place").await;
    orders(&db).await;
    let manifest = TableManifest::new(
        "    - alterColumn: {column: email, notNull: true}
    - addColumn: {name: note, type: text}
    - renameColumn: {from: ref, to: reference}
    - addConstraint: {name: amount_positive, check: \"amount > 0\"}
",
    );
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest.status()["strategy"]["taken"], "InPlace");
    let shape = "SELECT string_agg(attname || ' ' || attnotnull, ', ' ORDER BY attnum) FROM pg_attribute \
                 WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped";
    let constraints =
        "SELECT string_agg(conname, ', ' ORDER BY conname) FROM pg_constraint WHERE conrelid = 'orders'::regclass";
    let changed = db.scalar_text(shape).await;
    assert_eq!(changed, "id true, amount false, email true, code false, reference false, note false");
    db.exec("INSERT INTO orders (id, amount, email, code, reference, note) VALUES (2001, 1, 'a@b', 'c', 1, 'n')").await;

    // The added column holds a value written since: the rollback would drop
    // it with the column, so it is refused by name and nothing changes.
    manifest.write("  rollback: true\n");
    let out = manifest.run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("spec.changes[1].addColumn: \"note\" holds values written since it was added (1 rows)"),
        "{}",
        text(&out)
    );
    assert_eq!(db.scalar_text(shape).await, changed, "nothing is undone");
    db.exec("UPDATE orders SET note = NULL WHERE id = 2001").await;
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Rolled back in place"), "{}", text(&out));
    assert_eq!(manifest.status()["phase"], "RolledBack");
    assert_eq!(db.scalar_text(shape).await, "id true, amount false, email false, code false, ref false");
    assert_eq!(db.scalar_text(constraints).await, "orders_pkey");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders").await, 2001, "no row is touched");
    db.exec("INSERT INTO orders (id, amount, email) VALUES (2002, 1, NULL)").await;

    // Forward again: the NULL written meanwhile stops it by its check.
    manifest.write("");
    let out = manifest.run(&db, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    db.exec("UPDATE orders SET email = 'fixed' WHERE id = 2002").await;
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.scalar_text(shape).await, changed);
    assert_eq!(db.scalar_text(constraints).await, "amount_positive, orders_pkey");

    let db = TestDb::new("tblrb_in_place_drop").await;
    orders(&db).await;
    let manifest = TableManifest::new("    - dropColumn: {name: code}\n");
    assert!(manifest.run(&db, &[]).status.success());
    manifest.write("  rollback: true\n");
    let out = manifest.run(&db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out)
            .contains("spec.changes[0].dropColumn: has no inverse in place: the column's values are gone with it"),
        "{}",
        text(&out)
    );
}

/// A rollback after the cut-over copies back only the rows written or
/// changed since: a row the application left alone keeps the old table's
/// value, which an inverse that cannot undo a rounding would lose (issue 32).
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_copies_back_only_what_changed_since_the_cut_over_and_keeps_every_other_row() {
    let db = TestDb::new("tblrb_untouched").await;
    db.exec(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(12,4), email text, code text, ref bigint);
         INSERT INTO orders SELECT g, g + 0.1234, 'u' || g, g::text, g FROM generate_series(1, 2000) g;",
    )
    .await;
    let manifest =
        TableManifest::new("    - alterColumn: {column: amount, type: \"numeric(12,2)\", reverseUsing: amount}\n");
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.scalar_text("SELECT amount::text FROM orders WHERE id = 8").await, "8.12", "rounded as ALTER rounds");
    db.exec(
        "UPDATE orders SET amount = 7.5 WHERE id = 5;
         UPDATE orders SET email = 'changed' WHERE id = 6;
         INSERT INTO orders (id, amount, email, code, ref) VALUES (2001, 3.25, 'new', 'n', 1);
         DELETE FROM orders WHERE id = 7;",
    )
    .await;
    manifest.write("  rollback: true\n");
    let out = manifest.run(&db, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(manifest.status()["phase"], "RolledBack", "{}", text(&out));
    let kept = "SELECT count(*) FROM orders WHERE amount = id + 0.1234";
    assert_eq!(db.scalar_i64(kept).await, 1997, "every row left alone keeps its four decimals");
    let amount = |id: i64| format!("SELECT amount::text || ' ' || email FROM orders WHERE id = {id}");
    assert_eq!(db.scalar_text(&amount(5)).await, "7.5000 u5", "the update comes back through reverseUsing");
    assert_eq!(
        db.scalar_text(&amount(6)).await,
        "6.1200 changed",
        "a changed row comes back whole, as the new table has it"
    );
    assert_eq!(db.scalar_text(&amount(2001)).await, "3.2500 new", "the insert");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders WHERE id = 7").await, 0, "the delete");
}

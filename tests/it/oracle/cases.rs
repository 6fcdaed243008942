//! The fixed cases of the differential test: the table that comes out of
//! each change, in place and by the rebuild, is ALTER TABLE's.

use super::{Case, check};

/// A table with a key, a unique constraint, a CHECK, a default, a plain
/// index, comments and 300 rows; `extra` adds statements (rows that break
/// a change, say).
pub(super) fn orders(extra: &str) -> String {
    format!(
        "CREATE TABLE t (
            id bigint PRIMARY KEY,
            code varchar(20) NOT NULL,
            qty integer,
            amount numeric(12,4) CHECK (amount >= 0),
            note text DEFAULT 'n/a',
            legacy text,
            CONSTRAINT t_code_key UNIQUE (code)
         );
         CREATE INDEX t_note_idx ON t (note);
         COMMENT ON TABLE t IS 'orders';
         COMMENT ON COLUMN t.qty IS 'how many';
         INSERT INTO t SELECT g, 'c' || g, g % 100, g + 0.1234,
             CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g END, 'old' FROM generate_series(1, 300) g;
         {extra}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_keeps_the_names_of_the_key_the_constraints_and_the_indexes() {
    check(&Case::new("names", &orders(""), "- alterColumn: {column: qty, type: bigint}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_narrower_type_rounds_and_fits_as_alter_does() {
    let changes = "- alterColumn: {column: amount, type: \"numeric(12,2)\"}\n\
                   - alterColumn: {column: code, type: \"varchar(8)\"}";
    check(&Case::new("narrow", &orders(""), changes)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_too_long_for_the_new_type_is_refused_as_alter_refuses_it() {
    let extra = "INSERT INTO t (id, code) VALUES (1000, 'sixteen-chars-xx');";
    check(&Case::new("too_long", &orders(extra), "- alterColumn: {column: code, type: \"varchar(8)\"}")).await;
    let using = "- alterColumn: {column: code, type: \"varchar(8)\", using: \"code || '-suffix'\"}";
    check(&Case::new("too_long_using", &orders(""), using)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn columns_dropped_added_and_renamed_come_out_as_alter_leaves_them() {
    let changes = r#"
- dropColumn: {name: legacy}
- addColumn: {name: status, type: text, notNull: true, default: "'new'"}
- addColumn: {name: extra, type: integer}
"#;
    check(&Case::new("columns", &orders(""), changes)).await;
    let changes = r#"
- renameColumn: {from: legacy, to: former}
- alterColumn: {column: former, default: "'none'"}
- alterColumn: {column: note, dropDefault: true}
"#;
    check(&Case::new("renamed", &orders(""), changes)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn not_null_is_made_or_refused_as_alter_does() {
    check(&Case::new("not_null", &orders(""), "- alterColumn: {column: qty, notNull: true}")).await;
    check(&Case::new("not_null_refused", &orders(""), "- alterColumn: {column: note, notNull: true}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn constraints_are_added_by_name_or_refused_as_alter_does() {
    let changes = r#"
- addConstraint: {name: t_qty_positive, check: "qty >= 0"}
- addConstraint: {name: t_code_qty_key, unique: [code, qty]}
"#;
    check(&Case::new("constraints", &orders(""), changes)).await;
    let refused = "- addConstraint: {name: t_qty_small, check: \"qty < 50\"}";
    check(&Case::new("check_refused", &orders(""), refused)).await;
    let duplicate = "- addConstraint: {name: t_qty_key, unique: [qty]}";
    check(&Case::new("unique_refused", &orders(""), duplicate)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_added_identity_starts_past_the_highest_id_in_place_or_by_the_rebuild() {
    check(&Case::new("identity", &orders(""), "- addIdentity: {column: id}")).await;
    let changes = "- addIdentity: {column: id, generation: Always}\n- alterColumn: {column: qty, type: bigint}";
    check(&Case::new("identity_always", &orders(""), changes)).await;
}

/// An IdentityMigration's copy hands the original names to the new table
/// too: constraints and indexes are named as before the migration.
#[tokio::test(flavor = "multi_thread")]
async fn an_identity_migrations_copy_keeps_every_name() {
    let db = crate::support::TestDb::new("oracle_idmig_names").await;
    db.exec(&orders("")).await;
    let names = "SELECT string_agg(c.relname || ' ' || coalesce(k.conname, '-'), ', ' ORDER BY c.relname) \
                 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid \
                 WHERE i.indrelid = 't'::regclass";
    let before = db.scalar_text(names).await;
    assert_eq!(before, "t_code_key t_code_key, t_note_idx -, t_pkey t_pkey");
    let m = crate::support::Manifest::new("public", "t", "id", "  strategy: Copy\n");
    let out = crate::support::run_migration(&m, &db.url, &[], &[]);
    assert!(out.status.success(), "{}", crate::support::text(&out));
    assert_eq!(db.scalar_text(names).await, before, "the table under the name has the original names");
    let old = names.replace("'t'::regclass", "'t_old'::regclass");
    assert_eq!(db.scalar_text(&old).await, "t_old_code_key t_old_code_key, t_old_note_idx -, t_old_pkey t_old_pkey");
}

#[tokio::test(flavor = "multi_thread")]
async fn indexes_follow_their_columns_through_new_types_and_names_and_go_with_a_dropped_one() {
    let extra = "CREATE INDEX t_qty_idx ON t (qty) WHERE qty > 0;
                 CREATE INDEX t_lower_note ON t (lower(note));
                 CREATE INDEX t_amount_idx ON t (amount);
                 CREATE INDEX t_legacy_idx ON t (legacy, qty);";
    let changes = r#"
- alterColumn: {column: qty, type: bigint}
- renameColumn: {from: note, to: remark}
- alterColumn: {column: amount, type: "numeric(12,2)"}
- alterColumn: {column: code, type: "varchar(8)"}
- dropColumn: {name: legacy}
"#;
    check(&Case::new("indexes", &orders(extra), changes)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_stays_bound_to_its_columns_through_a_rename_and_goes_with_a_dropped_one() {
    let extra = "ALTER TABLE t ADD COLUMN hi integer DEFAULT 2, ADD COLUMN lo integer DEFAULT 1;
                 ALTER TABLE t ADD CONSTRAINT t_hi_over_lo CHECK (hi > lo);";
    let changes = r#"
- renameColumn: {from: amount, to: amount_cents}
- addColumn: {name: amount, type: integer}
- dropColumn: {name: hi}
"#;
    check(&Case::new("checks", &orders(extra), changes)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collation_and_a_generated_column_come_through_the_rebuild_as_alter_keeps_them() {
    let extra = "ALTER TABLE t ADD COLUMN label text COLLATE \"C\" DEFAULT 'x';
                 ALTER TABLE t ADD COLUMN twice integer GENERATED ALWAYS AS (qty * 2) STORED;";
    let kept = "- alterColumn: {column: amount, type: \"numeric(12,2)\"}\n- renameColumn: {from: qty, to: quantity}";
    check(&Case::new("collate_generated", &orders(extra), kept)).await;
    // A new type takes the new type's default collation, as ALTER gives it.
    let retyped = "- alterColumn: {column: label, type: \"varchar(30)\"}";
    check(&Case::new("collate_retyped", &orders(extra), retyped)).await;
    // ALTER refuses a new type for, or the drop of, a column a generated column reads.
    check(&Case::new("generated_refused", &orders(extra), "- alterColumn: {column: qty, type: bigint}")).await;
    check(&Case::new("generated_drop_refused", &orders(extra), "- dropColumn: {name: qty}")).await;
}

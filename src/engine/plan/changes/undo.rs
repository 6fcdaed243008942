//! The way back of changes made in place: for each change, in reverse order,
//! the statements that undo it without a long lock, or why it has none (the
//! change named). Planned with the changes, while the original shape is
//! known (a default to put back). Pure.

use super::{State, apply};
use crate::api::changes::{Change, ChangeKind};
use crate::db::Dialect;
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::validate::Problem;

/// The statements that undo `changes` made in place on `table`, whose shape
/// was `original`; and the changes that have no such inverse.
pub fn undo_in_place(
    original: &TableShape,
    table: &TableName,
    changes: &[Change],
    dialect: Dialect,
) -> (Vec<String>, Vec<Problem>) {
    let mut states = vec![State::of(original)];
    for (i, change) in changes.iter().enumerate() {
        let mut next = states[i].clone();
        if apply(&mut next, change, i).is_err() {
            // Planned changes apply; nothing to undo otherwise.
            return (Vec::new(), Vec::new());
        }
        states.push(next);
    }
    let (mut undo, mut refused) = (Vec::new(), Vec::new());
    let alter = |sql: String| format!("ALTER TABLE {table} {sql}");
    for (i, change) in changes.iter().enumerate().rev() {
        let Ok(kind) = change.kind() else { continue };
        let before = &states[i];
        let field = format!("spec.changes[{i}].{}", kind.key());
        let mut refuse = |why: &str| refused.push(Problem::new(&field, format!("has no inverse in place: {why}")));
        match kind {
            ChangeKind::AlterColumn(a) => {
                let column = ident(&a.column);
                let was = before.column(&a.column).expect("applied");
                if a.data_type.is_some() {
                    refuse("changing the type back would rewrite or scan the table under its lock");
                }
                if a.not_null == Some(false) && was.not_null {
                    refuse("NOT NULL again would need the data checked; run a TableMigration that sets it");
                }
                if a.default.is_some() || a.drop_default {
                    undo.push(alter(match &was.default {
                        Some(default) => format!("ALTER COLUMN {column} SET DEFAULT {default}"),
                        None => format!("ALTER COLUMN {column} DROP DEFAULT"),
                    }));
                }
                if a.not_null == Some(true) && !was.not_null {
                    undo.push(alter(format!("ALTER COLUMN {column} DROP NOT NULL")));
                }
            }
            ChangeKind::AddColumn(a) => undo.push(alter(format!("DROP COLUMN {}", ident(&a.name)))),
            ChangeKind::DropColumn(_) => refuse("the column's values are gone with it"),
            ChangeKind::RenameColumn(r) => {
                undo.push(alter(format!("RENAME COLUMN {} TO {}", ident(&r.to), ident(&r.from))));
            }
            ChangeKind::SetPrimaryKey(_) => refuse("the old primary key would have to be built again"),
            ChangeKind::AddConstraint(_) if dialect == Dialect::Dsql => {
                refuse("DSQL does not document ALTER TABLE ... DROP CONSTRAINT");
            }
            ChangeKind::AddConstraint(c) => undo.push(alter(format!("DROP CONSTRAINT {}", ident(&c.name)))),
            ChangeKind::AddIdentity(i) => {
                let column = ident(&i.column);
                undo.push(alter(format!("ALTER COLUMN {column} DROP IDENTITY IF EXISTS")));
                let was = before.column(&i.column).expect("applied");
                if let Some(default) = &was.default {
                    undo.push(alter(format!("ALTER COLUMN {column} SET DEFAULT {default}")));
                }
                if !was.not_null {
                    undo.push(alter(format!("ALTER COLUMN {column} DROP NOT NULL")));
                }
            }
        }
    }
    (undo, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::tests::{changes, orders};

    fn table() -> TableName {
        TableName::new("public", "orders")
    }

    #[test]
    fn each_change_made_in_place_is_undone_in_reverse_order() {
        let mut shape = orders();
        shape.columns[2].default = Some("'none'::text".into());
        let list = changes(
            r#"
- alterColumn: {column: email, notNull: true, default: "'x'"}
- addColumn: {name: note, type: text}
- renameColumn: {from: cust, to: customer_id}
- addConstraint: {name: amount_positive, check: "amount > 0"}
"#,
        );
        let (undo, refused) = undo_in_place(&shape, &table(), &list, Dialect::Postgres);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            undo,
            [
                "ALTER TABLE \"public\".\"orders\" DROP CONSTRAINT \"amount_positive\"",
                "ALTER TABLE \"public\".\"orders\" RENAME COLUMN \"customer_id\" TO \"cust\"",
                "ALTER TABLE \"public\".\"orders\" DROP COLUMN \"note\"",
                "ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"email\" SET DEFAULT 'none'::text",
                "ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"email\" DROP NOT NULL",
            ]
        );
    }

    #[test]
    fn a_change_without_an_inverse_in_place_is_named() {
        let list = changes("- dropColumn: {name: legacy}\n- addConstraint: {name: c, check: \"amount > 0\"}\n");
        let (_, refused) = undo_in_place(&orders(), &table(), &list, Dialect::Dsql);
        let said: Vec<String> = refused.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
        assert_eq!(
            said,
            [
                "spec.changes[1].addConstraint: has no inverse in place: DSQL does not document ALTER TABLE ... DROP \
                 CONSTRAINT",
                "spec.changes[0].dropColumn: has no inverse in place: the column's values are gone with it",
            ]
        );
    }
}

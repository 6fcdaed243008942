//! The changes rehearsed by PostgreSQL's own ALTER TABLE on an empty
//! temporary copy of the table, inside a transaction that is rolled back.
//! Pure: the statements and what is taken from the answer.
//!
//! ALTER TABLE re-parses every CHECK, index expression, partial predicate
//! and default at each new type, from the text it printed at the type
//! before; text rewritten once for the final types can print differently
//! (`(c >= '-5'::integer)` against `((c)::numeric >= ('-5'::integer)::numeric)`)
//! or not parse at all. No rewriting of text reproduces the server's parse
//! analysis, so the server is asked: the new table takes each definition as
//! the rehearsal prints it, and a change ALTER TABLE refuses even with no
//! rows (a default with no assignment cast to the new type) is refused here.
//!
//! PostgreSQL only: DSQL has no temporary tables and refuses these ALTERs.

use super::super::quote::ident;
use super::super::shape::{ConstraintKind, TableName, TableShape};
use super::State;
use crate::api::Generation;
use crate::api::changes::{Change, ChangeKind};

/// The temporary table's name (in the session's own temporary schema).
pub const REHEARSAL_TABLE: &str = "idmig_rehearsal";

/// One statement of the rehearsal, and the spec field of the change that
/// sends it (None for the copy of the table).
#[derive(Clone, Debug, PartialEq)]
pub struct RehearsalStatement {
    pub field: Option<String>,
    pub sql: String,
}

/// The empty copy of `source` (`shape` is its catalog): columns with their
/// defaults, generated expressions, identity, CHECKs and collations by LIKE,
/// then the key, unique constraints and indexes under their own names.
fn copy_of(shape: &TableShape, source: &TableName) -> Vec<RehearsalStatement> {
    let table = ident(REHEARSAL_TABLE);
    let mut out = vec![format!(
        "CREATE TEMPORARY TABLE {table} (LIKE {source} INCLUDING DEFAULTS INCLUDING GENERATED \
         INCLUDING IDENTITY INCLUDING CONSTRAINTS) ON COMMIT DROP"
    )];
    for c in &shape.constraints {
        let columns = list(&c.columns);
        match c.kind {
            ConstraintKind::PrimaryKey => {
                out.push(format!("ALTER TABLE {table} ADD CONSTRAINT {} PRIMARY KEY ({columns})", ident(&c.name)))
            }
            ConstraintKind::Unique => {
                out.push(format!("ALTER TABLE {table} ADD CONSTRAINT {} UNIQUE ({columns})", ident(&c.name)))
            }
            // LIKE ... INCLUDING CONSTRAINTS copied them, by name.
            ConstraintKind::Check => {}
        }
    }
    for index in &shape.indexes {
        let unique = if index.unique { "UNIQUE " } else { "" };
        out.push(format!(
            "CREATE {unique}INDEX {} ON {table} USING {} {}",
            ident(&index.name),
            index.method,
            index.definition
        ));
    }
    out.into_iter().map(|sql| RehearsalStatement { field: None, sql }).collect()
}

fn list(columns: &[String]) -> String {
    columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
}

/// Every statement of the rehearsal, in order. `changes` passed the
/// planner's validation and the server's parse of each spec text, so each
/// text is one expression or type.
pub fn rehearsal(shape: &TableShape, source: &TableName, changes: &[Change]) -> Vec<RehearsalStatement> {
    let table = ident(REHEARSAL_TABLE);
    let mut out = copy_of(shape, source);
    // The key's name as the rehearsal goes: ALTER TABLE names a new one `<table>_pkey`.
    let mut key = shape.constraints.iter().find(|c| c.kind == ConstraintKind::PrimaryKey).map(|c| c.name.clone());
    for (i, change) in changes.iter().enumerate() {
        let Ok(kind) = change.kind() else { continue };
        let field = format!("spec.changes[{i}].{}", kind.key());
        // Each clause with the field whose text it carries (its change's when none).
        let mut sql: Vec<(&str, String)> = Vec::new();
        match kind {
            ChangeKind::AlterColumn(a) => {
                let c = ident(&a.column);
                if let Some(t) = &a.data_type {
                    let using = a.using.as_ref().map(|u| format!(" USING ({u})")).unwrap_or_default();
                    let sub = if a.using.is_some() { "using" } else { "type" };
                    sql.push((sub, format!("ALTER COLUMN {c} TYPE {t}{using}")));
                }
                match a.not_null {
                    Some(true) => sql.push(("notNull", format!("ALTER COLUMN {c} SET NOT NULL"))),
                    Some(false) => sql.push(("notNull", format!("ALTER COLUMN {c} DROP NOT NULL"))),
                    None => {}
                }
                if let Some(d) = &a.default {
                    sql.push(("default", format!("ALTER COLUMN {c} SET DEFAULT ({d})")));
                }
                if a.drop_default {
                    sql.push(("dropDefault", format!("ALTER COLUMN {c} DROP DEFAULT")));
                }
            }
            ChangeKind::AddColumn(a) => {
                let default = a.default.as_ref().map(|d| format!(" DEFAULT ({d})")).unwrap_or_default();
                let not_null = if a.not_null { " NOT NULL" } else { "" };
                let sub = if a.default.is_some() { "default" } else { "type" };
                sql.push((sub, format!("ADD COLUMN {} {}{default}{not_null}", ident(&a.name), a.data_type)));
            }
            ChangeKind::DropColumn(d) => sql.push(("name", format!("DROP COLUMN {}", ident(&d.name)))),
            ChangeKind::RenameColumn(r) => {
                sql.push(("to", format!("RENAME COLUMN {} TO {}", ident(&r.from), ident(&r.to))))
            }
            ChangeKind::SetPrimaryKey(p) => {
                if let Some(old) = key.take() {
                    sql.push(("columns", format!("DROP CONSTRAINT {}", ident(&old))));
                }
                sql.push(("columns", format!("ADD PRIMARY KEY ({})", list(&p.columns))));
                key = Some(format!("{REHEARSAL_TABLE}_pkey"));
            }
            ChangeKind::AddConstraint(c) => match (&c.check, &c.unique) {
                (Some(check), _) => sql.push(("check", format!("ADD CONSTRAINT {} CHECK ({check})", ident(&c.name)))),
                (_, Some(columns)) => {
                    sql.push(("unique", format!("ADD CONSTRAINT {} UNIQUE ({})", ident(&c.name), list(columns))))
                }
                // A temporary table may not reference a permanent one; a
                // foreign key is columns and a target, no expression to re-parse.
                _ => {}
            },
            ChangeKind::AddIdentity(a) => {
                let c = ident(&a.column);
                let generation = match a.generation {
                    Generation::Always => "ALWAYS",
                    Generation::ByDefault => "BY DEFAULT",
                };
                sql.push(("column", format!("ALTER COLUMN {c} DROP DEFAULT")));
                sql.push(("column", format!("ALTER COLUMN {c} SET NOT NULL")));
                sql.push(("column", format!("ALTER COLUMN {c} ADD GENERATED {generation} AS IDENTITY")));
            }
        }
        // One clause a statement, in the spec's order, as a person would type them.
        out.extend(sql.into_iter().map(|(sub, clause)| RehearsalStatement {
            field: Some(format!("{field}.{sub}")),
            sql: format!("ALTER TABLE {table} {clause}"),
        }));
    }
    out
}

/// Whether the server's refusal of a rehearsed change is ALTER TABLE's
/// refusal of the change itself (a type, an operator or a default that does
/// not fit: SQLSTATE class 42, or 0A for a feature), not a limit of the
/// rehearsal. There are no rows, so no data error can come.
pub fn refuses_the_change(sqlstate: Option<&str>) -> bool {
    sqlstate.is_some_and(|s| s.starts_with("42") || s.starts_with("0A"))
}

/// Takes each definition of `target` (the new table the changes plan) as
/// the rehearsal printed it: CHECKs, index definitions, defaults and
/// generated expressions, matched by name. Answers what did not match, for
/// the log: the planner and ALTER TABLE disagree there.
pub fn adopt(target: &mut State, rehearsed: &TableShape) -> Vec<String> {
    let mut unmatched = Vec::new();
    for (name, definition) in &mut target.checks {
        match rehearsed.constraints.iter().find(|c| c.kind == ConstraintKind::Check && c.name == *name) {
            Some(c) => definition.clone_from(&c.definition),
            None => unmatched.push(format!("CHECK {name}")),
        }
    }
    for (name, definition) in &mut target.indexes {
        match rehearsed.indexes.iter().find(|i| i.name == *name) {
            Some(i) => definition.clone_from(&i.definition),
            None => unmatched.push(format!("index {name}")),
        }
    }
    for column in &mut target.columns {
        match rehearsed.columns.iter().find(|c| c.name == column.name) {
            Some(c) => {
                column.default.clone_from(&c.default);
                column.generated.clone_from(&c.generated);
                if c.data_type != column.data_type {
                    unmatched
                        .push(format!("column {} as {} (ALTER TABLE: {})", column.name, column.data_type, c.data_type));
                }
            }
            None => unmatched.push(format!("column {}", column.name)),
        }
    }
    unmatched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::tests::{changes, orders};

    #[test]
    fn each_change_is_rehearsed_clause_by_clause_on_the_temporary_copy() {
        let list = changes(
            "- alterColumn: {column: amount, type: bigint, notNull: true}\n- setPrimaryKey: {columns: [id, amount]}\n\
             - addConstraint: {name: t_fk, foreignKey: {columns: [amount], references: {table: p, columns: [id]}}}\n\
             - addConstraint: {name: pos, check: \"amount > 0\"}",
        );
        let source = TableName::new("public", "orders");
        let statements = rehearsal(&orders(), &source, &list);
        let of = |field: &str| -> Vec<&str> {
            statements.iter().filter(|s| s.field.as_deref() == Some(field)).map(|s| s.sql.as_str()).collect()
        };
        let like = format!(r#"CREATE TEMPORARY TABLE "idmig_rehearsal" (LIKE {source} INCLUDING DEFAULTS"#);
        assert!(statements[0].sql.starts_with(&like), "{}", statements[0].sql);
        assert_eq!(
            statements[1].sql,
            r#"ALTER TABLE "idmig_rehearsal" ADD CONSTRAINT "orders_pkey" PRIMARY KEY ("id")"#
        );
        assert_eq!(
            [of("spec.changes[0].alterColumn.type"), of("spec.changes[0].alterColumn.notNull")].concat(),
            [
                r#"ALTER TABLE "idmig_rehearsal" ALTER COLUMN "amount" TYPE bigint"#,
                r#"ALTER TABLE "idmig_rehearsal" ALTER COLUMN "amount" SET NOT NULL"#
            ]
        );
        assert_eq!(
            of("spec.changes[1].setPrimaryKey.columns"),
            [
                r#"ALTER TABLE "idmig_rehearsal" DROP CONSTRAINT "orders_pkey""#,
                r#"ALTER TABLE "idmig_rehearsal" ADD PRIMARY KEY ("id", "amount")"#
            ]
        );
        assert!(
            statements.iter().all(|s| !s.field.as_deref().unwrap_or("").starts_with("spec.changes[2]")),
            "a foreign key has nothing to re-parse"
        );
        assert_eq!(
            of("spec.changes[3].addConstraint.check"),
            [r#"ALTER TABLE "idmig_rehearsal" ADD CONSTRAINT "pos" CHECK (amount > 0)"#]
        );
    }

    #[test]
    fn the_new_table_takes_the_definitions_the_rehearsal_printed() {
        let mut target = State::of(&orders());
        target.checks.push(("pos".into(), "CHECK ((amount > 0))".into()));
        let mut rehearsed = orders();
        rehearsed.constraints.push(crate::engine::plan::shape::Constraint {
            name: "pos".into(),
            kind: ConstraintKind::Check,
            definition: "CHECK (((amount)::numeric > (0)::numeric))".into(),
            columns: vec![],
        });
        rehearsed.columns[1].default = Some("'5'::bigint".into());
        let unmatched = adopt(&mut target, &rehearsed);
        assert_eq!(target.checks.last().unwrap().1, "CHECK (((amount)::numeric > (0)::numeric))");
        assert_eq!(target.columns[1].default.as_deref(), Some("'5'::bigint"));
        assert!(unmatched.is_empty(), "{unmatched:?}");
        target.checks.push(("gone".into(), "CHECK (true)".into()));
        assert_eq!(adopt(&mut target, &rehearsed), ["CHECK gone"]);
    }

    #[test]
    fn only_a_refusal_of_the_change_itself_refuses_it() {
        assert!(refuses_the_change(Some("42804")));
        assert!(refuses_the_change(Some("42883")));
        assert!(!refuses_the_change(Some("53200")), "out of memory is the server's, not the change's");
        assert!(!refuses_the_change(None));
    }
}

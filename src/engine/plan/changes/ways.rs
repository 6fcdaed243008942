//! Per change and server, the lock-safe way: in place, with the statements
//! and why no long lock is taken, or the rebuild, and why. When any change
//! needs the rebuild, every change is made in the one new table: one that
//! could be in place costs nothing more there, their order is kept, and the
//! new table is planned from the table as the catalog shows it. Pure.

use super::rebind::reads_column;
use super::{DataCheck, Rebuild, State, apply, is_constant};
use crate::api::Strategy;
use crate::api::changes::{Change, ChangeKind, ForeignKey};
use crate::db::Dialect;
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::validate::{InvalidInput, Problem};

use super::types::{changes_in_place, normalize_type};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    InPlace,
    Rebuild,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::InPlace => "in place",
            Way::Rebuild => "rebuild",
        }
    }
}

/// What the planner decided for one change.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub index: usize,
    pub key: &'static str,
    pub way: Way,
    pub why: String,
    /// The statements of an in-place change, each its own transaction.
    pub statements: Vec<String>,
}

/// Every change decided; the rebuild when any change needs it; what the data
/// must satisfy for the in-place changes.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangePlan {
    pub decided: Vec<Decided>,
    pub rebuild: Option<Rebuild>,
    pub in_place_checks: Vec<DataCheck>,
}

/// Plans `changes` to `table` (as `shape` describes it) on `dialect`.
/// `InPlace` refuses up front when a change needs the rebuild; `Copy` makes
/// every change in the rebuild.
///
/// `identity_refused` is what DSQL said when the engine tried ADD IDENTITY
/// on a scratch table at Validating ([`crate::engine::steps::in_place::probe_add_identity`]):
/// the identity then takes the rebuild.
pub fn plan_changes(
    shape: &TableShape,
    table: &TableName,
    changes: &[Change],
    dialect: Dialect,
    strategy: Strategy,
    identity_refused: Option<&str>,
) -> Result<ChangePlan, InvalidInput> {
    if changes.is_empty() {
        return Err(InvalidInput::one("spec.changes", "lists no change"));
    }
    // Every change checked against the shape the earlier ones leave, all problems at once.
    let mut scratch = State::of(shape);
    let problems: Vec<Problem> =
        changes.iter().enumerate().filter_map(|(i, c)| apply(&mut scratch, c, i).err()).collect();
    if !problems.is_empty() {
        return Err(InvalidInput(problems));
    }

    // Each change's way on the table as the changes before it leave it.
    let mut state = State::of(shape);
    let mut ways = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let kind = change.kind().expect("validated above");
        let way = match strategy {
            Strategy::Copy => Err("spec.strategy: Copy".to_string()),
            _ => match (kind, identity_refused) {
                (ChangeKind::AddIdentity(_), Some(said)) => Err(format!("DSQL refused ADD IDENTITY: {said}")),
                _ => in_place(kind, &state, table, dialect),
            },
        };
        if let (Err(why), Strategy::InPlace) = (&way, strategy) {
            return Err(InvalidInput::one(
                format!("spec.changes[{i}].{}", kind.key()),
                format!("needs the rebuild ({why}), which spec.strategy: InPlace forbids; use Auto or Copy"),
            ));
        }
        apply(&mut state, change, i).expect("validated above");
        ways.push((kind.key(), way));
    }
    // One change that needs the rebuild takes them all into it: the copy
    // writes every row once whatever else changes, and the new table is
    // built from the table as the catalog shows it, which a resumed run
    // reads again.
    let rebuild_needed = ways.iter().any(|(_, way)| way.is_err());
    let mut in_place_checks = Vec::new();
    let mut checked = State::of(shape);
    let mut decided = Vec::new();
    for (i, (key, way)) in ways.into_iter().enumerate() {
        let checks = apply(&mut checked, &changes[i], i).expect("validated above");
        decided.push(match (way, rebuild_needed) {
            (Ok((why, statements)), false) => {
                in_place_checks.extend(checks);
                Decided { index: i, key, way: Way::InPlace, why, statements }
            }
            (Ok(_), true) => Decided {
                index: i,
                key,
                way: Way::Rebuild,
                why: "made in the new table, which another change needs anyway".to_string(),
                statements: Vec::new(),
            },
            (Err(why), _) => Decided { index: i, key, way: Way::Rebuild, why, statements: Vec::new() },
        });
    }
    let rebuild = match rebuild_needed {
        true => Some(Rebuild::new(State::of(shape), changes, 0)?),
        false => None,
    };
    Ok(ChangePlan { decided, rebuild, in_place_checks })
}

/// How the server makes `kind` on the table as `state` describes it without a
/// long lock: why, and the statements; or why it cannot.
fn in_place(
    kind: ChangeKind<'_>,
    state: &State,
    table: &TableName,
    dialect: Dialect,
) -> Result<(String, Vec<String>), String> {
    let alter = |clause: String| format!("ALTER TABLE {table} {clause}");
    let dsql = dialect == Dialect::Dsql;
    match kind {
        ChangeKind::AlterColumn(a) => {
            let column = state.column(&a.column).expect("validated");
            let c = ident(&a.column);
            let mut statements = Vec::new();
            let mut why = Vec::new();
            if let Some(to) = &a.data_type {
                let (from, to) = (&column.data_type, normalize_type(to));
                if dsql {
                    return Err("DSQL refuses ALTER COLUMN ... TYPE (alter-table-syntax-support)".into());
                }
                if a.using.is_some() {
                    return Err("a using expression rewrites every row under an ACCESS EXCLUSIVE lock".into());
                }
                if !changes_in_place(from, &to) {
                    return Err(format!("{from} to {to} rewrites the table under an ACCESS EXCLUSIVE lock"));
                }
                // No rewrite, but what depends on the column is built or
                // checked again over every row under the same lock.
                if let Some((name, _)) = state.checks.iter().find(|(_, d)| reads_column(d, &a.column)) {
                    return Err(format!(
                        "{from} to {to} keeps the values, but the CHECK {name} would be checked over every row under \
                         an ACCESS EXCLUSIVE lock"
                    ));
                }
                if let Some((name, _)) =
                    state.indexes.iter().find(|(_, d)| reads_column(d, &a.column) && rebuilt_on_retype(d))
                {
                    return Err(format!(
                        "{from} to {to} keeps the values, but the index {name} (an expression or a partial one) would \
                         be built again under an ACCESS EXCLUSIVE lock"
                    ));
                }
                statements.push(alter(format!("ALTER COLUMN {c} TYPE {to}")));
                why.push(format!("{from} to {to} keeps every stored value: no rewrite"));
            }
            match a.not_null {
                Some(true) if !column.not_null => {
                    if dsql {
                        return Err("DSQL refuses SET NOT NULL".into());
                    }
                    let check = ident(&free_name(state, &format!("{}_{}_not_null", table.name, a.column)));
                    statements.extend([
                        alter(format!("ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID")),
                        alter(format!("VALIDATE CONSTRAINT {check}")),
                        alter(format!("ALTER COLUMN {c} SET NOT NULL")),
                        alter(format!("DROP CONSTRAINT {check}")),
                    ]);
                    why.push(
                        "a NOT VALID check validated without blocking writes lets SET NOT NULL skip its scan".into(),
                    );
                }
                Some(false) if column.not_null => {
                    statements.push(alter(format!("ALTER COLUMN {c} DROP NOT NULL")));
                    why.push("DROP NOT NULL changes the catalog only".into());
                }
                _ => {}
            }
            if let Some(default) = &a.default {
                statements.push(alter(format!("ALTER COLUMN {c} SET DEFAULT ({default})")));
                why.push("a default changes the catalog only".into());
            }
            if a.drop_default {
                statements.push(alter(format!("ALTER COLUMN {c} DROP DEFAULT")));
                why.push("a default changes the catalog only".into());
            }
            Ok((why.join("; "), statements))
        }
        ChangeKind::AddColumn(a) => {
            let (c, t) = (ident(&a.name), normalize_type(&a.data_type));
            match (&a.default, dsql) {
                (None, _) if !a.not_null => Ok((
                    "a column without a default changes the catalog only".into(),
                    vec![alter(format!("ADD COLUMN {c} {t}"))],
                )),
                (_, true) => Err("DSQL's ADD COLUMN takes a name and a type only, no default or constraint".into()),
                (Some(default), false) if is_constant(default) => {
                    let not_null = if a.not_null { " NOT NULL" } else { "" };
                    Ok((
                        "PostgreSQL keeps a constant default in the catalog: no rewrite".into(),
                        vec![alter(format!("ADD COLUMN {c} {t} DEFAULT ({default}){not_null}"))],
                    ))
                }
                (Some(default), false) => {
                    Err(format!("the default {default} is not a constant: PostgreSQL would rewrite the table"))
                }
                (None, false) => Err("a NOT NULL column needs a default".into()),
            }
        }
        ChangeKind::DropColumn(d) => Ok((
            "a dropped column is only marked so in the catalog".into(),
            vec![alter(format!("DROP COLUMN {}", ident(&d.name)))],
        )),
        ChangeKind::RenameColumn(r) => Ok((
            "a rename changes the catalog only".into(),
            vec![alter(format!("RENAME COLUMN {} TO {}", ident(&r.from), ident(&r.to)))],
        )),
        ChangeKind::SetPrimaryKey(p) => {
            if dsql {
                return Err("DSQL declares a primary key only in CREATE TABLE".into());
            }
            let cols = p.columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            let index = ident(&free_name(state, &format!("{}_pkey_idmig", table.name)));
            let mut statements = Vec::new();
            for name in p.columns.iter().filter(|n| state.column(n).is_some_and(|c| !c.not_null)) {
                let check = ident(&free_name(state, &format!("{}_{name}_not_null", table.name)));
                let c = ident(name);
                statements.extend([
                    alter(format!("ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID")),
                    alter(format!("VALIDATE CONSTRAINT {check}")),
                    alter(format!("ALTER COLUMN {c} SET NOT NULL")),
                    alter(format!("DROP CONSTRAINT {check}")),
                ]);
            }
            statements.push(format!("CREATE UNIQUE INDEX CONCURRENTLY {index} ON {table} ({cols})"));
            // The old key by its real name; the new one as ALTER TABLE names it.
            let pkey = ident(&format!("{}_pkey", table.name));
            let drop_old = match (&state.primary_key_name, state.primary_key.is_empty()) {
                (_, true) => String::new(),
                (Some(old), false) => format!("DROP CONSTRAINT {}, ", ident(old)),
                (None, false) => format!("DROP CONSTRAINT {pkey}, "),
            };
            statements.push(alter(format!("{drop_old}ADD CONSTRAINT {pkey} PRIMARY KEY USING INDEX {index}")));
            Ok((
                "the key's index is built CONCURRENTLY, then taken over by the constraint in a brief lock".into(),
                statements,
            ))
        }
        ChangeKind::AddConstraint(c) => {
            let name = ident(&c.name);
            let validate = if dsql {
                format!("ALTER TABLE ASYNC {table} VALIDATE CONSTRAINT {name}")
            } else {
                alter(format!("VALIDATE CONSTRAINT {name}"))
            };
            let validated = if dsql { "validated by a DSQL job, awaited" } else { "validated without blocking writes" };
            if let Some(check) = &c.check {
                return Ok((
                    format!("added NOT VALID, {validated}"),
                    vec![alter(format!("ADD CONSTRAINT {name} CHECK ({check}) NOT VALID")), validate],
                ));
            }
            if let Some(fk) = &c.foreign_key {
                return Ok((
                    format!("added NOT VALID, {validated}"),
                    vec![alter(format!("ADD CONSTRAINT {name} {} NOT VALID", references(fk, table))), validate],
                ));
            }
            let columns = c.unique.as_ref().expect("validated: one of check, unique, foreignKey");
            if dsql {
                return Err("DSQL refuses ADD CONSTRAINT ... UNIQUE; the new table declares it".into());
            }
            let cols = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            Ok((
                "the index is built CONCURRENTLY, then taken over by the constraint in a brief lock".into(),
                vec![
                    format!("CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} ({cols})"),
                    alter(format!("ADD CONSTRAINT {name} UNIQUE USING INDEX {name}")),
                ],
            ))
        }
        ChangeKind::AddIdentity(i) => {
            let column = state.column(&i.column).expect("validated");
            if dsql && column.data_type != "bigint" {
                return Err(format!(
                    "DSQL identity columns are bigint only and {:?} is {}: the rebuild widens it",
                    i.column, column.data_type
                ));
            }
            let why = if dsql {
                "where DSQL takes ADD IDENTITY (probed on a scratch table at Validating), starting past the \
                 highest id; the rebuild when it refuses"
            } else {
                "PostgreSQL adds the identity to the column in place, starting past the highest id read under \
                 the table's lock, in one short lock"
            };
            // The same way as an IdentityMigration's in place: the start is
            // read under the lock when the change is made.
            let cache = i.cache.unwrap_or(match dialect {
                Dialect::Dsql => crate::api::DSQL_DEFAULT_CACHE,
                Dialect::Postgres => crate::api::POSTGRES_DEFAULT_CACHE,
            });
            let statement = alter(format!(
                "ALTER COLUMN {} ADD GENERATED {} AS IDENTITY (START WITH {} CACHE {cache})",
                ident(&i.column),
                match i.generation {
                    crate::api::Generation::Always => "ALWAYS",
                    crate::api::Generation::ByDefault => "BY DEFAULT",
                },
                IDENTITY_START_PLACEHOLDER,
            ));
            Ok((why.into(), vec![statement]))
        }
    }
}

/// Whether PostgreSQL builds an index again when a column it reads changes
/// type without a rewrite: one with an expression key or a predicate (a plain
/// column index is kept).
fn rebuilt_on_retype(definition: &str) -> bool {
    let keys = definition.trim_start().strip_prefix('(').unwrap_or(definition);
    definition.contains(" WHERE ") || keys.split(')').next().is_some_and(|list| list.contains('('))
}

/// `wanted`, or `wanted_1`, `wanted_2` ...: the first that no constraint or
/// index of the table has, for a helper the engine adds and drops again (a
/// user's constraint of that name is never taken for it).
fn free_name(state: &State, wanted: &str) -> String {
    (0..)
        .map(|n| if n == 0 { wanted.to_string() } else { format!("{wanted}_{n}") })
        .find(|name| !state.names.contains(name))
        .expect("a free name")
}

/// What the plan prints for an in-place identity's start: the value is read
/// under the table's lock when the change is made.
pub const IDENTITY_START_PLACEHOLDER: &str = "<highest id + 1, read under the lock>";

/// `FOREIGN KEY (a) REFERENCES s.t (b)`; an unqualified table is in `table`'s schema.
pub(super) fn references(fk: &ForeignKey, table: &TableName) -> String {
    let target = match fk.references.table.split_once('.') {
        Some((schema, name)) => TableName::new(schema, name),
        None => table.sibling(fk.references.table.clone()),
    };
    let list = |cols: &[String]| cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    format!("FOREIGN KEY ({}) REFERENCES {target} ({})", list(&fk.columns), list(&fk.references.columns))
}

#[cfg(test)]
mod tests;

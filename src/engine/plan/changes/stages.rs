//! DSQL's stand-in for the rehearsal ([`super::rehearsal`]): DSQL has no
//! temporary tables and refuses `ALTER COLUMN TYPE`, so where ALTER TABLE
//! would parse an expression twice (a CHECK, a default, an index's
//! predicate or expression, through a type change and then another, or a
//! default converted at a type change and later dropped), the server parses
//! it at each such stage on a scratch table: created at the stage's types
//! with the definitions as the stage before printed them, read back, and
//! dropped. The last stage needs none: the new table's own CREATE is it.
//! Pure: which stages, their statements, and what is taken from them.

use super::super::names::derived_name;
use super::super::quote::ident;
use super::super::shape::{Column, Constraint, ConstraintKind, Index, TableName, TableShape};
use super::State;
use super::render::create_table;
use crate::api::changes::{Change, ChangeKind};
use crate::db::Dialect;

/// The changes after which the server must parse the definitions again.
/// ALTER TABLE parses an expression where a change brings it (a CHECK, a
/// default) and again at each later new type; the new table's CREATE
/// parses once, at the final types. So a change that brings an expression
/// or a new type is a stage when a later change gives a new type, or, for
/// a new type, when a later change replaces or drops that column's default
/// (ALTER converted the default at the new type before that).
pub fn stages(changes: &[Change]) -> Vec<usize> {
    let retypes = |c: &Change| matches!(c.kind(), Ok(ChangeKind::AlterColumn(a)) if a.data_type.is_some());
    let replaces_default = |c: &Change, column: &str| match c.kind() {
        Ok(ChangeKind::AlterColumn(a)) => a.column == column && (a.default.is_some() || a.drop_default),
        Ok(ChangeKind::DropColumn(d)) => d.name == column,
        _ => false,
    };
    changes
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            let later = &changes[i + 1..];
            let retyped_later = later.iter().any(retypes);
            match c.kind() {
                Ok(ChangeKind::AlterColumn(a)) if a.data_type.is_some() => {
                    retyped_later || later.iter().any(|l| replaces_default(l, &a.column))
                }
                Ok(ChangeKind::AlterColumn(a)) => a.default.is_some() && retyped_later,
                Ok(ChangeKind::AddColumn(a)) => a.default.is_some() && retyped_later,
                Ok(ChangeKind::AddConstraint(a)) => a.check.is_some() && retyped_later,
                _ => false,
            }
        })
        .map(|(i, _)| i)
        .collect()
}

/// The spec field a stage's refusal names.
pub fn stage_field(change: &Change, i: usize) -> String {
    let sub = match change.kind() {
        Ok(ChangeKind::AlterColumn(a)) if a.data_type.is_some() => "alterColumn.type",
        Ok(ChangeKind::AlterColumn(_)) => "alterColumn.default",
        Ok(ChangeKind::AddColumn(_)) => "addColumn.default",
        Ok(ChangeKind::AddConstraint(_)) => "addConstraint.check",
        _ => return format!("spec.changes[{i}]"),
    };
    format!("spec.changes[{i}].{sub}")
}

/// A stage's scratch table, beside the source: `idmig_stage_<n>_<table>`,
/// cut to the identifier limit.
pub fn scratch_table(source: &TableName, stage: usize) -> TableName {
    let name = super::super::names::fit_identifier(&format!("idmig_stage_{stage}_{}", source.name));
    TableName::new(source.schema.clone(), name)
}

/// What a stage sends: the scratch table at the state's types with its
/// columns' defaults and CHECKs (no identity, unique or foreign key: none
/// of them is parsed again), then each index that has an expression or a
/// predicate, each `CREATE INDEX ASYNC` a job of its own.
pub struct StageStatements {
    pub create: String,
    /// `(index name on the scratch table, statement)`.
    pub indexes: Vec<(String, String)>,
}

pub fn stage_statements(state: &State, source: &TableName, scratch: &TableName) -> StageStatements {
    let mut bare = state.clone();
    bare.identity = None;
    bare.uniques.clear();
    bare.foreign_keys.clear();
    bare.carried_foreign_keys.clear();
    bare.columns.iter_mut().for_each(|c| c.generated = None);
    let key = derived_name(&format!("{}_pkey", source.name), &source.name, &scratch.name);
    let create = create_table(&bare, source, scratch, &key, Dialect::Dsql);
    let indexes = state
        .indexes
        .iter()
        .filter(|(_, definition)| parsed(definition))
        .map(|(name, definition)| {
            let on_scratch = derived_name(name, &source.name, &scratch.name);
            let sql = format!("CREATE INDEX ASYNC {} ON {scratch} {definition}", ident(&on_scratch));
            (on_scratch, sql)
        })
        .collect();
    StageStatements { create, indexes }
}

/// Whether an index definition (`(a, lower(b)) WHERE (c > 0)`) holds an
/// expression or a predicate, which a new type may print differently: a
/// list of plain columns prints the same whatever their types.
fn parsed(definition: &str) -> bool {
    let keys = definition.split(" WHERE ").next().unwrap_or_default();
    let inner = keys.trim().strip_prefix('(').and_then(|k| k.split(") INCLUDE").next()).unwrap_or_default();
    definition.contains(" WHERE ") || inner.trim_end_matches(')').contains('(')
}

/// Takes what the scratch table printed into `state`: each CHECK by name,
/// each index by its name on the scratch table, each column's default.
pub fn adopt_stage(state: &mut State, printed: &TableShape, source: &TableName, scratch: &TableName) {
    for (name, definition) in &mut state.checks {
        if let Some(c) = printed.constraints.iter().find(|c| c.kind == ConstraintKind::Check && c.name == *name) {
            definition.clone_from(&c.definition);
        }
    }
    for (name, definition) in &mut state.indexes {
        let on_scratch = derived_name(name, &source.name, &scratch.name);
        if let Some(i) = printed.indexes.iter().find(|i| i.name == on_scratch) {
            definition.clone_from(&i.definition);
        }
    }
    for column in &mut state.columns {
        if column.generated.is_none()
            && let Some(c) = printed.columns.iter().find(|c| c.name == column.name)
        {
            column.default.clone_from(&c.default);
        }
    }
}

/// The state after every change, as a catalog shape, for [`super::reshape::Reshape::adopt`]:
/// the definitions the stages printed, carried on by the planner since.
pub fn as_printed(state: &State, table: &TableName) -> TableShape {
    TableShape {
        table: Some(table.clone()),
        columns: state.columns.iter().map(Column::clone).collect(),
        constraints: state
            .checks
            .iter()
            .map(|(name, definition)| Constraint {
                name: name.clone(),
                kind: ConstraintKind::Check,
                definition: definition.clone(),
                columns: Vec::new(),
            })
            .collect(),
        indexes: state
            .indexes
            .iter()
            .map(|(name, definition)| Index {
                name: name.clone(),
                unique: false,
                method: String::new(),
                definition: definition.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::tests::{changes, orders};

    #[test]
    fn a_stage_is_parsed_again_only_where_a_later_change_meets_its_new_type() {
        let twice = changes(
            "- alterColumn: {column: qty, type: bigint}\n- renameColumn: {from: note, to: remark}\n\
             - alterColumn: {column: qty, type: \"numeric(12,2)\"}",
        );
        assert_eq!(stages(&twice), [0], "the first new type only: the new table's CREATE is the last");
        let once = changes("- alterColumn: {column: qty, type: bigint}\n- alterColumn: {column: note, notNull: true}");
        assert!(stages(&once).is_empty());
        let default_dropped = changes(
            "- alterColumn: {column: note, type: integer, using: \"1\"}\n- alterColumn: {column: note, dropDefault: true}",
        );
        assert_eq!(stages(&default_dropped), [0]);
        let column_dropped =
            changes("- alterColumn: {column: note, type: integer, using: \"1\"}\n- dropColumn: {name: note}");
        assert_eq!(stages(&column_dropped), [0]);
        let other_default =
            changes("- alterColumn: {column: qty, type: bigint}\n- alterColumn: {column: note, default: \"'x'\"}");
        assert!(stages(&other_default).is_empty(), "another column's default is not parsed again");
        // A CHECK added, then a new type: parsed when added, then again.
        let added =
            changes("- addConstraint: {name: c, check: \"qty >= -5\"}\n- alterColumn: {column: qty, type: bigint}");
        assert_eq!(stages(&added), [0]);
        assert_eq!(stage_field(&added[0], 0), "spec.changes[0].addConstraint.check");
        let added_last =
            changes("- alterColumn: {column: qty, type: bigint}\n- addConstraint: {name: c, check: \"qty > 0\"}");
        assert!(stages(&added_last).is_empty(), "parsed once, by the new table's CREATE");
    }

    #[test]
    fn the_scratch_table_has_the_stage_types_checks_and_defaults_and_only_the_indexes_that_parse() {
        let mut state = State::of(&orders());
        state.indexes.push(("orders_big".into(), "(qty) WHERE (qty > 10)".into()));
        state.indexes.push(("orders_lower".into(), "(lower(note))".into()));
        state.uniques.push(("orders_note_key".into(), vec!["note".into()]));
        let source = TableName::new("shop", "orders");
        let scratch = scratch_table(&source, 2);
        assert_eq!(scratch, TableName::new("shop", "idmig_stage_2_orders"));
        let s = stage_statements(&state, &source, &scratch);
        assert!(s.create.starts_with(r#"CREATE TABLE "shop"."idmig_stage_2_orders" ("#), "{}", s.create);
        assert!(!s.create.contains("UNIQUE") && !s.create.contains("IDENTITY"), "{}", s.create);
        for (name, _) in &state.checks {
            assert!(s.create.contains(&ident(name)), "{name} in {}", s.create);
        }
        let names: Vec<&str> = s.indexes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["idmig_stage_2_orders_big", "idmig_stage_2_orders_lower"], "plain column lists left out");
        assert_eq!(
            s.indexes[0].1,
            r#"CREATE INDEX ASYNC "idmig_stage_2_orders_big" ON "shop"."idmig_stage_2_orders" (qty) WHERE (qty > 10)"#
        );
    }

    #[test]
    fn what_the_scratch_table_printed_replaces_the_planned_text_by_name() {
        let mut state = State::of(&orders());
        state.indexes.push(("orders_big".into(), "(qty) WHERE (qty > 10)".into()));
        let source = TableName::new("public", "orders");
        let scratch = scratch_table(&source, 0);
        let mut printed = as_printed(&state, &scratch);
        for c in &mut printed.constraints {
            c.definition = format!("{} /* printed */", c.definition);
        }
        printed.indexes = vec![Index {
            name: "idmig_stage_0_orders_big".into(),
            unique: false,
            method: "btree_index".into(),
            definition: "(qty) WHERE ((qty)::numeric > (10)::numeric)".into(),
        }];
        adopt_stage(&mut state, &printed, &source, &scratch);
        assert!(state.checks.iter().all(|(_, d)| d.ends_with("/* printed */")), "{:?}", state.checks);
        assert_eq!(state.indexes.last().unwrap().1, "(qty) WHERE ((qty)::numeric > (10)::numeric)");
    }
}

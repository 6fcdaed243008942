//! The rebuild as the engine runs it: the new table's shape, and the source
//! rows put through every change as a FROM item, so that the copy, the
//! verification and the window's sync read "the source in the new shape"
//! where an identity migration reads the source itself. Identity is the case
//! with no layer: the rows are the source's as they are. Pure.

use super::Rebuild;
use super::rebind::{reads_column, rename_columns};
use crate::db::Dialect;
use crate::engine::plan::preflight::{Surroundings, copy_checks};
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::{Constraint, ConstraintKind, Index, TableName, TableShape};
use crate::engine::plan::validate::{Problem, Settings};

#[derive(Clone, Debug, PartialEq)]
pub struct Reshape {
    pub rebuild: Rebuild,
    /// The new table as the engine reads it: its columns (the identity
    /// marked), key and unique constraints, and the source's indexes it keeps.
    pub target: TableShape,
    /// Source indexes the new table does not get, each said once.
    pub not_carried: Vec<String>,
}

impl Reshape {
    /// `source` is the table's shape as the catalog shows it (with its
    /// indexes); `rebuild` is planned from the same shape.
    pub fn new(rebuild: Rebuild, source: &TableShape) -> Self {
        let target_state = &rebuild.target;
        let mut columns = target_state.columns.clone();
        if let Some(identity) = &target_state.identity {
            for c in columns.iter_mut().filter(|c| c.name == identity.column) {
                c.identity = Some('d');
            }
        }
        let mut constraints = vec![Constraint {
            name: "primary key".into(),
            kind: ConstraintKind::PrimaryKey,
            definition: String::new(),
            columns: target_state.primary_key.clone(),
        }];
        constraints.extend(target_state.uniques.iter().map(|(name, cols)| Constraint {
            name: name.clone(),
            kind: ConstraintKind::Unique,
            definition: String::new(),
            columns: cols.clone(),
        }));
        // Each index follows its columns as ALTER TABLE keeps it: through a
        // rename and a new type, and gone with a column it reads.
        let renames: Vec<(String, String)> = rebuild
            .fates
            .iter()
            .filter_map(|(from, to)| to.as_ref().filter(|to| *to != from).map(|to| (from.clone(), to.clone())))
            .collect();
        let dropped: Vec<&str> =
            rebuild.fates.iter().filter(|(_, to)| to.is_none()).map(|(from, _)| from.as_str()).collect();
        let mut kept = Vec::new();
        let mut not_carried = Vec::new();
        for index in &source.indexes {
            if let Some(column) = dropped.iter().find(|c| reads_column(&index.definition, c)) {
                not_carried.push(format!(
                    "index {} ({}) goes with the dropped column {column}, as ALTER TABLE drops it",
                    index.name, index.definition
                ));
                continue;
            }
            match rename_columns(&index.definition, &renames) {
                Some(definition) => kept.push(Index { definition, ..index.clone() }),
                None => not_carried.push(format!(
                    "index {} ({}) could not be read to follow its columns' new names; create it again on the new \
                     table if it is still wanted",
                    index.name, index.definition
                )),
            }
        }
        let target = TableShape {
            kind: 'r',
            columns,
            constraints,
            indexes: kept,
            estimated_rows: source.estimated_rows,
            ..Default::default()
        };
        Self { rebuild, target, not_carried }
    }

    /// Takes the definitions the rehearsal by ALTER TABLE printed (see
    /// [`super::rehearsal`]); answers what the planner had and ALTER TABLE
    /// did not, for the log.
    pub fn adopt(&mut self, rehearsed: &TableShape) -> Vec<String> {
        let unmatched = super::rehearsal::adopt(&mut self.rebuild.target, rehearsed);
        for index in &mut self.target.indexes {
            if let Some(i) = rehearsed.indexes.iter().find(|i| i.name == index.name) {
                index.definition.clone_from(&i.definition);
            }
        }
        for column in &mut self.target.columns {
            if let Some(c) = self.rebuild.target.column(&column.name) {
                column.default.clone_from(&c.default);
                column.generated.clone_from(&c.generated);
            }
        }
        unmatched
    }

    /// The rows of `table` in the new shape, as a FROM item.
    pub fn rows_of(&self, table: &TableName) -> String {
        format!("({})", self.rebuild.select(&table.to_string()))
    }

    /// The same rows, but where the new table `new` has a row of the key
    /// already, the values of the columns the changes add are its values: a
    /// roll-forward keeps what was written to them before the rollback, and
    /// a default that differs at each reading (`now()`) is read once.
    pub fn rows_keeping(&self, table: &TableName, new: &TableName, key: &str) -> String {
        let key_q = ident(key);
        let columns: Vec<String> = self
            .target
            .columns
            .iter()
            .map(|c| {
                let name = ident(&c.name);
                if self.rebuild.added.iter().any(|(added, _)| *added == c.name) {
                    format!("CASE WHEN k.\"idmig$key\" IS NULL THEN f.{name} ELSE k.{name} END AS {name}")
                } else {
                    format!("f.{name}")
                }
            })
            .collect();
        let kept: Vec<String> = self.rebuild.added.iter().map(|(name, _)| ident(name)).collect();
        format!(
            "(SELECT {} FROM ({}) f LEFT JOIN (SELECT {key_q} AS \"idmig$key\", {} FROM {new}) k \
             ON k.\"idmig$key\" = f.{key_q})",
            columns.join(", "),
            self.rebuild.select(&table.to_string()),
            kept.join(", ")
        )
    }

    /// Whether the rows are read keeping the new table's added values: when
    /// `rolling_forward` after a rollback, or always when an added value is
    /// not constant. (Else the reading is the same, and the join costs the
    /// window time.)
    pub fn keeps_added(&self, rolling_forward: bool) -> bool {
        !self.rebuild.added.is_empty() && (rolling_forward || self.rebuild.added.iter().any(|(_, constant)| !constant))
    }

    pub fn has_identity(&self) -> bool {
        self.rebuild.target.identity.is_some()
    }

    /// The source's columns as the rebuild reads them: how the original table
    /// is told from the new one in the catalog.
    pub fn source_columns(&self) -> Vec<String> {
        self.rebuild.base.columns.iter().map(|c| c.name.clone()).collect()
    }
}

/// What a rebuild needs of the table, refused before anything changes: an
/// ordinary table, and what the identity copy needs ([`copy_checks`]):
/// nothing the swap would strand on the old table (the new table declares
/// only the foreign keys `addConstraint` asks for), nothing it cannot read
/// or recreate, free names, DSQL's limits.
pub fn refusals(shape: &TableShape, settings: &Settings, around: &Surroundings, dialect: Dialect) -> Vec<Problem> {
    let table = &settings.source;
    let mut problems = Vec::new();
    if shape.kind != 'r' {
        problems.push(Problem::new(
            "spec.table",
            format!("{table} is not an ordinary table (relkind {:?}); a rebuild cannot replace it", shape.kind),
        ));
    }
    problems.extend(copy_checks(settings, shape, around, dialect));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::State;
    use crate::engine::plan::changes::tests::{changes, orders};
    use crate::engine::plan::shape::Index;

    #[test]
    fn every_index_follows_its_columns_through_the_changes_and_goes_with_a_dropped_one() {
        let mut source = orders();
        let index = |name: &str, definition: &str| Index {
            name: name.into(),
            unique: false,
            method: "btree".into(),
            definition: definition.into(),
        };
        source.indexes = vec![
            index("orders_email_idx", "(email)"),
            index("orders_amount_idx", "(amount) WHERE (amount > 0)"),
            index("orders_cust_idx", "(cust)"),
            index("orders_legacy_idx", "(lower(legacy)) WHERE (cust IS NOT NULL)"),
        ];
        let list = changes(
            r#"
- alterColumn: {column: amount, type: "numeric(12,2)"}
- renameColumn: {from: cust, to: customer_id}
- dropColumn: {name: legacy}
- addIdentity: {column: id}
"#,
        );
        let reshape = Reshape::new(Rebuild::new(State::of(&source), &list, 0).unwrap(), &source);
        let kept: Vec<(&str, &str)> =
            reshape.target.indexes.iter().map(|i| (i.name.as_str(), i.definition.as_str())).collect();
        assert_eq!(
            kept,
            [
                ("orders_email_idx", "(email)"),
                ("orders_amount_idx", "(amount) WHERE (amount > 0)"),
                ("orders_cust_idx", "(\"customer_id\")"),
            ],
            "a new type keeps the index, a rename follows it, a dropped column takes it along, as ALTER TABLE does"
        );
        assert_eq!(
            reshape.not_carried,
            ["index orders_legacy_idx ((lower(legacy)) WHERE (cust IS NOT NULL)) goes with the dropped column \
                 legacy, as ALTER TABLE drops it"]
        );
        assert_eq!(reshape.target.column("id").unwrap().identity, Some('d'));
        assert!(reshape.has_identity());
        assert_eq!(reshape.target.primary_key().unwrap().columns, ["id"]);
        let rows = reshape.rows_of(&TableName::new("public", "orders_old"));
        assert!(rows.starts_with("(SELECT \"id\", \"amount\", \"email\", \"customer_id\" FROM "), "{rows}");
        assert!(rows.contains("FROM \"public\".\"orders_old\" AS l0"), "{rows}");
        assert_eq!(reshape.source_columns(), ["id", "amount", "email", "legacy", "cust"]);
    }

    #[test]
    fn what_a_swap_would_strand_is_refused_by_name() {
        use crate::engine::plan::validate::{TargetSource, validate_spec};
        let settings = validate_spec(&crate::engine::testing::spec_for("orders"), TargetSource::Spec).unwrap();
        let around = Surroundings::default();
        assert!(refusals(&orders(), &settings, &around, Dialect::Postgres).is_empty());
        let mut shape = orders();
        shape.kind = 'v';
        shape.triggers = vec!["orders_audit".into()];
        shape.dependent_views = vec!["public.recent_orders".into()];
        shape.fidelity.force_row_security = true;
        let said: Vec<String> = refusals(&shape, &settings, &around, Dialect::Postgres)
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        assert_eq!(
            said,
            [
                "spec.table: \"public\".\"orders\" is not an ordinary table (relkind 'v'); a rebuild cannot replace it",
                "spec.table: \"public\".\"orders\" has triggers, which would stay on the old table (triggers: \
                 orders_audit)",
                "spec.table: views depend on \"public\".\"orders\" and would keep reading the old table (views: \
                 public.recent_orders)",
                "spec.table: \"public\".\"orders\" forces row-level security on its owner; the copy would see only \
                 the rows its policies allow",
            ]
        );
        let taken = Surroundings { names_taken: vec![settings.shadow.name.clone()], ..Default::default() };
        let said = refusals(&orders(), &settings, &taken, Dialect::Dsql);
        assert!(
            said[0].message.contains("the shadow table name \"public\".\"orders_new\" is already taken"),
            "{said:?}"
        );
    }
}

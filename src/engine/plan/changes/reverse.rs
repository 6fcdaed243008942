//! The way back of a rebuild after its cut-over: the new table's rows in the
//! original shape, each change undone in reverse order, as a FROM item that a
//! rollback copies into the old table the way the forward copy reads the
//! source. Pure.
//!
//! - `renameColumn` renames back; `addColumn` leaves the column out; NOT NULL,
//!   defaults, keys, constraints and identity change no value.
//! - `alterColumn` with a type needs `reverseUsing`, an expression over the
//!   row as the change leaves it, cast back to the old type.
//! - `dropColumn`: the new table never had the values, so they come from the
//!   old table's row of the same key (joined in); a row written since the
//!   cut-over gets the column's default there, or NULL.

use super::{Layer, Rebuild, State, apply};
use crate::api::changes::{Change, ChangeKind};
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::{TableName, TableShape};
use crate::engine::plan::validate::{InvalidInput, Problem};

#[derive(Clone, Debug, PartialEq)]
pub struct Reverse {
    /// The original table's columns, as the rows come out.
    original: Vec<String>,
    /// Hidden columns joined from the old table: `(hidden name, expression
    /// over the old row `o` and its key)`.
    kept: Vec<(String, String)>,
    layers: Vec<Layer>,
}

/// A hidden column's name: not one a table would have.
fn hidden(change: usize) -> String {
    format!("idmig$kept{change}")
}

impl Reverse {
    /// Undoes `changes` of a table whose shape was `original`, or says which
    /// change cannot be undone and why.
    pub fn new(original: &TableShape, changes: &[Change]) -> Result<Self, InvalidInput> {
        let mut states = vec![State::of(original)];
        // Where each column of each state came from in the original (None: added).
        let mut origins: Vec<Vec<Option<String>>> =
            vec![states[0].columns.iter().map(|c| Some(c.name.clone())).collect()];
        for (i, change) in changes.iter().enumerate() {
            let mut next = states[i].clone();
            apply(&mut next, change, i).map_err(|p| InvalidInput(vec![p]))?;
            let before = &states[i];
            let origin = next
                .columns
                .iter()
                .map(|c| {
                    let was = match change.kind() {
                        Ok(ChangeKind::RenameColumn(r)) if c.name == r.to => r.from.as_str(),
                        _ => c.name.as_str(),
                    };
                    before.columns.iter().position(|b| b.name == was).and_then(|p| origins[i][p].clone())
                })
                .collect();
            origins.push(origin);
            states.push(next);
        }
        let mut problems = Vec::new();
        let mut kept = Vec::new();
        let mut layers = Vec::new();
        // Columns whose values, from here back, are the old table's own.
        let mut as_kept: Vec<String> = Vec::new();
        for (i, change) in changes.iter().enumerate().rev() {
            let before = &states[i];
            let Ok(kind) = change.kind() else { continue };
            let mut layer: Layer = Vec::new();
            for c in &before.columns {
                let expr = match &kind {
                    ChangeKind::RenameColumn(r) if c.name == r.from => {
                        as_kept.iter_mut().filter(|k| **k == r.to).for_each(|k| k.clone_from(&r.from));
                        ident(&r.to)
                    }
                    ChangeKind::DropColumn(d) if c.name == d.name => {
                        let position = before.columns.iter().position(|b| b.name == c.name).expect("listed");
                        // The old table's own value, in its own type: no
                        // inverse further back applies to it.
                        let value = match &origins[i][position] {
                            Some(name) => {
                                let column = original.column(name).expect("an original column");
                                let value = match (&column.default, column.not_null) {
                                    (Some(default), _) => format!(
                                        "CASE WHEN o.\"idmig$key\" IS NULL THEN ({default}) ELSE o.{} END",
                                        ident(name)
                                    ),
                                    (None, true) => {
                                        problems.push(Problem::new(
                                            format!("spec.changes[{i}].dropColumn.name"),
                                            format!(
                                                "{name:?} is NOT NULL without a default in the old table: a row \
                                                 written since the cut-over would have no value for it there"
                                            ),
                                        ));
                                        "NULL".to_string()
                                    }
                                    (None, false) => format!("o.{}", ident(name)),
                                };
                                format!("({value})::{}", column.data_type)
                            }
                            None => "NULL".to_string(),
                        };
                        kept.push((hidden(i), value));
                        as_kept.push(c.name.clone());
                        ident(&hidden(i))
                    }
                    ChangeKind::AlterColumn(a)
                        if c.name == a.column && a.data_type.is_some() && !as_kept.contains(&c.name) =>
                    {
                        match &a.reverse_using {
                            Some(reverse) => format!("({reverse})::{}", c.data_type),
                            None => {
                                problems.push(Problem::new(
                                    format!("spec.changes[{i}].alterColumn.reverseUsing"),
                                    format!(
                                        "is needed to roll back after the cut-over: the expression that takes \
                                         {:?} back to {}",
                                        a.column, c.data_type
                                    ),
                                ));
                                ident(&c.name)
                            }
                        }
                    }
                    _ => ident(&c.name),
                };
                layer.push((c.name.clone(), expr));
            }
            layers.push(layer);
        }
        if !problems.is_empty() {
            return Err(InvalidInput(problems));
        }
        Ok(Self { original: states[0].columns.iter().map(|c| c.name.clone()).collect(), kept, layers })
    }

    /// The rows of the new table `new` in the original shape, as a FROM item;
    /// values only the old table has are read from `old` by `key`.
    pub fn rows_of(&self, new: &TableName, old: &TableName, key: &str) -> String {
        let key_q = ident(key);
        let hidden: Vec<String> = self.kept.iter().map(|(name, _)| ident(name)).collect();
        let mut from = if self.kept.is_empty() {
            new.to_string()
        } else {
            let joined: Vec<String> =
                self.kept.iter().map(|(name, expr)| format!("{expr} AS {}", ident(name))).collect();
            format!(
                "(SELECT n.*, {} FROM {new} n LEFT JOIN (SELECT {key_q} AS \"idmig$key\", * FROM {old}) o \
                 ON o.\"idmig$key\" = n.{key_q})",
                joined.join(", ")
            )
        };
        for (depth, layer) in self.layers.iter().enumerate() {
            let mut list: Vec<String> = layer.iter().map(|(name, expr)| format!("{expr} AS {}", ident(name))).collect();
            list.extend(hidden.iter().cloned());
            from = format!("(SELECT {} FROM {from} AS r{depth})", list.join(", "));
        }
        let names: Vec<String> = self.original.iter().map(|c| ident(c)).collect();
        format!("(SELECT {} FROM {from} AS reversed)", names.join(", "))
    }

    /// The rows a rollback after the cut-over makes of the old table `old`,
    /// as a FROM item in the original shape: a row of the new table `new`
    /// that still equals its old row put through the changes (`forward`,
    /// compared on the columns the changes carry from the original) keeps the
    /// old row as it is; only a row written or changed since the cut-over
    /// comes back through the inverses, and a row deleted since is absent.
    /// An inverse loses what the change rounded or cut; the old row never
    /// needed it.
    pub fn rows_since_cutover(&self, forward: &Rebuild, new: &TableName, old: &TableName, key: &str) -> String {
        let key_q = ident(key);
        let carried: Vec<String> = forward.fates.iter().filter_map(|(_, to)| to.as_deref().map(ident)).collect();
        let row = |alias: &str| {
            format!("ROW({})::text", carried.iter().map(|c| format!("{alias}.{c}")).collect::<Vec<_>>().join(", "))
        };
        let unchanged = |outer: &str| {
            format!(
                "EXISTS (SELECT 1 FROM {new} n JOIN ({}) f ON f.{key_q} = n.{key_q} \
                 WHERE n.{key_q} = {outer}.{key_q} AND {} = {})",
                forward.select(&old.to_string()),
                row("n"),
                row("f")
            )
        };
        let columns = |alias: &str| self.original.iter().map(|c| format!("{alias}.{}", ident(c))).collect::<Vec<_>>();
        format!(
            "(SELECT {} FROM {old} o WHERE {} UNION ALL SELECT {} FROM {} r WHERE NOT {})",
            columns("o").join(", "),
            unchanged("o"),
            columns("r").join(", "),
            self.rows_of(new, old, key),
            unchanged("r")
        )
    }

    /// Whether some values come from the old table (a dropped column): the
    /// old rows must then be updated in place, never deleted and inserted.
    pub fn keeps_old_values(&self) -> bool {
        !self.kept.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::tests::{changes, orders};

    fn tables() -> (TableName, TableName) {
        (TableName::new("public", "orders"), TableName::new("public", "orders_old"))
    }

    fn problems(list: &[Change]) -> Vec<String> {
        Reverse::new(&orders(), list).unwrap_err().0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect()
    }

    #[test]
    fn each_change_is_undone_in_reverse_order_into_the_original_columns() {
        let list = changes(
            r#"
- alterColumn: {column: amount, type: "numeric(12,2)", reverseUsing: "round(amount)"}
- alterColumn: {column: email, notNull: true}
- addColumn: {name: status, type: text, notNull: true, default: "'new'"}
- dropColumn: {name: legacy}
- renameColumn: {from: cust, to: customer_id}
"#,
        );
        let reverse = Reverse::new(&orders(), &list).unwrap();
        assert!(reverse.keeps_old_values());
        let (new, old) = tables();
        let sql = reverse.rows_of(&new, &old, "id");
        assert!(
            sql.starts_with("(SELECT \"id\", \"amount\", \"email\", \"legacy\", \"cust\" FROM"),
            "the original columns, in order: {sql}"
        );
        assert!(sql.contains("\"customer_id\" AS \"cust\""), "renamed back: {sql}");
        assert!(sql.contains("(round(amount))::integer AS \"amount\""), "the type through reverseUsing: {sql}");
        assert!(
            sql.contains("LEFT JOIN (SELECT \"id\" AS \"idmig$key\", * FROM \"public\".\"orders_old\") o"),
            "the dropped column from the old row: {sql}"
        );
        assert!(sql.contains("(o.\"legacy\")::text AS \"idmig$kept3\""), "{sql}");
        assert!(sql.contains("\"idmig$kept3\" AS \"legacy\""), "{sql}");
        // Passed through by the layers undoing the rename and the drop, left out from its own on.
        assert_eq!(sql.matches("\"status\" AS \"status\"").count(), 2, "{sql}");
    }

    #[test]
    fn without_a_dropped_column_the_new_table_alone_is_read() {
        let list = changes("- alterColumn: {column: email, notNull: true}\n- addColumn: {name: note, type: text}\n");
        let reverse = Reverse::new(&orders(), &list).unwrap();
        assert!(!reverse.keeps_old_values());
        let (new, old) = tables();
        let sql = reverse.rows_of(&new, &old, "id");
        assert!(!sql.contains("orders_old") && sql.contains("FROM \"public\".\"orders\" AS r0"), "{sql}");
    }

    #[test]
    fn a_type_change_without_its_inverse_is_named() {
        let list = changes("- alterColumn: {column: amount, type: bigint}\n- renameColumn: {from: email, to: mail}\n");
        assert_eq!(
            problems(&list),
            ["spec.changes[0].alterColumn.reverseUsing: is needed to roll back after the cut-over: the expression \
              that takes \"amount\" back to integer"]
        );
    }

    #[test]
    fn a_column_retyped_or_renamed_then_dropped_comes_back_as_the_old_table_has_it() {
        let list = changes(
            r#"
- alterColumn: {column: amount, type: "numeric(12,2)"}
- renameColumn: {from: amount, to: total}
- dropColumn: {name: total}
"#,
        );
        let reverse = Reverse::new(&orders(), &list).expect("no reverseUsing needed: the old values are kept");
        let (new, old) = tables();
        let sql = reverse.rows_of(&new, &old, "id");
        assert!(sql.contains("(o.\"amount\")::integer AS \"idmig$kept2\""), "{sql}");
        assert!(sql.contains("\"total\" AS \"amount\""), "renamed back, not converted: {sql}");
    }

    #[test]
    fn a_dropped_not_null_column_needs_a_default_for_rows_written_since() {
        let mut shape = orders();
        shape.columns[3].not_null = true;
        let list = changes("- dropColumn: {name: legacy}\n");
        let err = Reverse::new(&shape, &list).unwrap_err().to_string();
        assert!(err.contains("spec.changes[0].dropColumn.name") && err.contains("NOT NULL without a default"), "{err}");
        shape.columns[3].default = Some("'none'::text".into());
        let sql = Reverse::new(&shape, &list).unwrap().rows_of(&tables().0, &tables().1, "id");
        assert!(sql.contains("CASE WHEN o.\"idmig$key\" IS NULL THEN ('none'::text) ELSE o.\"legacy\" END"), "{sql}");
    }
}

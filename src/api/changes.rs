//! `spec.changes` of a TableMigration: a typed list, applied in order, one key
//! per item (design.md, "TableMigration"). Plain data; the planner
//! (`engine::plan::changes`) decides per change and server how it is made.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::Generation;

/// One change: exactly one of its keys is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new(
    "(has(self.alterColumn) ? 1 : 0) + (has(self.addColumn) ? 1 : 0) + (has(self.dropColumn) ? 1 : 0) + \
     (has(self.renameColumn) ? 1 : 0) + (has(self.setPrimaryKey) ? 1 : 0) + (has(self.addConstraint) ? 1 : 0) + \
     (has(self.addIdentity) ? 1 : 0) == 1"
).message("each change sets exactly one of alterColumn, addColumn, dropColumn, renameColumn, setPrimaryKey, addConstraint, addIdentity"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Change {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alter_column: Option<AlterColumn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_column: Option<AddColumn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_column: Option<DropColumn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_column: Option<RenameColumn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_primary_key: Option<SetPrimaryKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_constraint: Option<AddConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_identity: Option<AddIdentity>,
}

/// A change by kind, once it is known to have exactly one key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChangeKind<'a> {
    AlterColumn(&'a AlterColumn),
    AddColumn(&'a AddColumn),
    DropColumn(&'a DropColumn),
    RenameColumn(&'a RenameColumn),
    SetPrimaryKey(&'a SetPrimaryKey),
    AddConstraint(&'a AddConstraint),
    AddIdentity(&'a AddIdentity),
}

impl Change {
    /// The one change this item makes, or the keys it sets when not exactly one.
    pub fn kind(&self) -> Result<ChangeKind<'_>, Vec<&'static str>> {
        let set: Vec<(&'static str, ChangeKind<'_>)> = [
            self.alter_column.as_ref().map(|c| ("alterColumn", ChangeKind::AlterColumn(c))),
            self.add_column.as_ref().map(|c| ("addColumn", ChangeKind::AddColumn(c))),
            self.drop_column.as_ref().map(|c| ("dropColumn", ChangeKind::DropColumn(c))),
            self.rename_column.as_ref().map(|c| ("renameColumn", ChangeKind::RenameColumn(c))),
            self.set_primary_key.as_ref().map(|c| ("setPrimaryKey", ChangeKind::SetPrimaryKey(c))),
            self.add_constraint.as_ref().map(|c| ("addConstraint", ChangeKind::AddConstraint(c))),
            self.add_identity.as_ref().map(|c| ("addIdentity", ChangeKind::AddIdentity(c))),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.as_slice() {
            [(_, kind)] => Ok(*kind),
            more => Err(more.iter().map(|(key, _)| *key).collect()),
        }
    }
}

impl ChangeKind<'_> {
    /// The key that names this kind in `spec.changes[i]`.
    pub fn key(&self) -> &'static str {
        match self {
            ChangeKind::AlterColumn(_) => "alterColumn",
            ChangeKind::AddColumn(_) => "addColumn",
            ChangeKind::DropColumn(_) => "dropColumn",
            ChangeKind::RenameColumn(_) => "renameColumn",
            ChangeKind::SetPrimaryKey(_) => "setPrimaryKey",
            ChangeKind::AddConstraint(_) => "addConstraint",
            ChangeKind::AddIdentity(_) => "addIdentity",
        }
    }
}

/// Changes one column: its type (through `using`), NOT NULL, its default.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlterColumn {
    pub column: String,
    /// The new type, e.g. `numeric(12,2)`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
    /// An SQL expression over the old row that gives the new value; by
    /// default `column::type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub using: Option<String>,
    /// The inverse of `using`, over the row as this change leaves it (e.g.
    /// `round(amount)`): what a rollback after the cut-over needs to take
    /// rows back to the old type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_using: Option<String>,
    /// True to forbid NULLs, false to allow them; unset leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_null: Option<bool>,
    /// A new default, an SQL expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub drop_default: bool,
}

/// A new column.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default)]
    pub not_null: bool,
    /// An SQL expression; existing rows get it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DropColumn {
    pub name: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameColumn {
    pub from: String,
    pub to: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPrimaryKey {
    pub columns: Vec<String>,
}

/// A named constraint: exactly one of `check`, `unique` or `foreignKey`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddConstraint {
    pub name: String,
    /// An SQL boolean expression over the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_key: Option<ForeignKey>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub references: References,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct References {
    /// The referenced table, in the migrated table's schema unless qualified
    /// as `schema.table`.
    pub table: String,
    pub columns: Vec<String>,
}

/// Moves an integer column onto an identity: what an IdentityMigration does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddIdentity {
    pub column: String,
    #[serde(default)]
    pub generation: Generation,
    /// The identity's CACHE; by default 65536 on DSQL and 1 on PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<i64>,
    /// The identity starts after this value, or after the highest id when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_after: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_item_has_exactly_one_key_spelled_as_the_design_says() {
        let yaml = r#"
- alterColumn: {column: amount, type: "numeric(12,2)", using: "round(amount::numeric, 2)", reverseUsing: "amount::integer"}
- alterColumn: {column: email, notNull: true}
- addColumn: {name: status, type: text, notNull: true, default: "'new'"}
- dropColumn: {name: legacy}
- renameColumn: {from: cust, to: customer_id}
- setPrimaryKey: {columns: [tenant_id, id]}
- addConstraint: {name: amount_positive, check: "amount >= 0"}
- addConstraint: {name: orders_ref_key, unique: [tenant_id, ref]}
- addConstraint: {name: orders_customer_fk, foreignKey: {columns: [customer_id], references: {table: customers, columns: [id]}}}
- addIdentity: {column: id, generation: ByDefault, cache: 65536}
"#;
        let changes: Vec<Change> = serde_norway::from_str(yaml).unwrap();
        let keys: Vec<&str> = changes.iter().map(|c| c.kind().unwrap().key()).collect();
        assert_eq!(
            keys,
            [
                "alterColumn",
                "alterColumn",
                "addColumn",
                "dropColumn",
                "renameColumn",
                "setPrimaryKey",
                "addConstraint",
                "addConstraint",
                "addConstraint",
                "addIdentity"
            ]
        );
        let ChangeKind::AlterColumn(a) = changes[0].kind().unwrap() else { panic!() };
        assert_eq!(a.data_type.as_deref(), Some("numeric(12,2)"));
        assert_eq!(a.reverse_using.as_deref(), Some("amount::integer"));
        let two: Change = serde_norway::from_str("{dropColumn: {name: a}, renameColumn: {from: b, to: c}}").unwrap();
        assert_eq!(two.kind().unwrap_err(), ["dropColumn", "renameColumn"]);
        assert_eq!(Change::default().kind().unwrap_err(), Vec::<&str>::new());
        assert!(serde_norway::from_str::<Change>("{dropColum: {name: a}}").is_err(), "a misspelt key is refused");
    }
}

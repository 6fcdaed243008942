//! A table's shape as read from the catalog: plain data, so planning and
//! preflight are pure functions over it.

use std::fmt;

use super::carried::{Fidelity, Unread};
use super::quote::ident;

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    /// As `format_type` prints it, schema-qualified where needed.
    pub data_type: String,
    pub not_null: bool,
    /// Default expression, as `pg_get_expr` prints it.
    pub default: Option<String>,
    /// `GENERATED ALWAYS AS (expr) STORED`: the expression.
    pub generated: Option<String>,
    /// `a` (always) or `d` (by default) for identity columns.
    pub identity: Option<char>,
    /// Non-default collation, qualified.
    pub collation: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstraintKind {
    PrimaryKey,
    Unique,
    Check,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub name: String,
    pub kind: ConstraintKind,
    /// As `pg_get_constraintdef` prints it, e.g. `UNIQUE (post_id, tag_id)`.
    pub definition: String,
    /// Key columns (primary key and unique constraints).
    pub columns: Vec<String>,
}

/// A secondary index that does not back a constraint.
#[derive(Clone, Debug, PartialEq)]
pub struct Index {
    pub name: String,
    pub unique: bool,
    /// Access method, e.g. `btree`.
    pub method: String,
    /// Everything after `USING <method> `: key columns, INCLUDE, WITH, WHERE.
    pub definition: String,
}

/// A foreign key from the table to another: `definition` as
/// `pg_get_constraintdef` prints it (`FOREIGN KEY (a) REFERENCES t(id) ON DELETE CASCADE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub definition: String,
}

impl OutgoingForeignKey {
    /// The definition with this table's columns renamed by `rename` (the
    /// referenced side is another table's and stays as it is).
    pub fn renamed(&self, rename: impl Fn(&str) -> String) -> Self {
        let columns: Vec<String> = self.columns.iter().map(|c| rename(c)).collect();
        let tail = self.definition.split_once(" REFERENCES ").map(|(_, t)| t).unwrap_or("");
        let list: Vec<String> = columns.iter().map(|c| super::quote::ident(c)).collect();
        let definition = format!("FOREIGN KEY ({}) REFERENCES {tail}", list.join(", "));
        Self { name: self.name.clone(), columns, definition }
    }
}

/// What the catalog says about a table, including what the engine cannot migrate.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TableShape {
    pub table: Option<TableName>,
    /// `r` ordinary, `p` partitioned, `v` view, ...
    pub kind: char,
    pub columns: Vec<Column>,
    pub constraints: Vec<Constraint>,
    pub indexes: Vec<Index>,
    pub estimated_rows: i64,
    /// Foreign keys of this table to other tables (valid ones): the new
    /// table gets each, by name and definition, as ALTER TABLE keeps them.
    pub outgoing_foreign_keys: Vec<OutgoingForeignKey>,
    /// Objects the engine refuses to migrate around, described for the user:
    /// foreign keys that reference this table (the swap would leave them on
    /// the old one), and NOT VALID or self-referencing ones.
    pub foreign_keys: Vec<String>,
    pub triggers: Vec<String>,
    pub dependent_views: Vec<String>,
    pub inheritance: Vec<String>,
    /// Anything else the engine cannot recreate (exclusion constraints, invalid
    /// or unparsable indexes), described.
    pub unsupported: Vec<String>,
    /// Facts the catalog would not give; preflight decides per dialect
    /// whether the migration may go on without them.
    pub unread: Vec<Unread>,
    /// Owner, privileges, comments, options and policies: read separately
    /// (`steps::fidelity`), default until then.
    pub fidelity: Fidelity,
}

impl TableShape {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn primary_key(&self) -> Option<&Constraint> {
        self.constraints.iter().find(|c| c.kind == ConstraintKind::PrimaryKey)
    }

    /// Columns an INSERT can write (stored generated columns are computed).
    pub fn insertable_columns(&self) -> Vec<String> {
        self.columns.iter().filter(|c| c.generated.is_none()).map(|c| c.name.clone()).collect()
    }

    pub fn all_columns(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Indexes other than the primary key that exist as soon as the table is
    /// created (unique constraints): each costs one more mutated row per row.
    pub fn constraint_indexes(&self) -> usize {
        self.constraints.iter().filter(|c| c.kind == ConstraintKind::Unique).count()
    }

    /// Every index but the primary key's, once the shadow table is complete.
    pub fn secondary_indexes(&self) -> usize {
        self.constraint_indexes() + self.indexes.len()
    }
}

/// Integer id column types the engine accepts (the identity is always `bigint`).
pub fn is_integer_type(data_type: &str) -> bool {
    matches!(data_type, "bigint" | "integer" | "smallint")
}

/// A schema-qualified table name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self { schema: schema.into(), name: name.into() }
    }

    /// The same schema, another table name.
    pub fn sibling(&self, name: impl Into<String>) -> Self {
        Self { schema: self.schema.clone(), name: name.into() }
    }
}

/// Renders as `"schema"."name"`.
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", ident(&self.schema), ident(&self.name))
    }
}

//! A TableMigration's settings need its key, the one-column integer primary
//! key by which the scan and the copy go through the rows: read from the
//! catalog, under the table's name or, inside a cut-over window, its old one.

use std::sync::Arc;

use super::catalog::read_shape;
use crate::api::TableMigrationSpec;
use crate::db::{Connector, RetryPolicy, Session};
use crate::engine::error::EngineError;
use crate::engine::plan::shape::{ConstraintKind, TableName, TableShape, is_integer_type};
use crate::engine::plan::validate::{InvalidInput, Settings, TargetSource, validate_table_spec};

/// The table's key: its one-column integer primary key.
pub fn table_key(shape: &TableShape, table: &TableName) -> Result<String, InvalidInput> {
    let pk = shape.constraints.iter().find(|c| c.kind == ConstraintKind::PrimaryKey);
    let why = match pk.map(|c| c.columns.as_slice()) {
        Some([column]) => match shape.column(column) {
            Some(c) if is_integer_type(&c.data_type) => return Ok(column.clone()),
            Some(c) => format!("its primary key {column:?} is {}, not an integer", c.data_type),
            None => format!("its primary key names a column {column:?} it does not have"),
        },
        Some(columns) => format!("its primary key has {} columns", columns.len()),
        None => "it has no primary key".to_string(),
    };
    Err(InvalidInput::one(
        "spec.table",
        format!("{table}: {why}; a TableMigration needs a one-column integer primary key to go through the rows by"),
    ))
}

/// The checks a TableMigration's spec passes without the database: those of
/// [`validate_table_spec`] with any key (the key's own checks wait for the catalog).
pub fn check_table_spec(spec: &TableMigrationSpec) -> Result<(), InvalidInput> {
    validate_table_spec(spec, "key", TargetSource::Spec).map(drop)
}

/// The settings of a TableMigration: its spec's, with the key read from the
/// table. A table that is not there, or has no such key, is bad input.
pub async fn table_settings(
    spec: &TableMigrationSpec,
    connector: Arc<Connector>,
    source: TargetSource,
) -> Result<Settings, EngineError> {
    let table = &TableName::new(spec.schema.clone(), spec.table.clone());
    let mut session = Session::new(connector, RetryPolicy::default(), Arc::default());
    let old_name =
        if spec.old_table.name.is_empty() { format!("{}_old", spec.table) } else { spec.old_table.name.clone() };
    let mut shape = None;
    for name in [table.clone(), table.sibling(old_name)] {
        let name = &name;
        shape = session.retry("read table", |c| async move { read_shape(&c, name).await }).await?;
        if shape.is_some() {
            break;
        }
    }
    let shape = shape.ok_or_else(|| InvalidInput::one("spec.table", format!("table {table} does not exist")))?;
    let key = table_key(&shape, table)?;
    let mut settings = validate_table_spec(spec, &key, source)?;
    // An identity the table has already keeps its kind in the new table.
    if shape.column(&key).is_some_and(|c| c.identity == Some('a'))
        && !spec.changes.iter().any(|c| c.add_identity.is_some())
    {
        settings.generation = crate::api::Generation::Always;
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::tests::orders;

    #[test]
    fn the_key_is_a_one_column_integer_primary_key() {
        let table = TableName::new("public", "orders");
        assert_eq!(table_key(&orders(), &table).unwrap(), "id");
        let mut none = orders();
        none.constraints.clear();
        let err = table_key(&none, &table).unwrap_err().to_string();
        assert!(err.starts_with("spec.table: \"public\".\"orders\": it has no primary key"), "{err}");
        let mut text = orders();
        text.columns[0].data_type = "text".into();
        assert!(table_key(&text, &table).unwrap_err().to_string().contains("is text, not an integer"));
    }
}

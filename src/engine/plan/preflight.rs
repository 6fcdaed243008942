//! The spec against the database (preflight): everything that must hold
//! before the engine creates anything, checked over what the catalog said.
//! Pure; every problem names the field or object at fault.

use super::ddl::key_count;
use super::not_carried::{all_unread, unread_verdict};
use super::quotas::{DSQL_MAX_COLUMNS, DSQL_MAX_INDEXES, DSQL_MAX_TABLES, DSQL_MUTATION_LIMIT};
use super::shape::{ConstraintKind, TableShape, is_integer_type};
use super::validate::{InvalidInput, Problem, Settings};
use crate::api::Strategy;
use crate::db::Dialect;

/// Key columns DSQL's `CREATE INDEX ASYNC` takes at most.
const MAX_DSQL_INDEX_KEYS: usize = 8;

/// What the catalog said, besides the table's own shape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Surroundings {
    /// Relations in the schema that already use the shadow or old table name.
    pub names_taken: Vec<String>,
    /// Ordinary tables in the database (DSQL allows 1,000).
    pub table_count: i64,
    /// The role reads every session's `pg_stat_activity` (superuser or
    /// `pg_read_all_stats`): the change-tracking mark needs it.
    pub sees_all_sessions: bool,
}

/// The spec against the database: everything that must hold before the engine
/// creates anything. `shape` is None when the table does not exist.
/// Which checks apply: the table itself keeps everything it carries when the
/// identity is added in place, so only the copy needs the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    InPlace,
    Copy,
}

/// The checks for `strategy` on `dialect`: PostgreSQL adds the identity in
/// place unless told to copy; on DSQL `Auto` may fall back to the copy after
/// the probe, so the copy's checks apply from the start.
pub fn route_for(strategy: Strategy, dialect: Dialect) -> Route {
    match (strategy, dialect) {
        (Strategy::Copy, _) | (Strategy::Auto, Dialect::Dsql) => Route::Copy,
        (Strategy::InPlace, _) | (Strategy::Auto, Dialect::Postgres) => Route::InPlace,
    }
}

pub fn preflight(
    settings: &Settings,
    shape: Option<&TableShape>,
    around: &Surroundings,
    dialect: Dialect,
    route: Route,
) -> Result<(), InvalidInput> {
    let table = &settings.source;
    let Some(shape) = shape else {
        return Err(InvalidInput::one("spec.table", format!("table {table} does not exist")));
    };
    let mut problems = Vec::new();
    let mut refuse = |field: &str, message: String| problems.push(Problem::new(field, message));

    match shape.kind {
        'r' => {}
        'p' => refuse("spec.table", format!("{table} is partitioned; partitioned tables are not supported")),
        other => refuse("spec.table", format!("{table} is not an ordinary table (relkind {other:?})")),
    }
    let id = settings.id_column.as_str();
    match shape.column(id) {
        None => refuse("spec.idColumn", format!("column {id:?} does not exist in {table}")),
        Some(col) => {
            if !is_integer_type(&col.data_type) {
                refuse(
                    "spec.idColumn",
                    format!(
                        "column {id:?} has type {}; only bigint, integer and smallint ids can move to an identity",
                        col.data_type
                    ),
                );
            }
            if col.identity.is_some() {
                refuse("spec.idColumn", format!("column {id:?} of {table} is already an identity column"));
            }
            if col.generated.is_some() {
                refuse("spec.idColumn", format!("column {id:?} of {table} is a generated column"));
            }
        }
    }
    match shape.primary_key() {
        None => refuse("spec.idColumn", format!("{table} has no primary key; {id:?} must be its primary key")),
        Some(pk) if pk.columns.len() > 1 => refuse(
            "spec.idColumn",
            format!(
                "the primary key of {table} is composite ({}); only a single-column key can become an identity",
                pk.columns.join(", ")
            ),
        ),
        Some(pk) if pk.columns.first().map(String::as_str) != Some(id) => refuse(
            "spec.idColumn",
            format!("{id:?} is not the primary key of {table} (the key is {})", pk.columns.join(", ")),
        ),
        Some(_) => {}
    }
    for other in shape.columns.iter().filter(|c| c.name != id && c.identity.is_some()) {
        refuse("spec.table", format!("column {:?} of {table} is already an identity column", other.name));
    }
    if route == Route::InPlace {
        // DSQL: identity columns and sequences are BIGINT only, and in place
        // keeps the column's type (the copy widens it).
        if dialect == Dialect::Dsql
            && let Some(col) = shape.column(id)
            && col.data_type != "bigint"
        {
            refuse(
                "spec.strategy",
                format!(
                    "InPlace on DSQL: identity columns are bigint only and {id:?} is {}; use Auto or Copy, which \
                     copy the rows into a bigint identity",
                    col.data_type
                ),
            );
        }
        // Views, triggers, foreign keys, privileges and the rest stay with the
        // table: nothing is left behind, nothing is copied.
        if !shape.inheritance.is_empty() {
            refuse("spec.table", format!("{table} uses table inheritance ({})", shape.inheritance.join(", ")));
        }
        return if problems.is_empty() { Ok(()) } else { Err(InvalidInput(problems)) };
    }
    problems.extend(copy_checks(settings, shape, around, dialect));
    if problems.is_empty() { Ok(()) } else { Err(InvalidInput(problems)) }
}

/// What a copy into a new table needs of the table, beyond its key: nothing
/// the swap would strand on the old table (foreign keys, triggers, views,
/// bound objects), nothing the copy cannot read or recreate, names free for
/// the new tables, and DSQL's limits. Shared by the identity copy and a
/// TableMigration's rebuild.
pub fn copy_checks(settings: &Settings, shape: &TableShape, around: &Surroundings, dialect: Dialect) -> Vec<Problem> {
    let table = &settings.source;
    let mut problems = Vec::new();
    let mut refuse = |field: &str, message: String| problems.push(Problem::new(field, message));
    if shape.constraints.iter().any(|c| c.kind == ConstraintKind::Check && c.definition.contains("NOT VALID")) {
        refuse("spec.table", format!("{table} has a NOT VALID check constraint; validate it first"));
    }
    let named = |what: &str, list: &[String]| format!("{what}: {}", list.join(", "));
    if !shape.foreign_keys.is_empty() {
        refuse(
            "spec.table",
            format!(
                "{table} takes part in foreign keys, which the swap would leave on the old table ({})",
                named("constraints", &shape.foreign_keys)
            ),
        );
    }
    if !shape.triggers.is_empty() {
        refuse(
            "spec.table",
            format!("{table} has triggers, which would stay on the old table ({})", named("triggers", &shape.triggers)),
        );
    }
    if !shape.dependent_views.is_empty() {
        refuse(
            "spec.table",
            format!(
                "views depend on {table} and would keep reading the old table ({})",
                named("views", &shape.dependent_views)
            ),
        );
    }
    if !shape.inheritance.is_empty() {
        refuse(
            "spec.table",
            format!("{table} uses table inheritance ({})", named("related tables", &shape.inheritance)),
        );
    }
    for what in &shape.unsupported {
        refuse("spec.table", format!("{table} has an object the migration cannot recreate: {what}"));
    }
    for unread in all_unread(shape) {
        if let Some(why) = unread_verdict(unread, dialect).refusal() {
            refuse("spec.table", format!("{table}: {why}"));
        }
    }
    // create-index-syntax-support.html: at most 8 key columns (a PostgreSQL
    // table planned for DSQL may have more).
    if dialect == Dialect::Dsql {
        for index in shape.indexes.iter().filter(|i| key_count(&i.definition) > MAX_DSQL_INDEX_KEYS) {
            refuse(
                "spec.table",
                format!(
                    "index {} has {} key columns; DSQL's CREATE INDEX ASYNC takes at most {MAX_DSQL_INDEX_KEYS}",
                    index.name,
                    key_count(&index.definition)
                ),
            );
        }
    }
    if shape.fidelity.force_row_security {
        refuse(
            "spec.table",
            format!(
                "{table} forces row-level security on its owner; the copy would see only the rows its policies allow"
            ),
        );
    }
    for what in &shape.fidelity.dependents {
        refuse(
            "spec.table",
            format!("{what} is bound to {table} and would keep using the old table after the swap; drop it first"),
        );
    }
    for taken in &around.names_taken {
        if *taken == settings.shadow.name {
            refuse(
                "spec.table",
                format!("the shadow table name {} is already taken; drop or rename it", settings.shadow),
            );
        } else if *taken == settings.old.name {
            refuse("spec.oldTable.name", format!("{} already exists; choose another oldTable.name", settings.old));
        } else {
            refuse(
                "spec.table",
                format!(
                    "the name {taken:?} that an index of the shadow table needs is already taken in schema {:?}",
                    settings.source.schema
                ),
            );
        }
    }
    if let Some(col) = &settings.change_tracking_column {
        match shape.column(col) {
            None => refuse("spec.copy.changeTrackingColumn", format!("column {col:?} does not exist in {table}")),
            Some(c) if !c.data_type.starts_with("timestamp") => refuse(
                "spec.copy.changeTrackingColumn",
                format!(
                    "column {col:?} has type {}; a timestamp column that every write sets is needed (an integer \
                     version gives no safe mark: a transaction that took its number earlier may commit later)",
                    c.data_type
                ),
            ),
            // A plain timestamp is local time in whatever zone the writer's
            // session had: a writer behind the server's zone (PgJDBC sends the
            // JVM's), or a DST fall-back, stamps rows older than the mark, and
            // their changes would never be copied again.
            Some(c) if c.data_type == "timestamp without time zone" => refuse(
                "spec.copy.changeTrackingColumn",
                format!(
                    "column {col:?} has type timestamp without time zone: its stamps depend on each writer's \
                     session time zone (and repeat at a DST fall-back), so changes could be missed; use a \
                     timestamptz column"
                ),
            ),
            // The mark is the start of the oldest open transaction, which only
            // a role that sees every session can read.
            Some(_) if dialect == Dialect::Postgres && !around.sees_all_sessions => refuse(
                "spec.copy.changeTrackingColumn",
                "needs to see when every open transaction began: grant the role pg_read_all_stats (or omit the option)"
                    .to_string(),
            ),
            Some(_) => {}
        }
    }
    if dialect == Dialect::Dsql {
        if shape.columns.len() > DSQL_MAX_COLUMNS {
            refuse(
                "spec.table",
                format!("{table} has {} columns; DSQL allows {DSQL_MAX_COLUMNS}", shape.columns.len()),
            );
        }
        let indexes =
            shape.indexes.len() + shape.constraints.iter().filter(|c| c.kind != ConstraintKind::Check).count();
        if indexes > DSQL_MAX_INDEXES {
            refuse("spec.table", format!("{table} has {indexes} indexes; DSQL allows {DSQL_MAX_INDEXES}"));
        }
        if around.table_count >= DSQL_MAX_TABLES {
            refuse(
                "spec.table",
                format!(
                    "the database holds {} tables; DSQL allows {DSQL_MAX_TABLES} and the shadow table needs one more",
                    around.table_count
                ),
            );
        }
        // DSQL's catalog names its B-tree `btree_index` (`pg_am`, `pg_get_indexdef`).
        for index in shape.indexes.iter().filter(|i| !matches!(i.method.as_str(), "btree" | "btree_index")) {
            refuse(
                "spec.table",
                format!("index {:?} uses {}; DSQL supports btree indexes only", index.name, index.method),
            );
        }
        // DSQL accepts no COLLATE clause in DDL: a column with its own
        // collation cannot be recreated there. C (DSQL's only collation) is
        // what the shadow's column gets anyway.
        let c_collation =
            |c: &str| matches!(c.trim_start_matches("pg_catalog.").trim_matches('"'), "C" | "POSIX" | "ucs_basic");
        for column in shape.columns.iter().filter(|c| c.collation.as_deref().is_some_and(|c| !c_collation(c))) {
            refuse(
                "spec.table",
                format!(
                    "column {:?} has collation {}; DSQL accepts no COLLATE in DDL",
                    column.name,
                    column.collation.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    if let Some(rows) = settings.batch_rows {
        // The same batch size re-syncs rows once every index exists.
        let per_row = 1 + shape.secondary_indexes() as i64;
        if dialect == Dialect::Dsql && rows * per_row > DSQL_MUTATION_LIMIT {
            refuse(
                "spec.copy.batchRows",
                format!(
                    "{rows} rows x {per_row} (row plus index entries) exceeds DSQL's {} mutated rows per transaction; use at most {} or 0 for automatic",
                    DSQL_MUTATION_LIMIT,
                    DSQL_MUTATION_LIMIT / per_row
                ),
            );
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::shape::{Column, Constraint};
    use crate::engine::plan::validate::{TargetSource, validate_spec};
    use crate::engine::testing::{post_tag_shape, spec_for};

    fn settings() -> Settings {
        validate_spec(&spec_for("post_tag"), TargetSource::Spec).unwrap()
    }

    fn refused(shape: &TableShape) -> String {
        preflight(&settings(), Some(shape), &Surroundings::default(), Dialect::Postgres, Route::Copy)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn the_seed_table_passes_preflight() {
        preflight(&settings(), Some(&post_tag_shape()), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap();
    }

    #[test]
    fn missing_table_and_columns_are_named() {
        let err = preflight(&settings(), None, &Surroundings::default(), Dialect::Postgres, Route::Copy).unwrap_err();
        assert_eq!(err.to_string(), "spec.table: table \"public\".\"post_tag\" does not exist");
        let mut shape = post_tag_shape();
        shape.columns.retain(|c| c.name != "id");
        assert!(refused(&shape).contains("spec.idColumn: column \"id\" does not exist"));
    }

    #[test]
    fn id_must_be_an_integer_primary_key_without_identity() {
        let mut shape = post_tag_shape();
        shape.columns[0].data_type = "numeric(20,0)".into();
        assert!(refused(&shape).contains("has type numeric(20,0)"));

        let mut shape = post_tag_shape();
        shape.columns[0].identity = Some('d');
        assert!(refused(&shape).contains("already an identity column"));

        let mut shape = post_tag_shape();
        shape.constraints[0].columns = vec!["post_id".into(), "id".into()];
        assert!(refused(&shape).contains("composite (post_id, id)"));

        let mut shape = post_tag_shape();
        shape.constraints[0].columns = vec!["post_id".into()];
        assert!(refused(&shape).contains("is not the primary key"));

        let mut shape = post_tag_shape();
        shape.constraints.clear();
        assert!(refused(&shape).contains("has no primary key"));
    }

    #[test]
    fn in_place_on_dsql_needs_a_bigint_id() {
        let mut shape = post_tag_shape();
        shape.columns[0].data_type = "integer".into();
        let err =
            preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql, Route::InPlace).unwrap_err();
        assert_eq!(err.0[0].field, "spec.strategy");
        assert!(err.to_string().contains("bigint only"), "{err}");
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Postgres, Route::InPlace).unwrap();
        preflight(&settings(), Some(&post_tag_shape()), &Surroundings::default(), Dialect::Dsql, Route::InPlace)
            .unwrap();
    }

    #[test]
    fn integer_and_smallint_ids_are_accepted() {
        for ty in ["integer", "smallint"] {
            let mut shape = post_tag_shape();
            shape.columns[0].data_type = ty.into();
            preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Postgres, Route::Copy).unwrap();
        }
    }

    #[test]
    fn taken_names_and_dependents_are_refused() {
        let around = Surroundings {
            names_taken: vec!["post_tag_new".into(), "post_tag_old".into()],
            table_count: 3,
            ..Default::default()
        };
        let err = preflight(&settings(), Some(&post_tag_shape()), &around, Dialect::Postgres, Route::Copy).unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert_eq!(err.0[0].field, "spec.table");
        assert_eq!(err.0[1].field, "spec.oldTable.name");

        let mut shape = post_tag_shape();
        shape.foreign_keys = vec!["comment_post_tag_fk on public.comment".into()];
        shape.triggers = vec!["audit".into()];
        shape.dependent_views = vec!["public.tag_counts".into()];
        let msg = refused(&shape);
        assert!(msg.contains("foreign keys") && msg.contains("audit") && msg.contains("tag_counts"), "{msg}");
    }

    #[test]
    fn unreadable_dependents_and_wide_dsql_indexes_are_refused_by_name() {
        use crate::engine::plan::carried::{Fact, Unread};
        let around = Surroundings { table_count: 3, ..Default::default() };
        let check = |shape: &TableShape, dialect| preflight(&settings(), Some(shape), &around, dialect, Route::Copy);
        let mut shape = post_tag_shape();
        shape.unread.push(Unread { fact: Fact::Triggers, error: "42P01: no pg_trigger".into() });
        assert!(check(&shape, Dialect::Dsql).is_ok(), "DSQL has no triggers to leave behind");
        assert!(check(&shape, Dialect::Postgres).is_err());
        shape.fidelity.unread.push(Unread { fact: Fact::DependentViews, error: "42P01: no pg_rewrite".into() });
        let err = check(&shape, Dialect::Dsql).unwrap_err().to_string();
        assert!(err.contains("views") && err.contains("no pg_rewrite"), "{err}");

        let mut shape = post_tag_shape();
        shape.indexes[0].definition = format!("({})", (0..9).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", "));
        let err = check(&shape, Dialect::Dsql).unwrap_err().to_string();
        assert!(err.contains(&shape.indexes[0].name) && err.contains("9 key columns"), "{err}");
        assert!(check(&shape, Dialect::Postgres).is_ok());
    }

    #[test]
    fn dsql_quotas_and_explicit_batch_limit() {
        let mut shape = post_tag_shape();
        shape.columns.extend((0..300).map(|i| Column {
            name: format!("c{i}"),
            data_type: "integer".into(),
            not_null: false,
            default: None,
            generated: None,
            identity: None,
            collation: None,
        }));
        let err =
            preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap_err();
        assert!(err.to_string().contains("DSQL allows 255"));

        let mut s = settings();
        s.batch_rows = Some(2000);
        let err =
            preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap_err();
        assert_eq!(err.0[0].field, "spec.copy.batchRows");
        preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Postgres, Route::Copy).unwrap();
    }

    #[test]
    fn dsql_catalog_indexes_are_btree_index_and_collations_are_refused() {
        // DSQL's catalog names its B-tree `btree_index`: such a table is accepted.
        let mut shape = post_tag_shape();
        for index in &mut shape.indexes {
            index.method = "btree_index".into();
        }
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap();
        shape.indexes[0].method = "hash".into();
        let err =
            preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap_err();
        assert!(err.to_string().contains("uses hash"), "{err}");

        let mut shape = post_tag_shape();
        shape.columns[1].collation = Some("\"de_DE\"".into());
        let err =
            preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap_err();
        assert!(err.to_string().contains("accepts no COLLATE"), "{err}");
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Postgres, Route::Copy).unwrap();
        // C is DSQL's own collation: the shadow's column has it without a COLLATE clause.
        shape.columns[1].collation = Some("pg_catalog.\"C\"".into());
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap();
    }

    #[test]
    fn change_tracking_column_must_exist_with_a_usable_type() {
        let mut s = settings();
        s.change_tracking_column = Some("missing".into());
        let err = preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Postgres, Route::Copy)
            .unwrap_err();
        assert_eq!(err.0[0].field, "spec.copy.changeTrackingColumn");
        s.change_tracking_column = Some("tag_id".into());
        let err = preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Postgres, Route::Copy)
            .unwrap_err();
        assert!(err.to_string().contains("a timestamp column"));
        let mut integer = post_tag_shape();
        integer.columns[3].data_type = "bigint".into();
        s.change_tracking_column = Some("created_at".into());
        let err = preflight(&s, Some(&integer), &Surroundings::default(), Dialect::Postgres, Route::Copy).unwrap_err();
        assert!(err.to_string().contains("gives no safe mark"), "{err}");
        let seeing = Surroundings { sees_all_sessions: true, ..Default::default() };
        let local_time = post_tag_shape();
        assert_eq!(local_time.columns[3].data_type, "timestamp without time zone");
        let err = preflight(&s, Some(&local_time), &seeing, Dialect::Postgres, Route::Copy).unwrap_err();
        assert!(
            err.to_string().contains("timestamp without time zone") && err.to_string().contains("timestamptz"),
            "{err}"
        );
        let mut zoned = post_tag_shape();
        zoned.columns[3].data_type = "timestamp with time zone".into();
        preflight(&s, Some(&zoned), &seeing, Dialect::Postgres, Route::Copy).unwrap();
        let err = preflight(&s, Some(&zoned), &Surroundings::default(), Dialect::Postgres, Route::Copy).unwrap_err();
        assert!(err.to_string().contains("pg_read_all_stats"), "{err}");
        preflight(&s, Some(&zoned), &Surroundings::default(), Dialect::Dsql, Route::Copy).unwrap();
    }

    #[test]
    fn unique_constraint_is_not_mistaken_for_the_key() {
        let mut shape = post_tag_shape();
        shape.constraints.push(Constraint {
            name: "post_tag_post_id_tag_id_key".into(),
            kind: ConstraintKind::Unique,
            definition: "UNIQUE (post_id, tag_id)".into(),
            columns: vec!["post_id".into(), "tag_id".into()],
        });
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Postgres, Route::Copy).unwrap();
    }

    #[test]
    fn in_place_keeps_the_table_so_only_the_id_is_checked() {
        let mut shape = post_tag_shape();
        shape.triggers = vec!["audit".into()];
        shape.dependent_views = vec!["public.tag_counts".into()];
        shape.foreign_keys = vec!["fk (public.other -> public.post_tag)".into()];
        shape.fidelity.force_row_security = true;
        let around = Surroundings { names_taken: vec!["post_tag_new".into()], ..Default::default() };
        preflight(&settings(), Some(&shape), &around, Dialect::Postgres, Route::InPlace).unwrap();
        assert!(preflight(&settings(), Some(&shape), &around, Dialect::Postgres, Route::Copy).is_err());
        shape.columns[0].identity = Some('d');
        let err = preflight(&settings(), Some(&shape), &around, Dialect::Postgres, Route::InPlace).unwrap_err();
        assert!(err.to_string().contains("already an identity"), "{err}");
        assert_eq!(route_for(Strategy::Auto, Dialect::Postgres), Route::InPlace);
        assert_eq!(route_for(Strategy::Auto, Dialect::Dsql), Route::Copy, "the probe may fall back to the copy");
        assert_eq!(route_for(Strategy::InPlace, Dialect::Dsql), Route::InPlace);
        assert_eq!(route_for(Strategy::Copy, Dialect::Postgres), Route::Copy);
    }
}

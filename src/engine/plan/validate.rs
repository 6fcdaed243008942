//! Checks of the user's input, in the two layers that need no API server: the
//! spec on its own (pure), and the spec against the table's shape (preflight,
//! pure over what the catalog said). Every problem names the field or object at fault.

use std::fmt;

use crate::api::{
    Approval, DSQL_DEFAULT_CACHE, Generation, IdentityMigrationSpec, POSTGRES_DEFAULT_CACHE, WorkloadRef,
};

use super::quotas::{DSQL_MAX_COLUMNS, DSQL_MAX_INDEXES, DSQL_MAX_TABLES, DSQL_MUTATION_LIMIT, MAX_IDENTIFIER_BYTES};
use super::shape::TableName;
use super::shape::{ConstraintKind, TableShape, is_integer_type};
use crate::db::Dialect;

pub const MAX_PARALLELISM: i32 = 64;

/// One thing wrong with the input, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Input a person must fix; never the database's fault, never retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidInput(pub Vec<Problem>);

impl InvalidInput {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![Problem::new(field, message)])
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", p.field, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidInput {}

/// The spec after validation: every default applied, every rule checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub source: TableName,
    pub shadow: TableName,
    pub old: TableName,
    pub id_column: String,
    pub generation: Generation,
    /// `spec.identity.cache`; None: the dialect's default ([`Settings::cache`]).
    pub cache: Option<i64>,
    pub start_after: Option<i64>,
    /// None: choose automatically from the table's indexes and row size.
    pub batch_rows: Option<i64>,
    pub parallelism: usize,
    pub max_rows_per_second: Option<u64>,
    pub change_tracking_column: Option<String>,
    pub manual_approval: bool,
    pub retain_old: bool,
    /// `spec.rollback`: return a completed migration to the old table.
    pub rollback: bool,
    /// Workloads scaled to zero for the cut-over window.
    pub quiesce: Vec<WorkloadRef>,
}

impl Settings {
    /// The identity cache on `dialect`: the spec's, else 65536 on DSQL and 1
    /// on PostgreSQL (which caches per session, so each new connection would
    /// skip up to that many ids).
    pub fn cache(&self, dialect: Dialect) -> i64 {
        self.cache.unwrap_or(match dialect {
            Dialect::Dsql => DSQL_DEFAULT_CACHE,
            Dialect::Postgres => POSTGRES_DEFAULT_CACHE,
        })
    }
}

/// Where the migration connects; `run --database-url` replaces the spec's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSource {
    Spec,
    Overridden,
}

pub fn validate_spec(spec: &IdentityMigrationSpec, target: TargetSource) -> Result<Settings, InvalidInput> {
    let mut problems = Vec::new();
    let mut name = |field: &str, value: &str| check_identifier(field, value, &mut problems);
    name("spec.schema", &spec.schema);
    name("spec.table", &spec.table);
    name("spec.idColumn", &spec.id_column);
    if let Some(col) = &spec.copy.change_tracking_column {
        name("spec.copy.changeTrackingColumn", col);
    }
    if !spec.old_table.name.is_empty() {
        name("spec.oldTable.name", &spec.old_table.name);
    }

    if target == TargetSource::Spec {
        match (&spec.target.dsql, &spec.target.postgres) {
            (Some(_), Some(_)) | (None, None) => {
                problems.push(Problem::new("spec.target", "exactly one of target.dsql and target.postgres must be set"))
            }
            (Some(dsql), None) if dsql.endpoint.trim().is_empty() => {
                problems.push(Problem::new("spec.target.dsql.endpoint", "must not be empty"))
            }
            _ => {}
        }
    }

    let cache = spec.identity.cache;
    if let Some(cache) = cache
        && cache != 1
        && cache < 65536
    {
        problems.push(Problem::new(
            "spec.identity.cache",
            format!("{cache} is not allowed: DSQL requires CACHE 1 or at least 65536"),
        ));
    }
    if let Some(start) = spec.identity.start_after
        && start >= i64::MAX - 1
    {
        problems.push(Problem::new("spec.identity.startAfter", "leaves no room for new ids"));
    }
    let parallelism = spec.copy.parallelism;
    if !(1..=MAX_PARALLELISM).contains(&parallelism) {
        problems.push(Problem::new(
            "spec.copy.parallelism",
            format!("{parallelism} is out of range: must be between 1 and {MAX_PARALLELISM}"),
        ));
    }
    if spec.copy.batch_rows < 0 {
        problems.push(Problem::new("spec.copy.batchRows", "must be 0 (automatic) or positive"));
    }
    if spec.copy.max_rows_per_second < 0 {
        problems.push(Problem::new("spec.copy.maxRowsPerSecond", "must be 0 (unthrottled) or positive"));
    }

    let table = spec.table.as_str();
    let shadow_name = format!("{table}_new");
    let old_name = if spec.old_table.name.is_empty() { format!("{table}_old") } else { spec.old_table.name.clone() };
    if shadow_name.len() > MAX_IDENTIFIER_BYTES && table.len() <= MAX_IDENTIFIER_BYTES {
        problems.push(Problem::new(
            "spec.table",
            format!("the shadow table name {shadow_name:?} would exceed {MAX_IDENTIFIER_BYTES} bytes"),
        ));
    }
    if spec.old_table.name.is_empty() && old_name.len() > MAX_IDENTIFIER_BYTES && table.len() <= MAX_IDENTIFIER_BYTES {
        problems.push(Problem::new(
            "spec.oldTable.name",
            format!("the default {old_name:?} would exceed {MAX_IDENTIFIER_BYTES} bytes; set a shorter name"),
        ));
    }
    if old_name == table || old_name == shadow_name {
        problems.push(Problem::new(
            "spec.oldTable.name",
            format!("{old_name:?} must differ from the table and from the shadow table {shadow_name:?}"),
        ));
    }
    if spec.copy.change_tracking_column.as_deref() == Some(spec.id_column.as_str()) {
        problems.push(Problem::new("spec.copy.changeTrackingColumn", "must not be the id column"));
    }

    if !problems.is_empty() {
        return Err(InvalidInput(problems));
    }
    let source = TableName::new(&spec.schema, table);
    Ok(Settings {
        shadow: source.sibling(shadow_name),
        old: source.sibling(old_name),
        source,
        id_column: spec.id_column.clone(),
        generation: spec.identity.generation,
        cache,
        start_after: spec.identity.start_after,
        batch_rows: (spec.copy.batch_rows > 0).then_some(spec.copy.batch_rows as i64),
        parallelism: parallelism as usize,
        max_rows_per_second: (spec.copy.max_rows_per_second > 0).then_some(spec.copy.max_rows_per_second as u64),
        change_tracking_column: spec.copy.change_tracking_column.clone(),
        manual_approval: spec.cutover.approval == Approval::Manual,
        retain_old: spec.old_table.retain,
        rollback: spec.rollback,
        quiesce: spec.cutover.quiesce.clone(),
    })
}

fn check_identifier(field: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.is_empty() {
        problems.push(Problem::new(field, "must not be empty"));
    } else if value.contains('\0') {
        problems.push(Problem::new(field, "must not contain a NUL character"));
    } else if value.len() > MAX_IDENTIFIER_BYTES {
        problems.push(Problem::new(
            field,
            format!("{value:?} is longer than {MAX_IDENTIFIER_BYTES} bytes, the identifier limit"),
        ));
    }
}

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
pub fn preflight(
    settings: &Settings,
    shape: Option<&TableShape>,
    around: &Surroundings,
    dialect: Dialect,
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
        // collation cannot be recreated there.
        for column in shape.columns.iter().filter(|c| c.collation.is_some()) {
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
    if problems.is_empty() { Ok(()) } else { Err(InvalidInput(problems)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::shape::{Column, Constraint};
    use crate::engine::testing::{post_tag_shape, spec_for};

    fn problems(spec: &IdentityMigrationSpec) -> Vec<Problem> {
        validate_spec(spec, TargetSource::Spec).expect_err("invalid").0
    }

    #[test]
    fn defaults_make_a_valid_migration() {
        let s = validate_spec(&spec_for("post_tag"), TargetSource::Spec).unwrap();
        assert_eq!(s.shadow.to_string(), "\"public\".\"post_tag_new\"");
        assert_eq!(s.old.to_string(), "\"public\".\"post_tag_old\"");
        assert_eq!(s.cache, None);
        assert_eq!(s.cache(Dialect::Dsql), 65536, "DSQL: about 100x faster bulk inserts");
        assert_eq!(s.cache(Dialect::Postgres), 1, "PostgreSQL caches per session");
        assert_eq!(s.parallelism, 4);
        assert_eq!(s.batch_rows, None);
        assert!(s.retain_old);
        assert!(!s.manual_approval);
    }

    #[test]
    fn cache_must_be_one_or_at_least_65536() {
        for bad in [0, 2, 1000, 65535, -1] {
            let mut spec = spec_for("t");
            spec.identity.cache = Some(bad);
            let p = problems(&spec);
            assert_eq!(p[0].field, "spec.identity.cache", "cache {bad}");
            assert!(p[0].message.contains("CACHE 1 or at least 65536"));
        }
        for good in [1, 65536, 1 << 20] {
            let mut spec = spec_for("t");
            spec.identity.cache = Some(good);
            assert!(validate_spec(&spec, TargetSource::Spec).is_ok(), "cache {good}");
        }
    }

    #[test]
    fn parallelism_and_batch_bounds() {
        let mut spec = spec_for("t");
        spec.copy.parallelism = 0;
        assert_eq!(problems(&spec)[0].field, "spec.copy.parallelism");
        spec.copy.parallelism = 65;
        assert_eq!(problems(&spec)[0].field, "spec.copy.parallelism");
        let mut spec = spec_for("t");
        spec.copy.batch_rows = -5;
        assert_eq!(problems(&spec)[0].field, "spec.copy.batchRows");
        let mut spec = spec_for("t");
        spec.copy.max_rows_per_second = -1;
        assert_eq!(problems(&spec)[0].field, "spec.copy.maxRowsPerSecond");
    }

    #[test]
    fn target_must_be_exactly_one_unless_overridden() {
        let mut spec = spec_for("t");
        spec.target.postgres = None;
        assert_eq!(problems(&spec)[0].field, "spec.target");
        assert!(validate_spec(&spec, TargetSource::Overridden).is_ok());
    }

    #[test]
    fn identifiers_are_checked_but_any_characters_are_allowed() {
        let mut spec = spec_for("Post Tag\"; DROP TABLE x; --");
        assert!(validate_spec(&spec, TargetSource::Spec).is_ok());
        spec.table = String::new();
        assert_eq!(problems(&spec)[0].field, "spec.table");
        spec.table = "a".repeat(64);
        assert!(problems(&spec)[0].message.contains("longer than 63 bytes"));
        let spec = spec_for(&"b".repeat(60));
        assert_eq!(problems(&spec)[0].field, "spec.table", "shadow name would be 64 bytes");
    }

    #[test]
    fn old_table_name_must_not_clash() {
        let mut spec = spec_for("t");
        spec.old_table.name = "t_new".into();
        assert_eq!(problems(&spec)[0].field, "spec.oldTable.name");
        spec.old_table.name = "t_archive".into();
        let s = validate_spec(&spec, TargetSource::Spec).unwrap();
        assert_eq!(s.old.name, "t_archive");
    }

    fn settings() -> Settings {
        validate_spec(&spec_for("post_tag"), TargetSource::Spec).unwrap()
    }

    fn refused(shape: &TableShape) -> String {
        preflight(&settings(), Some(shape), &Surroundings::default(), Dialect::Postgres)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn the_seed_table_passes_preflight() {
        preflight(&settings(), Some(&post_tag_shape()), &Surroundings::default(), Dialect::Dsql).unwrap();
    }

    #[test]
    fn missing_table_and_columns_are_named() {
        let err = preflight(&settings(), None, &Surroundings::default(), Dialect::Postgres).unwrap_err();
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
    fn integer_and_smallint_ids_are_accepted() {
        for ty in ["integer", "smallint"] {
            let mut shape = post_tag_shape();
            shape.columns[0].data_type = ty.into();
            preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Postgres).unwrap();
        }
    }

    #[test]
    fn taken_names_and_dependents_are_refused() {
        let around = Surroundings {
            names_taken: vec!["post_tag_new".into(), "post_tag_old".into()],
            table_count: 3,
            ..Default::default()
        };
        let err = preflight(&settings(), Some(&post_tag_shape()), &around, Dialect::Postgres).unwrap_err();
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
        let err = preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql).unwrap_err();
        assert!(err.to_string().contains("DSQL allows 255"));

        let mut s = settings();
        s.batch_rows = Some(2000);
        let err = preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Dsql).unwrap_err();
        assert_eq!(err.0[0].field, "spec.copy.batchRows");
        preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Postgres).unwrap();
    }

    #[test]
    fn dsql_catalog_indexes_are_btree_index_and_collations_are_refused() {
        // DSQL's catalog names its B-tree `btree_index`: such a table is accepted.
        let mut shape = post_tag_shape();
        for index in &mut shape.indexes {
            index.method = "btree_index".into();
        }
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql).unwrap();
        shape.indexes[0].method = "hash".into();
        let err = preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql).unwrap_err();
        assert!(err.to_string().contains("uses hash"), "{err}");

        let mut shape = post_tag_shape();
        shape.columns[1].collation = Some("\"C\"".into());
        let err = preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Dsql).unwrap_err();
        assert!(err.to_string().contains("accepts no COLLATE"), "{err}");
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Postgres).unwrap();
    }

    #[test]
    fn change_tracking_column_must_exist_with_a_usable_type() {
        let mut s = settings();
        s.change_tracking_column = Some("missing".into());
        let err = preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Postgres).unwrap_err();
        assert_eq!(err.0[0].field, "spec.copy.changeTrackingColumn");
        s.change_tracking_column = Some("tag_id".into());
        let err = preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Postgres).unwrap_err();
        assert!(err.to_string().contains("a timestamp column"));
        let mut integer = post_tag_shape();
        integer.columns[3].data_type = "bigint".into();
        s.change_tracking_column = Some("created_at".into());
        let err = preflight(&s, Some(&integer), &Surroundings::default(), Dialect::Postgres).unwrap_err();
        assert!(err.to_string().contains("gives no safe mark"), "{err}");
        let seeing = Surroundings { sees_all_sessions: true, ..Default::default() };
        preflight(&s, Some(&post_tag_shape()), &seeing, Dialect::Postgres).unwrap();
        let err = preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Postgres).unwrap_err();
        assert!(err.to_string().contains("pg_read_all_stats"), "{err}");
        preflight(&s, Some(&post_tag_shape()), &Surroundings::default(), Dialect::Dsql).unwrap();
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
        preflight(&settings(), Some(&shape), &Surroundings::default(), Dialect::Postgres).unwrap();
    }
}

//! The spec on its own, checked without a database or an API server: the
//! settings every phase works from, and the problems of bad input. Pure; every
//! problem names the field at fault. The spec against the table is
//! [`super::preflight`].

use std::fmt;

use crate::api::changes::Change;
use crate::api::{
    Approval, DSQL_DEFAULT_CACHE, Generation, IdentityMigrationSpec, IdentitySpec, POSTGRES_DEFAULT_CACHE, Strategy,
    TableMigrationSpec, WorkloadRef,
};

use super::quotas::MAX_IDENTIFIER_BYTES;
use super::shape::TableName;
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

/// The thresholds of `spec.copy.pace` (checked above).
fn pace_limits(p: &crate::api::PaceSpec) -> super::pace::PaceLimits {
    super::pace::PaceLimits {
        max_commit_latency: p.max_commit_latency_ms.map(|ms| std::time::Duration::from_millis(ms.max(1) as u64)),
        max_conflict_rate: p.max_conflict_rate,
        max_replica_lag: p.max_replica_lag_seconds.map(|s| std::time::Duration::from_secs(s.max(1) as u64)),
    }
}

/// The spec after validation: every default applied, every rule checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub source: TableName,
    pub shadow: TableName,
    pub old: TableName,
    pub id_column: String,
    pub generation: Generation,
    /// `spec.strategy`: in place, by copy, or in place where the server accepts it.
    pub strategy: Strategy,
    /// `spec.identity.cache`; None: the dialect's default ([`Settings::cache`]).
    pub cache: Option<i64>,
    pub start_after: Option<i64>,
    /// None: choose automatically from the table's indexes and row size.
    pub batch_rows: Option<i64>,
    pub parallelism: usize,
    pub max_rows_per_second: Option<u64>,
    pub change_tracking_column: Option<String>,
    /// `spec.copy.verification`: Checksums even where the capture could prove the copy.
    pub checksums_always: bool,
    pub manual_approval: bool,
    /// `spec.copy.pace`: None without any threshold.
    pub pace: Option<super::pace::PaceLimits>,
    /// `spec.cutover.window`, checked.
    pub window: Option<super::window::Window>,
    pub retain_old: bool,
    /// `spec.rollback`: return a completed migration to the old table.
    pub rollback: bool,
    /// Workloads scaled to zero for the cut-over window.
    pub quiesce: Vec<WorkloadRef>,
    /// A TableMigration's `spec.changes`; empty for an IdentityMigration.
    pub changes: Vec<Change>,
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
    let window = match spec.cutover.window.as_ref().map(super::window::parse).transpose() {
        Ok(window) => window,
        Err((field, problem)) => {
            problems.push(Problem::new(field, problem));
            None
        }
    };

    if let Some(pace) = &spec.copy.pace {
        if pace.max_commit_latency_ms.is_some_and(|v| v < 1) {
            problems.push(Problem::new("spec.copy.pace.maxCommitLatencyMs", "must be positive"));
        }
        if pace.max_conflict_rate.is_some_and(|v| v.is_nan() || v < 0.0) {
            problems.push(Problem::new("spec.copy.pace.maxConflictRate", "must not be negative"));
        }
        if pace.max_replica_lag_seconds.is_some_and(|v| v < 1) {
            problems.push(Problem::new("spec.copy.pace.maxReplicaLagSeconds", "must be positive"));
        }
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
        strategy: spec.strategy,
        cache,
        start_after: spec.identity.start_after,
        batch_rows: (spec.copy.batch_rows > 0).then_some(spec.copy.batch_rows as i64),
        parallelism: parallelism as usize,
        max_rows_per_second: (spec.copy.max_rows_per_second > 0).then_some(spec.copy.max_rows_per_second as u64),
        change_tracking_column: spec.copy.change_tracking_column.clone(),
        checksums_always: spec.copy.verification == crate::api::VerificationMode::Checksums,
        manual_approval: spec.cutover.approval == Approval::Manual,
        pace: spec.copy.pace.as_ref().map(pace_limits).filter(super::pace::PaceLimits::any),
        window,
        retain_old: spec.old_table.retain,
        rollback: spec.rollback,
        quiesce: spec.cutover.quiesce.clone(),
        changes: Vec::new(),
    })
}

/// A TableMigration's spec as settings: the same checks as an
/// IdentityMigration's, the table's integer primary key `key` as the id
/// column (found by the front end in the catalog), and the identity fields
/// from its `addIdentity` change when there is one.
pub fn validate_table_spec(
    spec: &TableMigrationSpec,
    key: &str,
    target: TargetSource,
) -> Result<Settings, InvalidInput> {
    let identity_at = spec.changes.iter().position(|c| c.add_identity.is_some());
    let identity =
        identity_at.and_then(|i| spec.changes[i].add_identity.as_ref()).map_or_else(IdentitySpec::default, |a| {
            IdentitySpec { generation: a.generation, cache: a.cache, start_after: a.start_after }
        });
    let as_identity = IdentityMigrationSpec {
        target: spec.target.clone(),
        strategy: spec.strategy,
        schema: spec.schema.clone(),
        table: spec.table.clone(),
        id_column: key.to_string(),
        identity,
        copy: spec.copy.clone(),
        cutover: spec.cutover.clone(),
        old_table: spec.old_table.clone(),
        suspend: spec.suspend,
        rollback: spec.rollback,
    };
    let mut settings = validate_spec(&as_identity, target).map_err(|InvalidInput(problems)| {
        let renamed = |field: String| match (field.strip_prefix("spec.identity."), identity_at) {
            (Some(rest), Some(i)) => format!("spec.changes[{i}].addIdentity.{rest}"),
            _ => field,
        };
        InvalidInput(problems.into_iter().map(|p| Problem::new(renamed(p.field), p.message)).collect())
    })?;
    if spec.changes.is_empty() {
        return Err(InvalidInput::one("spec.changes", "lists no change"));
    }
    settings.changes = spec.changes.clone();
    Ok(settings)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::spec_for;

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
    fn pace_thresholds_and_windows_are_checked_field_by_field() {
        let mut spec = spec_for("t");
        spec.copy.pace = Some(crate::api::PaceSpec { max_commit_latency_ms: Some(0), ..Default::default() });
        assert_eq!(problems(&spec)[0].field, "spec.copy.pace.maxCommitLatencyMs");
        spec.copy.pace = Some(crate::api::PaceSpec { max_conflict_rate: Some(-0.5), ..Default::default() });
        assert_eq!(problems(&spec)[0].field, "spec.copy.pace.maxConflictRate");
        spec.copy.pace = Some(crate::api::PaceSpec { max_replica_lag_seconds: Some(0), ..Default::default() });
        assert_eq!(problems(&spec)[0].field, "spec.copy.pace.maxReplicaLagSeconds");
        // No threshold at all: no pace.
        spec.copy.pace = Some(crate::api::PaceSpec::default());
        assert_eq!(validate_spec(&spec, TargetSource::Spec).unwrap().pace, None);
        spec.copy.pace = Some(crate::api::PaceSpec { max_commit_latency_ms: Some(80), ..Default::default() });
        let limits = validate_spec(&spec, TargetSource::Spec).unwrap().pace.unwrap();
        assert_eq!(limits.max_commit_latency, Some(std::time::Duration::from_millis(80)));
        let mut spec = spec_for("t");
        spec.cutover.window = Some(crate::api::CutoverWindow {
            start: "2:00pm".into(),
            duration: "2h".into(),
            time_zone: "UTC".into(),
            days: vec![],
        });
        assert_eq!(problems(&spec)[0].field, "spec.cutover.window.start");
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
}

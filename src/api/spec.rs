//! `IdentityMigration.spec`: what the user asks for.
//!
//! Field names, defaults and rules are the product contract (the README's "A
//! migration" section shows them). The CRD schema carries the rules the API
//! server enforces (`x-kubernetes-validations`); the engine repeats them in
//! `engine::plan::validate` so that `run` rejects the same input without a cluster.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::IdentityMigrationStatus;

/// The identity cache when the spec names none: DSQL ...
pub const DSQL_DEFAULT_CACHE: i64 = 65536;
/// ... and PostgreSQL, whose sequences cache per session.
pub const POSTGRES_DEFAULT_CACHE: i64 = 1;
pub const DEFAULT_PARALLELISM: i32 = 4;

/// Moves an existing table onto a database-generated identity column: a shadow
/// table with `GENERATED AS IDENTITY` is filled in small batches that keep every
/// id, the identity is moved past the highest id, and the tables are swapped.
// Several printer columns share `type_ = "string"`, which clippy mistakes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "migrations.dsql.dev",
    version = "v1alpha1",
    kind = "IdentityMigration",
    plural = "identitymigrations",
    shortname = "idmig",
    category = "dsql",
    namespaced,
    status = "IdentityMigrationStatus",
    doc = "Moves an existing table onto a database-generated identity column",
    printcolumn(name = "Table", type_ = "string", json_path = ".spec.table"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Progress",
        type_ = "integer",
        json_path = ".status.progress.percent",
        description = "percent of rows copied"
    ),
    printcolumn(name = "ETA", type_ = "string", json_path = ".status.progress.eta"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Pace", type_ = "string", json_path = ".status.progress.pace.reason", priority = 1),
    printcolumn(name = "Next Window", type_ = "date", json_path = ".status.cutover.nextWindow", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityMigrationSpec {
    /// The database that holds the table: exactly one of `dsql` or `postgres`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable"))]
    pub target: Target,

    /// How the identity is added: `Auto` in place where the server accepts
    /// `ADD GENERATED ... AS IDENTITY` (PostgreSQL; DSQL is probed) and by the
    /// copy otherwise; `InPlace` fails where the server refuses it; `Copy`
    /// always builds a new table.
    #[serde(default)]
    pub strategy: Strategy,

    /// Schema of the table.
    #[serde(default = "default_schema")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("schema is immutable"))]
    pub schema: String,

    /// The table to move onto an identity column.
    #[x_kube(validation = Rule::new("self == oldSelf").message("table is immutable"))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("table must not be empty"))]
    pub table: String,

    /// The integer primary-key column that becomes the identity column.
    #[serde(default = "default_id_column")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("idColumn is immutable"))]
    pub id_column: String,

    #[serde(default)]
    pub identity: IdentitySpec,

    #[serde(default)]
    pub copy: CopySpec,

    #[serde(default)]
    pub cutover: CutoverSpec,

    #[serde(default)]
    pub old_table: OldTableSpec,

    /// Pause at the next checkpoint; set back to false to resume.
    #[serde(default)]
    pub suspend: bool,

    /// On a Completed migration: swap back to the old table, after copying into it
    /// the rows written to the new table since cut-over.
    #[serde(default)]
    pub rollback: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.dsql) != has(self.postgres)")
    .message("exactly one of target.dsql and target.postgres must be set"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// An Aurora DSQL cluster, reached with IAM authentication tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsql: Option<DsqlTarget>,
    /// A PostgreSQL database (development, tests, non-DSQL use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresTarget>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DsqlTarget {
    /// Cluster endpoint, `<cluster-id>.dsql.<region>.on.aws`, optionally
    /// `host:port` (default 5432) for a proxy or a stand-in; tokens are signed for the host.
    pub endpoint: String,
    /// AWS region; taken from the endpoint when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Database role: `admin` gets a DbConnectAdmin token, other roles a DbConnect token.
    #[serde(default = "default_dsql_user")]
    pub user: String,
    #[serde(default = "default_database")]
    pub database: String,
    /// Optional CA bundle (PEM) for private set-ups; the web PKI roots are always trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<SecretKeyRef>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresTarget {
    /// Secret key holding a `postgres://` URL (with `sslmode` when TLS is wanted).
    pub url_secret_ref: SecretKeyRef,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret in the resource's namespace.
    pub name: String,
    pub key: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySpec {
    /// `ByDefault` accepts explicit ids; `Always` is set at cut-over.
    #[serde(default)]
    pub generation: Generation,
    /// Identity cache: 1 or at least 65536 (DSQL rule). Default: 65536 on
    /// DSQL (about 100x faster bulk inserts), 1 on PostgreSQL, which caches
    /// per session: every new connection would skip up to `cache` ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 1 || self >= 65536")
        .message("cache must be 1 or at least 65536"))]
    pub cache: Option<i64>,
    /// Generated ids start above this value (and above every existing id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_after: Option<i64>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Auto,
    InPlace,
    Copy,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Generation {
    #[default]
    ByDefault,
    Always,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopySpec {
    /// Rows per copy transaction; 0 picks the largest batch that keeps every
    /// transaction under DSQL's limits (3,000 mutated rows counting index rows, 10 MiB).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("batchRows must be 0 (auto) or positive"))]
    pub batch_rows: i32,
    /// Concurrent id-range workers.
    #[serde(default = "default_parallelism")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message("parallelism must be between 1 and 64"))]
    pub parallelism: i32,
    /// Copy throttle in rows per second; 0 is unthrottled.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0").message("maxRowsPerSecond must not be negative"))]
    pub max_rows_per_second: i64,
    /// Optional column (for example `updated_at`) that changes whenever a row is
    /// written; the cut-over window then re-copies only rows changed since verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_tracking_column: Option<String>,
    /// An adaptive pace: the copy slows down (halving) while a threshold is
    /// broken and speeds up again (additively, up to `maxRowsPerSecond`) while all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<PaceSpec>,
    /// How the copy is proven complete before the cut-over. `Auto`: on
    /// PostgreSQL, by the change capture when it was on the table before the
    /// copy's first row and stayed on (every row written since is re-synced
    /// and compared by id); otherwise, and on DSQL, by `Checksums`: row
    /// counts and checksums of every id range of both tables.
    #[serde(default)]
    pub verification: VerificationMode,
}

/// `spec.copy.verification`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerificationMode {
    #[default]
    Auto,
    Checksums,
}

impl Default for CopySpec {
    fn default() -> Self {
        Self {
            batch_rows: 0,
            parallelism: DEFAULT_PARALLELISM,
            max_rows_per_second: 0,
            change_tracking_column: None,
            pace: None,
            verification: VerificationMode::Auto,
        }
    }
}

/// Thresholds of the adaptive pace; each is optional.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaceSpec {
    /// p95 of the copy's own commit latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxCommitLatencyMs must be positive"))]
    pub max_commit_latency_ms: Option<i64>,
    /// Optimistic-concurrency retries per commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0").message("maxConflictRate must not be negative"))]
    pub max_conflict_rate: Option<f64>,
    /// PostgreSQL only: the largest `replay_lag` of `pg_stat_replication`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxReplicaLagSeconds must be positive"))]
    pub max_replica_lag_seconds: Option<i64>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CutoverSpec {
    #[serde(default)]
    pub approval: Approval,
    /// With `approval: Manual`, the migration waits in AwaitingCutover until this is true.
    #[serde(default)]
    pub approved: bool,
    /// Deployments or StatefulSets scaled to zero for the cut-over window and restored after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiesce: Vec<WorkloadRef>,
    /// The cut-over starts only inside this window (and, with `approval:
    /// Manual`, once approved too); the copy and re-sync run at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<CutoverWindow>,
}

/// A recurring time window, such as 02:00 to 04:00 Berlin time on weekdays.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CutoverWindow {
    /// Local time the window opens, `HH:MM` (24 hours), or `HH:MM:SS`.
    pub start: String,
    /// How long it stays open: `2h`, `90m`, `1h30m` (at most 24h).
    pub duration: String,
    /// IANA time zone of `start`, such as `Europe/Berlin`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Days on which the window opens; every day when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<WindowDay>,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowDay {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Approval {
    #[default]
    Automatic,
    Manual,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    /// In the resource's namespace.
    pub name: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OldTableSpec {
    /// Name the original table gets at cut-over; default `<table>_old`.
    #[serde(default)]
    pub name: String,
    /// Keep the original table after completion (needed for rollback).
    #[serde(default = "default_true")]
    pub retain: bool,
}

impl Default for OldTableSpec {
    fn default() -> Self {
        Self { name: String::new(), retain: true }
    }
}

pub(crate) fn default_schema() -> String {
    "public".into()
}
fn default_id_column() -> String {
    "id".into()
}
fn default_dsql_user() -> String {
    "admin".into()
}
fn default_database() -> String {
    "postgres".into()
}
fn default_parallelism() -> i32 {
    DEFAULT_PARALLELISM
}
fn default_true() -> bool {
    true
}

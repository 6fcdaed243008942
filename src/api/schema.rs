//! `SchemaMigration`: a team's versioned SQL files (Flyway, golang-migrate,
//! goose, dbmate or plain), run by the target's rules; every ALTER the target
//! refuses or makes only under a long lock is made by the table engine.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::spec::{CutoverSpec, Target, default_schema};

/// Runs versioned SQL migrations on DSQL or PostgreSQL by the target's rules.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "migrations.dsql.dev",
    version = "v1alpha1",
    kind = "SchemaMigration",
    plural = "schemamigrations",
    shortname = "schemig",
    category = "dsql",
    namespaced,
    status = "SchemaMigrationStatus",
    doc = "Runs a team's versioned SQL migrations by the target's rules, refused ALTERs by the table engine",
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.inFlight.step"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemaMigrationSpec {
    /// The database: exactly one of `dsql` or `postgres`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable"))]
    pub target: Target,
    /// How versions and the up part are read from the files.
    #[serde(default)]
    pub format: Format,
    /// Where the files are; `run --dir` and `plan --dir` read a local directory instead.
    #[serde(default)]
    pub source: Source,
    /// The version to migrate to; empty for the latest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target_version: String,
    /// A database that already holds the schema up to this version: those
    /// files are recorded as applied, never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// Where applied versions are recorded.
    #[serde(default)]
    pub history: HistoryTable,
    /// Allow a file whose version is older than the applied head.
    #[serde(default)]
    pub out_of_order: bool,
    #[serde(default)]
    pub policy: Policy,
    /// Approval and windows for the rebuilds, as the other kinds.
    #[serde(default)]
    pub cutover: CutoverSpec,
    #[serde(default)]
    pub suspend: bool,
}

/// The layout of the files.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Told from the file names and markers.
    #[default]
    Auto,
    /// `V1__name.sql`, `V1.1__name.sql`, repeatable `R__name.sql`.
    Flyway,
    /// `0001_name.up.sql` (and `.down.sql`, never run).
    GolangMigrate,
    /// `0001_name.sql` with `-- +goose Up` / `-- +goose Down`.
    Goose,
    /// `20240101000000_name.sql` with `-- migrate:up` / `-- migrate:down`.
    Dbmate,
    /// Every `.sql` file, in name order.
    Plain,
}

/// Exactly one of the three.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// A ConfigMap whose keys are the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapName>,
    /// Every ConfigMap with these labels: sets larger than one ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_selector: Option<LabelSelector>,
    /// The migrations inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<InlineMigration>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapName {
    pub name: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineMigration {
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub sql: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Baseline {
    pub version: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryTable {
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default = "default_history_table")]
    pub table: String,
}

impl Default for HistoryTable {
    fn default() -> Self {
        Self { schema: default_schema(), table: default_history_table() }
    }
}

fn default_history_table() -> String {
    "schema_history".into()
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub approval: ApprovalPolicy,
    /// Approves exactly the plan with this hash (shown while it waits).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approved_plan_hash: String,
}

/// Which migrations wait for a person's approval.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApprovalPolicy {
    /// None.
    Never,
    /// Those that rebuild a table.
    Rebuilds,
    /// Those that drop a table or a column, or delete without a WHERE.
    #[default]
    Destructive,
    /// Every one.
    Always,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchemaMigrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The newest applied version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Versions not applied yet, up to the target version.
    #[serde(default)]
    pub pending: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// The hash of the plan waiting for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_at: Option<Time>,
}

/// The step under way, so a restart resumes there.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub version: String,
    /// `3/7 ddl`: the step of the migration and its kind.
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_cursor: Option<String>,
}

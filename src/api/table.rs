//! `TableMigration`: any table change, the lock-safe way (design.md). The
//! spec is IdentityMigration's without the identity fields, plus
//! `spec.changes`; the status and phases are the same.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::changes::Change;
use super::spec::default_schema;
use super::spec::{CopySpec, CutoverSpec, OldTableSpec, Strategy, Target};
use super::status::IdentityMigrationStatus;

/// Changes a table in ways the server cannot make in place without a long
/// lock: each change in place where it can be, the rest in one rebuild.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "migrations.dsql.dev",
    version = "v1alpha1",
    kind = "TableMigration",
    plural = "tablemigrations",
    shortname = "tblmig",
    category = "dsql",
    namespaced,
    status = "IdentityMigrationStatus",
    doc = "Changes a table the lock-safe way: in place where the server can, else one rebuild",
    printcolumn(name = "Table", type_ = "string", json_path = ".spec.table"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "integer", json_path = ".status.progress.percent"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableMigrationSpec {
    /// The database that holds the table: exactly one of `dsql` or `postgres`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable"))]
    pub target: Target,
    /// `Auto`: each change in place where the server makes it without a long
    /// lock, the rest in one rebuild; `InPlace` refuses a change that needs
    /// the rebuild; `Copy` makes every change in the rebuild.
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default = "default_schema")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("schema is immutable"))]
    pub schema: String,
    #[x_kube(validation = Rule::new("self == oldSelf").message("table is immutable"))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("table must not be empty"))]
    pub table: String,
    /// The changes, applied in order; each item has exactly one key.
    #[x_kube(validation = Rule::new("size(self) > 0").message("changes must list at least one change"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("changes are immutable; create another TableMigration"))]
    pub changes: Vec<Change>,
    #[serde(default)]
    pub copy: CopySpec,
    #[serde(default)]
    pub cutover: CutoverSpec,
    #[serde(default)]
    pub old_table: OldTableSpec,
    #[serde(default)]
    pub suspend: bool,
    #[serde(default)]
    pub rollback: bool,
}

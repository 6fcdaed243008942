//! The labels every migration's series carry.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MigrationLabels {
    /// `IdentityMigration`, `TableMigration` or `SchemaMigration`: one of each may share a name.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl MigrationLabels {
    pub fn new(kind: &str, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { kind: kind.to_string(), namespace: namespace.into(), name: name.into() }
    }
}

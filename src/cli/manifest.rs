//! Reading an `IdentityMigration` manifest from a file, with errors that name
//! the file and the field at fault.

use std::path::Path;

use serde::Deserialize;

use serde::de::DeserializeOwned;

use crate::api::{IdentityMigration, IdentityMigrationSpec, TableMigrationSpec};

pub const API_VERSION: &str = "migrations.dsql.dev/v1alpha1";
pub const KIND: &str = "IdentityMigration";
pub const TABLE_KIND: &str = "TableMigration";
pub const SCHEMA_KIND: &str = "SchemaMigration";

/// Why a manifest cannot be used; the message names the document and field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    In {
        path: std::path::PathBuf,
        #[source]
        source: Box<ManifestError>,
    },
    #[error("not valid YAML: {0}")]
    Yaml(#[source] serde_norway::Error),
    #[error("no document with kind: {0}")]
    NoDocument(&'static str),
    #[error("{0} documents with kind: {1}; give one per file")]
    ManyDocuments(usize, &'static str),
    #[error("document {doc}: apiVersion must be {API_VERSION}, found {found:?}")]
    ApiVersion { doc: usize, found: String },
    #[error("document {doc}: metadata.name is required")]
    NoName { doc: usize },
    #[error("document {doc}: spec is required")]
    NoSpec { doc: usize },
    #[error("{field}: {source}")]
    Field {
        field: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The parts of a manifest `run` and `plan` use.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub name: String,
    pub namespace: Option<String>,
    pub spec: IdentityMigrationSpec,
}

/// Loads the one `IdentityMigration` in `path` (other documents, such as a
/// Secret next to it, are skipped).
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
    parse(&text).map_err(|e| ManifestError::In { path: path.to_path_buf(), source: Box::new(e) })
}

pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let (name, namespace, spec) = parse_kind::<IdentityMigrationSpec>(text, KIND)?;
    Ok(Manifest { name, namespace, spec })
}

/// A `TableMigration` manifest: the parts `plan` uses.
#[derive(Clone, Debug)]
pub struct TableManifest {
    pub name: String,
    pub namespace: Option<String>,
    pub spec: TableMigrationSpec,
}

/// Whether the file holds a `TableMigration` (and so no IdentityMigration is looked for).
pub fn holds_table_migration(path: &Path) -> bool {
    holds(path, TABLE_KIND)
}

/// Whether the file holds a `SchemaMigration`.
pub fn holds_schema_migration(path: &Path) -> bool {
    holds(path, SCHEMA_KIND)
}

fn holds(path: &Path, kind: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    for doc in serde_norway::Deserializer::from_str(&text) {
        // A document that is not YAML ends the look (the loader reports it).
        let Ok(value) = serde_json::Value::deserialize(doc) else { return false };
        if value.get("kind").and_then(|k| k.as_str()) == Some(kind) {
            return true;
        }
    }
    false
}

/// A `SchemaMigration` manifest.
#[derive(Clone, Debug)]
pub struct SchemaManifest {
    pub name: String,
    pub namespace: Option<String>,
    pub spec: crate::api::schema::SchemaMigrationSpec,
}

/// Loads the one `SchemaMigration` in `path`.
pub fn load_schema(path: &Path) -> Result<SchemaManifest, ManifestError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
    let (name, namespace, spec) = parse_kind::<crate::api::schema::SchemaMigrationSpec>(&text, SCHEMA_KIND)
        .map_err(|e| ManifestError::In { path: path.to_path_buf(), source: Box::new(e) })?;
    Ok(SchemaManifest { name, namespace, spec })
}

/// Loads the one `TableMigration` in `path`.
pub fn load_table(path: &Path) -> Result<TableManifest, ManifestError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
    let (name, namespace, spec) = parse_kind::<TableMigrationSpec>(&text, TABLE_KIND)
        .map_err(|e| ManifestError::In { path: path.to_path_buf(), source: Box::new(e) })?;
    Ok(TableManifest { name, namespace, spec })
}

/// The one document of `kind`: its name, namespace and spec.
fn parse_kind<T: DeserializeOwned>(
    text: &str,
    kind: &'static str,
) -> Result<(String, Option<String>, T), ManifestError> {
    let mut found = Vec::new();
    for (n, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc).map_err(ManifestError::Yaml)?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(|k| k.as_str()) == Some(kind) {
            found.push((n + 1, value));
        }
    }
    let (doc, value) = match found.len() {
        0 => return Err(ManifestError::NoDocument(kind)),
        1 => found.remove(0),
        n => return Err(ManifestError::ManyDocuments(n, kind)),
    };
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
    if api_version != API_VERSION {
        return Err(ManifestError::ApiVersion { doc, found: api_version.to_string() });
    }
    let metadata = value.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(ManifestError::NoName { doc });
    }
    let namespace = metadata.and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).map(str::to_string);
    let spec = value.get("spec").cloned().ok_or(ManifestError::NoSpec { doc })?;
    let spec: T = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
        ManifestError::Field { field, source: e.into_inner() }
    })?;
    Ok((name, namespace, spec))
}

impl Manifest {
    /// The manifest as the custom resource (for `kubectl`-style output).
    pub fn resource(&self) -> IdentityMigration {
        let mut r = IdentityMigration::new(&self.name, self.spec.clone());
        r.metadata.namespace = self.namespace.clone();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_found_and_broken_yaml_ends_the_look() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let table = file("t.yaml", "kind: Secret\n---\napiVersion: x\nkind: TableMigration\n");
        assert!(holds_table_migration(&table));
        assert!(!holds_table_migration(&file("i.yaml", "kind: IdentityMigration\n")));
        assert!(!holds_table_migration(&file("bad.yaml", "kind: IdentityMigration\nspec: [not, a, map\n")));
    }

    const GOOD: &str = "apiVersion: migrations.dsql.dev/v1alpha1\nkind: IdentityMigration\n\
        metadata: {name: post-tag-identity, namespace: blog}\n\
        spec:\n  target: {postgres: {urlSecretRef: {name: pg, key: url}}}\n  table: post_tag\n";

    #[test]
    fn a_manifest_with_defaults_loads() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.name, "post-tag-identity");
        assert_eq!(m.namespace.as_deref(), Some("blog"));
        assert_eq!(m.spec.schema, "public");
        assert_eq!(m.spec.id_column, "id");
        assert_eq!(m.spec.identity.cache, None, "the default depends on the target: 65536 on DSQL, 1 on PostgreSQL");
        assert_eq!(m.resource().metadata.name.as_deref(), Some("post-tag-identity"));
    }

    #[test]
    fn other_documents_are_skipped() {
        let text = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: pg}}\n---\n{GOOD}");
        assert_eq!(parse(&text).unwrap().spec.table, "post_tag");
    }

    #[test]
    fn errors_name_the_field() {
        let bad = GOOD.replace("table: post_tag", "table: post_tag\n  identity: {generation: Sometimes}");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.starts_with("spec.identity.generation: unknown variant `Sometimes`"), "{err}");
        let bad = GOOD.replace("table: post_tag", "table: post_tag\n  copy: {parallelism: four}");
        assert!(parse(&bad).unwrap_err().to_string().starts_with("spec.copy.parallelism: invalid type"));
        let bad = GOOD.replace("table: post_tag", "table: post_tag\n  tabel: x");
        assert!(parse(&bad).unwrap_err().to_string().contains("unknown field `tabel`"));
        let bad = GOOD.replace("  table: post_tag\n", "");
        assert!(parse(&bad).unwrap_err().to_string().contains("missing field `table`"));
        assert!(parse("kind: [unclosed").unwrap_err().to_string().contains("not valid YAML"));
        assert!(parse(&GOOD.replace("v1alpha1", "v9")).unwrap_err().to_string().contains("apiVersion must be"));
        assert!(parse("apiVersion: v1\nkind: Secret\n").unwrap_err().to_string().contains("no document"));
    }
}

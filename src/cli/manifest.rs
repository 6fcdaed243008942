//! Reading an `IdentityMigration` manifest from a file, with errors that name
//! the file and the field at fault.

use std::path::Path;

use serde::Deserialize;

use crate::api::{IdentityMigration, IdentityMigrationSpec};

pub const API_VERSION: &str = "migrations.dsql.dev/v1alpha1";
pub const KIND: &str = "IdentityMigration";

/// The parts of a manifest `run` and `plan` use.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub name: String,
    pub namespace: Option<String>,
    pub spec: IdentityMigrationSpec,
}

/// Loads the one `IdentityMigration` in `path` (other documents, such as a
/// Secret next to it, are skipped).
pub fn load(path: &Path) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<Manifest, String> {
    let mut found = Vec::new();
    for (n, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(doc).map_err(|e| format!("not valid YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(|k| k.as_str()) == Some(KIND) {
            found.push((n + 1, value));
        }
    }
    let (doc, value) = match found.len() {
        0 => return Err(format!("no document with kind: {KIND}")),
        1 => found.remove(0),
        n => return Err(format!("{n} documents with kind: {KIND}; give one per file")),
    };
    let api_version = value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
    if api_version != API_VERSION {
        return Err(format!("document {doc}: apiVersion must be {API_VERSION}, found {api_version:?}"));
    }
    let metadata = value.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(format!("document {doc}: metadata.name is required"));
    }
    let namespace = metadata.and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).map(str::to_string);
    let spec = value.get("spec").cloned().ok_or_else(|| format!("document {doc}: spec is required"))?;
    let spec: IdentityMigrationSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
        format!("{field}: {}", e.into_inner())
    })?;
    Ok(Manifest { name, namespace, spec })
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
        assert_eq!(m.spec.identity.cache, 65536);
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
        let err = parse(&bad).unwrap_err();
        assert!(err.starts_with("spec.identity.generation: unknown variant `Sometimes`"), "{err}");
        let bad = GOOD.replace("table: post_tag", "table: post_tag\n  copy: {parallelism: four}");
        assert!(parse(&bad).unwrap_err().starts_with("spec.copy.parallelism: invalid type"));
        let bad = GOOD.replace("table: post_tag", "table: post_tag\n  tabel: x");
        assert!(parse(&bad).unwrap_err().contains("unknown field `tabel`"));
        let bad = GOOD.replace("  table: post_tag\n", "");
        assert!(parse(&bad).unwrap_err().contains("missing field `table`"));
        assert!(parse("kind: [unclosed").unwrap_err().contains("not valid YAML"));
        assert!(parse(&GOOD.replace("v1alpha1", "v9")).unwrap_err().contains("apiVersion must be"));
        assert!(parse("apiVersion: v1\nkind: Secret\n").unwrap_err().contains("no document"));
    }
}

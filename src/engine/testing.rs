//! Builders for unit tests: the seed's `post_tag` table and specs for it.

use crate::api::{IdentityMigrationSpec, PostgresTarget, SecretKeyRef, Target};

use crate::engine::plan::shape::TableName;
use crate::engine::plan::shape::{Column, Constraint, ConstraintKind, Index, TableShape};

pub fn spec_for(table: &str) -> IdentityMigrationSpec {
    serde_json::from_value(serde_json::json!({ "table": table, "target": {} }))
        .map(|mut spec: IdentityMigrationSpec| {
            spec.target = Target {
                dsql: None,
                postgres: Some(PostgresTarget {
                    url_secret_ref: SecretKeyRef { name: "pg".into(), key: "url".into() },
                }),
            };
            spec
        })
        .expect("minimal spec")
}

pub fn column(name: &str, data_type: &str, not_null: bool) -> Column {
    Column {
        name: name.into(),
        data_type: data_type.into(),
        not_null,
        default: None,
        generated: None,
        identity: None,
        collation: None,
    }
}

/// The seed article's table: `id BIGINT PRIMARY KEY, post_id, tag_id, created_at`,
/// with an index on `post_id`.
pub fn post_tag_shape() -> TableShape {
    let mut created_at = column("created_at", "timestamp without time zone", false);
    created_at.default = Some("CURRENT_TIMESTAMP".into());
    TableShape {
        table: Some(TableName::new("public", "post_tag")),
        kind: 'r',
        columns: vec![
            column("id", "bigint", true),
            column("post_id", "character varying", true),
            column("tag_id", "character varying", true),
            created_at,
        ],
        constraints: vec![Constraint {
            name: "post_tag_pkey".into(),
            kind: ConstraintKind::PrimaryKey,
            definition: "PRIMARY KEY (id)".into(),
            columns: vec!["id".into()],
        }],
        indexes: vec![Index {
            name: "post_tag_post_id_idx".into(),
            unique: false,
            method: "btree".into(),
            definition: "(post_id)".into(),
        }],
        estimated_rows: 1_000_000,
        ..TableShape::default()
    }
}

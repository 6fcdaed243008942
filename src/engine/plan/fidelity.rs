//! The statements that give the shadow table what the source carries besides
//! its rows and columns ([`Fidelity`]): owner, privileges, comments, storage
//! parameters, replica identity, statistics, persistence and row-level
//! security policies. The swap then leaves nothing behind that the
//! application or the database relies on. Pure.

use super::carried::{Fidelity, ReplicaIdentity};
use super::names::derived_name;
use super::quote::{ident, literal};
use super::shape::{ConstraintKind, TableName, TableShape};
use crate::db::Dialect;

fn grantee(role: &Option<String>) -> String {
    role.as_deref().map_or_else(|| "PUBLIC".to_string(), ident)
}

/// The owner and the privileges of `table` made those of the source: the
/// default privileges are reset first, so a REVOKE on the source is kept too.
pub fn privilege_statements(f: &Fidelity, table: &TableName, dialect: Dialect) -> Vec<String> {
    let mut out = Vec::new();
    // DSQL documents ALTER TABLE ... OWNER TO (alter-table-syntax-support);
    // it is still sent only when needed there: when the source's owner is
    // not the role that creates the shadow table.
    let needed = dialect == Dialect::Postgres || f.owner != f.connected_as;
    if needed && !f.owner.is_empty() {
        out.push(format!("ALTER TABLE {table} OWNER TO {}", ident(&f.owner)));
    }
    let Some(grants) = &f.grants else { return out };
    out.push(format!("REVOKE ALL ON TABLE {table} FROM PUBLIC"));
    if !f.owner.is_empty() {
        out.push(format!("REVOKE ALL ON TABLE {table} FROM {}", ident(&f.owner)));
    }
    let mut grants = grants.clone();
    grants.sort();
    for g in &grants {
        let what = match &g.column {
            Some(column) => format!("{} ({})", g.privilege, ident(column)),
            None => g.privilege.clone(),
        };
        let option = if g.grantable { " WITH GRANT OPTION" } else { "" };
        out.push(format!("GRANT {what} ON TABLE {table} TO {}{option}", grantee(&g.grantee)));
    }
    out
}

/// Statements that give the freshly created shadow table everything but its
/// secondary indexes' extras: owner and privileges, comments, statistics,
/// replica identity by constraint, row-level security and its policies. Each
/// is one DDL statement and idempotent, so a resumed run may apply them again.
pub fn shadow_statements(
    f: &Fidelity,
    shape: &TableShape,
    source: &TableName,
    shadow: &TableName,
    dialect: Dialect,
) -> Vec<String> {
    let mut out = privilege_statements(f, shadow, dialect);
    if let Some(comment) = &f.comment {
        out.push(format!("COMMENT ON TABLE {shadow} IS {}", literal(comment)));
    }
    for (column, comment) in &f.column_comments {
        out.push(format!("COMMENT ON COLUMN {shadow}.{} IS {}", ident(column), literal(comment)));
    }
    for (name, comment) in &f.constraint_comments {
        let name = constraint_name(shape, name, source, shadow);
        out.push(format!("COMMENT ON CONSTRAINT {} ON {shadow} IS {}", ident(&name), literal(comment)));
    }
    // CREATE STATISTICS is in DSQL's supported subsets too.
    for stats in &f.extended_statistics {
        let name = derived_name(&stats.name, &source.name, &shadow.name);
        let qualified = shadow.sibling(name);
        out.push(format!("CREATE STATISTICS IF NOT EXISTS {qualified} {} FROM {shadow}", stats.definition));
    }
    if dialect == Dialect::Dsql {
        // Not applicable on DSQL: storage parameters, per-column statistics
        // targets, replica identity and row-level security do not exist there.
        return out;
    }
    for (column, target) in &f.statistics_targets {
        out.push(format!("ALTER TABLE {shadow} ALTER COLUMN {} SET STATISTICS {target}", ident(column)));
    }
    match &f.replica_identity {
        ReplicaIdentity::Default => {}
        ReplicaIdentity::Nothing => out.push(format!("ALTER TABLE {shadow} REPLICA IDENTITY NOTHING")),
        ReplicaIdentity::Full => out.push(format!("ALTER TABLE {shadow} REPLICA IDENTITY FULL")),
        // Set once the index exists: see `index_statements`.
        ReplicaIdentity::Index(_) => {}
    }
    if f.row_security {
        out.push(format!("ALTER TABLE {shadow} ENABLE ROW LEVEL SECURITY"));
    }
    for p in &f.policies {
        out.push(format!("DROP POLICY IF EXISTS {} ON {shadow}", ident(&p.name)));
        let roles = if p.roles.is_empty() {
            "PUBLIC".to_string()
        } else {
            p.roles
                .iter()
                .map(|r| if r == "public" { "PUBLIC".to_string() } else { ident(r) })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!(
            "CREATE POLICY {} ON {shadow} AS {} FOR {} TO {roles}",
            ident(&p.name),
            if p.permissive { "PERMISSIVE" } else { "RESTRICTIVE" },
            p.command
        );
        if let Some(using) = &p.using {
            sql.push_str(&format!(" USING ({using})"));
        }
        if let Some(check) = &p.check {
            sql.push_str(&format!(" WITH CHECK ({check})"));
        }
        out.push(sql);
    }
    out
}

/// Statements for the shadow's indexes once they exist: their comments, and
/// a replica identity that uses an index.
pub fn index_statements(
    f: &Fidelity,
    shape: &TableShape,
    source: &TableName,
    shadow: &TableName,
    dialect: Dialect,
) -> Vec<String> {
    let mut out = Vec::new();
    let index_name = |name: &str| {
        // A constraint's index carries the constraint's (derived) name.
        let derived = if shape.constraints.iter().any(|c| c.name == name) {
            constraint_name(shape, name, source, shadow)
        } else {
            derived_name(name, &source.name, &shadow.name)
        };
        shadow.sibling(derived)
    };
    for (name, comment) in &f.index_comments {
        out.push(format!("COMMENT ON INDEX {} IS {}", index_name(name), literal(comment)));
    }
    if let (ReplicaIdentity::Index(name), Dialect::Postgres) = (&f.replica_identity, dialect) {
        out.push(format!("ALTER TABLE {shadow} REPLICA IDENTITY USING INDEX {}", ident(&index_name(name).name)));
    }
    out
}

/// The shadow's name for a source constraint (index-backed ones are derived).
fn constraint_name(shape: &TableShape, name: &str, source: &TableName, shadow: &TableName) -> String {
    match shape.constraints.iter().find(|c| c.name == name).map(|c| &c.kind) {
        Some(ConstraintKind::PrimaryKey | ConstraintKind::Unique) => derived_name(name, &source.name, &shadow.name),
        _ => name.to_string(),
    }
}

/// What the new table will not carry on `dialect`, for `plan` to say.
pub fn not_carried(f: &Fidelity, dialect: Dialect) -> Vec<&'static str> {
    let mut out = Vec::new();
    if dialect == Dialect::Dsql {
        let lost = [
            (!f.storage.is_empty(), "storage parameters"),
            (f.replica_identity != ReplicaIdentity::Default, "replica identity"),
            (!f.statistics_targets.is_empty(), "statistics targets"),
            (f.unlogged, "UNLOGGED"),
            (f.row_security || !f.policies.is_empty(), "row-level security policies"),
        ];
        out.extend(lost.iter().filter(|(has, _)| *has).map(|(_, what)| *what));
    }
    out
}

/// The part of `pg_get_statisticsobjdef` between the object's name and
/// ` FROM <table>`: `(ndistinct) ON a, b`. The names are as `quote_ident`
/// prints them; the table with or without its schema.
pub fn statistics_definition_middle(def: &str, schema: &str, name: &str, table: &str) -> Option<String> {
    let rest = def.strip_prefix(&format!("CREATE STATISTICS {schema}.{name} "))?;
    [format!(" FROM {schema}.{table}"), format!(" FROM {table}")]
        .iter()
        .find_map(|tail| rest.strip_suffix(tail.as_str()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::carried::{ExtendedStatistics, Grant, Policy};
    use crate::engine::testing::post_tag_shape;

    fn names() -> (TableName, TableName) {
        (TableName::new("public", "post_tag"), TableName::new("public", "post_tag_new"))
    }

    #[test]
    fn privileges_are_reset_then_granted_as_on_the_source() {
        let f = Fidelity {
            owner: "app_owner".into(),
            grants: Some(vec![
                Grant { column: None, grantee: Some("app_role".into()), privilege: "SELECT".into(), grantable: false },
                Grant { column: None, grantee: None, privilege: "SELECT".into(), grantable: false },
                Grant {
                    column: Some("tag_id".into()),
                    grantee: Some("auditor".into()),
                    privilege: "UPDATE".into(),
                    grantable: true,
                },
            ]),
            ..Default::default()
        };
        let (_, shadow) = names();
        let sql = privilege_statements(&f, &shadow, Dialect::Postgres);
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE \"public\".\"post_tag_new\" OWNER TO \"app_owner\"",
                "REVOKE ALL ON TABLE \"public\".\"post_tag_new\" FROM PUBLIC",
                "REVOKE ALL ON TABLE \"public\".\"post_tag_new\" FROM \"app_owner\"",
                "GRANT SELECT ON TABLE \"public\".\"post_tag_new\" TO PUBLIC",
                "GRANT SELECT ON TABLE \"public\".\"post_tag_new\" TO \"app_role\"",
                "GRANT UPDATE (\"tag_id\") ON TABLE \"public\".\"post_tag_new\" TO \"auditor\" WITH GRANT OPTION",
            ]
        );
        // DSQL: the owner is set only when it is not the role that creates the shadow.
        let default = Fidelity { owner: "app_owner".into(), connected_as: "app_owner".into(), ..Default::default() };
        assert_eq!(privilege_statements(&default, &shadow, Dialect::Dsql), Vec::<String>::new());
        let other = Fidelity { connected_as: "admin".into(), ..default };
        assert_eq!(
            privilege_statements(&other, &shadow, Dialect::Dsql),
            vec!["ALTER TABLE \"public\".\"post_tag_new\" OWNER TO \"app_owner\""]
        );
    }

    #[test]
    fn comments_statistics_identity_and_policies_follow_the_derived_names() {
        let (source, shadow) = names();
        let shape = post_tag_shape();
        let f = Fidelity {
            comment: Some("tags of posts; it's shared".into()),
            column_comments: vec![("tag_id".into(), "the tag".into())],
            constraint_comments: vec![("post_tag_pkey".into(), "one row per id".into())],
            index_comments: vec![("post_tag_post_idx".into(), "by post".into())],
            statistics_targets: vec![("post_id".into(), 1000)],
            extended_statistics: vec![ExtendedStatistics {
                name: "post_tag_stats".into(),
                definition: "(ndistinct) ON post_id, tag_id".into(),
            }],
            replica_identity: ReplicaIdentity::Index("post_tag_pkey".into()),
            row_security: true,
            policies: vec![Policy {
                name: "own rows".into(),
                permissive: true,
                command: "SELECT".into(),
                roles: vec!["app_role".into()],
                using: Some("(post_id = CURRENT_USER)".into()),
                check: None,
            }],
            ..Default::default()
        };
        let sql = shadow_statements(&f, &shape, &source, &shadow, Dialect::Postgres).join(";\n");
        for expected in [
            "COMMENT ON TABLE \"public\".\"post_tag_new\" IS 'tags of posts; it''s shared'",
            "COMMENT ON COLUMN \"public\".\"post_tag_new\".\"tag_id\" IS 'the tag'",
            "COMMENT ON CONSTRAINT \"post_tag_new_pkey\" ON \"public\".\"post_tag_new\" IS 'one row per id'",
            "ALTER TABLE \"public\".\"post_tag_new\" ALTER COLUMN \"post_id\" SET STATISTICS 1000",
            "CREATE STATISTICS IF NOT EXISTS \"public\".\"post_tag_new_stats\" (ndistinct) ON post_id, tag_id FROM \"public\".\"post_tag_new\"",
            "ALTER TABLE \"public\".\"post_tag_new\" ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY \"own rows\" ON \"public\".\"post_tag_new\" AS PERMISSIVE FOR SELECT TO \"app_role\" USING ((post_id = CURRENT_USER))",
        ] {
            assert!(sql.contains(expected), "{expected}\nnot in\n{sql}");
        }
        let later = index_statements(&f, &shape, &source, &shadow, Dialect::Postgres);
        assert_eq!(
            later,
            vec![
                "COMMENT ON INDEX \"public\".\"post_tag_new_post_idx\" IS 'by post'",
                "ALTER TABLE \"public\".\"post_tag_new\" REPLICA IDENTITY USING INDEX \"post_tag_new_pkey\"",
            ]
        );
        let dsql = shadow_statements(&f, &shape, &source, &shadow, Dialect::Dsql).join(";\n");
        assert!(dsql.contains("COMMENT ON TABLE") && !dsql.contains("POLICY") && !dsql.contains("SET STATISTICS"));
        assert!(dsql.contains("CREATE STATISTICS IF NOT EXISTS"), "in DSQL's supported subsets: {dsql}");
        assert_eq!(
            not_carried(&f, Dialect::Dsql),
            vec!["replica identity", "statistics targets", "row-level security policies"]
        );
        assert!(not_carried(&f, Dialect::Postgres).is_empty());
    }

    #[test]
    fn statistics_definitions_are_taken_between_the_name_and_the_table() {
        let def = "CREATE STATISTICS public.s1 (ndistinct, dependencies) ON a, b FROM t";
        assert_eq!(
            statistics_definition_middle(def, "public", "s1", "t").as_deref(),
            Some("(ndistinct, dependencies) ON a, b")
        );
        let def = "CREATE STATISTICS \"My S\".\"x y\" ON lower(a) FROM \"My S\".\"T\"";
        assert_eq!(statistics_definition_middle(def, "\"My S\"", "\"x y\"", "\"T\"").as_deref(), Some("ON lower(a)"));
        assert_eq!(statistics_definition_middle(def, "public", "x", "T"), None);
    }
}

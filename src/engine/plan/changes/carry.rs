//! What a rebuilt table carries of the original's extras (owner, privileges,
//! comments, statistics, row security): each column's by its new name, none
//! for a dropped column, and what reads a changed column (a policy, extended
//! statistics) left out and said, as the new table would otherwise refuse it
//! or read another column than was meant. Pure.

use super::Rebuild;
use super::rebind::reads_column;
use crate::engine::plan::carried::{Fidelity, ReplicaIdentity};
use crate::engine::plan::shape::Index;

/// The extras of the original `f` for the new table of `rebuild`, whose
/// carried indexes are `indexes`; and what is left out, each said once.
pub fn carried(f: &Fidelity, rebuild: &Rebuild, indexes: &[Index]) -> (Fidelity, Vec<String>) {
    let new_name = |column: &str| -> Option<String> {
        rebuild.fates.iter().find(|(base, _)| base == column).and_then(|(_, fate)| fate.clone())
    };
    // Base columns whose name or type the changes alter, or which they drop.
    let changed: Vec<&str> = rebuild
        .fates
        .iter()
        .filter(|(base, fate)| {
            let before = rebuild.base.column(base).map(|c| &c.data_type);
            let after = fate.as_deref().and_then(|n| rebuild.target.column(n)).map(|c| &c.data_type);
            fate.as_deref() != Some(base.as_str()) || before != after
        })
        .map(|(base, _)| base.as_str())
        .collect();
    let reads_changed = |text: &str| changed.iter().any(|c| reads_column(text, c));
    let mut left = Vec::new();
    let mut out = f.clone();

    out.grants = f.grants.as_ref().map(|grants| {
        grants
            .iter()
            .filter_map(|g| match &g.column {
                None => Some(g.clone()),
                Some(column) => match new_name(column) {
                    Some(name) => Some(crate::engine::plan::carried::Grant { column: Some(name), ..g.clone() }),
                    None => {
                        let who = g.grantee.as_deref().unwrap_or("PUBLIC");
                        left.push(format!("{} on column {column} to {who}: the column is dropped", g.privilege));
                        None
                    }
                },
            })
            .collect()
    });
    out.column_comments =
        f.column_comments.iter().filter_map(|(c, comment)| Some((new_name(c)?, comment.clone()))).collect();
    out.statistics_targets =
        f.statistics_targets.iter().filter_map(|(c, target)| Some((new_name(c)?, *target))).collect();
    for (name, _) in &f.constraint_comments {
        left.push(format!("the comment on constraint {name}: the new table's constraints are its own"));
    }
    out.constraint_comments.clear();
    out.index_comments.retain(|(index, _)| indexes.iter().any(|i| i.name == *index));
    if let ReplicaIdentity::Index(index) = &f.replica_identity {
        left.push(format!("REPLICA IDENTITY USING INDEX {index}: the new table has its primary key's"));
        out.replica_identity = ReplicaIdentity::Default;
    }
    out.extended_statistics.retain(|stats| {
        let keep = !reads_changed(&stats.definition);
        if !keep {
            left.push(format!("statistics {} ({}) read a column the changes alter", stats.name, stats.definition));
        }
        keep
    });
    out.policies.retain(|p| {
        let text = format!("{} {}", p.using.as_deref().unwrap_or(""), p.check.as_deref().unwrap_or(""));
        let keep = !reads_changed(&text);
        if !keep {
            left.push(format!("policy {} reads a column the changes alter; create it again on the new table", p.name));
        }
        keep
    });
    (out, left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::carried::{ExtendedStatistics, Grant, Policy};
    use crate::engine::plan::changes::State;
    use crate::engine::plan::changes::tests::{changes, orders};

    #[test]
    fn column_extras_follow_their_columns_and_what_reads_a_changed_one_is_left_out() {
        let list = changes(
            r#"
- alterColumn: {column: amount, type: "numeric(12,2)"}
- renameColumn: {from: cust, to: customer_id}
- dropColumn: {name: legacy}
"#,
        );
        let rebuild = Rebuild::new(State::of(&orders()), &list, 0).unwrap();
        let grant = |column: Option<&str>| Grant {
            column: column.map(str::to_string),
            grantee: Some("reader".into()),
            privilege: "SELECT".into(),
            grantable: false,
        };
        let policy = |name: &str, using: &str| Policy {
            name: name.into(),
            permissive: true,
            command: "ALL".into(),
            roles: vec![],
            using: Some(using.into()),
            check: None,
        };
        let f = Fidelity {
            owner: "app".into(),
            grants: Some(vec![grant(None), grant(Some("cust")), grant(Some("legacy")), grant(Some("email"))]),
            column_comments: vec![("cust".into(), "who".into()), ("legacy".into(), "old".into())],
            statistics_targets: vec![("amount".into(), 500)],
            extended_statistics: vec![
                ExtendedStatistics { name: "s1".into(), definition: "(dependencies) ON email, id".into() },
                ExtendedStatistics { name: "s2".into(), definition: "(dependencies) ON cust, email".into() },
            ],
            policies: vec![policy("mine", "(email = CURRENT_USER)"), policy("big", "(amount > 10)")],
            ..Default::default()
        };
        let (out, left) = carried(&f, &rebuild, &[]);
        let columns: Vec<Option<&str>> = out.grants.as_ref().unwrap().iter().map(|g| g.column.as_deref()).collect();
        assert_eq!(columns, [None, Some("customer_id"), Some("email")]);
        assert_eq!(out.column_comments, [("customer_id".to_string(), "who".to_string())]);
        assert_eq!(out.statistics_targets, [("amount".to_string(), 500)], "a retyped column keeps its target");
        assert_eq!(out.extended_statistics.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["s1"]);
        assert_eq!(out.policies.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["mine"]);
        assert_eq!(out.owner, "app");
        assert_eq!(
            left,
            [
                "SELECT on column legacy to reader: the column is dropped",
                "statistics s2 ((dependencies) ON cust, email) read a column the changes alter",
                "policy big reads a column the changes alter; create it again on the new table",
            ]
        );
    }
}

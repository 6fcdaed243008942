//! What the new table will not carry, and why: features the server lacks,
//! index orderings DSQL cannot keep, facts its catalog would not give, and
//! statements AWS does not document that the server refused. Nothing is left
//! out silently: `plan` prints this list, the status keeps it
//! (`status.plan.notCarried`) and a Warning event says it. Pure.

use super::carried::{Fact, Unread};
use super::ddl::index_builds;
use super::fidelity::not_carried as features_not_carried;
use super::shape::{TableName, TableShape};
use crate::db::Dialect;

/// Whether the migration may go on without a fact the catalog would not give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may: this is said in `status.plan.notCarried`.
    Report(String),
    /// It may not, and why.
    Refuse(String),
}

impl Verdict {
    pub fn report(self) -> Option<String> {
        match self {
            Verdict::Report(said) => Some(said),
            Verdict::Refuse(_) => None,
        }
    }

    pub fn refusal(self) -> Option<String> {
        match self {
            Verdict::Refuse(why) => Some(why),
            Verdict::Report(_) => None,
        }
    }
}

/// Whether the migration may go on without `unread`, and what to say.
///
/// On PostgreSQL every catalog exists, so an unread fact is refused. On DSQL
/// triggers and inheritance do not exist (its unsupported-features page), so
/// nothing can be left behind; comments and statistics are reported as not
/// carried. Dependent views and privileges cannot be skipped: a swap could
/// strand views on the old table, or leave the application without access.
pub fn unread_verdict(unread: &Unread, dialect: Dialect) -> Verdict {
    let error = &unread.error;
    let report = |what: &str, so: &str| Verdict::Report(format!("{what} could not be read ({error}); {so}"));
    match (unread.fact, dialect) {
        (Fact::DependentViews, _) => Verdict::Refuse(format!(
            "the views that depend on the table could not be checked ({error}); a swap could strand them on the \
             old table"
        )),
        (Fact::Privileges, _) => Verdict::Refuse(format!(
            "the table's privileges could not be read ({error}); the new table could not be given them"
        )),
        (fact, Dialect::Postgres) => {
            Verdict::Refuse(format!("{} could not be read on PostgreSQL ({error})", describe(fact)))
        }
        (Fact::Triggers, Dialect::Dsql) => report("triggers", "DSQL has none, so none is left behind"),
        (Fact::Inheritance, Dialect::Dsql) => report("inheritance", "DSQL has no inherited tables"),
        (Fact::Comments, Dialect::Dsql) => report("comments", "none is carried"),
        (Fact::ExtendedStatistics, Dialect::Dsql) => report("extended statistics", "none is carried"),
    }
}

fn describe(fact: Fact) -> &'static str {
    match fact {
        Fact::Triggers => "triggers",
        Fact::DependentViews => "dependent views",
        Fact::Inheritance => "inheritance",
        Fact::Comments => "comments",
        Fact::ExtendedStatistics => "extended statistics",
        Fact::Privileges => "privileges",
    }
}

/// Every fact the catalog would not give, the table's and its extras'.
pub fn all_unread(shape: &TableShape) -> impl Iterator<Item = &Unread> {
    shape.unread.iter().chain(&shape.fidelity.unread)
}

/// What the new table will not carry, known before anything is created.
pub fn known_not_carried(shape: &TableShape, source: &TableName, shadow: &TableName, dialect: Dialect) -> Vec<String> {
    let mut out = Vec::new();
    let lost = features_not_carried(&shape.fidelity, dialect);
    if !lost.is_empty() {
        out.push(format!("DSQL has no {}", lost.join(", ")));
    }
    out.extend(index_builds(shape, source, shadow, dialect).into_iter().filter_map(|i| i.left_out));
    out.extend(all_unread(shape).filter_map(|u| unread_verdict(u, dialect).report()));

    out
}

/// On DSQL the swap cannot hand the original index and constraint names to
/// the new table: said, so that nothing is lost silently.
pub fn names_not_carried(shadow: &TableName, dialect: Dialect) -> Option<String> {
    (dialect == Dialect::Dsql).then(|| {
        format!(
            "index and constraint names: the new table keeps the names it was built with ({}_...) and the old \
             one keeps the originals, since AWS's ALTER TABLE page lists no ALTER INDEX ... RENAME",
            shadow.name
        )
    })
}

/// Statements the engine sends that AWS's pages neither list nor refuse on
/// DSQL: comments, column grants and grant options. A refusal of one of
/// them is reported, not fatal. (The engine writes these statements itself,
/// so their leading words are known.)
pub fn undocumented_on_dsql(sql: &str) -> bool {
    sql.starts_with("COMMENT ON ")
        || (sql.starts_with("GRANT ") && (sql.ends_with(" WITH GRANT OPTION") || grants_columns(sql)))
}

/// `GRANT SELECT ("a") ON TABLE ...`: a column list before ` ON TABLE `.
fn grants_columns(sql: &str) -> bool {
    sql.split(" ON TABLE ").next().is_some_and(|head| head.contains('('))
}

/// Whether an error answering an undocumented statement is the server's
/// refusal of it (not supported, or not understood).
pub fn is_refusal(sqlstate: Option<&str>) -> bool {
    matches!(sqlstate, Some("0A000" | "42601" | "42883" | "42P01"))
}

/// The report of a refused statement.
pub fn refused_note(sql: &str, sqlstate: &str, message: &str) -> String {
    format!("refused by the server ({sqlstate}: {message}): {sql}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::post_tag_shape;

    fn unread(fact: Fact) -> Unread {
        Unread { fact, error: "42P01: relation \"pg_catalog.pg_trigger\" does not exist".into() }
    }

    #[test]
    fn an_unread_fact_goes_on_only_where_leaving_it_is_safe() {
        for fact in [Fact::Triggers, Fact::Inheritance, Fact::Comments, Fact::ExtendedStatistics] {
            let said = unread_verdict(&unread(fact), Dialect::Dsql).report().expect("reported on DSQL");
            assert!(said.contains("could not be read") && said.contains("42P01"), "{said}");
            assert!(
                unread_verdict(&unread(fact), Dialect::Postgres).refusal().is_some(),
                "PostgreSQL has every catalog"
            );
        }
        for fact in [Fact::DependentViews, Fact::Privileges] {
            for dialect in [Dialect::Dsql, Dialect::Postgres] {
                assert!(unread_verdict(&unread(fact), dialect).refusal().is_some(), "{fact:?} is never skipped");
            }
        }
        let why = unread_verdict(&unread(Fact::DependentViews), Dialect::Dsql).refusal().unwrap();
        assert!(why.contains("strand"));
    }

    #[test]
    fn the_list_names_index_orderings_lost_features_and_unread_facts() {
        let mut shape = post_tag_shape();
        let (source, shadow) = (TableName::new("public", "post_tag"), TableName::new("public", "post_tag_new"));
        assert!(known_not_carried(&shape, &source, &shadow, Dialect::Dsql).is_empty());
        shape.indexes[0].definition = "(created_at DESC NULLS LAST)".into();
        shape.fidelity.unlogged = true;
        shape.unread.push(unread(Fact::Triggers));
        let list = known_not_carried(&shape, &source, &shadow, Dialect::Dsql);
        assert_eq!(list.len(), 3, "{list:?}");
        assert!(list[0].contains("UNLOGGED"));
        assert!(list[1].contains("ASC/DESC") && list[1].contains("created_at DESC"), "{}", list[1]);
        assert!(list[2].starts_with("triggers"));
        assert!(known_not_carried(&post_tag_shape(), &source, &shadow, Dialect::Postgres).is_empty());
    }

    #[test]
    fn undocumented_statements_are_told_apart() {
        let t = "\"public\".\"t\"";
        assert!(undocumented_on_dsql(&format!("COMMENT ON TABLE {t} IS 'x'")));
        assert!(undocumented_on_dsql(&format!("GRANT SELECT (\"a\") ON TABLE {t} TO \"r\"")));
        assert!(undocumented_on_dsql(&format!("GRANT SELECT ON TABLE {t} TO \"r\" WITH GRANT OPTION")));
        assert!(!undocumented_on_dsql(&format!("GRANT SELECT ON TABLE {t} TO \"r\"")));
        assert!(!undocumented_on_dsql("GRANT SELECT ON TABLE \"public\".\"t(1)\" TO \"r\""));
        assert!(!undocumented_on_dsql(&format!("ALTER TABLE {t} OWNER TO \"r\"")));
    }
}

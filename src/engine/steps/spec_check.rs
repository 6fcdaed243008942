//! The server's own parser reads every spec type and expression before
//! anything is planned: each alone, prepared through the extended protocol
//! (one statement per Parse, never run). The lexical check of
//! [`crate::engine::plan::changes::spec_text`] comes first; this one catches
//! what only a parser knows: `0 'x'`, `text NOT NULL`, a misspelt type.
//!
//! - A type must be one type: `CAST(NULL AS type)` prepares.
//! - A default must be one value of its column's type, with no column in it:
//!   `CAST((default) AS type)` prepares.
//! - `using`, `reverseUsing` and `check` read columns of rows this statement
//!   does not have, so only a syntax error (SQLSTATE 42601) refuses them
//!   here; the data scan reads them against the rows.

use crate::api::changes::{Change, ChangeKind};
use crate::db::{DbError, ErrorContext, Session};
use crate::engine::error::EngineError;
use crate::engine::plan::changes::spec_text::{calls, texts_of};
use crate::engine::plan::changes::types::normalize_type;
use crate::engine::plan::changes::{State, apply};
use crate::engine::plan::validate::{InvalidInput, Problem};

/// What a probe asks of the server, and how strictly it reads the answer.
struct Probe {
    field: String,
    sql: String,
    /// Only a syntax error refuses (the text reads columns the probe lacks).
    syntax_only: bool,
    what: &'static str,
}

/// The probes of `changes` over a table whose state before them is `state`.
fn probes(mut state: State, changes: &[Change]) -> Vec<Probe> {
    let mut out = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let before = state.clone();
        // Problems were reported by the pure validation already.
        let _ = apply(&mut state, change, i);
        for text in texts_of(change, i) {
            let (sql, syntax_only, what) = if text.is_type {
                (format!("SELECT CAST(NULL AS {})", text.text), false, "is not a type the server knows")
            } else if text.field.ends_with(".default") {
                let column_type = match change.kind() {
                    Ok(ChangeKind::AddColumn(a)) => normalize_type(&a.data_type),
                    Ok(ChangeKind::AlterColumn(a)) => match (&a.data_type, before.column(&a.column)) {
                        (Some(t), _) => normalize_type(t),
                        (None, Some(c)) => c.data_type.clone(),
                        (None, None) => continue,
                    },
                    _ => continue,
                };
                (
                    format!("SELECT CAST(({}) AS {column_type})", text.text),
                    false,
                    "is not one value of the column's type (a default reads no column)",
                )
            } else {
                (format!("SELECT ({})", text.text), true, "is not one SQL expression")
            };
            out.push(Probe { field: text.field, sql, syntax_only, what });
        }
    }
    out
}

/// Prepares each spec text's probe; every one the server's parser refuses,
/// named by its field, as bad input.
pub async fn check_spec_text(session: &mut Session, state: &State, changes: &[Change]) -> Result<(), EngineError> {
    let mut problems = Vec::new();
    for probe in probes(state.clone(), changes) {
        let sql = probe.sql.as_str();
        // A refusal is the answer, not a failure: only a lost connection is retried.
        let answer: Result<(), DbError> = session
            .retry("check a spec expression", |c| async move {
                match c.prepare(sql).await.ctx("check a spec expression") {
                    Err(e) if e.is_transient() => Err(e),
                    other => Ok(other.map(|_| ())),
                }
            })
            .await?;
        let Err(e) = answer else { continue };
        if probe.syntax_only && e.sqlstate.as_deref() != Some("42601") {
            continue;
        }
        problems.push(Problem::new(probe.field, format!("{}: {}", probe.what, e.message)));
    }
    problems.extend(changing_conversions(session, changes).await?);
    if problems.is_empty() { Ok(()) } else { Err(InvalidInput(problems).into()) }
}

/// A `using` (or `reverseUsing`) must give the same value at every reading:
/// the copy, each verification pass and the window's sync all read it, and
/// would never agree on `coalesce(created, now())`. Each function it calls
/// must be IMMUTABLE, as the catalog says; none is refused when the catalog
/// cannot be read (DSQL lists `pg_proc` among its catalogs).
async fn changing_conversions(session: &mut Session, changes: &[Change]) -> Result<Vec<Problem>, EngineError> {
    let mut problems = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let conversions = texts_of(change, i).into_iter();
        for text in conversions.filter(|t| t.field.ends_with(".using") || t.field.ends_with(".reverseUsing")) {
            let (functions, changing) = calls(text.text);
            let mut why: Vec<String> = changing.iter().map(|v| format!("{v} differs at each reading")).collect();
            let names = &functions;
            let read = session
                .retry("read how functions behave", |c| async move {
                    let rows = c
                        .query(
                            "SELECT proname::text, string_agg(DISTINCT provolatile::text, '') FROM pg_catalog.pg_proc \
                             WHERE proname = ANY($1) GROUP BY proname HAVING bool_or(provolatile <> 'i')",
                            &[names],
                        )
                        .await
                        .ctx("read how functions behave")?;
                    Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))).collect::<Vec<_>>())
                })
                .await;
            let not_immutable = match read {
                Ok(found) => found,
                Err(e) if e.catalog_missing() => {
                    tracing::warn!(error = %e, "cannot read how functions behave here; the conversion is not checked");
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
            };
            why.extend(not_immutable.iter().map(|(name, kinds)| {
                let kind = if kinds.contains('v') { "volatile" } else { "stable: it differs between transactions" };
                format!("{name}() is {kind}")
            }));
            if !why.is_empty() {
                problems.push(Problem::new(
                    text.field.clone(),
                    format!(
                        "gives another value at each reading ({}): the copy and its verification could never \
                         agree; write the value it should have (a constant in place of now())",
                        why.join("; ")
                    ),
                ));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::changes::tests::{changes, orders};

    #[test]
    fn each_text_is_probed_alone_in_the_form_its_field_needs() {
        let list = changes(
            r#"
- alterColumn: {column: amount, type: "numeric(12,2)", using: "amount / 100.0", default: "0"}
- alterColumn: {column: email, default: "'none'"}
- addColumn: {name: status, type: text, default: "'new'"}
- addConstraint: {name: positive, check: "amount >= 0"}
"#,
        );
        let said: Vec<(String, String, bool)> =
            probes(State::of(&orders()), &list).into_iter().map(|p| (p.field, p.sql, p.syntax_only)).collect();
        let field = |i: usize, f: &str| format!("spec.changes[{i}].{f}");
        assert_eq!(
            said,
            [
                (field(0, "alterColumn.type"), "SELECT CAST(NULL AS numeric(12,2))".into(), false),
                (field(0, "alterColumn.using"), "SELECT (amount / 100.0)".into(), true),
                (field(0, "alterColumn.default"), "SELECT CAST((0) AS numeric(12,2))".into(), false),
                (field(1, "alterColumn.default"), "SELECT CAST(('none') AS text)".into(), false),
                (field(2, "addColumn.type"), "SELECT CAST(NULL AS text)".into(), false),
                (field(2, "addColumn.default"), "SELECT CAST(('new') AS text)".into(), false),
                (field(3, "addConstraint.check"), "SELECT (amount >= 0)".into(), true),
            ]
        );
    }
}

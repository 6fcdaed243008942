//! The differential test through the DSQL stand-in (`dsql_oracle_*`, so the
//! strict pass of `scripts/test` runs it again): the engine makes the
//! changes with a DSQL target, and the table it leaves is compared with
//! PostgreSQL's own ALTER TABLE on a copy in the backing database. Columns
//! and rows must be the same; constraints and indexes the same by
//! definition. What DSQL cannot carry (the names the swap cannot hand over,
//! comments) must be listed in `status.plan.notCarried`, never missing.

use super::cases::orders;
use super::reference::alter_table;
use super::truth::{Truth, truth};
use super::{Case, make_table};
use crate::support::stand_in::{StandIn, credentials_env};
use crate::support::{run_cli, text};

/// A constraint or index line without its name.
fn unnamed(line: &str) -> String {
    match line.strip_prefix("CREATE ") {
        Some(rest) => {
            let (unique, rest) = rest.strip_prefix("UNIQUE ").map_or(("", rest), |r| ("UNIQUE ", r));
            let after = rest.strip_prefix("INDEX ").and_then(|r| r.split_once(" ON ")).map_or(rest, |(_, on)| on);
            format!("CREATE {unique}INDEX ON {after}")
        }
        None => line.split_once(' ').map_or(line, |(_, def)| def).to_string(),
    }
}

fn sorted_unnamed(lines: &[String]) -> Vec<String> {
    let mut all: Vec<String> = lines.iter().map(|l| unnamed(l)).collect();
    all.sort();
    all
}

/// The differences of `got` from `expected` that DSQL's notes do not explain.
fn unexplained(got: &Truth, expected: &Truth, not_carried: &[String]) -> Vec<String> {
    let said = |what: &str| not_carried.iter().any(|n| n.contains(what));
    let mut out = Vec::new();
    if got.columns != expected.columns {
        out.push(format!("columns: {:?} against ALTER TABLE's {:?}", got.columns, expected.columns));
    }
    if got.rows != expected.rows {
        out.push(format!("rows: {} against ALTER TABLE's {}", got.rows.len(), expected.rows.len()));
    }
    // A unique constraint that repeats another's columns is one DSQL's CREATE
    // TABLE folds away: listed in notCarried by its new name (`t_new_...`),
    // it is reported, not missing.
    let reported: Vec<String> = not_carried
        .iter()
        .filter_map(|n| n.strip_prefix("unique constraint t_new_")?.split_once(": it repeats another's columns"))
        .map(|(rest, _)| format!("t_{rest}"))
        .collect();
    let named = |line: &String, name: &str| {
        line.starts_with(&format!("{name} ")) || line.contains(&format!("INDEX {name} ON "))
    };
    let kept = |lines: &[String]| -> Vec<String> {
        lines.iter().filter(|l| !reported.iter().any(|r| named(l, r))).cloned().collect()
    };
    let (expected_constraints, expected_indexes) = (kept(&expected.constraints), kept(&expected.indexes));
    for (what, ours, theirs) in
        [("constraints", &got.constraints, &expected_constraints), ("indexes", &got.indexes, &expected_indexes)]
    {
        if sorted_unnamed(ours) != sorted_unnamed(theirs) {
            out.push(format!("{what} by definition: {ours:?} against ALTER TABLE's {theirs:?}"));
        } else if ours != theirs && !said("index and constraint names") {
            out.push(format!("{what} differ by name and status.plan.notCarried does not say so: {ours:?}"));
        }
    }
    if got.comments != expected.comments && !said("omment") {
        out.push(format!("comments differ and status.plan.notCarried does not say so: {:?}", got.comments));
    }
    out
}

/// The case through the stand-in `s`, in schemas named after `tag`: every
/// difference of the engine's table from ALTER TABLE's that DSQL's notes do
/// not explain, and every statement the stand-in refused that AWS documents.
pub(super) async fn through_stand_in(s: &StandIn, tag: &str, case: &Case) -> Vec<String> {
    let (reference, engine) = (format!("{tag}_reference"), format!("{tag}_engine"));
    let client = &crate::support::connect(&s.db.url).await;
    make_table(client, &reference, &case.setup).await;
    let refused = alter_table(client, &reference, "t", &case.changes).await.err();
    let expected = truth(client, &reference, "t", &case.key).await;
    make_table(client, &engine, &case.setup).await;
    let before = truth(client, &engine, "t", &case.key).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    let manifest = format!(
        "apiVersion: migrations.dsql.dev/v1alpha1\nkind: TableMigration\nmetadata: {{name: oracle}}\nspec:\n  \
         target: {}\n  schema: {engine}\n  table: t\n  changes: {}\n",
        s.target(),
        serde_json::to_string(&case.changes).unwrap()
    );
    std::fs::write(&path, manifest).unwrap();
    let out = {
        let ca = s.ca.path().to_str().unwrap().to_string();
        let path = path.to_str().unwrap().to_string();
        let args = ["run".to_string(), "-f".into(), path, "--ca-file".into(), ca];
        tokio::task::spawn_blocking(move || {
            run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &credentials_env())
        })
        .await
        .unwrap()
    };
    let got = truth(client, &engine, "t", &case.key).await;
    let said = || text(&out).lines().rev().take(6).collect::<Vec<_>>().join(" | ");
    let mut found = Vec::new();
    match refused {
        Some(why) if out.status.code() != Some(2) => {
            found.push(format!("ALTER TABLE refuses ({why}); the engine exited {:?}: {}", out.status.code(), said()))
        }
        Some(_) => found.extend(got.differences(&before).into_iter().map(|d| format!("refused, but changed: {d}"))),
        None if !out.status.success() => {
            found.push(format!("ALTER TABLE makes the changes; the engine exited {:?}: {}", out.status.code(), said()))
        }
        None => {
            let state: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join("m.yaml.state.json")).unwrap()).unwrap();
            let not_carried: Vec<String> = state["status"]["plan"]["notCarried"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let unexplained = unexplained(&got, &expected, &not_carried);
            if !unexplained.is_empty() {
                found.push(format!("{}\nnotCarried: {not_carried:?}", unexplained.join("\n")));
            }
        }
    }
    found
}

async fn check_through_stand_in(case: &Case) {
    let s = StandIn::start(&format!("dsql_oracle_{}", case.name), |_| {}).await;
    let found = through_stand_in(&s, "c", case).await;
    let name = &case.name;
    assert!(found.is_empty(), "{name} through the stand-in:\n{}", found.join("\n"));
    let refused_documented = s.refused_documented();
    assert!(refused_documented.is_empty(), "{name}: the stand-in refused what AWS documents: {refused_documented:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dsql_oracle_each_refused_alter_is_made_by_the_rebuild_as_alter_table_makes_it() {
    let cases = [
        Case::new("names", &orders(""), "- alterColumn: {column: qty, type: bigint}"),
        Case::new(
            "narrow",
            &orders(""),
            "- alterColumn: {column: amount, type: \"numeric(12,2)\"}\n- alterColumn: {column: code, type: \"varchar(8)\"}",
        ),
        Case::new(
            "too_long",
            &orders("INSERT INTO t (id, code) VALUES (1000, 'sixteen-chars-xx');"),
            "- alterColumn: {column: code, type: \"varchar(8)\"}",
        ),
        Case::new("not_null", &orders(""), "- alterColumn: {column: qty, notNull: true}"),
        Case::new("not_null_refused", &orders(""), "- alterColumn: {column: note, notNull: true}"),
        Case::new(
            "columns",
            &orders(""),
            "- dropColumn: {name: legacy}\n- addColumn: {name: status, type: text, notNull: true, default: \"'new'\"}\n- renameColumn: {from: note, to: remark}",
        ),
        Case::new("unique", &orders(""), "- addConstraint: {name: t_code_qty_key, unique: [code, qty]}"),
        Case::new("identity", &orders(""), "- addIdentity: {column: id}"),
        // ALTER refuses (42883: text > integer); DSQL's build job of the new
        // table's index fails without a SQLSTATE, twice: the same refusal.
        Case::new(
            "index_refused",
            &orders("CREATE INDEX t_big_qty ON t (qty) WHERE qty > 10;"),
            "- alterColumn: {column: qty, type: text, using: \"qty::text\"}",
        ),
        // A CHECK added at one type and parsed again at the next, as ALTER
        // prints it: `((amount)::numeric >= ('-5'::integer)::numeric)`.
        Case::new(
            "check_then_type",
            &orders(""),
            "- addConstraint: {name: t_amount_floor, check: \"amount >= -5\"}\n- alterColumn: {column: amount, type: integer}",
        ),
        // ALTER refuses (42804): the default 'n/a' has no assignment cast to
        // integer at the new type, though a later change drops it.
        Case::new(
            "default_at_new_type",
            &orders(""),
            "- alterColumn: {column: note, type: integer, using: \"length(note)\"}\n- alterColumn: {column: note, dropDefault: true}",
        ),
    ];
    for case in &cases {
        check_through_stand_in(case).await;
    }
}

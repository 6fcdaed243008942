//! PostgreSQL's own ALTER TABLE is the reference (issue 32): a table gets
//! a list of changes once by ALTER TABLE and once by the engine with each
//! strategy, and the tables that come out must be the same ([`truth`]):
//! columns, constraints and indexes by name and definition, comments and
//! every row. Where ALTER TABLE refuses, the engine exits 2 and the table
//! is as it was. The one deliberate difference: an added identity starts
//! past the highest id, which is checked on its own.
//!
//! [`cases`] holds one case per fixed finding; [`generated`] draws tables
//! and change lists from a seed.

mod cases;
mod dsql;
mod generated;
mod reference;
mod truth;

use identity_migrator::api::changes::{Change, ChangeKind};

use crate::support::{TestDb, connect, db_message, q, run_cli, text};
use truth::{Truth, truth};

/// A table `t` (made by `setup`, run in the case's own schema) and changes to it.
pub struct Case {
    pub name: String,
    pub setup: String,
    pub changes: Vec<Change>,
    /// The column the rows are ordered by when compared.
    pub key: String,
}

impl Case {
    pub fn new(name: &str, setup: &str, changes: &str) -> Self {
        let changes = serde_norway::from_str(changes).unwrap_or_else(|e| panic!("{name}: changes: {e}"));
        Self { name: name.into(), setup: setup.into(), changes, key: "id".into() }
    }
}

/// How the engine is asked to make the changes.
#[derive(Clone, Copy, Debug)]
pub enum Strategy {
    Copy,
    Auto,
}

pub(super) async fn make_table(client: &tokio_postgres::Client, schema: &str, setup: &str) {
    let sql = format!("CREATE SCHEMA {s}; SET search_path = {s}; {setup}; RESET search_path", s = q(schema));
    client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("setup in {schema}: {}\n{setup}", db_message(&e)));
}

/// Runs the engine on `schema.t`: its exit code and what it said.
fn run_engine(url: &str, schema: &str, changes: &[Change], strategy: Strategy) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    let manifest = format!(
        "apiVersion: migrations.dsql.dev/v1alpha1\nkind: TableMigration\nmetadata: {{name: oracle}}\nspec:\n  \
         target: {{postgres: {{urlSecretRef: {{name: db, key: url}}}}}}\n  schema: {}\n  table: t\n  \
         strategy: {strategy:?}\n  changes: {}\n",
        serde_json::to_string(schema).unwrap(),
        serde_json::to_string(changes).unwrap()
    );
    std::fs::write(&path, manifest).unwrap();
    let out = run_cli(&["run", "-f", path.to_str().unwrap(), "--database-url", url], &[]);
    (out.status.code(), text(&out))
}

/// The case in database `db` (schemas named after `tag`): every difference
/// of the engine's table from ALTER TABLE's, for each strategy.
pub async fn differences(db: &TestDb, tag: &str, case: &Case) -> Vec<String> {
    // A connection of its own: cases run side by side.
    let client = &connect(&db.url).await;
    let reference_schema = format!("{tag}_alter");
    make_table(client, &reference_schema, &case.setup).await;
    let refused = reference::alter_table(client, &reference_schema, "t", &case.changes).await.err();
    let expected = truth(client, &reference_schema, "t", &case.key).await;
    let mut found = Vec::new();
    for strategy in [Strategy::Copy, Strategy::Auto] {
        let schema = format!("{tag}_{strategy:?}").to_lowercase();
        make_table(client, &schema, &case.setup).await;
        let before = truth(client, &schema, "t", &case.key).await;
        let (code, said) = {
            let (url, schema, changes) = (db.url.clone(), schema.clone(), case.changes.clone());
            tokio::task::spawn_blocking(move || run_engine(&url, &schema, &changes, strategy)).await.unwrap()
        };
        let said_short = || said.lines().rev().take(6).collect::<Vec<_>>().join(" | ");
        let got = truth(client, &schema, "t", &case.key).await;
        match (&refused, code) {
            (Some(_), Some(2)) => found.extend(differ(strategy, &got, &before, "refused, but changed the table")),
            (Some(why), _) => found.push(format!(
                "{strategy:?}: ALTER TABLE refuses ({why}), the engine exited {code:?}: {}",
                said_short()
            )),
            (None, Some(0)) => {
                found.extend(differ(strategy, &got, &expected, "differs from ALTER TABLE"));
                found.extend(identity_past_every_id(client, &schema, case, strategy).await);
            }
            (None, _) => found.push(format!(
                "{strategy:?}: ALTER TABLE makes the changes, the engine exited {code:?}: {}",
                said_short()
            )),
        }
    }
    found
}

fn differ(strategy: Strategy, got: &Truth, expected: &Truth, what: &str) -> Vec<String> {
    got.differences(expected).into_iter().map(|d| format!("{strategy:?} {what}: {d}")).collect()
}

/// The deliberate difference: an identity the changes add hands out ids
/// above every row's.
async fn identity_past_every_id(
    client: &tokio_postgres::Client,
    schema: &str,
    case: &Case,
    strategy: Strategy,
) -> Vec<String> {
    let Some(column) = case.changes.iter().find_map(|c| match c.kind() {
        Ok(ChangeKind::AddIdentity(i)) => Some(i.column.clone()),
        _ => None,
    }) else {
        return Vec::new();
    };
    let table = format!("{}.t", q(schema));
    let sql = format!(
        "SELECT nextval(pg_get_serial_sequence($1, $2)) > coalesce((SELECT max({c}) FROM {table}), 0)",
        c = q(&column)
    );
    let above: bool = client.query_one(&sql, &[&table, &column]).await.unwrap().get(0);
    if above {
        Vec::new()
    } else {
        vec![format!("{strategy:?}: the added identity hands out an id at or below the highest {column}")]
    }
}

/// Runs one case in a database of its own and fails the test on any difference.
pub async fn check(case: &Case) {
    let db = TestDb::new(&format!("oracle_{}", case.name)).await;
    let found = differences(&db, "c", case).await;
    assert!(found.is_empty(), "{}: the engine's table is not ALTER TABLE's:\n{}", case.name, found.join("\n"));
}

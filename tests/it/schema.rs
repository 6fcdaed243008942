//! SchemaMigration from the command line (issue 33): a team's files applied
//! as they are, on PostgreSQL and through the DSQL stand-in; resumed exactly
//! once after a kill at each kind of step; drift, refusals, two runners,
//! another tool's history and a baseline.

use std::path::{Path, PathBuf};

use crate::support::stand_in::{StandIn, credentials_env};
use crate::support::{TestDb, run_cli, text};

/// A directory of migration files and a SchemaMigration manifest beside it.
pub struct Files {
    pub dir: tempfile::TempDir,
    pub manifest: PathBuf,
}

impl Files {
    /// `files` as (name, text); `target` is the spec's target (YAML flow);
    /// `extra` more spec lines.
    pub fn new(files: &[(&str, &str)], target: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sql")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join("sql").join(name), text).unwrap();
        }
        let manifest = dir.path().join("schema.yaml");
        let yaml = format!(
            "apiVersion: migrations.dsql.dev/v1alpha1\nkind: SchemaMigration\nmetadata: {{name: shop}}\nspec:\n  target: {target}\n  policy: {{approval: Never}}\n{extra}"
        );
        std::fs::write(&manifest, yaml).unwrap();
        Self { dir, manifest }
    }

    /// The example directory of the repository, copied.
    pub fn example(target: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrations");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        files.sort();
        let borrowed: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Self::new(&borrowed, target, "")
    }

    pub fn sql_dir(&self) -> String {
        self.dir.path().join("sql").to_string_lossy().to_string()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("sql").join(name), text).unwrap();
    }

    /// `run` (or `plan`) of the manifest with the files, on `url`.
    pub fn on_postgres(&self, command: &str, url: &str, env: &[(&str, &str)]) -> std::process::Output {
        let (manifest, dir) = (self.manifest.to_str().unwrap(), self.sql_dir());
        run_cli(&[command, "-f", manifest, "--dir", &dir, "--database-url", url], env)
    }

    /// `run` through the stand-in.
    pub fn through(&self, s: &StandIn, env: &[(&str, &str)]) -> std::process::Output {
        let (manifest, dir) = (self.manifest.to_str().unwrap(), self.sql_dir());
        let mut all = credentials_env();
        all.extend_from_slice(env);
        run_cli(&["run", "-f", manifest, "--dir", &dir, "--ca-file", s.ca.path().to_str().unwrap()], &all)
    }
}

pub const PG_TARGET: &str = "{postgres: {urlSecretRef: {name: db, key: url}}}";

/// Versions the history holds as finished, in order.
pub async fn finished(db: &TestDb) -> Vec<String> {
    let rows = db
        .client
        .query(
            "SELECT version FROM public.schema_history WHERE finished_at IS NOT NULL ORDER BY started_at, version",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn column_type(db: &TestDb, table: &str, column: &str) -> (String, bool) {
    let row = db
        .client
        .query_one(
            "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attname = $2",
            &[&table, &column],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// What the example leaves: the table ALTER TABLE would give, every row.
pub async fn assert_example_applied(db: &TestDb) {
    assert_eq!(finished(db).await, ["1", "2", "3", "4", "5", "6", "7"]);
    assert_eq!(column_type(db, "orders", "amount").await, ("numeric(12,2)".to_string(), true));
    assert_eq!(column_type(db, "orders", "status").await, ("text".to_string(), true));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM orders WHERE status = 'new'").await, 20_000);
    assert_eq!(db.scalar_i64("SELECT (sum(amount) * 100)::bigint FROM orders").await, 99_990_000);
    let fk =
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'f' AND convalidated";
    assert_eq!(db.scalar_i64(fk).await, 1, "the foreign key is on the new table, validated");
    let index = "SELECT count(*) FROM pg_index WHERE indrelid = 'orders'::regclass AND indisvalid AND NOT indisprimary";
    assert_eq!(db.scalar_i64(index).await, 1, "the index is on the new table, valid");
    assert!(!db.exists("public", "orders_old").await, "no old table is left, as ALTER TABLE leaves none");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_applies_on_postgresql_and_a_second_run_has_nothing_to_do() {
    let db = TestDb::new("schema_example").await;
    let files = Files::example(PG_TARGET);
    let out = files.on_postgres("run", &db.url, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("applied 7 migration(s)"), "{}", text(&out));
    assert_example_applied(&db).await;
    let again = files.on_postgres("run", &db.url, &[]);
    assert!(again.status.success() && text(&again).contains("up to date at version 7"), "{}", text(&again));
}

#[tokio::test(flavor = "multi_thread")]
async fn dsql_the_example_applies_through_the_stand_in_with_nothing_refused() {
    let s = StandIn::start("schema_example_sim", |_| {}).await;
    let files = Files::example(&s.target());
    let out = files.through(&s, &[]);
    assert!(out.status.success(), "{}", text(&out));
    // In the strict pass the engine's probes of catalogs AWS does not list
    // are refused, as designed (read so that an error marks a fact unknown).
    assert_eq!(s.refused_documented(), Vec::<String>::new(), "the stand-in refused statements");
    assert_example_applied(&s.db).await;
}

#[test]
fn plan_reads_a_directory_of_two_hundred_files_without_a_database() {
    // Its speed is measured by `./scripts/bench --schema-plan`; here, that it runs.
    let files: Vec<(String, String)> = (1..=200)
        .map(|n| {
            let sql = format!(
                "CREATE TABLE t{n} (id bigint PRIMARY KEY, amount integer NOT NULL);\n\
                 CREATE INDEX t{n}_amount ON t{n} (amount);\n\
                 ALTER TABLE t{n} ALTER COLUMN amount TYPE numeric(12,2), ALTER COLUMN amount SET DEFAULT 0;\n"
            );
            (format!("V{n}__step.sql"), sql)
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let target = "{dsql: {endpoint: abcdefghijklmnop.dsql.us-east-1.on.aws, user: admin}}";
    let f = Files::new(&borrowed, target, "");
    let out = run_cli(&["plan", "-f", f.manifest.to_str().unwrap(), "--dir", &f.sql_dir()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.matches("-- version ").count(), 200);
    assert_eq!(printed.matches(" index at ").count(), 200);
    assert_eq!(printed.matches(" rebuild at ").count(), 200, "the type change and its default fold into one rebuild");
    assert!(printed.contains("-- version 200 (V200__step.sql)"));
}

//! Test fixtures: a fresh PostgreSQL database per test, the seed article's
//! `post_tag` table, the DSQL-strict harness, table fingerprints, and the
//! `identity-migrator` binary with manifests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, NoTls};

/// Where the tests find PostgreSQL (`scripts/test` makes sure it answers).
pub fn admin_url() -> String {
    std::env::var("IDMIG_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A database of its own, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl TestDb {
    pub async fn new(test: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!("idmig_{}_{}_{}", test, std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let admin = connect(&admin_url()).await;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let url = match admin_url().rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("admin URL needs a database"),
        };
        let client = connect(&url).await;
        Self { name, url, client }
    }

    /// Installs the DSQL-strict harness: tables created from now on are watched.
    pub async fn install_dsql_harness(&self, occ_every: i32) {
        let sql =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/dsql_strict.sql"))
                .unwrap();
        self.client.batch_execute(&sql).await.unwrap();
        self.inject_conflicts_every(occ_every).await;
    }

    /// Sets how often the harness injects a conflict (0: never). A test's
    /// own writes, which do not retry, run with it at 0: which commit an
    /// injection hits depends on how many commits the engine made before.
    pub async fn inject_conflicts_every(&self, occ_every: i32) {
        self.client.execute("UPDATE dsql_harness.settings SET occ_every = $1", &[&occ_every]).await.unwrap();
    }

    pub async fn harness_counter(&self, sequence: &str) -> i64 {
        let row = self
            .client
            .query_one(
                &format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM dsql_harness.{sequence}"),
                &[],
            )
            .await
            .unwrap();
        row.get(0)
    }

    pub async fn exec(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e)));
    }

    /// Makes the rename of `shadow` into its table's name fail (an event
    /// trigger that raises), until `DROP EVENT TRIGGER refuse_rename_in`: a
    /// cut-over that fails inside its window.
    pub async fn refuse_rename_in(&self, shadow: &str) {
        let pattern = format!("%\"{shadow}\" RENAME TO%");
        self.exec(&format!(
            "CREATE FUNCTION refuse_rename_in() RETURNS event_trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF current_query() LIKE '{pattern}' THEN \
             RAISE EXCEPTION 'rename refused by the test'; END IF; END $$; \
             CREATE EVENT TRIGGER refuse_rename_in ON ddl_command_end EXECUTE FUNCTION refuse_rename_in();"
        ))
        .await;
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        self.client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e))).get(0)
    }

    pub async fn scalar_bool(&self, sql: &str) -> bool {
        self.client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e))).get(0)
    }

    pub async fn scalar_text(&self, sql: &str) -> String {
        self.client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {}", db_message(&e))).get(0)
    }

    pub async fn exists(&self, schema: &str, table: &str) -> bool {
        self.client
            .query_opt(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &table],
            )
            .await
            .unwrap()
            .is_some()
    }

    /// Every row of `table` (a quoted, qualified name), in id order, as one
    /// hash plus the count: equal fingerprints mean the same rows and values.
    pub async fn fingerprint(&self, table: &str, id: &str) -> (i64, String) {
        let sql =
            format!("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t.{id})), '') FROM {table} t");
        let row = self.client.query_one(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        (row.get(0), row.get(1))
    }

    /// The relations of a schema with their kinds: compared before and after
    /// a refused migration to prove nothing was created, renamed or dropped.
    pub async fn catalog_snapshot(&self) -> Vec<String> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Identity facts of a column: (attidentity, sequence cache, data type).
    pub async fn identity_of(&self, schema: &str, table: &str, column: &str) -> (String, i64, String) {
        let row = self
            .client
            .query_one(
                "SELECT a.attidentity::text, s.seqcache, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_depend d ON d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype = 'i' \
                 JOIN pg_sequence s ON s.seqrelid = d.objid \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3",
                &[&schema, &table, &column],
            )
            .await
            .unwrap_or_else(|e| panic!("identity of {schema}.{table}.{column}: {e}"));
        (row.get(0), row.get(1), row.get(2))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop needs its own runtime: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

/// The seed article's table: `id BIGINT PRIMARY KEY, post_id, tag_id,
/// created_at`, an index on `post_id`, ids with gaps and one large jump.
pub struct PostTag {
    pub schema: String,
    pub table: String,
    pub id: String,
    pub id_type: String,
    pub rows: i64,
    /// Added to the ids of the last tenth of the rows: a large gap.
    pub jump: i64,
}

impl PostTag {
    pub fn rows(rows: i64) -> Self {
        Self {
            schema: "public".into(),
            table: "post_tag".into(),
            id: "id".into(),
            id_type: "BIGINT".into(),
            rows,
            jump: 50_000,
        }
    }

    pub fn named(mut self, schema: &str, table: &str, id: &str) -> Self {
        (self.schema, self.table, self.id) = (schema.into(), table.into(), id.into());
        self
    }

    pub fn id_type(mut self, ty: &str) -> Self {
        self.id_type = ty.into();
        self
    }

    pub fn jump(mut self, jump: i64) -> Self {
        self.jump = jump;
        self
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", q(&self.schema), q(&self.table))
    }

    pub async fn create(&self, db: &TestDb) {
        let (t, id, n) = (self.qualified(), q(&self.id), self.rows);
        let index = q(&format!("{}_post_idx", self.table.chars().take(40).collect::<String>()));
        db.exec(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE {t} ({id} {ty} NOT NULL PRIMARY KEY, post_id VARCHAR NOT NULL, tag_id VARCHAR NOT NULL,
                               created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP);
             INSERT INTO {t} ({id}, post_id, tag_id, created_at)
             SELECT g * 13 / 10 + CASE WHEN g > {n} * 9 / 10 THEN {jump} ELSE 0 END, 'post-' || (g % 997),
                    (ARRAY['aws','dsql','rust','kubernetes'])[1 + g % 4], timestamp '2024-01-01' + g * interval '17 seconds'
             FROM generate_series(1, {n}) g;
             CREATE INDEX {index} ON {t} (post_id);
             ANALYZE {t};",
            schema = q(&self.schema),
            ty = self.id_type,
            jump = self.jump,
        ))
        .await;
    }
}

/// A database error with its SQLSTATE and message (`Display` says only "db error").
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// Quotes an identifier (the tests' own, independent of the engine's).
pub fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A manifest for `run` and `plan`, written to a temporary directory.
pub struct Manifest {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Manifest {
    /// `spec_extra` is YAML appended under `spec:` (two-space indented lines).
    /// The tests of the copy name no strategy: they get `strategy: Copy`
    /// (PostgreSQL would otherwise add the identity in place).
    pub fn new(schema: &str, table: &str, id: &str, spec_extra: &str) -> Self {
        Self::with_target("{postgres: {urlSecretRef: {name: db, key: url}}}", schema, table, id, spec_extra)
    }

    /// A manifest whose `spec.target` is `target` (YAML flow style).
    pub fn with_target(target: &str, schema: &str, table: &str, id: &str, spec_extra: &str) -> Self {
        let strategy = if spec_extra.contains("strategy:") { "" } else { "  strategy: Copy\n" };
        let spec_extra = &format!("{strategy}{spec_extra}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("migration.yaml");
        let yaml = format!(
            "apiVersion: migrations.dsql.dev/v1alpha1\nkind: IdentityMigration\nmetadata:\n  name: test\nspec:\n  \
             target: {target}\n  schema: {}\n  table: {}\n  idColumn: {}\n{spec_extra}",
            json(schema),
            json(table),
            json(id)
        );
        std::fs::write(&path, yaml).unwrap();
        Self { dir, path }
    }

    pub fn for_table(t: &PostTag, spec_extra: &str) -> Self {
        Self::new(&t.schema, &t.table, &t.id, spec_extra)
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("migration.yaml.state.json")
    }

    /// The saved status as JSON.
    pub fn status(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_path()).expect("state file");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["status"].clone()
    }
}

/// A YAML-safe scalar (JSON strings are valid YAML).
fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The operator's binary: the one cargo built, or `IDMIG_TEST_BINARY` (a
/// copy, for a long run that must not see later builds).
pub fn binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var("IDMIG_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_identity-migrator").to_string())
    })
}

/// Runs the binary with `args` and extra environment.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).env("NO_PROGRESS", "1").env_remove("DATABASE_URL").env_remove("IDENTITY_MIGRATOR_CRASH_AT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run identity-migrator")
}

pub fn run_migration(manifest: &Manifest, url: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let path = manifest.path.to_str().unwrap();
    let mut args = vec!["run", "-f", path, "--database-url", url];
    args.extend_from_slice(extra);
    run_cli(&args, env)
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub mod fake_api;
pub mod operator;
pub mod processes;
pub mod stand_in;
pub mod writer;

/// Polls the `run` state file at `path` until `check` holds of its status
/// (two minutes at most).
pub async fn until_state(path: &Path, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["status"].clone());
        if status.as_ref().is_some_and(&check) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {status:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

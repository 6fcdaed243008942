//! A SchemaMigration killed at each kind of step resumes exactly once: a DDL
//! whose reply was lost, a backfill batch (a non-idempotent `n = n + 1` ends
//! exact), a job wait, and a rebuild. Then what stops a run before it
//! changes anything: drift, refusals, another runner; and what a first run
//! finds: another tool's history, a baseline.

use std::os::unix::process::ExitStatusExt;

use crate::schema::{Files, PG_TARGET, finished};
use crate::support::stand_in::StandIn;
use crate::support::{TestDb, text};

fn killed_at(out: &std::process::Output, point: &str) {
    assert_eq!(out.status.signal(), Some(9), "not killed at {point}: {}", text(out));
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}", text(out));
}

const COUNTERS: &str = "CREATE TABLE counters (id bigint PRIMARY KEY, n integer NOT NULL);\n";
const SEED: &str = "INSERT INTO counters SELECT g, 0 FROM generate_series(1, 2500) g;\n\
                    INSERT INTO counters SELECT g, 0 FROM generate_series(2501, 5000) g;\n\
                    INSERT INTO counters SELECT g, 0 FROM generate_series(5001, 7500) g;\n\
                    INSERT INTO counters SELECT g, 0 FROM generate_series(7501, 10000) g;\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_ddl_whose_reply_was_lost_is_not_sent_twice() {
    let db = TestDb::new("schema_ddl_lost").await;
    let files = Files::new(
        &[
            ("V1__tables.sql", COUNTERS),
            (
                "V2__note.sql",
                "ALTER TABLE counters ADD COLUMN note text;\nCREATE INDEX counters_note ON counters (note);\n",
            ),
        ],
        PG_TARGET,
        "",
    );
    // The CREATE TABLE commits, then the process dies before its progress is recorded.
    let crash = [("IDENTITY_MIGRATOR_CRASH_AT", "schema-ddl-committed:1")];
    killed_at(&files.on_postgres("run", &db.url, &crash), "the CREATE TABLE");
    assert!(db.exists("public", "counters").await);
    // The ADD COLUMN commits, then the process dies: sent again it would fail.
    let crash = [("IDENTITY_MIGRATOR_CRASH_AT", "schema-ddl-committed:1")];
    killed_at(&files.on_postgres("run", &db.url, &crash), "the ADD COLUMN");
    let out = files.on_postgres("run", &db.url, &[]);
    ok(&out);
    assert_eq!(finished(&db).await, ["1", "2"]);
    let columns = "SELECT count(*) FROM pg_attribute WHERE attrelid = 'counters'::regclass AND attname = 'note'";
    assert_eq!(db.scalar_i64(columns).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_killed_between_batches_applies_each_batch_exactly_once() {
    let db = TestDb::new("schema_backfill").await;
    let files = Files::new(
        &[("V1__tables.sql", COUNTERS), ("V2__seed.sql", SEED), ("V3__bump.sql", "UPDATE counters SET n = n + 1;\n")],
        PG_TARGET,
        "",
    );
    killed_at(
        &files.on_postgres("run", &db.url, &[("IDENTITY_MIGRATOR_CRASH_AT", "schema-backfill-batch:3")]),
        "the third batch",
    );
    let partly = db.scalar_i64("SELECT count(*) FROM counters WHERE n = 1").await;
    assert!(partly > 0 && partly < 10_000, "three batches of the update landed: {partly}");
    killed_at(
        &files.on_postgres("run", &db.url, &[("IDENTITY_MIGRATOR_CRASH_AT", "schema-backfill-batch:2")]),
        "two more batches",
    );
    ok(&files.on_postgres("run", &db.url, &[]));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM counters WHERE n = 1").await, 10_000, "every row bumped once");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM counters WHERE n <> 1").await, 0);
    assert_eq!(finished(&db).await, ["1", "2", "3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dsql_a_job_wait_cut_short_waits_for_the_same_job_on_resume() {
    let s = StandIn::start("schema_job", |_| {}).await;
    let files = Files::new(
        &[
            ("V1__tables.sql", COUNTERS),
            ("V2__seed.sql", SEED),
            ("V3__index.sql", "CREATE INDEX counters_n ON counters (n);\n"),
        ],
        &s.target(),
        "",
    );
    killed_at(&files.through(&s, &[("IDENTITY_MIGRATOR_CRASH_AT", "schema-job-recorded:1")]), "the job's wait");
    let out = files.through(&s, &[]);
    ok(&out);
    assert_eq!(finished(&s.db).await, ["1", "2", "3"]);
    let valid = "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE c.relname = 'counters_n' AND i.indisvalid";
    assert_eq!(s.db.scalar_i64(valid).await, 1, "one valid index, built once");
    assert!(s.refused_documented().is_empty(), "{:?}", s.refused_documented());
}

#[tokio::test(flavor = "multi_thread")]
async fn dsql_an_insert_select_of_more_rows_than_a_transaction_takes_runs_in_batches_each_once() {
    let s = StandIn::start("schema_insert_select", |_| {}).await;
    let tables = "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(12,2) NOT NULL);\n\
                  CREATE TABLE archive (id bigint, total numeric(12,2));\n";
    let seed = "INSERT INTO orders SELECT g, g / 100.0 FROM generate_series(1, 2500) g;\n\
                INSERT INTO orders SELECT g, g / 100.0 FROM generate_series(2501, 5000) g;\n\
                INSERT INTO orders SELECT g, g / 100.0 FROM generate_series(5001, 7500) g;\n";
    // 5,000 rows in one statement: more than one DSQL transaction may write.
    let copy = "INSERT INTO archive (id, total) SELECT o.id, o.total * 2 FROM orders o WHERE o.id % 3 <> 0;\n";
    let files =
        Files::new(&[("V1__tables.sql", tables), ("V2__seed.sql", seed), ("V3__archive.sql", copy)], &s.target(), "");
    killed_at(
        &files.through(&s, &[("IDENTITY_MIGRATOR_CRASH_AT", "schema-backfill-batch:2")]),
        "the second batch of the INSERT ... SELECT",
    );
    let partly = s.db.scalar_i64("SELECT count(*) FROM archive").await;
    assert!(partly > 0 && partly < 5_000, "two batches landed: {partly}");
    ok(&files.through(&s, &[]));
    assert_eq!(finished(&s.db).await, ["1", "2", "3"]);
    assert_eq!(s.db.scalar_i64("SELECT count(*) FROM archive").await, 5_000, "every row once");
    assert_eq!(s.db.scalar_i64("SELECT count(DISTINCT id) FROM archive").await, 5_000);
    let wrong = "SELECT count(*) FROM archive a JOIN orders o USING (id) WHERE a.total <> o.total * 2 OR o.id % 3 = 0";
    assert_eq!(s.db.scalar_i64(wrong).await, 0);
    assert!(s.refused_documented().is_empty(), "{:?}", s.refused_documented());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_killed_mid_copy_resumes_from_its_status_in_the_history() {
    let db = TestDb::new("schema_rebuild_kill").await;
    let files = Files::new(
        &[
            ("V1__tables.sql", COUNTERS),
            ("V2__seed.sql", SEED),
            ("V3__wider.sql", "ALTER TABLE counters ALTER COLUMN n TYPE bigint USING n + 5;\n"),
        ],
        PG_TARGET,
        "",
    );
    killed_at(
        &files.on_postgres("run", &db.url, &[("IDENTITY_MIGRATOR_CRASH_AT", "copy-batch:1")]),
        "the rebuild's copy",
    );
    let in_flight = db.scalar_text("SELECT in_flight FROM public.schema_history WHERE version = '3'").await;
    assert!(in_flight.contains("\"rebuild\""), "the rebuild's status is in the history: {in_flight}");
    ok(&files.on_postgres("run", &db.url, &[]));
    assert_eq!(finished(&db).await, ["1", "2", "3"]);
    assert_eq!(db.scalar_i64("SELECT count(*) FROM counters WHERE n = 5").await, 10_000);
    let kind = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'counters'::regclass AND attname = 'n'";
    assert_eq!(db.scalar_text(kind).await, "bigint");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_applied_file_stops_everything_as_drifted() {
    let db = TestDb::new("schema_drift").await;
    let files = Files::new(&[("V1__tables.sql", COUNTERS)], PG_TARGET, "");
    ok(&files.on_postgres("run", &db.url, &[]));
    files.write("V1__tables.sql", &format!("{COUNTERS}-- edited after it was applied\n"));
    files.write("V2__more.sql", "CREATE TABLE more (id bigint PRIMARY KEY);\n");
    let out = files.on_postgres("run", &db.url, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("version 1 (V1__tables.sql) was applied with another checksum"), "{}", text(&out));
    assert!(text(&out).contains("Drifted"));
    assert!(!db.exists("public", "more").await, "nothing after a drift runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn dsql_a_trigger_or_serial_is_refused_at_plan_time_with_file_and_line_and_nothing_runs() {
    let s = StandIn::start("schema_refused", |_| {}).await;
    let trigger = "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n\n\
                   CREATE TRIGGER counters_touch BEFORE UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION touch();\n";
    let files = Files::new(&[("V1__tables.sql", COUNTERS), ("V2__trigger.sql", trigger)], &s.target(), "");
    let out = files.through(&s, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("V2__trigger.sql:3: triggers are not supported on DSQL"), "{}", text(&out));
    assert!(!s.db.exists("public", "counters").await, "not even version 1 ran");
    assert!(!s.db.exists("public", "schema_history").await);
    let serial = Files::new(&[("V1__tables.sql", "CREATE TABLE t (id serial PRIMARY KEY);\n")], &s.target(), "");
    let out = serial.through(&s, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("V1__tables.sql:1: SERIAL"), "{}", text(&out));
    let plan = crate::support::run_cli(
        &["plan", "-f", serial.manifest.to_str().unwrap(), "--dir", &serial.sql_dir()],
        &crate::support::stand_in::credentials_env(),
    );
    assert_eq!(plan.status.code(), Some(2), "plan refuses it too: {}", text(&plan));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runners_at_once_apply_each_migration_once_and_the_other_waits() {
    use identity_migrator::engine::plan::shape::TableName;
    use identity_migrator::engine::steps::claim::advisory_key;
    let db = TestDb::new("schema_two_runners").await;
    let files = Files::new(
        &[("V1__tables.sql", COUNTERS), ("V2__seed.sql", SEED), ("V3__bump.sql", "UPDATE counters SET n = n + 1;\n")],
        PG_TARGET,
        "",
    );
    // The test holds the runners' claim first, so that both meet it.
    let key = advisory_key(&TableName::new("public", "schema_history"));
    db.client.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
    // Each runner's stderr is read as it comes: the condition is what it says.
    let (said_tx, said) = std::sync::mpsc::channel::<()>();
    let run = |files: &Files| {
        let (manifest, dir, url, said) = (files.manifest.clone(), files.sql_dir(), db.url.clone(), said_tx.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut child = std::process::Command::new(crate::support::binary())
                .args(["run", "-f", manifest.to_str().unwrap(), "--dir", &dir, "--database-url", &url])
                .env("NO_PROGRESS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stderr = String::new();
            for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
                let line = line.unwrap();
                if line.contains("waiting for it") {
                    let _ = said.send(());
                }
                stderr.push_str(&line);
                stderr.push('\n');
            }
            let mut out = child.wait_with_output().unwrap();
            out.stderr = stderr.into_bytes();
            out
        })
    };
    let (a, b) = (run(&files), run(&files));
    for _ in 0..2 {
        said.recv_timeout(std::time::Duration::from_secs(60)).expect("both runners meet the claim and say they wait");
    }
    db.client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.unwrap();
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    ok(&a);
    ok(&b);
    for out in [&a, &b] {
        assert!(text(out).contains("applies migrations to this database; waiting for it"), "{}", text(out));
    }
    let applied = [&a, &b].iter().filter(|o| text(o).contains("applied 3 migration(s)")).count();
    let idle = [&a, &b].iter().filter(|o| text(o).contains("up to date at version 3")).count();
    assert_eq!((applied, idle), (1, 1), "one applied everything, the other found it done:\n{}\n{}", text(&a), text(&b));
    assert_eq!(db.scalar_i64("SELECT count(*) FROM counters WHERE n = 1").await, 10_000, "the bump ran once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flyway_history_is_adopted_and_a_baseline_is_recorded_without_running() {
    let db = TestDb::new("schema_adopt").await;
    db.exec(COUNTERS).await;
    db.exec(
        "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar(50), description varchar(200), \
         type varchar(20), script varchar(1000), checksum int, installed_by varchar(100), installed_on timestamp DEFAULT now(), \
         execution_time int, success boolean)",
    )
    .await;
    db.exec("INSERT INTO flyway_schema_history VALUES (1, '1', 'tables', 'SQL', 'V1__tables.sql', 123, 'ci', now(), 5, true)")
        .await;
    let files = Files::new(
        &[("V1__tables.sql", COUNTERS), ("V2__more.sql", "CREATE TABLE more (id bigint PRIMARY KEY);\n")],
        PG_TARGET,
        "",
    );
    ok(&files.on_postgres("run", &db.url, &[]));
    assert_eq!(db.scalar_text("SELECT kind FROM public.schema_history WHERE version = '1'").await, "adopted");
    assert_eq!(db.scalar_text("SELECT kind FROM public.schema_history WHERE version = '2'").await, "applied");
    assert_eq!(db.scalar_i64("SELECT count(*) FROM flyway_schema_history").await, 1, "read, never written");

    let db = TestDb::new("schema_baseline").await;
    db.exec(COUNTERS).await;
    db.exec("INSERT INTO counters VALUES (1, 41)").await;
    let files = Files::new(
        &[("V1__tables.sql", COUNTERS), ("V2__bump.sql", "UPDATE counters SET n = n + 1;\n")],
        PG_TARGET,
        "  baseline: {version: \"1\"}\n",
    );
    ok(&files.on_postgres("run", &db.url, &[]));
    assert_eq!(db.scalar_text("SELECT kind FROM public.schema_history WHERE version = '1'").await, "baseline");
    assert_eq!(
        db.scalar_i64("SELECT n::bigint FROM counters WHERE id = 1").await,
        42,
        "version 2 ran on the existing data"
    );
}

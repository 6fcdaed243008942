//! DSQL's asynchronous jobs: index builds (`CREATE [UNIQUE] INDEX ASYNC`) and
//! constraint validations (`ALTER TABLE ASYNC ... VALIDATE CONSTRAINT`, run
//! here as the same statement without ASYNC). An index build answers a
//! job id and, once its transaction commits, the index is built in the
//! background: the index shows in the catalog at once, not valid, and becomes
//! valid when the job completes. `sys.jobs` shows the job's status;
//! `DROP INDEX` of an index being built cancels the build.
//!
//! Sources: "Asynchronous indexes in Aurora DSQL"
//! (https://docs.aws.amazon.com/aurora-dsql/latest/userguide/working-with-create-index-async.html),
//! "sys.jobs" and "sys.wait_for_job" in the same guide.
//!
//! Here a build is PostgreSQL's `CREATE INDEX CONCURRENTLY`, held back after
//! its first phase (the catalog entry) by a session that holds a lock its
//! later phase waits for, until the configured delay passes or a test
//! releases it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

/// When background builds go ahead.
#[derive(Clone, Debug)]
pub enum BuildPace {
    /// Each build finishes about this long after its commit.
    After(Duration),
    /// Builds wait until [`Jobs::release`] (tests that act during a build).
    Held,
}

/// One submitted build.
#[derive(Clone, Debug)]
pub struct Build {
    pub job_id: String,
    pub index: String,
    pub table: String,
    /// The table as the statement named it (perhaps schema-qualified): tables
    /// of one name in two schemas are two tables.
    pub table_as_named: String,
    /// The PostgreSQL statement that builds it.
    pub sql: String,
}

pub struct Jobs {
    backend: tokio_postgres::Config,
    pace: BuildPace,
    released: watch::Sender<bool>,
    /// Running builds: index name to the backend pid of the build.
    running: Mutex<HashMap<String, i32>>,
}

/// DSQL job ids: 26 characters of lower-case base32.
pub fn new_job_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    (0..26).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Jobs {
    pub fn new(backend: tokio_postgres::Config, pace: BuildPace) -> Arc<Self> {
        let (released, _) = watch::channel(false);
        Arc::new(Self { backend, pace, released, running: Mutex::new(HashMap::new()) })
    }

    /// Lets held builds finish (and every later one).
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// Starts the build of a committed job. Returns once the index is in the
    /// catalog (or the build has already failed), so that the client's
    /// COMMIT is answered only when the catalog shows the index.
    pub async fn start(self: &Arc<Self>, build: Build, on_done: impl FnOnce(&str) + Send + 'static) {
        let (shown_tx, shown_rx) = tokio::sync::oneshot::channel::<()>();
        let jobs = self.clone();
        tokio::spawn(async move {
            let outcome = jobs.run(&build, shown_tx).await;
            let (status, details) = match outcome {
                Ok(()) => ("completed", None),
                Err(e) if e.contains("canceling statement") => ("cancelled", Some(e)),
                Err(e) => ("failed", Some(e)),
            };
            if let Ok(c) = connect(&jobs.backend).await {
                let _ = c
                    .execute(
                        "UPDATE sys.jobs SET status = $2, details = $3, update_time = now() WHERE job_id = $1",
                        &[&build.job_id, &status, &details],
                    )
                    .await;
            }
            // Only now: `cancel` returns (and the DROP INDEX is answered)
            // once sys.jobs says how the build ended.
            jobs.running.lock().expect("jobs lock").remove(&build.index);
            tracing::info!(job_id = %build.job_id, index = %build.index, status, ?details, "index build ended");
            on_done(&build.table);
        });
        let _ = shown_rx.await;
    }

    async fn run(&self, build: &Build, shown: tokio::sync::oneshot::Sender<()>) -> Result<(), String> {
        let err = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        let holder = connect(&self.backend).await.map_err(err)?;
        let builder = connect(&self.backend).await.map_err(err)?;
        let watcher = connect(&self.backend).await.map_err(err)?;
        // The holder's lock makes the build wait after it has put the index
        // in the catalog (CONCURRENTLY waits for every session holding a
        // lock that conflicts with SHARE on the table).
        holder.batch_execute("BEGIN").await.map_err(err)?;
        let table = self.table_ref(&watcher, build).await?;
        holder.batch_execute(&format!("LOCK TABLE {table} IN ROW EXCLUSIVE MODE")).await.map_err(err)?;
        let pid: i32 = builder.query_one("SELECT pg_backend_pid()", &[]).await.map_err(err)?.get(0);
        self.running.lock().expect("jobs lock").insert(build.index.clone(), pid);
        builder
            .execute(
                "UPDATE sys.jobs SET status = 'processing', update_time = now() WHERE job_id = $1",
                &[&build.job_id],
            )
            .await
            .map_err(err)?;
        let sql = build.sql.clone();
        let mut building = tokio::spawn(async move { builder.batch_execute(&sql).await });
        // Wait until the catalog shows the index (or the build failed early).
        loop {
            let shown_now: bool = watcher
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1 AND relkind = 'i' \
                     AND relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass($2)))",
                    &[&build.index, &table],
                )
                .await
                .map_err(err)?
                .get(0);
            if shown_now || building.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = shown.send(());
        let mut released = self.released.subscribe();
        let pace = async {
            match &self.pace {
                BuildPace::After(delay) => tokio::time::sleep(*delay).await,
                BuildPace::Held => {
                    let _ = released.wait_for(|r| *r).await;
                }
            }
        };
        // A cancelled build ends before its time.
        let early = tokio::select! {
            _ = pace => None,
            done = &mut building => Some(done),
        };
        let _ = holder.batch_execute("COMMIT").await;
        let done = match early {
            Some(done) => done,
            None => building.await,
        };
        match done {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(err(e)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The table as a quoted, qualified name (from the catalog: the statement
    /// may have named it in any form).
    async fn table_ref(&self, client: &Client, build: &Build) -> Result<String, String> {
        let row = client
            .query_opt(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND (c.oid = to_regclass($2) OR (to_regclass($2) IS NULL AND c.relname = $1)) \
                 ORDER BY n.nspname = 'public' DESC LIMIT 1",
                &[&build.table, &build.table_as_named],
            )
            .await
            .map_err(|e| e.to_string())?;
        row.map(|r| r.get(0)).ok_or_else(|| format!("table {} not found", build.table))
    }

    /// DSQL cancels a build whose index is dropped: cancels it and waits for it to end.
    pub async fn cancel(&self, index: &str) {
        let pid = self.running.lock().expect("jobs lock").get(index).copied();
        let Some(pid) = pid else { return };
        if let Ok(c) = connect(&self.backend).await {
            let _ = c.execute("SELECT pg_cancel_backend($1)", &[&pid]).await;
        }
        for _ in 0..2000 {
            if !self.running.lock().expect("jobs lock").contains_key(index) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn is_building(&self, index: &str) -> bool {
        self.running.lock().expect("jobs lock").contains_key(index)
    }
}

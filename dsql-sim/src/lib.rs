//! `dsql-sim`: an Aurora DSQL stand-in for tests. It listens for PostgreSQL
//! clients, speaks the wire protocol in front of a local PostgreSQL database,
//! and behaves as DSQL does where the engine depends on it: TLS only, IAM
//! token authentication, asynchronous index builds with `sys.jobs`, DSQL's
//! refusals, its per-transaction and per-connection limits, optimistic
//! concurrency failures and `server_version` 16. What it does not model is
//! listed in the README ("Against the DSQL stand-in").
//!
//! Test support only: never built into the operator's image.

mod connect;
pub mod jobs;
mod rules;
mod session;
pub mod sql;
pub mod tls;
pub mod token;
pub mod wire;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

pub use jobs::BuildPace;
pub use token::Credentials;

/// DSQL's limits, each of which a test may scale down. Source: "Cluster quotas
/// and database limits in Amazon Aurora DSQL"
/// (https://docs.aws.amazon.com/aurora-dsql/latest/userguide/CHAP_quotas.html).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Rows changed per transaction, index rows counted (54000).
    pub rows_per_transaction: i64,
    /// Bytes changed per transaction (54000), estimated from row widths.
    pub bytes_per_transaction: i64,
    /// A transaction's age (54000 on its next statement or commit).
    pub transaction_age: Duration,
    /// A connection's lifetime: it is closed at its first idle moment after.
    pub connection_lifetime: Duration,
    /// New connections per second, and the burst allowed (53400).
    pub connections_per_second: f64,
    pub connection_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rows_per_transaction: 3000,
            bytes_per_transaction: 10 * 1024 * 1024,
            transaction_age: Duration::from_secs(300),
            connection_lifetime: Duration::from_secs(3600),
            connections_per_second: 100.0,
            connection_burst: 1000.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The backend: a PostgreSQL URL with trust (or password-in-URL) access as a superuser.
    pub backend: String,
    /// The endpoint's host name: what tokens must be signed for and the certificate names.
    pub host: String,
    pub region: String,
    pub credentials: Vec<Credentials>,
    pub limits: Limits,
    /// Fraction (0 to 1) of committing write transactions failed with OC000.
    pub conflict_fraction: f64,
    /// Refuse `ALTER TABLE ... ADD GENERATED ... AS IDENTITY`, as the seed saw in February 2026.
    pub refuse_add_identity: bool,
    /// Added to every round trip, as a network would: a group's answer
    /// starts no earlier than this after its last message arrived, plus up
    /// to `latency_jitter`. Groups a client pipelines overlap.
    pub latency: Duration,
    pub latency_jitter: Duration,
    /// Refuse what AWS's pages do not list for these statements: COMMENT ON,
    /// column grants, WITH GRANT OPTION, and reads of catalogs DSQL may lack.
    pub strict_undocumented: bool,
    pub builds: BuildPace,
    /// How long one `CALL sys.wait_for_job` waits before it answers false.
    pub wait_for_job: Duration,
    pub server_version: String,
    /// Seconds added to the clock tokens are checked against.
    pub clock_offset_secs: i64,
    /// Tokens older than this are refused whatever their `X-Amz-Expires`: a
    /// token lifetime shorter than the run, to show tokens are never reused.
    pub token_max_age: Option<Duration>,
    /// A file every executed statement kind is appended to (one per line).
    pub ledger: Option<PathBuf>,
}

impl Config {
    /// Defaults for `backend`, listening on a free local port, for host `localhost`.
    pub fn new(backend: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("address"),
            backend: backend.into(),
            host: "localhost".into(),
            region: "us-east-1".into(),
            credentials: vec![credentials],
            limits: Limits::default(),
            conflict_fraction: 0.0,
            refuse_add_identity: false,
            strict_undocumented: false,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            builds: BuildPace::After(Duration::from_millis(200)),
            wait_for_job: Duration::from_secs(30),
            server_version: "16.9".into(),
            clock_offset_secs: 0,
            token_max_age: None,
            ledger: std::env::var_os("DSQL_SIM_LEDGER").map(PathBuf::from),
        }
    }
}

/// What happened, for tests to assert on.
#[derive(Default, Debug)]
pub struct Stats {
    pub connections: AtomicU64,
    pub refused_tokens: AtomicU64,
    pub refused_rate: AtomicU64,
    pub lifetime_closes: AtomicU64,
    pub conflicts: AtomicU64,
    /// Conflicts sent with SQLSTATE OC000 itself rather than 40001.
    pub conflicts_as_oc000: AtomicU64,
    /// Faults set with [`Sim::fail`] that fired.
    pub faults: AtomicU64,
    /// Client connections closed right after a commit ([`Sim::lose_reply`]).
    pub lost_replies: AtomicU64,
    pub schema_conflicts: AtomicU64,
    pub row_limit_errors: AtomicU64,
    pub age_limit_errors: AtomicU64,
    pub refusals: AtomicU64,
    /// Client message groups answered (a simple Query, or extended messages
    /// up to Sync): the round trips a client made.
    pub round_trips: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Counts one more of a [`Stats`] counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// State shared by every connection of one stand-in.
pub(crate) struct Shared {
    pub config: Config,
    pub backend: tokio_postgres::Config,
    pub tls: tls::Tls,
    pub jobs: Arc<jobs::Jobs>,
    pub stats: Stats,
    pub conflict_permille: AtomicU64,
    /// Committing write transactions so far: which of them conflict.
    pub writing_commits: AtomicU64,
    /// Milliseconds every commit takes longer (a slow database).
    pub commit_delay_ms: AtomicU64,
    pub refuse_add_identity: AtomicBool,
    /// Every refusal sent, as `SQLSTATE: message`, in order.
    pub refused: Mutex<Vec<String>>,
    /// Per table name: the schema version, raised by each committed DDL on it.
    pub schema_versions: Mutex<HashMap<String, u64>>,
    /// How many statements of each kind ran.
    pub executed: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Tokens of the connection-rate bucket and when it was last filled.
    bucket: Mutex<(f64, Instant)>,
    /// Signatures of the tokens accepted, to tell fresh tokens from reused ones.
    pub tokens_seen: Mutex<BTreeSet<String>>,
    pub faults: Mutex<Vec<Fault>>,
}

impl Shared {
    pub(crate) fn strictness(&self) -> sql::Strictness {
        sql::Strictness {
            refuse_add_identity: self.refuse_add_identity.load(Ordering::Relaxed),
            refuse_undocumented: self.config.strict_undocumented,
        }
    }
}

/// A failure to inject: the next `times` statements that `matches` accepts
/// fail with `code` and `message`, or (when `lose_reply`) commit and then
/// lose their answer as a dropped connection would.
#[derive(Clone)]
pub struct Fault {
    pub matches: Arc<dyn Fn(&sql::Statement) -> bool + Send + Sync>,
    pub code: &'static str,
    pub message: String,
    pub times: u32,
    pub lose_reply: bool,
}

impl Shared {
    pub fn schema_version(&self, table: &str) -> u64 {
        self.schema_versions.lock().expect("lock").get(table).copied().unwrap_or(0)
    }

    pub fn bump_schema(&self, table: &str) {
        *self.schema_versions.lock().expect("lock").entry(table.to_string()).or_default() += 1;
    }

    /// Takes one token from the connection-rate bucket.
    pub fn admit(&self) -> bool {
        let l = &self.config.limits;
        let mut b = self.bucket.lock().expect("lock");
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * l.connections_per_second).min(l.connection_burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// The fault for `statement`, used up once.
    pub fn take_fault(&self, statement: &sql::Statement, lose_reply: bool) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("lock");
        let f = faults.iter_mut().find(|f| f.times > 0 && f.lose_reply == lose_reply && (f.matches)(statement))?;
        f.times -= 1;
        bump(&self.stats.faults);
        Some(f.clone())
    }

    pub fn record(&self, label: String) {
        let fresh = {
            let mut executed = self.executed.lock().expect("lock");
            let n = executed.entry(label.clone()).or_default();
            *n += 1;
            *n == 1
        };
        if fresh && let Some(path) = &self.config.ledger {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{label}");
            }
        }
    }
}

/// A running stand-in. Dropping it stops listening.
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Sim {
    /// Prepares the backend database and starts listening.
    pub async fn start(config: Config) -> Result<Self, String> {
        let backend: tokio_postgres::Config =
            config.backend.parse().map_err(|e| format!("backend URL {}: {e}", config.backend))?;
        let (client, connection) =
            backend.connect(tokio_postgres::NoTls).await.map_err(|e| format!("connect to the backend: {e}"))?;
        tokio::spawn(connection);
        client
            .batch_execute(include_str!("../sql/setup.sql"))
            .await
            .map_err(|e| format!("prepare the backend: {e}"))?;
        let wait_ms = config.wait_for_job.as_millis() as i32;
        client
            .execute("UPDATE dsql_sim.settings SET wait_for_job_ms = $1", &[&wait_ms])
            .await
            .map_err(|e| format!("prepare the backend: {e}"))?;
        let mut names = vec![config.host.clone()];
        for extra in ["localhost", "127.0.0.1"] {
            if !names.iter().any(|n| n == extra) {
                names.push(extra.into());
            }
        }
        let tls = tls::make(&names)?;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|e| format!("listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            jobs: jobs::Jobs::new(backend.clone(), config.builds.clone()),
            conflict_permille: AtomicU64::new((config.conflict_fraction * 1000.0).round() as u64),
            writing_commits: AtomicU64::new(0),
            commit_delay_ms: AtomicU64::new(0),
            refuse_add_identity: AtomicBool::new(config.refuse_add_identity),
            refused: Mutex::new(Vec::new()),
            bucket: Mutex::new((config.limits.connection_burst, Instant::now())),
            backend,
            tls,
            stats: Stats::default(),
            schema_versions: Mutex::new(HashMap::new()),
            executed: Mutex::new(std::collections::BTreeMap::new()),
            tokens_seen: Mutex::new(BTreeSet::new()),
            faults: Mutex::new(Vec::new()),
            config,
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else { continue };
                // A reply goes out as several writes: without this, Nagle's
                // algorithm holds each later one until the client's delayed
                // ACK (about 40 ms), a wait that no real endpoint adds.
                let _ = stream.set_nodelay(true);
                let shared = accepting.clone();
                tokio::spawn(async move {
                    if let Err(e) = connect::serve(shared, stream).await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
        });
        Ok(Self { addr, shared, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, as `spec.target.dsql.endpoint` names it.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.shared.config.host, self.addr.port())
    }

    /// The CA that signed the stand-in's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.shared.tls.ca_pem
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn set_conflict_fraction(&self, fraction: f64) {
        self.shared.conflict_permille.store((fraction * 1000.0).round() as u64, Ordering::Relaxed);
    }

    /// Makes every commit take `delay` longer (0 to stop).
    pub fn set_commit_delay(&self, delay: Duration) {
        self.shared.commit_delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Every refusal sent so far, as `SQLSTATE: message`, in order.
    pub fn refused(&self) -> Vec<String> {
        self.shared.refused.lock().expect("refused").clone()
    }

    pub fn set_refuse_add_identity(&self, refuse: bool) {
        self.shared.refuse_add_identity.store(refuse, Ordering::Relaxed);
    }

    /// Fails the next `times` statements of kind `label` (see
    /// [`sql::Statement::label`]) with `code` and `message`.
    pub fn fail(&self, label: &str, code: &'static str, message: &str, times: u32) {
        let label = label.to_string();
        let matches = Arc::new(move |s: &sql::Statement| s.label() == label);
        let fault = Fault { matches, code, message: message.into(), times, lose_reply: false };
        self.shared.faults.lock().expect("lock").push(fault);
    }

    /// Fails the next `times` statements whose text `matches` accepts.
    pub fn fail_when(
        &self,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
        code: &'static str,
        message: &str,
        times: u32,
    ) {
        let matches = Arc::new(move |s: &sql::Statement| matches(&s.sql));
        let fault = Fault { matches, code, message: message.into(), times, lose_reply: false };
        self.shared.faults.lock().expect("lock").push(fault);
    }

    /// Commits the next statement of kind `label` run outside a transaction
    /// block, then closes the connection instead of answering: a lost reply.
    pub fn lose_reply(&self, label: &str) {
        let label = label.to_string();
        let matches = Arc::new(move |s: &sql::Statement| s.label() == label);
        let fault = Fault { matches, code: "08006", message: String::new(), times: 1, lose_reply: true };
        self.shared.faults.lock().expect("lock").push(fault);
    }

    /// Lets held index builds finish ([`BuildPace::Held`]).
    pub fn release_builds(&self) {
        self.shared.jobs.release();
    }

    /// Statement kinds executed so far (see [`sql::Statement::label`]).
    pub fn executed(&self) -> BTreeSet<String> {
        self.shared.executed.lock().expect("lock").keys().cloned().collect()
    }

    /// How many statements ran, of every kind.
    pub fn executed_total(&self) -> u64 {
        self.shared.executed.lock().expect("lock").values().sum()
    }

    /// How many statements of kind `label` ran.
    pub fn count(&self, label: &str) -> u64 {
        self.shared.executed.lock().expect("lock").get(label).copied().unwrap_or(0)
    }

    /// How many distinct tokens were accepted.
    pub fn distinct_tokens(&self) -> usize {
        self.shared.tokens_seen.lock().expect("lock").len()
    }
}

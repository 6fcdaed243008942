//! One engine per table. Before it changes anything an engine claims the
//! table in the database itself, where every other engine (a second `run`, an
//! operator replica, a `run` beside the operator) sees and respects the claim:
//! on PostgreSQL a session advisory lock held by a connection of its own for
//! the whole run; on DSQL, which has no advisory locks, a row with an owner
//! and an expiry, written under optimistic concurrency and renewed while the
//! engine runs. An engine that loses its claim (or, in the operator, its
//! migration's Lease) stops before its next statement that changes the schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use crate::db::{Connector, DbError, Dialect, ErrorContext};
use crate::engine::plan::shape::TableName;

/// How long a DSQL claim lasts without renewal, and how often it is renewed.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);
pub const CLAIM_RENEW_EVERY: Duration = Duration::from_secs(15);
/// The table that holds DSQL claims, in the migrated table's schema.
pub const CLAIMS_TABLE: &str = "identity_migrator_claims";

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{table} is being migrated by another engine ({holder}); run again once it has stopped")]
    Taken { table: TableName, holder: String },
    #[error("this engine lost its claim on {table} ({why}); it stops before its next change")]
    Lost { table: TableName, why: String },
    /// The operator lost the migration's Lease; another replica may run it now.
    #[error("the operator lost the migration's lease for {table}; it stops before its next change")]
    LeaseLost { table: TableName },
    #[error("claiming {table}: {source}")]
    Db {
        table: TableName,
        #[source]
        source: DbError,
    },
}

enum Holder {
    /// The connection holding the advisory lock (the lock ends with it).
    Advisory { client: Mutex<Client> },
    /// The owner written in the claim row; `lost` once a renewal failed;
    /// `renewed_at` when the row last said this owner (ms since `born`).
    Row { owner: String, lost: Arc<AtomicBool>, renewed: Arc<Renewed>, _renewer: Renewer },
}

/// When the claim row was last written for this owner.
struct Renewed {
    born: std::time::Instant,
    millis: std::sync::atomic::AtomicU64,
}

impl Renewed {
    fn now() -> Self {
        Self { born: std::time::Instant::now(), millis: std::sync::atomic::AtomicU64::new(0) }
    }
    fn mark(&self) {
        self.millis.store(self.born.elapsed().as_millis() as u64, Ordering::SeqCst);
    }
    fn age(&self) -> Duration {
        self.born.elapsed().saturating_sub(Duration::from_millis(self.millis.load(Ordering::SeqCst)))
    }
}

/// A claim older than this without a renewal may be taken by another engine
/// soon (it expires at [`CLAIM_TTL`]): batches stop before that.
pub const CLAIM_FRESH_FOR: Duration = Duration::from_secs(CLAIM_TTL.as_secs() - CLAIM_RENEW_EVERY.as_secs());

/// The renewal task, stopped with its claim however the claim ends.
struct Renewer(tokio::task::JoinHandle<()>);

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub struct Claim {
    table: TableName,
    holder: Holder,
}

/// The advisory lock key of a table: stable across processes and versions.
pub fn advisory_key(table: &TableName) -> i64 {
    let text = format!("identity-migrator:{}.{}", table.schema, table.name);
    text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3)) as i64
}

fn claims_table(table: &TableName) -> TableName {
    table.sibling(CLAIMS_TABLE)
}

impl Claim {
    /// Claims `table` for this engine, or says who holds it.
    pub async fn take(connector: &Arc<Connector>, table: &TableName, dialect: Dialect) -> Result<Self, ClaimError> {
        let db = |source: DbError| ClaimError::Db { table: table.clone(), source };
        let client = connector.connect().await.map_err(db)?;
        match dialect {
            Dialect::Postgres => {
                let key = advisory_key(table);
                let taken: bool = client
                    .query_one("SELECT pg_catalog.pg_try_advisory_lock($1::bigint)", &[&key])
                    .await
                    .ctx("take the advisory lock")
                    .map_err(db)?
                    .get(0);
                if !taken {
                    let holder = advisory_holder(&client, key).await.unwrap_or_default();
                    return Err(ClaimError::Taken { table: table.clone(), holder });
                }
                tracing::debug!(table = %table, key, "claimed the table with an advisory lock");
                Ok(Self { table: table.clone(), holder: Holder::Advisory { client: Mutex::new(client) } })
            }
            Dialect::Dsql => {
                let owner = format!("{}/{}/{:016x}", this_host(), std::process::id(), rand::random::<u64>());
                let claims = claims_table(table);
                let create = format!(
                    "CREATE TABLE IF NOT EXISTS {claims} (table_name text PRIMARY KEY, owner text NOT NULL, \
                     expires_at timestamptz NOT NULL)"
                );
                create_claims_table(&client, &create).await.map_err(db)?;
                if let Some(holder) = claim_row(&client, &claims, table, &owner).await.map_err(db)? {
                    return Err(ClaimError::Taken { table: table.clone(), holder });
                }
                let lost = Arc::new(AtomicBool::new(false));
                let renewed = Arc::new(Renewed::now());
                let renewal = Renewal {
                    connector: connector.clone(),
                    claims,
                    table: table.clone(),
                    owner: owner.clone(),
                    renewed: renewed.clone(),
                };
                let renewer = tokio::spawn(renew_forever(renewal, client, lost.clone()));
                let holder = Holder::Row { owner, lost, renewed, _renewer: Renewer(renewer) };
                Ok(Self { table: table.clone(), holder })
            }
        }
    }

    /// Whether the claim still holds; called before every schema change.
    pub async fn check(&self) -> Result<(), ClaimError> {
        let lost = |why: &str| ClaimError::Lost { table: self.table.clone(), why: why.to_string() };
        match &self.holder {
            Holder::Advisory { client } => {
                let client = client.lock().await;
                if client.is_closed() || client.simple_query("SELECT 1").await.is_err() {
                    return Err(lost("the connection holding the advisory lock is gone"));
                }
                Ok(())
            }
            Holder::Row { lost: flag, .. } if flag.load(Ordering::SeqCst) => {
                Err(lost("the claim row could not be renewed; another engine may hold it"))
            }
            Holder::Row { renewed, .. } if renewed.age() > CLAIM_FRESH_FOR => {
                Err(lost("the claim row has not been renewed in time; another engine may take it"))
            }
            Holder::Row { .. } => Ok(()),
        }
    }

    /// Whether the claim is certainly still this engine's, without a round
    /// trip: checked before every copy batch. A claim row not renewed for
    /// [`CLAIM_FRESH_FOR`] may soon be taken by another engine.
    pub fn is_fresh(&self) -> bool {
        match &self.holder {
            Holder::Advisory { .. } => true,
            Holder::Row { lost, renewed, .. } => !lost.load(Ordering::SeqCst) && renewed.age() <= CLAIM_FRESH_FOR,
        }
    }

    /// Gives the claim up (the engine stopped).
    pub async fn release(self, connector: &Connector) {
        match self.holder {
            Holder::Advisory { client } => {
                let key = advisory_key(&self.table);
                let _ =
                    client.lock().await.query_one("SELECT pg_catalog.pg_advisory_unlock($1::bigint)", &[&key]).await;
            }
            Holder::Row { owner, _renewer, .. } => {
                drop(_renewer);
                let sql = format!("DELETE FROM {} WHERE table_name = $1 AND owner = $2", claims_table(&self.table));
                let name = self.table.to_string();
                if let Ok(client) = connector.connect().await
                    && let Err(e) = client.execute(sql.as_str(), &[&name, &owner]).await
                {
                    tracing::warn!(error = %e, "could not delete the claim row; it expires by itself");
                }
            }
        }
    }
}

/// Who holds the advisory lock of `key`, for the message.
async fn advisory_holder(client: &Client, key: i64) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(string_agg(coalesce(nullif(a.application_name, ''), 'a session') || ' (pid ' || l.pid || ')', \
                    ', '), 'another session') \
             FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
            &[&key],
        )
        .await?;
    Ok(row.get(0))
}

/// `CREATE TABLE IF NOT EXISTS` of the claims table: DDL, which DSQL may fail
/// with an optimistic-concurrency conflict (another engine creating it too).
async fn create_claims_table(client: &Client, create: &str) -> Result<(), DbError> {
    let mut attempt = 0;
    loop {
        match client.batch_execute(create).await.ctx("create the claims table") {
            Err(e) if e.is_transient() && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 200)).await;
            }
            done => return done,
        }
    }
}

/// Writes the claim row for `owner` unless another owner holds an unexpired
/// one; answers that owner. One transaction: a concurrent claim fails it with
/// an OCC conflict (or a duplicate key), and the loser reads the winner.
async fn claim_row(
    client: &Client,
    claims: &TableName,
    table: &TableName,
    owner: &str,
) -> Result<Option<String>, DbError> {
    let name = table.to_string();
    let ttl = CLAIM_TTL.as_secs() as i64;
    for _ in 0..10 {
        let attempt = async {
            client.batch_execute("BEGIN").await.ctx("claim")?;
            let row = client
                .query_opt(&format!("SELECT owner, expires_at > now() FROM {claims} WHERE table_name = $1"), &[&name])
                .await
                .ctx("read the claim")?;
            match row {
                Some(r)
                    if r.get::<_, bool>(1)
                        && r.get::<_, String>(0) != owner
                        && !holder_is_gone(&r.get::<_, String>(0)) =>
                {
                    client.batch_execute("ROLLBACK").await.ctx("claim")?;
                    return Ok(Some(r.get::<_, String>(0)));
                }
                Some(_) => {
                    let sql = format!(
                        "UPDATE {claims} SET owner = $2, expires_at = now() + make_interval(secs => $3::bigint) \
                         WHERE table_name = $1"
                    );
                    client.execute(sql.as_str(), &[&name, &owner, &ttl]).await.ctx("write the claim")?;
                }
                None => {
                    let sql = format!(
                        "INSERT INTO {claims} (table_name, owner, expires_at) \
                         VALUES ($1, $2, now() + make_interval(secs => $3::bigint))"
                    );
                    client.execute(sql.as_str(), &[&name, &owner, &ttl]).await.ctx("write the claim")?;
                }
            }
            client.batch_execute("COMMIT").await.ctx("claim")?;
            Ok::<_, DbError>(None)
        }
        .await;
        match attempt {
            Ok(holder) => return Ok(holder),
            Err(e) if e.is_transient() || e.sqlstate.as_deref() == Some("23505") => {
                let _ = client.batch_execute("ROLLBACK").await;
                tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 200)).await;
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
    Err(DbError::transient("claim", "the claim row kept conflicting"))
}

/// Who this process is among every engine that may claim a table: a name for
/// people, then an identity under which process ids are comparable. Only an
/// owner with exactly this identity is checked for a dead process, so it
/// must never be shared by two PID namespaces (two machines, two pods).
fn this_host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| host_identity(&read_host_facts())).clone()
}

/// What names the place this process runs in.
#[derive(Debug, Default)]
struct HostFacts {
    /// The node's or pod's name (for people).
    hostname: Option<String>,
    /// The pod's uid (the Downward API's `POD_UID`).
    pod_uid: Option<String>,
    /// This boot of the kernel, and this process's PID namespace in it.
    boot_id: Option<String>,
    pid_namespace: Option<String>,
}

fn read_host_facts() -> HostFacts {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    HostFacts {
        hostname: std::env::var("HOSTNAME").ok().or_else(|| read("/proc/sys/kernel/hostname")),
        pod_uid: std::env::var("POD_UID").ok(),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        pid_namespace: std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.to_string_lossy().into_owned()),
    }
}

/// `name@identity` without `/` (the owner is `host/pid/nonce`). The identity
/// is the pod's uid, else the kernel's boot id with the PID namespace, else a
/// random one: then no other process can match it, and a dead owner's claim
/// simply expires.
fn host_identity(f: &HostFacts) -> String {
    let clean =
        |s: &str| s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')).collect::<String>();
    let name = f.hostname.as_deref().map(clean).filter(|n| !n.is_empty()).unwrap_or_else(|| "host".into());
    let identity = match (&f.pod_uid, &f.boot_id, &f.pid_namespace) {
        (Some(uid), _, _) if !uid.is_empty() => format!("pod-{}", clean(uid)),
        (_, Some(boot), Some(ns)) => format!("{}-{}", clean(boot), clean(ns)),
        _ => format!("random-{:016x}", rand::random::<u64>()),
    };
    format!("{name}@{identity}")
}

/// Whether a claim's owner (`host/pid/nonce`) was a process on this host that
/// no longer runs: a `run` killed before it could release its claim. Its
/// claim is taken over at once instead of after it expires. Any doubt (another
/// host, this very pid, a live pid) leaves the claim to expire.
fn holder_is_gone(holder: &str) -> bool {
    let mut parts = holder.split('/');
    let (Some(host), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if host != this_host() || pid == std::process::id() as i32 || pid <= 1 {
        return false;
    }
    let gone = matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH));
    if gone {
        tracing::warn!(holder, "the claim belongs to a process of this host that no longer runs; taking it over");
    }
    gone
}

/// What the renewal task needs: where to reconnect, and which row is ours.
struct Renewal {
    connector: Arc<Connector>,
    claims: TableName,
    table: TableName,
    owner: String,
    renewed: Arc<Renewed>,
}

/// Extends the claim until the task is stopped; marks it lost when the row no
/// longer names this owner or cannot be written before it would expire. A
/// connection that ends (DSQL ends every connection after an hour) is
/// replaced, so a claim outlives any one connection.
async fn renew_forever(r: Renewal, mut client: Client, lost: Arc<AtomicBool>) {
    let Renewal { connector, claims, table, owner, renewed } = r;
    let sql = format!(
        "UPDATE {claims} SET expires_at = now() + make_interval(secs => $3::bigint) \
         WHERE table_name = $1 AND owner = $2 AND expires_at > now()"
    );
    let (name, ttl) = (table.to_string(), CLAIM_TTL.as_secs() as i64);
    let mut last = std::time::Instant::now();
    loop {
        tokio::time::sleep(CLAIM_RENEW_EVERY).await;
        if client.is_closed() {
            match connector.connect().await {
                Ok(fresh) => client = fresh,
                Err(e) => tracing::warn!(error = %e, table = %table, "could not reconnect to renew the claim"),
            }
        }
        match client.execute(sql.as_str(), &[&name, &owner, &ttl]).await {
            Ok(1) => {
                last = std::time::Instant::now();
                renewed.mark();
            }
            Ok(_) => {
                tracing::error!(table = %table, "the claim row names another engine now");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) if last.elapsed() + CLAIM_RENEW_EVERY < CLAIM_TTL => {
                tracing::warn!(error = %e, table = %table, "could not renew the claim; trying again");
            }
            Err(e) => {
                tracing::error!(error = %e, table = %table, "the claim expires before it can be renewed");
                lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_identity_is_never_shared_and_never_local() {
        let pod =
            HostFacts { hostname: Some("idmig-7f9c".into()), pod_uid: Some("0a1b-2c3d".into()), ..Default::default() };
        assert_eq!(host_identity(&pod), "idmig-7f9c@pod-0a1b-2c3d");
        let machine = HostFacts {
            hostname: None,
            pod_uid: None,
            boot_id: Some("3f1e-77".into()),
            pid_namespace: Some("pid:[4026531836]".into()),
        };
        let id = host_identity(&machine);
        assert_eq!(id, "host@3f1e-77-pid4026531836");
        assert!(!id.contains('/'), "the owner is host/pid/nonce");
        // Nothing known: a random identity, which no other process matches.
        let (a, b) = (host_identity(&HostFacts::default()), host_identity(&HostFacts::default()));
        assert_ne!(a, b);
        assert!(!a.contains("local"));
        assert!(!holder_is_gone(&format!("{a}/999999/00")), "another identity's process is never judged dead");
    }
}

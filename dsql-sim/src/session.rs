//! One client connection: TLS, the token check, a backend connection, then
//! every message group (a simple Query, or extended messages up to Sync)
//! checked against DSQL's rules, passed on (rewritten where DSQL differs) and
//! its answer passed back. Groups are handled one at a time.
//!
//! Transactions: DSQL's limits count a whole transaction, so a writing group
//! outside a transaction block runs inside one the stand-in opens and
//! commits itself, after checking the limits and drawing for a conflict.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::RngExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::Shared;
use crate::jobs::{Build, new_job_id};
use crate::sql::{self, Kind, Refused, Statement};
use crate::token;
use crate::wire::{self, Message, Reader};

/// A statement PostgreSQL refuses while parsing: the stand-in sends it in
/// place of a refused one, so the backend ends the group (and aborts an open
/// transaction) exactly as for a real error, and the error is replaced by DSQL's.
const FAILS: &str = "SELECT dsql_sim_refused_statement()";

type Io<T> = std::io::Result<T>;

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn fatal(code: &str, message: &str, detail: Option<&str>) -> Message {
    wire::error("FATAL", code, message, detail)
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream) -> Io<()> {
    bump(&shared.stats.connections);
    // DSQL accepts TLS connections only.
    loop {
        let mut reader = Reader::new(&mut stream);
        let (code, _) = reader.startup().await?;
        match code {
            wire::SSL_REQUEST => {
                stream.write_all(b"S").await?;
                break;
            }
            wire::GSSENC_REQUEST => stream.write_all(b"N").await?,
            _ => {
                let refusal = fatal("28000", "unable to accept connection, SSL is required", None);
                return wire::send(&mut stream, &[refusal]).await;
            }
        }
    }
    let tls = shared.tls.acceptor.accept(stream).await?;
    let (r, mut w) = tokio::io::split(tls);
    let mut client = Reader::new(r);
    let (code, body) = client.startup().await?;
    if code == wire::CANCEL_REQUEST {
        return forward_cancel(&shared, &body).await;
    }
    if code != wire::PROTOCOL_3 {
        return wire::send(&mut w, &[fatal("08P01", "unsupported protocol version", None)]).await;
    }
    let params = wire::startup_params(&body);
    let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let (user, database) = (param("user"), param("database"));
    if !shared.admit() {
        bump(&shared.stats.refused_rate);
        return wire::send(&mut w, &[fatal("53400", "Unable to accept connection, rate exceeded.", None)]).await;
    }
    wire::send(&mut w, &[Message::new(b'R', 3i32.to_be_bytes().to_vec())]).await?;
    let password = match client.next().await? {
        Some(m) if m.tag == b'p' => m.cstr(0).0,
        _ => return Ok(()),
    };
    let now = jiff::Timestamp::now().as_second() + shared.config.clock_offset_secs;
    let max_age = shared.config.token_max_age.map(|d| d.as_secs() as i64);
    let expect = token::Expect { host: &shared.config.host, region: &shared.config.region, role: &user, now, max_age };
    if let Err(why) = token::verify(&password, &shared.config.credentials, &expect) {
        bump(&shared.stats.refused_tokens);
        tracing::info!(user, reason = %why, "token refused");
        let refusal = fatal("28000", "unable to accept connection, access denied", Some(&why.to_string()));
        return wire::send(&mut w, &[refusal]).await;
    }
    if let Some(signature) = password.rsplit("X-Amz-Signature=").next() {
        shared.tokens_seen.lock().expect("lock").insert(signature.to_string());
    }
    if database != "postgres" {
        let msg = format!("database \"{database}\" does not exist");
        return wire::send(&mut w, &[fatal("3D000", &msg, None)]).await;
    }
    let (backend_r, backend_w, hello) = match open_backend(&shared, &user, &param("application_name")).await {
        Ok(b) => b,
        Err(e) => return wire::send(&mut w, &[fatal("08006", &format!("backend unavailable: {e}"), None)]).await,
    };
    wire::send(&mut w, &hello).await?;
    let mut session = Session {
        shared,
        client,
        client_w: w,
        backend: Reader::new(backend_r),
        backend_w,
        born: Instant::now(),
        txn: None,
        prepared: HashMap::new(),
        portals: HashMap::new(),
    };
    session.run().await
}

async fn forward_cancel(shared: &Shared, body: &[u8]) -> Io<()> {
    let (host, port) = backend_address(shared);
    let mut backend = TcpStream::connect((host.as_str(), port)).await?;
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&wire::CANCEL_REQUEST.to_be_bytes());
    packet.extend_from_slice(body);
    wire::write_raw(&mut backend, &packet).await
}

fn backend_address(shared: &Shared) -> (String, u16) {
    let host = match shared.backend.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    (host, shared.backend.get_ports().first().copied().unwrap_or(5432))
}

/// Connects to the backend as the role the client named (`admin` is the
/// backend URL's user) and returns the greeting to pass on, with DSQL's version.
async fn open_backend(shared: &Shared, user: &str, app: &str) -> Io<(OwnedReadHalf, OwnedWriteHalf, Vec<Message>)> {
    let (host, port) = backend_address(shared);
    let stream = TcpStream::connect((host.as_str(), port)).await?;
    let (r, mut w) = stream.into_split();
    let role = if user == "admin" { shared.backend.get_user().unwrap_or("postgres") } else { user };
    let db = shared.backend.get_dbname().unwrap_or("postgres");
    wire::write_raw(&mut w, &wire::startup_packet(&[("user", role), ("database", db), ("application_name", app)]))
        .await?;
    let mut reader = Reader::new(r);
    let mut hello = Vec::new();
    loop {
        let m = reader.next().await?.ok_or_else(|| std::io::Error::other("backend closed"))?;
        match m.tag {
            b'R' if m.body[..4] == [0, 0, 0, 0] => hello.push(m),
            b'R' => {
                return Err(std::io::Error::other("the backend asks for a password; give the stand-in trust access"));
            }
            b'E' => return Err(std::io::Error::other(String::from_utf8_lossy(&m.body).into_owned())),
            b'S' if m.cstr(0).0 == "server_version" => {
                hello.push(wire::parameter_status("server_version", &shared.config.server_version))
            }
            b'Z' => {
                hello.push(m);
                break;
            }
            _ => hello.push(m),
        }
    }
    let (r, rest) = reader.into_parts();
    if !rest.is_empty() {
        return Err(std::io::Error::other("unexpected bytes after the backend's greeting"));
    }
    // A statement outside any transaction block is a transaction of its own:
    // DSQL's age limit applies to it too (its error is rewritten to DSQL's).
    let age = shared.config.limits.transaction_age.as_millis();
    let mut reader = Reader::new(r);
    wire::send(&mut w, &[wire::query(&format!("SET statement_timeout = {age}"))]).await?;
    while let Some(m) = reader.next().await? {
        if m.tag == b'Z' {
            break;
        }
    }
    let (r, _) = reader.into_parts();
    Ok((r, w, hello))
}

/// An open transaction as the stand-in sees it.
struct Txn {
    started: Instant,
    /// Schema version of each name the transaction mentioned, when first mentioned.
    seen: HashMap<String, u64>,
    ddl: u32,
    dml: bool,
    /// Tables whose schema this transaction changes (versions raised at commit).
    changes: Vec<String>,
    builds: Vec<Build>,
    /// The stand-in ended it (a limit): everything but ROLLBACK is refused.
    aborted: bool,
    /// Rows and bytes PostgreSQL had counted for the session when the
    /// transaction began: its statistics hold changes of earlier
    /// transactions until they are flushed, which never happens inside one.
    baseline: Option<(i64, i64)>,
}

impl Txn {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            seen: HashMap::new(),
            ddl: 0,
            dml: false,
            changes: Vec::new(),
            builds: Vec::new(),
            aborted: false,
            baseline: None,
        }
    }
}

/// The backend's answer to one group.
struct Answer {
    /// Messages held back (all but the final ReadyForQuery), when buffered.
    held: Vec<Message>,
    status: u8,
    failed: bool,
}

struct Session<R, W> {
    shared: Arc<Shared>,
    client: Reader<R>,
    client_w: W,
    backend: Reader<OwnedReadHalf>,
    backend_w: OwnedWriteHalf,
    born: Instant,
    txn: Option<Txn>,
    prepared: HashMap<String, Statement>,
    portals: HashMap<String, String>,
}

fn refusal(code: &'static str, message: impl Into<String>) -> Refused {
    Refused { code, message: message.into() }
}

fn writes(kind: &Kind) -> bool {
    matches!(kind, Kind::Dml { .. } | Kind::Ddl { .. } | Kind::CreateIndexAsync { .. })
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    async fn run(&mut self) -> Io<()> {
        let lifetime = self.shared.config.limits.connection_lifetime;
        let mut pending: Vec<Message> = Vec::new();
        loop {
            let deadline = tokio::time::Instant::from_std(self.born + lifetime);
            let idle = self.txn.is_none() && pending.is_empty();
            let next = tokio::select! {
                m = self.client.next() => m?,
                _ = tokio::time::sleep_until(deadline), if idle => None,
            };
            // DSQL ends a connection at the end of its lifetime, letting an
            // open transaction finish first.
            if self.born.elapsed() >= lifetime && self.txn.is_none() && pending.is_empty() {
                bump(&self.shared.stats.lifetime_closes);
                let bye = fatal("57P01", "terminating connection: connection lifetime exceeded", None);
                let _ = wire::send(&mut self.client_w, &[bye]).await;
                return Ok(());
            }
            let Some(m) = next else { return Ok(()) };
            match m.tag {
                b'X' => {
                    let _ = wire::send(&mut self.backend_w, &[m]).await;
                    return Ok(());
                }
                b'Q' => self.simple(m).await?,
                b'S' => {
                    pending.push(m);
                    let group = std::mem::take(&mut pending);
                    self.extended(group).await?
                }
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => pending.push(m),
                _ => wire::send(&mut self.backend_w, &[m]).await?,
            }
        }
    }

    // ---- the two kinds of groups ----

    async fn simple(&mut self, m: Message) -> Io<()> {
        let text = m.cstr(0).0;
        let statements: Vec<Statement> = sql::split(&text).iter().map(|s| Statement::parse(&self.as_dsql(s))).collect();
        if let [only] = statements.as_slice() {
            match only.kind {
                Kind::Commit if self.txn.is_some() => return self.commit().await,
                Kind::Rollback => {
                    self.txn = None;
                    let answer = self.pass(&[wire::query("ROLLBACK")], None, false).await?;
                    return self.reply_ready(answer.status).await;
                }
                _ => {}
            }
        }
        let wrap = self.txn.is_none()
            && statements.first().is_some_and(|s| s.kind != Kind::Begin)
            && statements.iter().any(|s| writes(&s.kind));
        if wrap {
            self.open_implicit().await?;
        }
        let mut sent = Vec::new();
        let mut executed = Vec::new();
        let mut refused = None;
        for s in &statements {
            match self.check(s).await? {
                Ok(text) => {
                    sent.push(text);
                    executed.push(s.clone());
                }
                Err(r) => {
                    sent.push(FAILS.to_string());
                    refused = Some(r);
                    break;
                }
            }
        }
        if sent.is_empty() {
            sent.push(String::new());
        }
        let writing = statements.iter().any(|s| writes(&s.kind));
        self.finish_group(vec![wire::query(&sent.join(";\n"))], executed, refused, writing, wrap).await
    }

    async fn extended(&mut self, group: Vec<Message>) -> Io<()> {
        let mut out = Vec::with_capacity(group.len());
        let mut executed = Vec::new();
        let mut refused: Option<Refused> = None;
        // What the group executes: its Binds name the statements of its Executes.
        let mut executes = Vec::new();
        let mut bound = self.portals.clone();
        let mut parsed: HashMap<String, Kind> = HashMap::new();
        for m in &group {
            match m.tag {
                b'P' => {
                    let (name, text, _) = wire::parse_parts(m);
                    parsed.insert(name, Statement::parse(&text).kind);
                }
                b'B' => {
                    let (portal, statement) = wire::bind_names(m);
                    bound.insert(portal, statement);
                }
                b'E' => {
                    let statement = bound.get(&m.cstr(0).0);
                    let kind = statement
                        .and_then(|s| parsed.get(s).cloned().or_else(|| self.prepared.get(s).map(|p| p.kind.clone())));
                    executes.extend(kind);
                }
                _ => {}
            }
        }
        let writing = executes.iter().any(writes);
        let wrap = self.txn.is_none() && writing;
        if wrap {
            self.open_implicit().await?;
        }
        for m in group {
            if refused.is_some() {
                out.push(m);
                continue;
            }
            match m.tag {
                b'P' => {
                    let (name, text, _) = wire::parse_parts(&m);
                    let viewed = self.as_dsql(&text);
                    let statement = Statement::parse(&viewed);
                    let add_identity = self.shared.refuse_add_identity.load(Ordering::Relaxed);
                    if let Some(r) = sql::refusal(&statement, add_identity) {
                        out.push(wire::replace_parse(&m, FAILS));
                        refused = Some(r);
                        continue;
                    }
                    self.prepared.insert(name, statement);
                    out.push(if viewed == text { m } else { wire::replace_parse(&m, &viewed) });
                }
                b'B' => {
                    let (portal, statement) = wire::bind_names(&m);
                    self.portals.insert(portal, statement);
                    out.push(m);
                }
                b'E' => {
                    let portal = m.cstr(0).0;
                    let statement = self.portals.get(&portal).and_then(|s| self.prepared.get(s)).cloned();
                    if let Some(s) = statement {
                        match self.check(&s).await? {
                            Ok(_) => executed.push(s),
                            Err(r) => {
                                out.push(wire::parse("", FAILS));
                                refused = Some(r);
                            }
                        }
                    }
                    out.push(m);
                }
                b'C' => {
                    // Close of a statement ('S') or portal ('P').
                    if m.body.first() == Some(&b'S') {
                        self.prepared.remove(&m.cstr(1).0);
                    }
                    out.push(m);
                }
                _ => out.push(m),
            }
        }
        self.finish_group(out, executed, refused, writing, wrap).await
    }

    /// Sends a group, checks what it changed, and answers the client.
    async fn finish_group(
        &mut self,
        messages: Vec<Message>,
        executed: Vec<Statement>,
        refused: Option<Refused>,
        writing: bool,
        wrapped: bool,
    ) -> Io<()> {
        if refused.is_some() {
            bump(&self.shared.stats.refusals);
        }
        let buffer = writing && self.txn.is_some();
        let lose_reply = wrapped && executed.iter().any(|s| self.shared.take_fault(s, true).is_some());
        let answer = self.pass(&messages, refused, buffer).await?;
        if !answer.failed {
            for s in &executed {
                self.shared.record(s.label());
            }
        }
        // Keep the transaction state in step with the backend's.
        match answer.status {
            b'I' => self.txn = None,
            b'T' if self.txn.is_none() => self.txn = Some(Txn::new()),
            b'T' if self.txn.as_ref().is_some_and(|t| t.baseline.is_none()) && !answer.failed => {
                let counted = self.counted().await?;
                if let Some(t) = self.txn.as_mut() {
                    t.baseline = Some(counted);
                }
            }
            // An error ended the transaction's useful life: COMMIT will roll back.
            b'E' => {
                if let Some(t) = self.txn.as_mut() {
                    t.aborted = true;
                }
            }
            _ => {}
        }
        if wrapped {
            if answer.failed || answer.status != b'T' {
                self.rollback().await?;
                self.txn = None;
                self.reply(&answer.held).await?;
                return self.reply_ready(b'I').await;
            }
            if let Err(limit) = self.within_limits().await? {
                self.rollback().await?;
                self.txn = None;
                self.reply(&[wire::error("ERROR", limit.code, &limit.message, None)]).await?;
                return self.reply_ready(b'I').await;
            }
            return match self.try_commit().await? {
                Ok(()) if lose_reply => {
                    bump(&self.shared.stats.lost_replies);
                    Err(std::io::Error::other("the reply is lost on purpose"))
                }
                Ok(()) => {
                    self.reply(&answer.held).await?;
                    self.reply_ready(b'I').await
                }
                Err(why) => {
                    self.reply(&[wire::error("ERROR", why.code, &why.message, None)]).await?;
                    self.reply_ready(b'I').await
                }
            };
        }
        if buffer
            && !answer.failed
            && answer.status == b'T'
            && let Err(limit) = self.within_limits().await?
        {
            {
                if let Some(t) = self.txn.as_mut() {
                    t.aborted = true;
                }
                self.reply(&[wire::error("ERROR", limit.code, &limit.message, None)]).await?;
                return self.reply_ready(b'E').await;
            }
        }
        self.reply(&answer.held).await?;
        self.reply_ready(answer.status).await
    }

    // ---- DSQL's rules ----

    /// The statement as the backend must run it for DSQL's answer: the
    /// catalog through DSQL's names, and DSQL's version.
    fn as_dsql(&self, text: &str) -> String {
        if Statement::parse(text).is_show("server_version") {
            return format!("SELECT {} AS server_version", literal(&self.shared.config.server_version));
        }
        sql::through_dsql_catalog(text)
    }

    /// Whether DSQL runs `s` now; the statement to send when it does.
    async fn check(&mut self, s: &Statement) -> Io<Result<String, Refused>> {
        let add_identity = self.shared.refuse_add_identity.load(Ordering::Relaxed);
        if let Some(r) = sql::refusal(s, add_identity) {
            return Ok(Err(r));
        }
        if let Some(f) = self.shared.take_fault(s, false) {
            return Ok(Err(refusal(f.code, f.message)));
        }
        let age = self.shared.config.limits.transaction_age;
        if let Some(t) = &mut self.txn {
            if t.aborted {
                return Ok(Err(refusal(
                    "25P02",
                    "current transaction is aborted, commands ignored until end of transaction block",
                )));
            }
            if t.started.elapsed() > age && !matches!(s.kind, Kind::Rollback) {
                t.aborted = true;
                bump(&self.shared.stats.age_limit_errors);
                return Ok(Err(refusal("54000", format!("transaction age limit of {}s exceeded", age.as_secs()))));
            }
        }
        if s.kind == Kind::Begin {
            self.txn = Some(Txn::new());
        }
        let is_ddl = matches!(s.kind, Kind::Ddl { .. } | Kind::CreateIndexAsync { .. });
        if let Some(t) = &self.txn {
            if is_ddl && t.ddl > 0 {
                return Ok(Err(refusal("0A000", "unsupported: more than one DDL statement in a transaction")));
            }
            if (is_ddl && t.dml) || (matches!(s.kind, Kind::Dml { .. }) && t.ddl > 0) {
                return Ok(Err(refusal("0A000", "unsupported: DDL and DML in the same transaction")));
            }
        }
        if sql::is_sync_index(s)
            && let Some(table) = sql::table_after_on(s)
            && self.query_bool(&format!("SELECT EXISTS (SELECT 1 FROM {table})")).await? == Some(true)
        {
            return Ok(Err(refusal(
                "0A000",
                "CREATE INDEX on a table with rows is not supported; use CREATE INDEX ASYNC",
            )));
        }
        if let Some(index) = sql::dropped_index(s) {
            // DSQL: dropping an index whose build runs cancels the build.
            self.shared.jobs.cancel(&index).await;
        }
        let mut text = s.sql.clone();
        if let Kind::CreateIndexAsync { name, table } = &s.kind {
            let exists = format!(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = {} AND relkind = 'i') \
                 OR EXISTS (SELECT 1 FROM sys.jobs WHERE object_name = {} AND status IN ('submitted', 'processing'))",
                literal(name),
                literal(name)
            );
            if self.query_bool(&exists).await? == Some(true) {
                return Ok(Err(refusal("42P07", format!("relation \"{name}\" already exists"))));
            }
            let Some(build_sql) = sql::background_build(s) else {
                return Ok(Err(refusal("42601", "syntax error in CREATE INDEX ASYNC")));
            };
            let job_id = new_job_id();
            text = format!(
                "INSERT INTO sys.jobs (job_id, status, object_name) VALUES ({}, 'submitted', {}) RETURNING job_id",
                literal(&job_id),
                literal(name)
            );
            if let Some(t) = &mut self.txn {
                t.builds.push(Build { job_id, index: name.clone(), table: table.clone(), sql: build_sql });
            }
        }
        if let Some(t) = &mut self.txn {
            for name in s.names() {
                let version = self.shared.schema_version(&name);
                t.seen.entry(name).or_insert(version);
            }
            match &s.kind {
                Kind::Ddl { table } => {
                    t.ddl += 1;
                    t.changes.extend(table.clone());
                }
                Kind::CreateIndexAsync { .. } => t.ddl += 1,
                Kind::Dml { .. } => t.dml = true,
                _ => {}
            }
        }
        Ok(Ok(text))
    }

    /// Rows (index rows counted) and bytes PostgreSQL counts as changed by
    /// this session since its statistics were last flushed.
    async fn counted(&mut self) -> Io<(i64, i64)> {
        let counted = self
            .internal(
                "SELECT coalesce(sum((s.n_tup_ins + s.n_tup_upd + s.n_tup_del) * (1 + ix.n)), 0)::bigint, \
                        coalesce(sum((s.n_tup_ins + s.n_tup_upd) * w.bytes), 0)::bigint \
                 FROM pg_stat_xact_user_tables s \
                 CROSS JOIN LATERAL (SELECT count(*) AS n FROM pg_index i \
                                     WHERE i.indrelid = s.relid AND NOT i.indisprimary) ix \
                 CROSS JOIN LATERAL (SELECT coalesce(sum(CASE WHEN a.attlen > 0 THEN a.attlen \
                                                         ELSE coalesce(st.avg_width, 32) END), 0) AS bytes \
                                     FROM pg_attribute a LEFT JOIN pg_stats st ON st.schemaname = s.schemaname \
                                          AND st.tablename = s.relname AND st.attname = a.attname \
                                     WHERE a.attrelid = s.relid AND a.attnum > 0 AND NOT a.attisdropped) w \
                 WHERE s.schemaname NOT IN ('sys', 'dsql_sim')",
            )
            .await?;
        let Ok(rows) = counted else { return Ok((0, 0)) };
        let value =
            |i: usize| rows.first().and_then(|r| r.get(i).cloned().flatten()).and_then(|v| v.parse::<i64>().ok());
        Ok((value(0).unwrap_or(0), value(1).unwrap_or(0)))
    }

    /// Rows and bytes changed so far in the open transaction, against the limits.
    async fn within_limits(&mut self) -> Io<Result<(), Refused>> {
        let (rows, bytes) = self.counted().await?;
        let (rows0, bytes0) = self.txn.as_ref().and_then(|t| t.baseline).unwrap_or((0, 0));
        let (rows, bytes) = (rows - rows0, bytes - bytes0);
        let limits = &self.shared.config.limits;
        if rows > limits.rows_per_transaction {
            bump(&self.shared.stats.row_limit_errors);
            return Ok(Err(refusal("54000", "transaction row limit exceeded")));
        }
        if bytes > limits.bytes_per_transaction {
            bump(&self.shared.stats.row_limit_errors);
            let mb = limits.bytes_per_transaction / (1024 * 1024);
            return Ok(Err(refusal("54000", format!("transaction size limit {mb}mb exceeded"))));
        }
        Ok(Ok(()))
    }

    /// The client's COMMIT of an explicit transaction.
    async fn commit(&mut self) -> Io<()> {
        let aborted = self.txn.as_ref().is_some_and(|t| t.aborted);
        if aborted {
            // As PostgreSQL answers COMMIT in a failed transaction.
            self.rollback().await?;
            self.txn = None;
            self.reply(&[wire::command_complete("ROLLBACK")]).await?;
            return self.reply_ready(b'I').await;
        }
        match self.try_commit().await? {
            Ok(()) => {
                self.reply(&[wire::command_complete("COMMIT")]).await?;
                self.reply_ready(b'I').await
            }
            Err(why) => {
                self.reply(&[wire::error("ERROR", why.code, &why.message, None)]).await?;
                self.reply_ready(b'I').await
            }
        }
    }

    /// Commits the open transaction on the backend unless DSQL would refuse
    /// it: past its age, a table it read changed by DDL since (OC001), or a
    /// drawn conflict (OC000). Starts the index builds it submitted.
    async fn try_commit(&mut self) -> Io<Result<(), Refused>> {
        let Some(txn) = self.txn.take() else { return Ok(Ok(())) };
        let age = self.shared.config.limits.transaction_age;
        let schema_changed = txn.seen.iter().any(|(name, v)| self.shared.schema_version(name) > *v);
        let draw = self.shared.conflict_permille.load(Ordering::Relaxed);
        let conflict = (txn.dml || txn.ddl > 0) && draw > 0 && rand::rng().random_range(0..1000) < draw;
        let why = if txn.started.elapsed() > age {
            bump(&self.shared.stats.age_limit_errors);
            Some(refusal("54000", format!("transaction age limit of {}s exceeded", age.as_secs())))
        } else if schema_changed {
            bump(&self.shared.stats.schema_conflicts);
            Some(refusal("40001", "schema has been updated by another transaction, please retry: (OC001)"))
        } else if conflict {
            // DSQL reports conflicts as 40001 with the OC code in the message;
            // AWS's connectors also expect the OC code as the SQLSTATE itself.
            // Every other conflict is sent that way.
            let n = self.shared.stats.conflicts.fetch_add(1, Ordering::Relaxed);
            if n % 2 == 1 {
                bump(&self.shared.stats.conflicts_as_oc000);
                Some(refusal("OC000", "change conflicts with another transaction, please retry"))
            } else {
                Some(refusal("40001", "change conflicts with another transaction, please retry: (OC000)"))
            }
        } else {
            None
        };
        if let Some(why) = why {
            self.rollback().await?;
            return Ok(Err(why));
        }
        let delay = self.shared.commit_delay_ms.load(Ordering::Relaxed);
        if delay > 0 && (txn.dml || txn.ddl > 0) {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if let Err(e) = self.internal("COMMIT").await? {
            return Ok(Err(refusal("40001", e)));
        }
        for table in &txn.changes {
            self.shared.bump_schema(table);
        }
        self.shared.record("COMMIT".into());
        for build in txn.builds {
            let shared = self.shared.clone();
            self.shared.jobs.start(build, move |table| shared.bump_schema(table)).await;
        }
        Ok(Ok(()))
    }

    /// Rolls the backend's transaction back (an error only means there was none).
    async fn rollback(&mut self) -> Io<()> {
        let _ = self.internal("ROLLBACK").await?;
        Ok(())
    }

    async fn open_implicit(&mut self) -> Io<()> {
        self.internal("BEGIN").await?.map_err(std::io::Error::other)?;
        let mut txn = Txn::new();
        txn.baseline = Some(self.counted().await?);
        self.txn = Some(txn);
        Ok(())
    }

    // ---- talking to the two sides ----

    /// Sends `messages` to the backend and reads its answer up to
    /// ReadyForQuery: passed straight on, or held back when `buffer`. The
    /// first error is replaced by `refused` when given.
    async fn pass(&mut self, messages: &[Message], mut refused: Option<Refused>, buffer: bool) -> Io<Answer> {
        wire::send(&mut self.backend_w, messages).await?;
        let mut held = Vec::new();
        let mut failed = false;
        loop {
            let m = self.backend.next().await?.ok_or_else(|| std::io::Error::other("backend closed"))?;
            let m = match m.tag {
                b'Z' => return Ok(Answer { held, status: m.body.first().copied().unwrap_or(b'I'), failed }),
                b'E' => {
                    failed = true;
                    match refused.take() {
                        Some(r) => wire::error("ERROR", r.code, &r.message, None),
                        None if wire::error_code(&m).as_deref() == Some("57014")
                            && wire::error_message(&m).contains("statement timeout") =>
                        {
                            bump(&self.shared.stats.age_limit_errors);
                            let age = self.shared.config.limits.transaction_age.as_secs();
                            wire::error("ERROR", "54000", &format!("transaction age limit of {age}s exceeded"), None)
                        }
                        None => m,
                    }
                }
                b'G' => {
                    // COPY FROM STDIN: the client's data goes straight through.
                    wire::send(&mut self.client_w, &[m]).await?;
                    self.copy_in().await?;
                    continue;
                }
                _ => m,
            };
            if buffer {
                held.push(m);
            } else {
                wire::send(&mut self.client_w, &[m]).await?;
            }
        }
    }

    async fn copy_in(&mut self) -> Io<()> {
        loop {
            let m = self.client.next().await?.ok_or_else(|| std::io::Error::other("client closed"))?;
            let done = matches!(m.tag, b'c' | b'f');
            wire::send(&mut self.backend_w, &[m]).await?;
            if done {
                return Ok(());
            }
        }
    }

    /// Runs the stand-in's own statement on the connection: its rows (text),
    /// or its error message. Nothing reaches the client.
    async fn internal(&mut self, sql: &str) -> Io<Result<Vec<Vec<Option<String>>>, String>> {
        wire::send(&mut self.backend_w, &[wire::query(sql)]).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let m = self.backend.next().await?.ok_or_else(|| std::io::Error::other("backend closed"))?;
            match m.tag {
                b'D' => rows.push(wire::data_row(&m)),
                b'E' => error = Some(wire::error_message(&m)),
                b'Z' => {
                    return Ok(match error {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    });
                }
                _ => {}
            }
        }
    }

    async fn query_bool(&mut self, sql: &str) -> Io<Option<bool>> {
        Ok(self
            .internal(sql)
            .await?
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r.first().cloned().flatten()).map(|v| v == "t")))
    }

    async fn reply(&mut self, messages: &[Message]) -> Io<()> {
        if messages.is_empty() {
            return Ok(());
        }
        wire::send(&mut self.client_w, messages).await
    }

    async fn reply_ready(&mut self, status: u8) -> Io<()> {
        wire::send(&mut self.client_w, &[wire::ready(status)]).await
    }
}

/// A string literal (E'' form, so backslashes are safe).
fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

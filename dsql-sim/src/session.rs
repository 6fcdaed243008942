//! One client session (after [`crate::connect`]): every message group (a
//! simple Query, or extended messages up to Sync) checked against DSQL's
//! rules, passed on (rewritten where DSQL differs) and its answer passed
//! back. Groups are handled one at a time.
//!
//! Transactions: DSQL's limits count a whole transaction, so a writing group
//! outside a transaction block runs inside one the stand-in opens and
//! commits itself, after checking the limits and drawing for a conflict.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::jobs::Build;
use crate::sql::{self, Kind, Refused, Statement};
use crate::wire::{self, Message, Reader};
use crate::{Shared, bump};

/// A statement PostgreSQL refuses while parsing: the stand-in sends it in
/// place of a refused one, so the backend ends the group (and aborts an open
/// transaction) exactly as for a real error, and the error is replaced by DSQL's.
const FAILS: &str = "SELECT dsql_sim_refused_statement()";

pub(crate) type Io<T> = std::io::Result<T>;

pub(crate) fn fatal(code: &str, message: &str, detail: Option<&str>) -> Message {
    wire::error("FATAL", code, message, detail)
}

/// An open transaction as the stand-in sees it.
pub(crate) struct Txn {
    pub(crate) started: Instant,
    /// Schema version of each name the transaction mentioned, when first mentioned.
    pub(crate) seen: HashMap<String, u64>,
    pub(crate) ddl: u32,
    pub(crate) dml: bool,
    /// Tables whose schema this transaction changes (versions raised at commit).
    pub(crate) changes: Vec<String>,
    pub(crate) builds: Vec<Build>,
    /// The stand-in ended it (a limit): everything but ROLLBACK is refused.
    pub(crate) aborted: bool,
    /// Rows and bytes PostgreSQL had counted for the session when the
    /// transaction began: its statistics hold changes of earlier
    /// transactions until they are flushed, which never happens inside one.
    pub(crate) baseline: Option<(i64, i64)>,
}

impl Txn {
    pub(crate) fn new() -> Self {
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

pub(crate) struct Session<R, W> {
    pub(crate) shared: Arc<Shared>,
    client: Reader<R>,
    client_w: W,
    backend: Reader<OwnedReadHalf>,
    backend_w: OwnedWriteHalf,
    born: Instant,
    pub(crate) txn: Option<Txn>,
    prepared: HashMap<String, Statement>,
    portals: HashMap<String, String>,
}

pub(crate) fn refusal(code: &'static str, message: impl Into<String>) -> Refused {
    Refused { code, message: message.into() }
}

fn writes(kind: &Kind) -> bool {
    matches!(kind, Kind::Dml { .. } | Kind::Ddl { .. } | Kind::CreateIndexAsync { .. } | Kind::ValidateAsync { .. })
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Reader<R>,
        client_w: W,
        backend_r: OwnedReadHalf,
        backend_w: OwnedWriteHalf,
    ) -> Self {
        Self {
            shared,
            client,
            client_w,
            backend: Reader::new(backend_r),
            backend_w,
            born: Instant::now(),
            txn: None,
            prepared: HashMap::new(),
            portals: HashMap::new(),
        }
    }

    pub(crate) async fn run(&mut self) -> Io<()> {
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
            let arrived = tokio::time::Instant::now();
            match m.tag {
                b'X' => {
                    let _ = wire::send(&mut self.backend_w, &[m]).await;
                    return Ok(());
                }
                b'Q' => {
                    self.round_trip(arrived).await;
                    self.simple(m).await?
                }
                b'S' => {
                    pending.push(m);
                    let group = std::mem::take(&mut pending);
                    self.round_trip(arrived).await;
                    self.extended(group).await?
                }
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => pending.push(m),
                _ => wire::send(&mut self.backend_w, &[m]).await?,
            }
        }
    }

    /// One round trip: counted, and answered no earlier than the configured
    /// latency after the group arrived (pipelined groups arrive together, so
    /// their latencies overlap as on a network).
    async fn round_trip(&self, arrived: tokio::time::Instant) {
        bump(&self.shared.stats.round_trips);
        let config = &self.shared.config;
        let jitter = match config.latency_jitter.as_micros() as u64 {
            0 => Duration::ZERO,
            most => Duration::from_micros(rand::RngExt::random_range(&mut rand::rng(), 0..=most)),
        };
        let delay = config.latency + jitter;
        if !delay.is_zero() {
            tokio::time::sleep_until(arrived + delay).await;
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
                    if let Some(r) = sql::refusal(&statement, self.shared.strictness()) {
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
        if let Some(r) = &refused {
            bump(&self.shared.stats.refusals);
            self.shared.refused.lock().expect("refused").push(format!("{}: {}", r.code, r.message));
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
    pub(crate) async fn internal(&mut self, sql: &str) -> Io<Result<Vec<Vec<Option<String>>>, String>> {
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

    pub(crate) async fn query_bool(&mut self, sql: &str) -> Io<Option<bool>> {
        Ok(self
            .internal(sql)
            .await?
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r.first().cloned().flatten()).map(|v| v == "t")))
    }

    pub(crate) async fn reply(&mut self, messages: &[Message]) -> Io<()> {
        if messages.is_empty() {
            return Ok(());
        }
        wire::send(&mut self.client_w, messages).await
    }

    pub(crate) async fn reply_ready(&mut self, status: u8) -> Io<()> {
        wire::send(&mut self.client_w, &[wire::ready(status)]).await
    }
}

/// A string literal (E'' form, so backslashes are safe).
pub(crate) fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

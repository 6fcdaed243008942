//! Opening connections: plain or verified-TLS PostgreSQL, and DSQL with a fresh
//! IAM token for every connection. New connections are paced to stay well
//! under DSQL's 100 per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dsql::auth_token::{AuthTokenGenerator, Config as TokenConfig};
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{DbError, ErrorClass, ErrorContext};
use super::target::{DatabaseTarget, DsqlTarget, TlsMode};
use super::tls::verifying_connector;
use crate::db::Dialect;

/// At most this many new connections per second from one process.
pub const CONNECTS_PER_SECOND: u32 = 50;
/// Idle connections kept for reuse: enough for every worker of a migration.
pub const MAX_IDLE: usize = 16;

/// Opens connections to one database.
pub struct Connector {
    target: DatabaseTarget,
    tls: Option<MakeRustlsConnect>,
    tokens: Option<TokenSource>,
    pace: Mutex<Instant>,
    /// Connections returned by finished sessions, with when they were opened.
    idle: std::sync::Mutex<Vec<(Client, Instant)>>,
    /// Until one connection succeeds, failing to connect is most likely a wrong
    /// URL, host or credential: reported at once instead of retried.
    connected_once: AtomicBool,
}

impl Connector {
    /// `extra_ca_pem`: trust anchors added to the web PKI roots (a `--ca-file`
    /// or a CA bundle Secret); PostgreSQL's `sslrootcert` is read here too.
    pub fn new(target: DatabaseTarget, extra_ca_pem: Option<Vec<u8>>) -> Result<Self, DbError> {
        let mut ca = extra_ca_pem;
        if let DatabaseTarget::Postgres(pg) = &target
            && let Some(path) = &pg.root_cert_file
        {
            let pem = std::fs::read(path).map_err(|e| DbError::config("read sslrootcert", format!("{path}: {e}")))?;
            ca.get_or_insert_with(Vec::new).extend_from_slice(&pem);
        }
        let wants_tls = match &target {
            DatabaseTarget::Postgres(pg) => pg.tls == TlsMode::VerifyFull,
            DatabaseTarget::Dsql(_) => true,
        };
        let tls = if wants_tls { Some(verifying_connector(ca.as_deref())?) } else { None };
        let tokens = match &target {
            DatabaseTarget::Dsql(d) => Some(TokenSource::new(d.clone())),
            DatabaseTarget::Postgres(_) => None,
        };
        Ok(Self {
            target,
            tls,
            tokens,
            pace: Mutex::new(Instant::now()),
            idle: std::sync::Mutex::new(Vec::new()),
            connected_once: AtomicBool::new(false),
        })
    }

    /// Uses fixed credentials for DSQL tokens instead of the default chain (tests, CI).
    pub fn with_token_source(mut self, tokens: TokenSource) -> Self {
        self.tokens = Some(tokens);
        self
    }

    pub fn dialect(&self) -> Dialect {
        self.target.dialect()
    }

    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// The server as `host:port`.
    pub fn endpoint(&self) -> String {
        self.target.endpoint()
    }

    pub fn identity(&self) -> String {
        self.target.identity()
    }

    /// An idle connection younger than `max_age`, if one is pooled.
    pub fn reuse(&self, max_age: Duration) -> Option<(Client, Instant)> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some((client, born)) = idle.pop() {
            if !client.is_closed() && born.elapsed() < max_age {
                return Some((client, born));
            }
        }
        None
    }

    /// Returns a healthy connection to the pool (or closes it when the pool is full).
    pub fn give_back(&self, client: Client, born: Instant) {
        let mut idle = self.idle.lock().expect("pool lock");
        if !client.is_closed() && idle.len() < MAX_IDLE {
            idle.push((client, born));
        }
    }

    /// Opens a new connection; its driver runs on a background task.
    pub async fn connect(&self) -> Result<Client, DbError> {
        match self.open().await {
            Ok(client) => {
                self.connected_once.store(true, Ordering::Relaxed);
                Ok(client)
            }
            Err(mut e) if !self.connected_once.load(Ordering::Relaxed) && e.sqlstate.is_none() => {
                e.class = ErrorClass::Permanent;
                e.message = format!("cannot reach {}: {}", self.describe(), e.message);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn open(&self) -> Result<Client, DbError> {
        self.wait_for_turn().await;
        let config = match &self.target {
            DatabaseTarget::Postgres(pg) => pg.config.clone(),
            DatabaseTarget::Dsql(d) => {
                let token = self.tokens.as_ref().expect("DSQL connector has a token source").token().await?;
                let mut config = tokio_postgres::Config::new();
                config
                    .host(&d.endpoint)
                    .port(d.port)
                    .user(&d.user)
                    .dbname(&d.database)
                    .password(token)
                    .ssl_mode(tokio_postgres::config::SslMode::Require)
                    .application_name("identity-migrator")
                    .connect_timeout(Duration::from_secs(10));
                config
            }
        };
        let client = match &self.tls {
            Some(tls) => {
                let mut config = config;
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, connection) = config.connect(tls.clone()).await.ctx("connect")?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "database connection ended");
                    }
                });
                client
            }
            None => {
                let (client, connection) = config.connect(NoTls).await.ctx("connect")?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "database connection ended");
                    }
                });
                client
            }
        };
        if self.dialect() == Dialect::Postgres {
            // Renames wait for an exclusive lock; bounded waits keep writers from
            // queueing behind us (the error is retried).
            client.batch_execute("SET lock_timeout = '5s'").await.ctx("configure session")?;
        }
        Ok(client)
    }

    async fn wait_for_turn(&self) {
        let gap = Duration::from_secs(1) / CONNECTS_PER_SECOND;
        let mut next = self.pace.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep(*next - now).await;
        }
        *next = (*next).max(now) + gap;
    }
}

/// Generates DSQL IAM authentication tokens: a SigV4-presigned request made
/// locally, with credentials from the default chain (environment, profile, web
/// identity / IRSA, EKS Pod Identity, instance role) unless given.
pub struct TokenSource {
    target: DsqlTarget,
    fixed: Option<aws_credential_types::Credentials>,
    sdk: OnceCell<SdkConfig>,
}

impl TokenSource {
    pub fn new(target: DsqlTarget) -> Self {
        Self { target, fixed: None, sdk: OnceCell::new() }
    }

    pub fn with_credentials(target: DsqlTarget, credentials: aws_credential_types::Credentials) -> Self {
        Self { target, fixed: Some(credentials), sdk: OnceCell::new() }
    }

    /// A new token (never logged).
    pub async fn token(&self) -> Result<String, DbError> {
        let region = Region::new(self.target.region.clone());
        let sdk = self
            .sdk
            .get_or_init(|| async {
                let loader = aws_config::defaults(BehaviorVersion::latest()).region(region.clone());
                match &self.fixed {
                    Some(creds) => loader.credentials_provider(creds.clone()).load().await,
                    None => loader.load().await,
                }
            })
            .await;
        let mut builder = TokenConfig::builder()
            .hostname(&self.target.endpoint)
            .region(region)
            .expires_in(self.target.token_lifetime.as_secs().max(1));
        if let Some(creds) = &self.fixed {
            builder = builder.credentials(creds.clone());
        }
        let config = builder.build().map_err(|e| DbError::config("configure DSQL token", e.to_string()))?;
        let generator = AuthTokenGenerator::new(config);
        let token = if self.target.is_admin() {
            generator.db_connect_admin_auth_token(sdk).await
        } else {
            generator.db_connect_auth_token(sdk).await
        };
        token
            .map(|t| t.as_str().to_string())
            .map_err(|e| DbError::transient("generate DSQL auth token", format!("no usable AWS credentials: {e}")))
    }
}

/// Shared by the workers of one migration.
pub type SharedConnector = Arc<Connector>;

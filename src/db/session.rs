//! One worker's connection: opened lazily, replaced when it breaks, recycled
//! before DSQL's 60-minute limit, and the place where the engine's single
//! retry policy is applied to whole transactions.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::connect::Connector;
use super::error::DbError;
use super::retry::{Backoff, RetryPolicy};

/// Connections are replaced after this age, well before DSQL ends them at 60 minutes.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(50 * 60);

/// Retries across every session of one migration, for status and metrics.
#[derive(Default, Debug)]
pub struct RetryCounter(AtomicU64);

impl RetryCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Session {
    connector: Arc<Connector>,
    client: Option<(Arc<Client>, Instant)>,
    policy: RetryPolicy,
    retries: Arc<RetryCounter>,
}

impl Session {
    pub fn new(connector: Arc<Connector>, policy: RetryPolicy, retries: Arc<RetryCounter>) -> Self {
        Self { connector, client: None, policy, retries }
    }

    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    async fn client(&mut self) -> Result<Arc<Client>, DbError> {
        let stale = match &self.client {
            Some((client, born)) => client.is_closed() || born.elapsed() > MAX_CONNECTION_AGE,
            None => true,
        };
        if stale {
            self.client = None;
            let (client, born) = match self.connector.reuse(MAX_CONNECTION_AGE) {
                Some(pooled) => pooled,
                None => (self.connector.connect().await?, Instant::now()),
            };
            self.client = Some((Arc::new(client), born));
        }
        Ok(self.client.as_ref().expect("connected above").0.clone())
    }

    /// Runs `op` (one whole transaction, or one statement) until it succeeds,
    /// fails permanently, or the retry budget is spent. Transient failures
    /// (OCC conflicts, lost connections, unavailability) are retried after a
    /// jittered backoff on a healthy connection; a too-large transaction
    /// (54000) is returned to the caller, which must make it smaller.
    ///
    /// `op` gets the connection as an owned handle, so its future borrows
    /// nothing from the session and can run on any task.
    pub async fn retry<T, F, Fut>(&mut self, what: &str, mut op: F) -> Result<T, DbError>
    where
        F: FnMut(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut backoff = Backoff::new(self.policy);
        loop {
            let result = match self.client().await {
                Ok(client) => op(client).await,
                Err(e) => Err(e),
            };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if err.breaks_connection() {
                self.client = None;
            }
            if !err.is_transient() {
                return Err(err);
            }
            let Some(delay) = backoff.next_delay() else {
                return Err(DbError::engine(
                    what,
                    format!("gave up after {} attempts; last error: {err}", backoff.attempts() + 1),
                ));
            };
            self.retries.bump();
            tracing::warn!(operation = what, sqlstate = err.sqlstate.as_deref(), error = %err.message,
                attempt = backoff.attempts(), delay_ms = delay.as_millis() as u64, "transient error, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A connection that broke was already dropped; a healthy one is reused.
        if let Some((client, born)) = self.client.take()
            && let Ok(client) = Arc::try_unwrap(client)
        {
            self.connector.give_back(client, born);
        }
    }
}

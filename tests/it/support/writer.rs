//! A writer for the live-table tests: inserts (with and without ids), updates
//! and deletes against `post_tag` while a migration runs, retrying through the
//! cut-over window, and keeping a ledger of what the table must hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::prelude::*;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// `id -> (post_id, tag_id, created_at as text)`.
pub type Ledger = BTreeMap<i64, (String, String, String)>;

#[derive(Debug, Default, Clone)]
pub struct WriterStats {
    pub inserts_with_id: u64,
    pub inserts_without_id: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Statements refused because the table name was absent (the window).
    pub window_retries: u64,
    pub other_retries: u64,
}

pub struct Writer {
    client: Client,
    pub ledger: Ledger,
    next_id: i64,
    rng: StdRng,
    pub stats: WriterStats,
}

/// Reads the table as the ledger sees it.
pub async fn read_table(client: &Client) -> Ledger {
    let rows =
        client.query("SELECT id, post_id, tag_id, created_at::text FROM post_tag ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3)))).collect()
}

enum Attempt<T> {
    Done(T),
    Retry,
}

impl Writer {
    pub async fn new(url: &str, seed: u64) -> Self {
        let client = super::connect(url).await;
        let ledger = read_table(&client).await;
        Self { client, ledger, next_id: 50_000_000, rng: StdRng::seed_from_u64(seed), stats: WriterStats::default() }
    }

    /// Whether a statement error means "try again" (the window, a conflict).
    fn retryable(&mut self, e: &tokio_postgres::Error) -> bool {
        match e.code() {
            Some(code) if *code == SqlState::UNDEFINED_TABLE => {
                self.stats.window_retries += 1;
                true
            }
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::LOCK_NOT_AVAILABLE => {
                self.stats.other_retries += 1;
                true
            }
            _ => false,
        }
    }

    async fn attempt_insert(&mut self, explicit: bool) -> Attempt<bool> {
        let post = format!("live-{}", self.rng.random_range(0..1000));
        let tag = ["aws", "dsql", "rust"][self.rng.random_range(0..3)].to_string();
        let result = if explicit {
            let id = self.next_id;
            self.client
                .query_one(
                    "INSERT INTO post_tag (id, post_id, tag_id) VALUES ($1, $2, $3) RETURNING id, created_at::text",
                    &[&id, &post, &tag],
                )
                .await
        } else {
            self.client
                .query_one(
                    "INSERT INTO post_tag (post_id, tag_id) VALUES ($1, $2) RETURNING id, created_at::text",
                    &[&post, &tag],
                )
                .await
        };
        match result {
            Ok(row) => {
                let id: i64 = row.get(0);
                assert!(self.ledger.insert(id, (post, tag, row.get(1))).is_none(), "id {id} handed out twice");
                if explicit {
                    self.next_id += 1;
                    self.stats.inserts_with_id += 1;
                } else {
                    if self.stats.inserts_without_id == 0 {
                        // The table generates ids now, from just past the highest:
                        // explicit ids move far away from them.
                        self.next_id += 1_000_000_000;
                    }
                    self.stats.inserts_without_id += 1;
                }
                Attempt::Done(true)
            }
            // Before the cut-over the table has no identity: ids must be given.
            Err(e) if !explicit && e.code() == Some(&SqlState::NOT_NULL_VIOLATION) => Attempt::Done(false),
            Err(e) if self.retryable(&e) => Attempt::Retry,
            Err(e) => panic!("insert failed: {:?}", e.as_db_error()),
        }
    }

    /// One write; retried until it lands.
    pub async fn step(&mut self) {
        loop {
            let roll: u32 = self.rng.random_range(0..100);
            let done = match roll {
                0..40 => {
                    // Without an id first: refused before the cut-over (no
                    // identity yet), then the writer gives one from its own
                    // counter, as the application did. Once the table generates
                    // ids, half the inserts still give one, from a far range.
                    let explicit = self.stats.inserts_without_id > 0 && roll < 20;
                    match self.attempt_insert(explicit).await {
                        Attempt::Done(true) => true,
                        Attempt::Done(false) => matches!(self.attempt_insert(true).await, Attempt::Done(true)),
                        Attempt::Retry => false,
                    }
                }
                40..80 => self.update().await,
                _ => self.delete().await,
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    fn pick(&mut self) -> Option<i64> {
        let n = self.ledger.len();
        if n == 0 {
            return None;
        }
        self.ledger.keys().nth(self.rng.random_range(0..n)).copied()
    }

    async fn update(&mut self) -> bool {
        let Some(id) = self.pick() else { return true };
        let tag = format!("updated-{}", self.rng.random_range(0..1_000_000));
        // The statement stamps created_at as well: the change-tracking column.
        let result = self
            .client
            .query_opt(
                "UPDATE post_tag SET tag_id = $2, created_at = clock_timestamp() WHERE id = $1 RETURNING post_id, created_at::text",
                &[&id, &tag],
            )
            .await;
        match result {
            Ok(Some(row)) => {
                self.ledger.insert(id, (row.get(0), tag, row.get(1)));
                self.stats.updates += 1;
                true
            }
            Ok(None) => panic!("row {id} of the ledger is missing from the table"),
            Err(e) if self.retryable(&e) => false,
            Err(e) => panic!("update failed: {:?}", e.as_db_error()),
        }
    }

    async fn delete(&mut self) -> bool {
        let Some(id) = self.pick() else { return true };
        match self.client.execute("DELETE FROM post_tag WHERE id = $1", &[&id]).await {
            Ok(1) => {
                self.ledger.remove(&id);
                self.stats.deletes += 1;
                true
            }
            Ok(n) => panic!("deleting row {id} touched {n} rows"),
            Err(e) if self.retryable(&e) => false,
            Err(e) => panic!("delete failed: {:?}", e.as_db_error()),
        }
    }

    /// Writes until `stop`, then `extra` more writes.
    pub async fn run_until(mut self, stop: Arc<AtomicBool>, extra: usize) -> Self {
        while !stop.load(Ordering::SeqCst) {
            self.step().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for _ in 0..extra {
            self.step().await;
        }
        self
    }
}

//! One transaction on a connection: BEGIN, the body, COMMIT, and ROLLBACK
//! when anything fails, so the connection goes back to its session clean.

use std::future::Future;

use tokio_postgres::Client;

use super::error::{DbError, ErrorContext};

/// `body` between BEGIN and COMMIT on `c`, rolled back when it fails.
pub async fn committed(c: &Client, body: impl Future<Output = Result<(), DbError>>) -> Result<(), DbError> {
    c.batch_execute("BEGIN").await.ctx("begin")?;
    let result = match body.await {
        Ok(()) => c.batch_execute("COMMIT").await.ctx("commit"),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = c.batch_execute("ROLLBACK").await;
    }
    result
}

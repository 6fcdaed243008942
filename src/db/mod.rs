//! The database edge: where to connect, how (TLS, DSQL tokens), and how
//! failures are classified and retried.

pub mod connect;
pub mod error;
pub mod retry;
pub mod session;
pub mod target;
pub mod tls;

pub use connect::{Connector, TokenSource};
pub use error::{Context, DbError, ErrorClass};
pub use retry::RetryPolicy;
pub use session::{RetryCounter, Session};
pub use target::{DatabaseTarget, DsqlTarget, PostgresTarget, TlsMode};

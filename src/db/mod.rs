//! The database edge: where to connect, how (TLS, DSQL tokens), and how
//! failures are classified and retried.

pub mod connect;
pub mod dialect;
pub mod error;
pub mod retry;
pub mod session;
pub mod target;
pub mod tls;
pub mod transaction;

pub use connect::{Connector, TokenSource};
pub use dialect::Dialect;
pub use error::{DbError, ErrorClass, ErrorContext};
pub use retry::RetryPolicy;
pub use session::{RetryCounter, Session};
pub use target::{
    DatabaseTarget, DsqlTarget, PostgresTarget, SpecTargetError, TOKEN_LIFETIME, TargetError, TlsMode, resolve_target,
};
pub use transaction::committed;

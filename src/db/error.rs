//! Database errors with what the engine was doing, and the one retry
//! classification the whole engine uses.

use std::fmt;

/// What to do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry the whole transaction after a jittered backoff: OCC conflicts,
    /// lost connections, throttling, server restarts.
    Transient,
    /// The transaction mutated too many rows or bytes (SQLSTATE 54000,
    /// "transaction row limit exceeded" or "transaction size limit"): retry
    /// with a smaller batch.
    TooLarge,
    /// The transaction ran past DSQL's age limit (SQLSTATE 54000, "transaction
    /// age limit of 300s exceeded"): retry the work in smaller pieces, so that
    /// each transaction is shorter.
    TooLong,
    /// Retrying cannot help; surface it.
    Permanent,
}

/// Classifies by SQLSTATE and message. `None` for the state means the error
/// came from the connection (I/O, closed socket), not from the server.
///
/// DSQL's limits (its quotas page) share SQLSTATE 54000 and differ by
/// message: rows or bytes per transaction mean a smaller batch, the
/// transaction age a shorter transaction, and the key, row and column sizes
/// are the data's own (no retry helps).
pub fn classify(sqlstate: Option<&str>, message: &str) -> ErrorClass {
    let Some(code) = sqlstate else {
        return ErrorClass::Transient;
    };
    let lower = message.to_ascii_lowercase();
    match code {
        // Serialization failure: DSQL's OC000 (data conflict) and OC001 (schema
        // changed), which AWS's connectors also see as SQLSTATEs of their own.
        "40001" | "40P01" | "OC000" | "OC001" => ErrorClass::Transient,
        // Lock timeout (the engine bounds its waits for DDL locks on PostgreSQL).
        "55P03" => ErrorClass::Transient,
        "54000" if lower.contains("transaction row limit") || lower.contains("transaction size limit") => {
            ErrorClass::TooLarge
        }
        "54000" if lower.contains("transaction age limit") => ErrorClass::TooLong,
        "XX000" if lower.contains("server unavailable") => ErrorClass::Transient,
        // Out of memory (DSQL's 128 MiB per query) and a full disk: the same
        // statement fails the same way again.
        "53100" | "53200" => ErrorClass::Permanent,
        // Connection exceptions, too many connections or connects per second,
        // operator intervention (admin shutdown, pg_terminate_backend).
        _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("57") => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

impl ErrorClass {
    /// A smaller piece of the same work may succeed: fewer rows per batch, or
    /// a shorter transaction.
    pub fn wants_smaller_piece(self) -> bool {
        matches!(self, ErrorClass::TooLarge | ErrorClass::TooLong)
    }
}

/// A failed database operation: the operation, SQLSTATE and the server's words.
#[derive(Clone, Debug)]
pub struct DbError {
    pub context: String,
    pub sqlstate: Option<String>,
    pub message: String,
    pub class: ErrorClass,
}

impl DbError {
    pub fn new(context: impl Into<String>, sqlstate: Option<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        let class = classify(sqlstate.as_deref(), &message);
        Self { context: context.into(), sqlstate, message, class }
    }

    /// A permanent error raised by the engine itself (an unexpected catalog state, say).
    pub fn engine(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self { context: context.into(), sqlstate: None, message: message.into(), class: ErrorClass::Permanent }
    }

    /// A failure outside the database that may heal (fetching credentials, say).
    pub fn transient(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self { context: context.into(), sqlstate: None, message: message.into(), class: ErrorClass::Transient }
    }

    /// A configuration problem (URL, TLS): permanent.
    pub fn config(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self::engine(context, message)
    }

    pub fn from_pg(context: impl Into<String>, err: &tokio_postgres::Error) -> Self {
        let context = context.into();
        if let Some(db) = err.as_db_error() {
            let code = db.code().code().to_string();
            let message = without_row_data(&code, db.message(), db.constraint());
            return Self::new(context, Some(code), message);
        }
        let message = error_chain(err);
        // TLS and configuration problems do not heal by retrying.
        let lower = message.to_ascii_lowercase();
        let permanent = ["tls", "certificate", "invalid configuration", "unknown option", "password"]
            .iter()
            .any(|w| lower.contains(w));
        Self {
            context,
            sqlstate: None,
            message,
            class: if permanent { ErrorClass::Permanent } else { ErrorClass::Transient },
        }
    }

    /// The server has no such catalog, function or feature (DSQL lacks parts
    /// of PostgreSQL's): the fact asked for is unknown, not an error of the run.
    pub fn catalog_missing(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some("42P01" | "42883" | "0A000"))
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// The connection cannot be reused after this error.
    pub fn breaks_connection(&self) -> bool {
        match &self.sqlstate {
            None => true,
            Some(code) => code.starts_with("08") || code.starts_with("57"),
        }
    }
}

/// Attaches what the engine was doing to a driver error.
pub trait ErrorContext<T> {
    fn ctx(self, context: &str) -> Result<T, DbError>;
}

impl<T> ErrorContext<T> for Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &str) -> Result<T, DbError> {
        self.map_err(|e| DbError::from_pg(context, &e))
    }
}

/// The server's message without the row data it may carry: this text goes
/// into status and Events, which many people can read. `DETAIL` ("Key
/// (email)=(...)", "Failing row contains (...)") is dropped, and so is the
/// value a data exception quotes ("invalid input syntax for type integer:
/// "..."); the SQLSTATE and the constraint's name stay.
fn without_row_data(code: &str, message: &str, constraint: Option<&str>) -> String {
    let mut message = match message.find(": \"") {
        Some(at) if code.starts_with("22") => message[..at].to_string(),
        _ => message.to_string(),
    };
    if let Some(name) = constraint
        && !message.contains(name)
    {
        message.push_str(&format!(" (constraint {name})"));
    }
    message
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "{}: SQLSTATE {code}: {}", self.context, self.message),
            None => write!(f, "{}: {}", self.context, self.message),
        }
    }
}

impl std::error::Error for DbError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occ_conflicts_and_connection_trouble_are_transient() {
        assert_eq!(classify(Some("40001"), "change conflicts with another transaction (OC000)"), ErrorClass::Transient);
        assert_eq!(
            classify(Some("40001"), "schema has been updated by another transaction (OC001)"),
            ErrorClass::Transient
        );
        for code in ["08006", "08001", "53300", "53400", "57P01", "57P03", "57014", "55P03", "40P01"] {
            assert_eq!(classify(Some(code), ""), ErrorClass::Transient, "{code}");
        }
        // AWS's connectors see DSQL's conflicts under SQLSTATEs of their own too.
        assert_eq!(classify(Some("OC000"), "change conflicts with another transaction"), ErrorClass::Transient);
        assert_eq!(classify(Some("OC001"), "schema has been updated"), ErrorClass::Transient);
        assert_eq!(classify(Some("XX000"), "Server Unavailable, retry later"), ErrorClass::Transient);
        assert_eq!(classify(None, "connection closed"), ErrorClass::Transient);
    }

    #[test]
    fn limits_shrink_the_batch_and_everything_else_is_permanent() {
        assert_eq!(classify(Some("54000"), "transaction row limit exceeded"), ErrorClass::TooLarge);
        let size = "transaction size limit 10mb exceeded";
        assert_eq!(classify(Some("54000"), size), ErrorClass::TooLarge);
        assert_eq!(classify(Some("54000"), "transaction age limit of 300s exceeded"), ErrorClass::TooLong);
        assert!(ErrorClass::TooLong.wants_smaller_piece() && ErrorClass::TooLarge.wants_smaller_piece());
        // The data's own limits: no smaller batch helps.
        for message in ["key size too large", "maximum row size exceeded", "maximum column size exceeded"] {
            assert_eq!(classify(Some("54000"), message), ErrorClass::Permanent, "{message}");
        }
        // Out of memory fails the same way each time: not retried 25 times.
        assert_eq!(classify(Some("53200"), "out of memory"), ErrorClass::Permanent);
        assert_eq!(classify(Some("53100"), "Current cluster size exceeds cluster size limit."), ErrorClass::Permanent);
        for code in ["42P01", "42703", "23505", "XX000", "0A000", "28P01", "54001"] {
            assert_eq!(classify(Some(code), "boom"), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn row_data_never_reaches_the_message() {
        let m = without_row_data("22P02", "invalid input syntax for type integer: \"4111 1111\"", None);
        assert_eq!(m, "invalid input syntax for type integer");
        let m =
            without_row_data("23505", "duplicate key value violates unique constraint \"u_email\"", Some("u_email"));
        assert_eq!(m, "duplicate key value violates unique constraint \"u_email\"");
        let m = without_row_data("23514", "new row violates a check", Some("positive"));
        assert_eq!(m, "new row violates a check (constraint positive)");
    }

    #[test]
    fn display_names_the_operation_and_the_sqlstate() {
        let e = DbError::new("copy batch", Some("42P01".into()), "relation \"x\" does not exist");
        assert_eq!(e.to_string(), "copy batch: SQLSTATE 42P01: relation \"x\" does not exist");
        assert!(!e.breaks_connection());
        assert!(DbError::new("connect", Some("08006".into()), "").breaks_connection());
    }
}

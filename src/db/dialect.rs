//! The SQL flavour of a target: PostgreSQL, or DSQL with its restrictions.

/// The SQL flavour to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Dsql,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Dsql => "dsql",
        }
    }
}

/// A dialect name that is neither `postgres` nor `dsql`.
#[derive(Debug, thiserror::Error)]
#[error("unknown dialect {0:?}: expected postgres or dsql")]
pub struct UnknownDialect(pub String);

impl std::str::FromStr for Dialect {
    type Err = UnknownDialect;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "dsql" => Ok(Dialect::Dsql),
            other => Err(UnknownDialect(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_parses() {
        assert!(matches!("dsql".parse::<Dialect>(), Ok(Dialect::Dsql)));
        assert!("mysql".parse::<Dialect>().is_err());
    }
}

//! Where the engine connects, parsed and checked before any connection is
//! made: a PostgreSQL URL (with its `sslmode`) or an Aurora DSQL endpoint. Pure.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::api;
use crate::db::Dialect;

/// DSQL tokens are generated per connection; this is how long each may be used to open one.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Why a target cannot be used, before any connection is tried.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("not a valid PostgreSQL connection string: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("sslmode={0} may fall back to an unencrypted connection; use disable, require or verify-full")]
    InsecureSslMode(String),
    #[error("unknown sslmode {0:?}; use disable, require or verify-full")]
    UnknownSslMode(String),
    #[error("TLS cannot be used over a Unix socket; use sslmode=disable or a TCP host")]
    TlsOverUnixSocket,
    #[error("{0:?} is not a host name; expected <cluster-id>.dsql.<region>.on.aws, optionally with :<port>")]
    NotAHostName(String),
    #[error("{0:?} is not a port number (1 to 65535)")]
    BadPort(String),
    #[error("no region given and none in the endpoint {0:?}; set spec.target.dsql.region")]
    NoRegion(String),
    #[error("user must not be empty")]
    EmptyUser,
    #[error("names a Kubernetes Secret, which this command cannot read; pass --database-url or set DATABASE_URL")]
    SecretNotRead,
    #[error("set target.dsql or pass --database-url")]
    NoTarget,
    #[error("exactly one of dsql and postgres must be set")]
    NotExactlyOne,
}

/// A [`TargetError`] with the field or flag it is about.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct SpecTargetError {
    pub field: &'static str,
    #[source]
    pub source: TargetError,
}

/// Where a spec's `target` points: the one function both front ends use.
/// `postgres_url` is the PostgreSQL URL the front end found, with the field or
/// flag it came from (a Secret, or `--database-url`, which replaces the spec's
/// target); a DSQL target needs none.
pub fn resolve_target(
    target: &api::Target,
    postgres_url: Option<(&'static str, &str)>,
) -> Result<DatabaseTarget, SpecTargetError> {
    if let Some((field, url)) = postgres_url {
        return parse_postgres_url(url)
            .map(DatabaseTarget::Postgres)
            .map_err(|source| SpecTargetError { field, source });
    }
    match (&target.dsql, &target.postgres) {
        (Some(d), _) => dsql_target(&d.endpoint, d.region.as_deref(), &d.user, &d.database, TOKEN_LIFETIME)
            .map(DatabaseTarget::Dsql)
            .map_err(|source| SpecTargetError { field: "spec.target.dsql", source }),
        (None, Some(_)) => {
            Err(SpecTargetError { field: "spec.target.postgres.urlSecretRef", source: TargetError::SecretNotRead })
        }
        (None, None) => Err(SpecTargetError { field: "spec.target", source: TargetError::NoTarget }),
    }
}

/// How a PostgreSQL connection uses TLS. There is no mode that encrypts
/// without verifying: `require` verifies like `verify-full`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    /// Chain and host name verified against the web PKI roots and the optional CA bundle.
    VerifyFull,
}

/// A PostgreSQL database reached with a URL.
#[derive(Clone)]
pub struct PostgresTarget {
    pub config: tokio_postgres::Config,
    pub tls: TlsMode,
    /// `sslrootcert` from the URL: a PEM file of extra trust anchors.
    pub root_cert_file: Option<String>,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_postgres(&self.config, self.tls))
    }
}

/// An Aurora DSQL cluster reached with IAM authentication tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct DsqlTarget {
    /// The host name: what tokens are signed for and TLS verifies.
    pub endpoint: String,
    /// 5432 unless the spec's endpoint says `host:port` (a proxy or a stand-in).
    pub port: u16,
    pub region: String,
    pub user: String,
    pub database: String,
    /// How long each generated token stays valid for opening a connection.
    pub token_lifetime: Duration,
}

impl DsqlTarget {
    /// `admin` connects with a `DbConnectAdmin` token, every other role with `DbConnect`.
    pub fn is_admin(&self) -> bool {
        self.user == "admin"
    }

    /// `host`, or `host:port` when the port is not DSQL's 5432.
    pub fn host_port(&self) -> String {
        if self.port == DSQL_PORT { self.endpoint.clone() } else { format!("{}:{}", self.endpoint, self.port) }
    }
}

/// The port every DSQL cluster listens on.
pub const DSQL_PORT: u16 = 5432;

#[derive(Clone, Debug)]
pub enum DatabaseTarget {
    Postgres(PostgresTarget),
    Dsql(DsqlTarget),
}

impl DatabaseTarget {
    pub fn dialect(&self) -> Dialect {
        match self {
            DatabaseTarget::Postgres(_) => Dialect::Postgres,
            DatabaseTarget::Dsql(_) => Dialect::Dsql,
        }
    }

    /// Which database, without credentials or TLS settings: the identity of a
    /// migration's target in state files.
    pub fn identity(&self) -> String {
        match self {
            DatabaseTarget::Postgres(pg) => {
                let described = describe_postgres(&pg.config, pg.tls);
                described.split(" (").next().unwrap_or_default().to_string()
            }
            DatabaseTarget::Dsql(d) => format!("dsql://{}@{}/{}", d.user, d.host_port(), d.database),
        }
    }

    /// The server as `host:port` (host in lower case): migrations that share
    /// one share its capacity (`maxConcurrentPerTarget`).
    pub fn endpoint(&self) -> String {
        match self {
            DatabaseTarget::Postgres(pg) => {
                let host = match pg.config.get_hosts().first() {
                    Some(Host::Tcp(h)) => h.to_ascii_lowercase(),
                    Some(Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".into(),
                };
                format!("{host}:{}", pg.config.get_ports().first().copied().unwrap_or(5432))
            }
            DatabaseTarget::Dsql(d) => format!("{}:{}", d.endpoint.to_ascii_lowercase(), d.port),
        }
    }

    /// For logs and status: never includes a password or token.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Postgres(pg) => describe_postgres(&pg.config, pg.tls),
            DatabaseTarget::Dsql(d) => format!("dsql://{}@{}/{} ({})", d.user, d.host_port(), d.database, d.region),
        }
    }
}

/// Parses a `postgres://` URL or a `key=value` connection string. `sslmode`
/// and `sslrootcert` are taken out and handled here; the rest goes to
/// tokio-postgres. Without `sslmode`, loopback and socket hosts connect in
/// plain text and every other host with full verification.
pub fn parse_postgres_url(url: &str) -> Result<PostgresTarget, TargetError> {
    let (rest, sslmode, root_cert_file) = take_tls_params(url.trim());
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(TargetError::InvalidUrl)?;
    if config.get_hosts().is_empty() {
        config.host("localhost");
    }
    if config.get_application_name().is_none() {
        config.application_name("identity-migrator");
    }
    let tls = match sslmode.as_deref() {
        None if connects_locally(&config) => TlsMode::Disable,
        None => TlsMode::VerifyFull,
        Some("disable") => TlsMode::Disable,
        Some("require" | "verify-ca" | "verify-full") => TlsMode::VerifyFull,
        Some(other @ ("prefer" | "allow")) => return Err(TargetError::InsecureSslMode(other.to_string())),
        Some(other) => return Err(TargetError::UnknownSslMode(other.to_string())),
    };
    if tls == TlsMode::VerifyFull && config.get_hosts().iter().any(|h| matches!(h, Host::Unix(_))) {
        return Err(TargetError::TlsOverUnixSocket);
    }
    Ok(PostgresTarget { config, tls, root_cert_file })
}

/// Splits `sslmode` and `sslrootcert` off a URL query or a key=value string.
fn take_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let mut sslmode = None;
    let mut rootcert = None;
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            sslmode = Some(value.to_string());
            true
        }
        "sslrootcert" => {
            rootcert = Some(value.to_string());
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, v)
            })
            .collect();
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        (rest, sslmode, rootcert)
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k.trim(), v.trim_matches('\''))
            })
            .collect();
        (kept.join(" "), sslmode, rootcert)
    }
}

/// Whether every address the connection may use is this machine: decided by
/// the address actually connected to (`hostaddr` when given, which overrides
/// the name), never by how a host name looks (`127.example.com` is remote).
fn connects_locally(config: &tokio_postgres::Config) -> bool {
    let addrs = config.get_hostaddrs();
    if !addrs.is_empty() {
        return addrs.iter().all(|a| a.is_loopback());
    }
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

fn describe_postgres(config: &tokio_postgres::Config, tls: TlsMode) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{} (tls: {})",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or(""),
        match tls {
            TlsMode::Disable => "off",
            TlsMode::VerifyFull => "verify-full",
        }
    )
}

/// The region inside `<cluster-id>.dsql.<region>.on.aws` (also `dsql-<suffix>`
/// labels used by some partitions).
pub fn region_from_endpoint(endpoint: &str) -> Option<String> {
    let labels: Vec<&str> = endpoint.trim_end_matches('.').split('.').collect();
    let at = labels.iter().position(|l| *l == "dsql" || l.starts_with("dsql-"))?;
    if at == 0 {
        return None;
    }
    let region = labels.get(at + 1)?;
    let looks_like_region =
        region.split('-').count() >= 3 && region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (looks_like_region && labels.get(at + 2).is_some()).then(|| region.to_string())
}

/// The DSQL target from the spec's fields, with the region resolved.
pub fn dsql_target(
    endpoint: &str,
    region: Option<&str>,
    user: &str,
    database: &str,
    token_lifetime: Duration,
) -> Result<DsqlTarget, TargetError> {
    let written = endpoint.trim();
    let (endpoint, port) = match written.rsplit_once(':') {
        Some((host, port)) => {
            let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| TargetError::BadPort(port.into()))?;
            (host, port)
        }
        None => (written, DSQL_PORT),
    };
    if endpoint.is_empty() || endpoint.contains(['/', ':', ' ', '@', '[', ']']) {
        return Err(TargetError::NotAHostName(written.to_string()));
    }
    let region = match region.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => region_from_endpoint(endpoint).ok_or_else(|| TargetError::NoRegion(endpoint.to_string()))?,
    };
    if user.is_empty() {
        return Err(TargetError::EmptyUser);
    }
    Ok(DsqlTarget {
        endpoint: endpoint.to_string(),
        port,
        region,
        user: user.to_string(),
        database: database.to_string(),
        token_lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_urls_default_to_plain_text_and_remote_ones_to_verification() {
        let t = parse_postgres_url("postgres://postgres@127.0.0.1:5432/test").unwrap();
        assert_eq!(t.tls, TlsMode::Disable);
        let t = parse_postgres_url("postgres://u:secret@db.example.com/app").unwrap();
        assert_eq!(t.tls, TlsMode::VerifyFull);
        assert!(!format!("{t:?}").contains("secret"), "password never shown");
    }

    #[test]
    fn plain_text_is_decided_by_the_address_connected_to() {
        let remote = [
            // hostaddr overrides the name: the connection goes to 10.1.2.3.
            "host=localhost hostaddr=10.1.2.3 user=u dbname=app",
            "postgres://u@127.example.com/app",
            "postgres://u@127.0.0.1.nip.io/app",
        ];
        for url in remote {
            assert_eq!(parse_postgres_url(url).unwrap().tls, TlsMode::VerifyFull, "{url}");
        }
        let local = [
            "postgres://u@127.0.0.1/app",
            "postgres://u@127.1.2.3/app",
            "postgres://u@[::1]/app",
            "postgres://u@localhost/app",
            "host=db.internal hostaddr=127.0.0.1 user=u dbname=app",
            "host=/var/run/postgresql user=u dbname=app",
        ];
        for url in local {
            assert_eq!(parse_postgres_url(url).unwrap().tls, TlsMode::Disable, "{url}");
        }
    }

    #[test]
    fn sslmode_is_honoured_and_never_weakened() {
        let t = parse_postgres_url("postgres://u@db.example.com/app?sslmode=disable").unwrap();
        assert_eq!(t.tls, TlsMode::Disable);
        for mode in ["require", "verify-ca", "verify-full"] {
            let t =
                parse_postgres_url(&format!("postgres://u@localhost/app?sslmode={mode}&connect_timeout=5")).unwrap();
            assert_eq!(t.tls, TlsMode::VerifyFull, "{mode}");
            assert_eq!(t.config.get_connect_timeout(), Some(&Duration::from_secs(5)));
        }
        assert!(
            parse_postgres_url("postgres://u@h/app?sslmode=prefer").unwrap_err().to_string().contains("unencrypted")
        );
        assert!(
            parse_postgres_url("postgres://u@h/app?sslmode=bogus").unwrap_err().to_string().contains("unknown sslmode")
        );
    }

    #[test]
    fn sslrootcert_is_kept_for_the_connector() {
        let t = parse_postgres_url("host=db.internal user=u sslmode=verify-full sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!(t.root_cert_file.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(t.tls, TlsMode::VerifyFull);
    }

    #[test]
    fn region_comes_from_the_endpoint_or_the_spec() {
        assert_eq!(region_from_endpoint("abcdefghijklmnop.dsql.us-east-1.on.aws").as_deref(), Some("us-east-1"));
        assert_eq!(region_from_endpoint("abc.dsql-fnh4.eu-west-2.on.aws").as_deref(), Some("eu-west-2"));
        assert_eq!(region_from_endpoint("db.example.com"), None);
        let t = dsql_target("abc.dsql.us-east-2.on.aws", None, "admin", "postgres", Duration::from_secs(900)).unwrap();
        assert_eq!(t.region, "us-east-2");
        assert!(t.is_admin());
        let t = dsql_target("proxy.internal", Some("ap-south-1"), "app", "postgres", Duration::from_secs(900)).unwrap();
        assert_eq!(t.region, "ap-south-1");
        assert!(!t.is_admin());
        let err =
            dsql_target("proxy.internal", None, "admin", "postgres", Duration::from_secs(900)).unwrap_err().to_string();
        assert!(err.contains("spec.target.dsql.region"), "{err}");
        assert!(dsql_target("https://x.dsql.us-east-1.on.aws", None, "admin", "p", Duration::ZERO).is_err());
    }

    #[test]
    fn an_endpoint_may_carry_a_port_and_tokens_are_for_the_host() {
        let t = dsql_target("localhost:15432", Some("us-east-1"), "admin", "postgres", Duration::ZERO).unwrap();
        assert_eq!((t.endpoint.as_str(), t.port), ("localhost", 15432));
        assert_eq!(t.host_port(), "localhost:15432");
        let t = dsql_target("abc.dsql.us-east-1.on.aws", None, "admin", "postgres", Duration::ZERO).unwrap();
        assert_eq!((t.port, t.host_port().as_str()), (5432, "abc.dsql.us-east-1.on.aws"));
        for bad in ["localhost:0", "localhost:99999", "localhost:x", "localhost:"] {
            let err = dsql_target(bad, Some("us-east-1"), "admin", "p", Duration::ZERO).unwrap_err().to_string();
            assert!(err.contains("port"), "{bad}: {err}");
        }
        assert!(dsql_target(":5432", Some("us-east-1"), "admin", "p", Duration::ZERO).is_err());
    }

    #[test]
    fn migrations_of_one_server_share_one_endpoint() {
        let a = DatabaseTarget::Postgres(parse_postgres_url("postgres://u@DB.example.com/app").unwrap());
        let b = DatabaseTarget::Postgres(parse_postgres_url("host=db.example.com port=5432 dbname=other").unwrap());
        assert_eq!((a.endpoint(), b.endpoint()), ("db.example.com:5432".into(), "db.example.com:5432".into()));
        let d = dsql_target("ABC.dsql.us-east-1.on.aws", None, "admin", "postgres", Duration::ZERO).unwrap();
        assert_eq!(DatabaseTarget::Dsql(d).endpoint(), "abc.dsql.us-east-1.on.aws:5432");
    }
}

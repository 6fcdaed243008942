//! TLS with full verification, against a PostgreSQL server of the test's own
//! that presents a certificate from a CA made here. Connecting with that CA
//! succeeds; a wrong CA, no CA, or a host name the certificate does not name fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use identity_migrator::db::target::parse_postgres_url;
use identity_migrator::db::{Connector, DatabaseTarget, ErrorClass};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA and a server certificate for `localhost` signed by it.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = new_ca("identity-migrator test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// A throwaway PostgreSQL cluster with `ssl = on`, stopped on drop.
struct TlsServer {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> PathBuf {
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = out
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").unwrap().map(|e| e.unwrap().path()).collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL installation").join("bin")
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs a PostgreSQL tool; as root it must run as `postgres`.
fn pg_tool(bin: &Path, tool: &str, args: &[&str]) {
    let program = bin.join(tool);
    let status = if is_root() {
        Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).status()
    } else {
        Command::new(&program).args(args).status()
    }
    .unwrap();
    assert!(status.success(), "{tool} {args:?} failed");
}

impl TlsServer {
    fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let root = is_root();
        if root {
            Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status().unwrap();
        }
        let bin = pg_bin();
        pg_tool(&bin, "initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(data.join("server.crt"), &pki.cert_pem).unwrap();
        std::fs::write(data.join("server.key"), &pki.key_pem).unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nport = {port}\nlisten_addresses = 'localhost'\nssl = on\nfsync = off\nunix_socket_directories = '{}'\n",
            dir.path().display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        if root {
            Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status().unwrap();
        }
        Command::new("chmod").arg("600").arg(data.join("server.key")).status().unwrap();
        let log = dir.path().join("log");
        pg_tool(&bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "start"]);
        Self { _dir: dir, data, bin, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        pg_tool(&self.bin, "pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

async fn connect(url: &str, ca: Option<&str>) -> Result<bool, identity_migrator::db::DbError> {
    let target = parse_postgres_url(url).unwrap();
    let connector = Connector::new(DatabaseTarget::Postgres(target), ca.map(|p| p.as_bytes().to_vec()))?;
    let client = connector.connect().await?;
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_accepts_the_right_ca_and_host_and_nothing_else() {
    let pki = pki();
    let server = TlsServer::start(&pki);
    let port = server.port;
    let url = |host: &str, mode: &str| format!("postgres://postgres@{host}:{port}/postgres?sslmode={mode}");

    assert!(connect(&url("localhost", "verify-full"), Some(&pki.ca_pem)).await.unwrap(), "encrypted");
    assert!(connect(&url("localhost", "require"), Some(&pki.ca_pem)).await.unwrap(), "require verifies too");
    assert!(!connect(&url("localhost", "disable"), None).await.unwrap(), "disable is plain text, as asked");

    let wrong_ca = new_ca("someone else").pem();
    for (what, result) in [
        ("a wrong CA", connect(&url("localhost", "verify-full"), Some(&wrong_ca)).await),
        ("require with a wrong CA", connect(&url("localhost", "require"), Some(&wrong_ca)).await),
        ("only the web PKI roots", connect(&url("localhost", "verify-full"), None).await),
    ] {
        let err = result.expect_err(what);
        assert!(err.to_string().to_lowercase().contains("certificate"), "{what}: {err}");
        assert_eq!(err.class, ErrorClass::Permanent, "{what}: never retried into success");
    }
    let err = connect(&url("127.0.0.1", "verify-full"), Some(&pki.ca_pem)).await.expect_err("host name mismatch");
    assert!(err.to_string().contains("NotValidForName") || err.to_string().contains("name"), "{err}");

    // sslrootcert in the URL is the same as --ca-file.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let with_root = format!("{}&sslrootcert={}", url("localhost", "verify-full"), ca_file.display());
    assert!(connect(&with_root, None).await.unwrap());
}

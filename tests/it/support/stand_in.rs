//! The DSQL stand-in (`dsql-sim`) in front of a test's own database, and the
//! ways the tests reach it: `identity-migrator run` with a DSQL target, or a
//! connection made as the engine makes one.

use std::process::Output;
use std::time::Duration;

use aws_credential_types::Credentials as AwsCredentials;
use dsql_sim::{Config, Credentials, Sim};
use identity_migrator::db::target::dsql_target;
use identity_migrator::db::{Connector, DatabaseTarget, TokenSource};

use super::{Manifest, PostTag, TestDb, run_cli};

/// The static key pair the stand-in accepts (never a real credential).
pub const KEY_ID: &str = "AKIDSTANDIN0000TEST";
pub const SECRET: &str = "stand-in-secret-key-for-tests-only";

pub struct StandIn {
    pub db: TestDb,
    pub sim: Sim,
    pub ca: tempfile::NamedTempFile,
}

impl StandIn {
    /// A fresh database behind a stand-in; `tweak` changes its configuration.
    pub async fn start(test: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(test).await;
        let credentials = Credentials { access_key_id: KEY_ID.into(), secret_access_key: SECRET.into() };
        let mut config = Config::new(db.url.clone(), credentials);
        // scripts/test runs the DSQL cases a second time with this set.
        config.strict_undocumented = strict_by_default();
        tweak(&mut config);
        let sim = Sim::start(config).await.unwrap_or_else(|e| panic!("start dsql-sim: {e}"));
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), sim.ca_pem()).unwrap();
        Self { db, sim, ca }
    }

    /// What the stand-in refused that AWS's pages document as refused, or
    /// that they list as accepted: everything but the strict mode's own
    /// refusals of what the pages do not list. The engine must send none.
    pub fn refused_documented(&self) -> Vec<String> {
        const UNDOCUMENTED: [&str; 8] =
            ["Comment", "GRANT", "pg_trigger", "pg_rewrite", "pg_policy", "aclexplode", "acldefault", "column list"];
        self.sim.refused().into_iter().filter(|r| !UNDOCUMENTED.iter().any(|u| r.contains(u))).collect()
    }

    /// `spec.target` naming the stand-in as a DSQL endpoint.
    pub fn target(&self) -> String {
        format!("{{dsql: {{endpoint: \"{}\", region: us-east-1, user: admin}}}}", self.sim.endpoint())
    }

    pub fn manifest(&self, t: &PostTag, spec_extra: &str) -> Manifest {
        Manifest::with_target(&self.target(), &t.schema, &t.table, &t.id, spec_extra)
    }

    /// `identity-migrator run` against the stand-in, trusting its CA.
    pub fn run(&self, m: &Manifest, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args = vec!["run", "-f", m.path.to_str().unwrap(), "--ca-file", self.ca.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut all = credentials_env();
        all.extend_from_slice(env);
        run_cli(&args, &all)
    }

    /// A connector as the engine builds one: the stand-in's CA, tokens from the test key.
    pub fn connector(&self, user: &str) -> Connector {
        let target =
            dsql_target(&self.sim.endpoint(), Some("us-east-1"), user, "postgres", Duration::from_secs(900)).unwrap();
        let creds = AwsCredentials::new(KEY_ID, SECRET, None, None, "test");
        Connector::new(DatabaseTarget::Dsql(target.clone()), Some(self.sim.ca_pem().as_bytes().to_vec()))
            .unwrap()
            .with_token_source(TokenSource::with_credentials(target, creds))
    }
}

/// The environment that gives the CLI the test key and nothing else.
pub fn credentials_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Where a test's migration runs: straight on PostgreSQL, or through the
/// stand-in with a DSQL target (the same database behind it either way).
pub enum Through {
    Postgres(TestDb),
    StandIn(Box<StandIn>),
}

impl Through {
    pub async fn postgres(test: &str) -> Self {
        Through::Postgres(TestDb::new(test).await)
    }

    pub async fn stand_in(test: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        Through::StandIn(Box::new(StandIn::start(test, tweak).await))
    }

    /// Both ways, for tests that must hold on either.
    pub async fn each(test: &str) -> [Self; 2] {
        [Self::postgres(test).await, Self::stand_in(&format!("{test}_sim"), |_| {}).await]
    }

    /// The database itself (for fixtures and checks, never through the stand-in).
    pub fn db(&self) -> &TestDb {
        match self {
            Through::Postgres(db) => db,
            Through::StandIn(s) => &s.db,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Through::Postgres(_) => "postgres",
            Through::StandIn(_) => "dsql stand-in",
        }
    }

    pub fn manifest(&self, t: &PostTag, spec_extra: &str) -> Manifest {
        match self {
            Through::Postgres(_) => Manifest::for_table(t, spec_extra),
            Through::StandIn(s) => s.manifest(t, spec_extra),
        }
    }

    /// The `run` command line and environment for `m`, owned (for other threads).
    pub fn run_args(&self, m: &Manifest) -> (Vec<String>, Vec<(String, String)>) {
        let mut args = vec!["run".to_string(), "-f".into(), m.path.to_str().unwrap().into()];
        let mut env = Vec::new();
        match self {
            Through::Postgres(db) => args.extend(["--database-url".to_string(), db.url.clone()]),
            Through::StandIn(s) => {
                args.extend(["--ca-file".to_string(), s.ca.path().to_str().unwrap().into()]);
                env.extend(credentials_env().into_iter().map(|(k, v)| (k.to_string(), v.to_string())));
            }
        }
        (args, env)
    }

    pub fn run(&self, m: &Manifest, env: &[(&str, &str)]) -> Output {
        let (args, mut all) = self.run_args(m);
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        run_owned(args, all)
    }
}

pub fn run_owned(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_cli(&args, &env)
}

impl StandIn {
    /// `identity-migrator run` against the stand-in as a child process.
    pub fn command(&self, m: &Manifest) -> std::process::Command {
        let mut cmd = std::process::Command::new(super::binary());
        cmd.args(["run", "-f", m.path.to_str().unwrap(), "--ca-file", self.ca.path().to_str().unwrap()])
            .env("NO_PROGRESS", "1")
            .env_remove("IDENTITY_MIGRATOR_CRASH_AT");
        for (k, v) in credentials_env() {
            cmd.env(k, v);
        }
        cmd
    }
}

/// Whether stand-ins refuse what AWS's pages do not list unless a test says
/// otherwise (`IDMIG_SIM_STRICT` set).
pub fn strict_by_default() -> bool {
    std::env::var_os("IDMIG_SIM_STRICT").is_some()
}

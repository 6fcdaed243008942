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
        tweak(&mut config);
        let sim = Sim::start(config).await.unwrap_or_else(|e| panic!("start dsql-sim: {e}"));
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), sim.ca_pem()).unwrap();
        Self { db, sim, ca }
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

//! The command line: `run`, `plan`, `controller`, `crd`.

pub mod controller;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod run;
pub mod schema;
pub mod signal;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::db::{Connector, resolve_target};
use crate::engine::EngineError;
use crate::engine::plan::validate::{Settings, TargetSource, validate_spec};
use manifest::Manifest;

#[derive(Parser, Debug)]
#[command(
    name = "identity-migrator",
    version,
    about = "Moves Aurora DSQL and PostgreSQL tables onto identity columns, resumably"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: text for terminals, json for clusters (default: json for `controller`).
    #[arg(long, global = true, env = "LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a migration to the end (or to AwaitingCutover), resuming from its state file.
    Run(run::RunArgs),
    /// Print the SQL a migration would run, in order; changes nothing.
    Plan(plan::PlanArgs),
    /// Run the Kubernetes operator.
    Controller(controller::ControllerArgs),
    /// Print the IdentityMigration, TableMigration and SchemaMigration CustomResourceDefinitions.
    Crd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The manifest and where its database is, for `run` and `plan`.
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// The IdentityMigration (or, for `plan`, TableMigration) manifest.
    #[arg(short = 'f', long = "file")]
    pub file: std::path::PathBuf,
    /// PostgreSQL URL that replaces spec.target (sslmode: disable, require, verify-full).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Extra trusted CA certificates (PEM) for the database's TLS certificate.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A SchemaMigration's files, read from this directory instead of `spec.source`.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

impl TargetArgs {
    /// The manifest with its spec validated, and the connector for its database.
    pub fn load(&self) -> Result<(Manifest, Settings, Connector), Failure> {
        let (manifest, settings) = load_settings(&self.file, self.database_url.is_some())?;
        let connector = connector_for(&manifest.spec.target, self.database_url.as_deref(), self.ca_file.as_deref())?;
        Ok((manifest, settings, connector))
    }
}

/// Why a command did not succeed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad input: manifest, flags, table shape. Exit 2.
    Input(String),
    /// The migration failed. Exit 1.
    Migration(String),
    /// Stopped by a signal before the end; resumable. Exit 130.
    Interrupted(String),
}

impl Failure {
    pub fn from_engine(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(i) => Failure::Input(i.to_string()),
            other => Failure::Migration(other.to_string()),
        }
    }

    pub fn exit(self) -> ExitCode {
        let (code, prefix, message) = match self {
            Failure::Input(m) => (2, "invalid input", m),
            Failure::Migration(m) => (1, "migration failed", m),
            Failure::Interrupted(m) => (130, "interrupted", m),
        };
        eprintln!("error: {prefix}: {message}");
        ExitCode::from(code)
    }
}

pub async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Plan(args) => plan::plan(args).await,
        Command::Controller(args) => controller::main(args).await,
        Command::Crd => {
            print!("{}", crd_yaml());
            Ok(())
        }
    }
}

/// The three CRDs, as `crds/identitymigrations.migrations.dsql.dev.yaml`,
/// `crds/tablemigrations.migrations.dsql.dev.yaml` and
/// `crds/schemamigrations.migrations.dsql.dev.yaml` hold them, in that order.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let identity = serde_norway::to_string(&crate::api::IdentityMigration::crd()).expect("the CRD serializes");
    let table = serde_norway::to_string(&crate::api::TableMigration::crd()).expect("the CRD serializes");
    let schema = serde_norway::to_string(&crate::api::schema::SchemaMigration::crd()).expect("the CRD serializes");
    format!("{identity}---\n{table}---\n{schema}")
}

/// Reads the manifest and validates the spec on its own.
pub fn load_settings(file: &Path, target_overridden: bool) -> Result<(Manifest, Settings), Failure> {
    let manifest = manifest::load(file).map_err(|e| Failure::Input(e.to_string()))?;
    let source = if target_overridden { TargetSource::Overridden } else { TargetSource::Spec };
    let settings =
        validate_spec(&manifest.spec, source).map_err(|e| Failure::Input(format!("{}: {e}", file.display())))?;
    Ok((manifest, settings))
}

/// The connector for `--database-url` or the spec's target.
pub fn connector_for(
    target: &crate::api::Target,
    database_url: Option<&str>,
    ca_file: Option<&Path>,
) -> Result<Connector, Failure> {
    let target = resolve_target(target, database_url.map(|url| ("--database-url", url)))
        .map_err(|e| Failure::Input(e.to_string()))?;
    let ca = match ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| Failure::Input(format!("--ca-file {}: {e}", path.display())))?)
        }
        None => None,
    };
    Connector::new(target, ca).map_err(|e| Failure::Input(e.to_string()))
}

//! `plan` and `run` of a SchemaMigration: its files from `--dir` (or the
//! spec's inline migrations), planned by the target's rules and applied by
//! the runner, with the history in the database.

use std::path::Path;
use std::sync::Arc;

use super::signal::shutdown_signal;
use super::{Failure, TargetArgs, connector_for, manifest};
use crate::api::schema::SchemaMigrationSpec;
use crate::db::Dialect;
use crate::engine::Directive;
use crate::versioned::files::{FilesError, SourceFile, VersionedFile, inline, read};
use crate::versioned::rules::{plan_hash, render};
use crate::versioned::runner::{RunError, RunOutcome, Runner, plan_all};

/// The `.sql` files of `dir`, by name.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, Failure> {
    let entries = std::fs::read_dir(dir).map_err(|e| Failure::Input(format!("--dir {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Failure::Input(format!("--dir {}: {e}", dir.display())))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sql") && path.is_file() {
            let text =
                std::fs::read_to_string(&path).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
            let name = entry.file_name().to_string_lossy().to_string();
            files.push(SourceFile { name, text });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The migrations: from `dir`, else the spec's inline ones.
pub fn migrations(spec: &SchemaMigrationSpec, dir: Option<&Path>) -> Result<Vec<VersionedFile>, Failure> {
    let files_error = |e: FilesError| Failure::Input(e.to_string());
    if let Some(dir) = dir {
        return read(&read_dir(dir)?, spec.format).map_err(files_error);
    }
    let source = &spec.source;
    if source.config_map_ref.is_some() || source.config_map_selector.is_some() {
        return Err(Failure::Input(
            "spec.source: ConfigMaps are read by the operator; from a terminal give the files with --dir".into(),
        ));
    }
    if source.migrations.is_empty() {
        return Err(Failure::Input("spec.source: no migrations (give spec.source.migrations, or --dir)".into()));
    }
    Ok(inline(&source.migrations))
}

fn load(target: &TargetArgs) -> Result<(manifest::SchemaManifest, Vec<VersionedFile>), Failure> {
    let m = manifest::load_schema(&target.file).map_err(|e| Failure::Input(e.to_string()))?;
    let files = migrations(&m.spec, target.dir.as_deref())?;
    Ok((m, files))
}

fn run_error(e: RunError) -> Failure {
    if e.is_invalid_input() { Failure::Input(e.to_string()) } else { Failure::Migration(e.to_string()) }
}

/// Prints every file's steps on the target's dialect (or `dialect`); reads no database.
pub fn plan(target: &TargetArgs, dialect: Option<Dialect>) -> Result<(), Failure> {
    let (m, files) = load(target)?;
    let dialect = match dialect {
        Some(d) => d,
        None => connector_for(&m.spec.target, target.database_url.as_deref(), target.ca_file.as_deref())?.dialect(),
    };
    let planned = plan_all(&files, dialect).map_err(run_error)?;
    let plans: Vec<_> = planned.into_iter().map(|(p, _)| p).collect();
    println!(
        "-- identity-migrator plan for SchemaMigration {} ({} dialect, {} migrations); nothing has been changed",
        m.name,
        dialect.as_str(),
        plans.len()
    );
    println!("-- plan hash {} (policy.approvedPlanHash approves exactly this plan)", plan_hash(&plans));
    print!("{}", render(&plans));
    Ok(())
}

pub async fn run(target: &TargetArgs, approve_cutover: bool) -> Result<(), Failure> {
    let (m, files) = load(target)?;
    let connector = Arc::new(connector_for(&m.spec.target, target.database_url.as_deref(), target.ca_file.as_deref())?);
    let (control_tx, control) = tokio::sync::watch::channel(Directive::Run);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("stopping after the step under way (interrupt again to quit at once)");
        let _ = control_tx.send(Directive::Stop);
        shutdown_signal().await;
        std::process::exit(130);
    });
    let approved = approve_cutover || m.spec.cutover.approved;
    let runner = Runner { connector, approved, spec: m.spec, control, leading: None, report: None, slot: None };
    match runner.run(&files).await.map_err(run_error)? {
        RunOutcome::Done { applied, current } => {
            match applied.len() {
                0 => println!("up to date at version {}", current.as_deref().unwrap_or("(none)")),
                n => println!(
                    "applied {n} migration(s): {}; now at version {}",
                    applied.join(", "),
                    current.as_deref().unwrap_or("(none)")
                ),
            }
            Ok(())
        }
        RunOutcome::AwaitingApproval { hash, why, pending } => {
            println!(
                "waiting for approval: {pending} pending migration(s) {why}; set spec.policy.approvedPlanHash: \"{hash}\" (see `plan`)"
            );
            Ok(())
        }
        RunOutcome::AwaitingCutover { version } => {
            println!(
                "version {version} waits for its rebuild's cut-over: approve it (spec.cutover.approved or --approve-cutover)"
            );
            Ok(())
        }
        RunOutcome::Stopped => Err(Failure::Interrupted("stopped; run again to resume".into())),
    }
}

//! `identity-migrator run`: the engine from a terminal, with its status in a
//! state file next to the manifest so that running it again resumes.

use std::path::PathBuf;

use clap::Args;

use super::progress::{TerminalSink, wants_bar};
use super::signal::shutdown_signal;
use super::{Failure, TargetArgs, connector_for, manifest};
use crate::api::{IdentityMigrationStatus, StrategyStatus, TakenStrategy};
use crate::db::Connector;
use crate::engine::plan::validate::{Settings, TargetSource};
use crate::engine::steps::table_key::table_settings;
use crate::engine::store::{MigrationKey, default_state_path};
use crate::engine::{Directive, EngineError, FileStore, Job, Migration, Outcome};
use crate::http::{HttpState, router};
use crate::metrics::{Metrics, MigrationLabels};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where the status is kept; default `<manifest>.state.json` beside the manifest.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Approve the cut-over of a migration with `cutover.approval: Manual`.
    #[arg(long)]
    pub approve_cutover: bool,
    /// Serve Prometheus metrics on this address (`/metrics`) while the
    /// migration runs, labelled with the manifest's kind, namespace and name.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A manifest of either kind, ready to run.
struct Prepared {
    kind: &'static str,
    name: String,
    namespace: Option<String>,
    settings: Settings,
    connector: Arc<Connector>,
    approved: bool,
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    if manifest::holds_schema_migration(&args.target.file) {
        return super::schema::run(&args.target, args.approve_cutover).await;
    }
    let prepared = if super::manifest::holds_table_migration(&args.target.file) {
        prepare_table(&args.target).await?
    } else {
        let (manifest, settings, connector) = args.target.load()?;
        Prepared {
            kind: "IdentityMigration",
            name: manifest.name,
            namespace: manifest.namespace,
            approved: manifest.spec.cutover.approved,
            settings,
            connector: Arc::new(connector),
        }
    };
    let Prepared { kind, name, namespace, settings, connector, approved } = prepared;
    if !settings.quiesce.is_empty() {
        return Err(Failure::Input(
            "spec.cutover.quiesce: scaling workloads needs the operator (the Kubernetes API); remove it to run from a terminal"
                .into(),
        ));
    }
    let key = MigrationKey {
        database: connector.identity(),
        schema: settings.source.schema.clone(),
        table: settings.source.name.clone(),
        id_column: settings.id_column.clone(),
    };
    let state_path = args.state_file.clone().unwrap_or_else(|| default_state_path(&args.target.file));
    let mut store = FileStore::new(state_path, key);
    let status = store.load().map_err(|e| Failure::Input(e.to_string()))?;
    if let Some(s) = &status {
        eprintln!("resuming from {} (phase {})", store.path().display(), s.phase);
    }
    tracing::info!(target = %connector.describe(), table = %settings.source, "starting");

    let retain_old = settings.retain_old;
    let job = Job { approved: args.approve_cutover || approved, ..Job::shared(settings, connector) };
    let (control_tx, control) = tokio::sync::watch::channel(Directive::Run);
    tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("stopping at the next checkpoint (interrupt again to quit at once)");
        let _ = control_tx.send(Directive::Stop);
        shutdown_signal().await;
        std::process::exit(130);
    });

    let mut sink = TerminalSink::new(store, wants_bar());
    if let Some(addr) = args.metrics_addr {
        let metrics = Metrics::default();
        let labels = MigrationLabels::new(kind, namespace.unwrap_or_default(), name);
        sink = sink.with_metrics(metrics.clone(), labels);
        let state = HttpState { metrics, ready: Arc::new(AtomicBool::new(true)) };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::Input(format!("--metrics-addr {addr}: {e}")))?;
        tracing::info!(%addr, "serving /metrics");
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
    }
    let (outcome, status, mut sink) = Migration::new(job, status, sink, control).run().await;
    sink.finish();
    report(&outcome, &status, &sink.store, retain_old)
}

/// A TableMigration: its key is the table's primary key, read from the catalog.
async fn prepare_table(target: &TargetArgs) -> Result<Prepared, Failure> {
    let file = &target.file;
    let manifest = manifest::load_table(file).map_err(|e| Failure::Input(e.to_string()))?;
    let spec = &manifest.spec;
    let connector = Arc::new(connector_for(&spec.target, target.database_url.as_deref(), target.ca_file.as_deref())?);
    let source = if target.database_url.is_some() { TargetSource::Overridden } else { TargetSource::Spec };
    let settings = table_settings(spec, connector.clone(), source).await.map_err(|e| match e {
        EngineError::Invalid(e) => Failure::Input(format!("{}: {e}", file.display())),
        e => Failure::Migration(e.to_string()),
    })?;
    Ok(Prepared {
        kind: "TableMigration",
        name: manifest.name.clone(),
        namespace: manifest.namespace.clone(),
        approved: spec.cutover.approved,
        settings,
        connector,
    })
}

fn report(
    outcome: &Outcome,
    status: &IdentityMigrationStatus,
    store: &FileStore,
    retain_old: bool,
) -> Result<(), Failure> {
    let table = status.plan.as_ref().map(|p| p.old_table.as_str()).unwrap_or("the old table");
    let kept = || {
        if retain_old {
            println!("The original rows are kept in {table}.");
        } else {
            println!("The original table was dropped (oldTable.retain: false).");
        }
    };
    match outcome {
        Outcome::Completed
            if status.changes.is_some() && status.strategy.as_ref().is_some_and(|s| s.taken == TakenStrategy::Copy) =>
        {
            let changes = status.changes.clone().unwrap_or_default();
            let rows = status.verification.as_ref().map_or(0, |v| v.source_rows);
            let window = crate::engine::steps::swap::window_text(status.cutover.as_ref().and_then(|c| c.window_millis));
            println!(
                "Completed by the rebuild: {} changes; {rows} rows verified; cut-over window {window}.",
                changes.planned.len()
            );
            kept();
            println!("State: {}", store.path().display());
            Ok(())
        }
        Outcome::Completed if status.changes.is_some() => {
            let changes = status.changes.clone().unwrap_or_default();
            let lock = crate::engine::steps::swap::window_text(changes.longest_lock_millis);
            println!(
                "Completed in place: {} changes in {} statements; the longest lock on the table lasted {lock}.",
                changes.planned.len(),
                changes.statements.len()
            );
            println!("State: {}", store.path().display());
            Ok(())
        }
        Outcome::Completed => {
            let next = status.identity.as_ref().map_or("?".to_string(), |i| i.next_value.to_string());
            let window = crate::engine::steps::swap::window_text(status.cutover.as_ref().and_then(|c| c.window_millis));
            match &status.strategy {
                Some(StrategyStatus { taken: TakenStrategy::InPlace, reason }) => {
                    println!(
                        "Completed in place ({reason}); the next generated id is {next}; the change took {window}."
                    );
                    if let Some(default) = status.identity.as_ref().and_then(|i| i.replaced_default.as_deref()) {
                        println!("The id's former default {default} was replaced; its sequence is kept.");
                    }
                }
                strategy => {
                    let rows = status.verification.as_ref().map_or(0, |v| v.source_rows);
                    if let Some(s) = strategy {
                        println!("Copied ({}).", s.reason);
                    }
                    println!(
                        "Completed: {rows} rows verified; the next generated id is {next}; cut-over window {window}."
                    );
                    kept();
                }
            }
            println!("State: {}", store.path().display());
            Ok(())
        }
        Outcome::RolledBack if status.changes.as_ref().is_some_and(|c| !c.undo.is_empty()) => {
            let undone = status.changes.as_ref().map_or(0, |c| c.undo.len());
            println!("Rolled back in place: {undone} statements undid the changes.");
            println!("Set spec.rollback to false and run again to make them again.");
            Ok(())
        }
        Outcome::RolledBack => {
            println!(
                "Rolled back: the original table has its name again; the new table waits as {}.",
                status.plan.as_ref().map(|p| p.shadow_table.as_str()).unwrap_or("the shadow table")
            );
            println!("Set spec.rollback to false and run again to roll forward.");
            Ok(())
        }
        Outcome::AwaitingApproval => {
            match status.cutover.as_ref().and_then(|c| c.next_window.as_ref()) {
                Some(opens) => println!(
                    "Verified and waiting for the cut-over window (phase AwaitingCutover); it opens at {}. Run again then.",
                    opens.0
                ),
                None => println!(
                    "Verified and waiting for approval (phase AwaitingCutover). Run again with --approve-cutover to cut over."
                ),
            }
            Ok(())
        }
        Outcome::Suspended | Outcome::Stopped => Err(Failure::Interrupted(format!(
            "stopped in {}; run the same command again to resume from {}",
            status.phase,
            store.path().display()
        ))),
        Outcome::Failed(err) if err.is_invalid_input() => Err(Failure::Input(err.to_string())),
        Outcome::Failed(err) => Err(Failure::Migration(format!(
            "{err}\nThe state is kept in {}; fix the cause and run again to retry from there.",
            store.path().display()
        ))),
    }
}

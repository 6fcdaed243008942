//! SchemaMigrations in the operator. Every replica reconciles each one; the
//! replica that takes its Lease reads its files (a ConfigMap, the ConfigMaps
//! a selector picks, or the inline ones), plans them (a refusal stalls it
//! before anything runs), and runs the same runner as `run --dir` in a task
//! of its own, writing the status as the run reports its steps. The history
//! in the database is the checkpoint: a replica that takes over resumes
//! from it. A finished run looks again every few minutes, for new files.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;

use super::reconcile::{Error, LEASE_POLL, ReconcileContext, WATCH_RUNNING};
use super::schema_tasks::Task;
use super::status_sink::{publish, replace_status};
use super::supervisor::Key;
use super::target::connector_for;
use crate::api::schema::{InFlight, SchemaMigration, SchemaMigrationStatus, Source};
use crate::engine::store::Severity;
use crate::engine::{Directive, Licence};
use crate::metrics::MigrationLabels;
use crate::versioned::files::{SourceFile, VersionedFile, inline, read};
use crate::versioned::runner::{Progress, RunOutcome, Runner, SlotGate, plan_all};
use crate::versioned::status::{State, apply};

pub const KIND: &str = "SchemaMigration";

/// How often a SchemaMigration that is up to date (or stalled) is run again,
/// for files added or fixed since: a run with nothing pending reads the
/// history and ends.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a run that failed on something passing is tried again.
pub const RETRY: Duration = Duration::from_secs(30);
/// The least time between two progress writes of a run's status.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Writes a SchemaMigration's status, whole.
async fn write(api: &Api<SchemaMigration>, name: &str, status: &SchemaMigrationStatus) -> Result<(), kube::Error> {
    replace_status(api, name, status).await
}

/// Sets `state` on the object's status and writes it when it changed.
async fn settle(obj: &SchemaMigration, ctx: &ReconcileContext, state: &State) -> Result<(), Error> {
    let before = obj.status.clone().unwrap_or_default();
    let mut status = before.clone();
    apply(&mut status, state, obj.meta().generation, &crate::api::now());
    if same_but_times(&before, &status) {
        return Ok(());
    }
    let api: Api<SchemaMigration> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    write(&api, &obj.name_any(), &status).await.map_err(Error::Status)
}

/// Equal but for when conditions changed and when the last run looked.
fn same_but_times(a: &SchemaMigrationStatus, b: &SchemaMigrationStatus) -> bool {
    let epoch = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
    let strip = |s: &SchemaMigrationStatus| {
        let mut s = s.clone();
        s.last_applied_at = None;
        s.conditions.iter_mut().for_each(|c| c.last_transition_time = epoch.clone());
        s
    };
    strip(a) == strip(b)
}

pub async fn reconcile_schema(obj: Arc<SchemaMigration>, ctx: Arc<ReconcileContext>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let labels = MigrationLabels::new(KIND, obj.namespace().unwrap_or_default(), obj.name_any());
    let deleting = obj.meta().deletion_timestamp.is_some();
    let seen = obj.status.clone().unwrap_or_default();
    let key = Key::new(KIND, labels.namespace.clone(), labels.name.clone());
    let result = reconcile_once(obj, ctx.clone()).await;
    ctx.metrics.observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    if deleting {
        ctx.metrics.forget_schema(&labels);
    } else {
        ctx.metrics.observe_schema(&labels, &seen, ctx.schema_tasks.running(&key).is_some());
    }
    result
}

async fn reconcile_once(obj: Arc<SchemaMigration>, ctx: Arc<ReconcileContext>) -> Result<Action, Error> {
    let key = Key::new(KIND, obj.namespace().unwrap_or_default(), obj.name_any());
    let generation = obj.meta().generation.unwrap_or(0);
    if obj.meta().deletion_timestamp.is_some() {
        ctx.schema_tasks.stop(&key);
        ctx.slots.release(&key);
        ctx.leases.release(&key);
        return Ok(Action::await_change());
    }
    if let Some(running) = ctx.schema_tasks.running(&key) {
        if running != generation || obj.spec.suspend {
            // The spec changed: the run stops after its step; the next one starts from the history.
            ctx.schema_tasks.stop(&key);
        }
        return Ok(Action::requeue(WATCH_RUNNING));
    }
    if obj.spec.suspend {
        ctx.slots.release(&key);
        ctx.leases.release(&key);
        settle(&obj, &ctx, &State::Suspended).await?;
        return Ok(Action::await_change());
    }
    let status = obj.status.clone().unwrap_or_default();
    if let Some(wait) = rest(&status, generation) {
        ctx.slots.release(&key);
        ctx.leases.release(&key);
        return Ok(Action::requeue(wait));
    }
    let Some(licence) = ctx.leases.hold(&key, &obj.uid().unwrap_or_default()).await? else {
        return Ok(Action::requeue(LEASE_POLL));
    };
    let stall = |message: String| State::Stalled { message };
    let files = match files(&ctx.client, &key.namespace, &obj.spec.source, obj.spec.format).await {
        Ok(files) => files,
        Err(message) => return stalled(&obj, &ctx, &key, stall(message)).await,
    };
    let target = &obj.spec.target;
    let connector =
        match connector_for(&ctx.client, &key.namespace, target, &ctx.application_name, &ctx.dsql_endpoints).await {
            Ok(c) => Arc::new(c),
            Err(e) if e.needs_person() => return stalled(&obj, &ctx, &key, stall(e.to_string())).await,
            Err(e) => return Err(e.into()),
        };
    if let Err(e) = plan_all(&files, connector.dialect()) {
        return stalled(&obj, &ctx, &key, stall(e.to_string())).await;
    }
    start(obj, ctx, key, generation, licence, connector, files);
    Ok(Action::requeue(WATCH_RUNNING))
}

/// How long an idle SchemaMigration rests before it runs again; None: now.
fn rest(status: &SchemaMigrationStatus, generation: i64) -> Option<Duration> {
    if status.observed_generation != Some(generation) {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let changed = ready.map(|c| c.last_transition_time.0);
    let (wait, since) = match ready.map(|c| c.reason.as_str()) {
        // Each run that finds nothing to do records when it looked.
        Some("UpToDate") => (RESYNC, status.last_applied_at.as_ref().map(|t| t.0).or(changed)),
        Some("Stalled" | "Drifted" | "AwaitingApproval" | "AwaitingCutover") => (RESYNC, changed),
        Some("Retrying") => (RETRY, changed),
        _ => return None,
    };
    let age: Duration = since
        .map(|t| jiff::Timestamp::now().duration_since(t).try_into().unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::MAX);
    (age < wait).then(|| wait - age)
}

async fn stalled(obj: &SchemaMigration, ctx: &ReconcileContext, key: &Key, state: State) -> Result<Action, Error> {
    ctx.slots.release(key);
    ctx.leases.release(key);
    if let State::Stalled { message } = &state {
        let known = obj.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.message == *message));
        if !known {
            publish(&ctx.recorder, &obj.object_ref(&()), Severity::Warning, "Stalled", message.clone()).await;
        }
    }
    settle(obj, ctx, &state).await?;
    Ok(Action::requeue(RESYNC))
}

/// The files of `source`: a ConfigMap's keys, every selected ConfigMap's
/// keys (a key in two is refused), or the inline migrations.
pub async fn files(
    client: &kube::Client,
    namespace: &str,
    source: &Source,
    format: crate::api::schema::Format,
) -> Result<Vec<VersionedFile>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut found: Vec<(String, SourceFile)> = Vec::new();
    let take = |cm: &ConfigMap, found: &mut Vec<(String, SourceFile)>| -> Result<(), String> {
        for (name, text) in cm.data.clone().unwrap_or_default() {
            if let Some((other, _)) = found.iter().find(|(_, f)| f.name == name) {
                return Err(format!(
                    "spec.source.configMapSelector: {name} is in ConfigMaps {other} and {}",
                    cm.name_any()
                ));
            }
            found.push((cm.name_any(), SourceFile { name, text }));
        }
        Ok(())
    };
    match (&source.config_map_ref, &source.config_map_selector, source.migrations.is_empty()) {
        (Some(r), None, true) => match api.get_opt(&r.name).await {
            Ok(Some(cm)) => take(&cm, &mut found)?,
            Ok(None) => return Err(format!("spec.source.configMapRef: ConfigMap {namespace}/{} not found", r.name)),
            Err(e) => return Err(format!("spec.source.configMapRef: reading ConfigMap {}: {e}", r.name)),
        },
        (None, Some(selector), true) => {
            let labels: Vec<String> = selector.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let listed = api
                .list(&ListParams::default().labels(&labels.join(",")))
                .await
                .map_err(|e| format!("spec.source.configMapSelector: listing ConfigMaps: {e}"))?;
            for cm in &listed.items {
                take(cm, &mut found)?;
            }
        }
        (None, None, false) => return Ok(inline(&source.migrations)),
        _ => return Err("spec.source: give exactly one of configMapRef, configMapSelector and migrations".into()),
    }
    let files: Vec<SourceFile> = found.into_iter().map(|(_, f)| f).collect();
    read(&files, format).map_err(|e| format!("spec.source: {e}"))
}

/// Runs the files in a task of this replica while the Lease holds.
fn start(
    obj: Arc<SchemaMigration>,
    ctx: Arc<ReconcileContext>,
    key: Key,
    generation: i64,
    licence: Licence,
    connector: Arc<crate::db::Connector>,
    files: Vec<VersionedFile>,
) {
    let (control_tx, control) = watch::channel(Directive::Run);
    let (report, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let slot = EndpointSlot {
        ctx: ctx.clone(),
        key: key.clone(),
        uid: obj.uid().unwrap_or_default(),
        endpoint: connector.endpoint(),
        control: control.clone(),
        licence: licence.clone(),
        report: report.clone(),
    };
    let runner = Runner {
        connector,
        approved: obj.spec.cutover.approved,
        spec: obj.spec.clone(),
        control,
        leading: Some(licence.clone()),
        report: Some(report),
        slot: Some(Arc::new(slot)),
    };
    let task_key = key.clone();
    let task_ctx = ctx.clone();
    let labels = MigrationLabels::new(KIND, key.namespace.clone(), key.name.clone());
    let handle = tokio::spawn(async move {
        let (ctx, key) = (task_ctx, task_key);
        let api: Api<SchemaMigration> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let mut status = obj.status.clone().unwrap_or_default();
        let mut pending: Vec<String> = Vec::new();
        let mut last_write: Option<std::time::Instant> = None;
        // On the heap: a run holds a rebuild's whole engine, too big for a worker's stack.
        let mut run = Box::pin(runner.run(&files));
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let mut dirty = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = tick.tick(), if dirty => {
                    if licence.holds() && write(&api, &key.name, &status).await.is_ok() {
                        last_write = Some(std::time::Instant::now());
                    }
                    dirty = false;
                }
                Some(p) = progress.recv() => {
                    let state = match p {
                        Progress::Pending(versions) => {
                            pending = versions;
                            State::Applying { pending: pending.len(), in_flight: None }
                        }
                        Progress::Step { version, step, steps, kind } => {
                            ctx.metrics.schema.steps.get_or_create(&labels).inc();
                            let in_flight = InFlight { version, step: format!("{step}/{steps} {kind}"), ..Default::default() };
                            State::Applying { pending: pending.len(), in_flight: Some(in_flight) }
                        }
                        Progress::Applied(version) => {
                            ctx.metrics.schema.applied.get_or_create(&labels).inc();
                            pending.retain(|v| *v != version);
                            status.current_version = Some(version);
                            State::Applying { pending: pending.len(), in_flight: None }
                        }
                        Progress::WaitingForSlot { endpoint, limit } => {
                            let mut in_flight = status.in_flight.clone().unwrap_or_default();
                            let step = in_flight.step.split(" (waiting").next().unwrap_or_default().to_string();
                            in_flight.step = format!("{step} (waiting for one of the {limit} slots of {endpoint})");
                            State::Applying { pending: pending.len(), in_flight: Some(in_flight) }
                        }
                        Progress::InFlight { version, job, cursor } => {
                            let mut in_flight = status.in_flight.clone().filter(|f| f.version == version).unwrap_or_default();
                            in_flight.version = version;
                            in_flight.job_id = job.or(in_flight.job_id);
                            in_flight.batch_cursor = cursor.or(in_flight.batch_cursor);
                            State::Applying { pending: pending.len(), in_flight: Some(in_flight) }
                        }
                    };
                    apply(&mut status, &state, Some(generation), &crate::api::now());
                    // A batch cursor moves often: written at most once a second,
                    // the latest at the next tick.
                    let due = last_write.is_none_or(|t: std::time::Instant| t.elapsed() >= PROGRESS_EVERY);
                    dirty = !due;
                    if due && licence.holds() {
                        last_write = Some(std::time::Instant::now());
                        if let Err(e) = write(&api, &key.name, &status).await {
                            tracing::debug!(error = %e, "could not write the SchemaMigration's progress");
                        }
                    }
                }
            }
        };
        let (state, event) = match outcome {
            Ok(RunOutcome::Done { applied, current }) => {
                let note = (!applied.is_empty()).then(|| format!("applied {}", applied.join(", ")));
                (State::UpToDate { current }, note.map(|n| (Severity::Normal, "Applied", n)))
            }
            Ok(RunOutcome::AwaitingApproval { hash, why, pending }) => {
                let note = format!("{pending} migration(s) {why}: waiting for approvedPlanHash {hash}");
                (State::AwaitingApproval { hash, why, pending }, Some((Severity::Normal, "AwaitingApproval", note)))
            }
            Ok(RunOutcome::AwaitingCutover { version }) => (State::AwaitingCutover { version }, None),
            Ok(RunOutcome::Stopped) => return,
            Err(e) => {
                let message = e.to_string();
                let state = match &e {
                    crate::versioned::runner::RunError::Drifted { .. } => State::Drifted { message: message.clone() },
                    e if e.is_invalid_input() => State::Stalled { message: message.clone() },
                    _ => State::Retrying { message: message.clone() },
                };
                (state, Some((Severity::Warning, "Failed", message)))
            }
        };
        if !licence.holds() {
            return;
        }
        apply(&mut status, &state, Some(generation), &crate::api::now());
        if let Err(e) = write(&api, &key.name, &status).await {
            tracing::warn!(error = %e, "could not write the SchemaMigration's status");
        }
        if let Some((severity, reason, note)) = event {
            publish(&ctx.recorder, &obj.object_ref(&()), severity, reason, note).await;
        }
        drop(licence);
        ctx.slots.release(&key);
        ctx.leases.release(&key);
    });
    ctx.schema_tasks.insert(key, Task { generation, control: control_tx, handle });
}

/// How often a step that waits for a slot looks again: from the cache, so a
/// look costs no request while every slot is held.
const SLOT_POLL: Duration = Duration::from_secs(1);

/// The endpoint's slot for a SchemaMigration's rebuilds and backfills: taken
/// as the other kinds take theirs (an entry that counts while this replica
/// holds the migration's Lease), given back when the run ends.
struct EndpointSlot {
    ctx: Arc<ReconcileContext>,
    key: Key,
    uid: String,
    endpoint: String,
    control: watch::Receiver<Directive>,
    licence: Licence,
    report: tokio::sync::mpsc::UnboundedSender<Progress>,
}

impl SlotGate for EndpointSlot {
    fn enter(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let slots = &self.ctx.slots;
            if slots.limit == 0 {
                return true;
            }
            let mut said = false;
            loop {
                match slots.take(&self.key, &self.uid, &self.endpoint).await {
                    Ok(true) => return true,
                    Ok(false) if !said => {
                        said = true;
                        tracing::info!(endpoint = %self.endpoint, limit = slots.limit, "every slot of the endpoint is held: the step waits");
                        let waiting = Progress::WaitingForSlot { endpoint: self.endpoint.clone(), limit: slots.limit };
                        let _ = self.report.send(waiting);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "could not take a slot of the endpoint"),
                }
                if *self.control.borrow() != Directive::Run || !self.licence.holds() {
                    return false;
                }
                tokio::time::sleep(SLOT_POLL).await;
            }
        })
    }
}

pub fn schema_error_policy(obj: Arc<SchemaMigration>, error: &Error, _ctx: Arc<ReconcileContext>) -> Action {
    tracing::warn!(namespace = obj.namespace().as_deref(), name = %obj.name_any(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

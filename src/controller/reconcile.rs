//! Reconciliation of one migration of either kind: the finalizer splits its life into
//! apply and cleanup; apply asks [`decide`] what to do and does it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, ResourceExt};
use tracing::Instrument;

use super::admission::{Admission, Known, Turn, admit, table_may_be_absent, turn};
use super::decide::{Cleanup, Decision, Task, cleanup_for, decide};
use super::kind::{MigrationResource, MigrationSpec};
use super::leases::MigrationLeases;
use super::queue::{failed_for, waits_for_window};
use super::status_sink::{ResourceSink, publish, write_status, write_status_at};
use super::supervisor::{Key, Room, Supervisor};
use super::target::{DsqlEndpoints, TargetError, connector_for};
use super::target_slots::TargetSlots;
use super::workloads::KubeWorkloads;
use crate::api::conditions::refresh_conditions;
use crate::api::now;
use crate::api::{IdentityMigrationStatus, LastError, Phase, QueuedStatus};
use crate::db::Connector;
use crate::engine::steps::quiesce::{QuiesceError, restore, saved_anywhere};
use crate::engine::steps::teardown::drop_unfinished_shadow;
use crate::engine::store::Severity;
use crate::engine::{Directive, EngineError, Job, Licence, Migration};
use crate::metrics::{Here, Metrics, MigrationLabels};

pub const FINALIZER: &str = "migrations.dsql.dev/shadow-cleanup";

/// How often a migration with a running engine is looked at: when the engine
/// stops (approval needed, failure, spec change) the next step follows within
/// this. Costs no API call while the engine runs.
pub const WATCH_RUNNING: Duration = Duration::from_secs(2);

/// How often a replica looks again at a migration whose Lease another holds:
/// it takes over within the Lease's duration plus this.
pub const LEASE_POLL: Duration = Duration::from_secs(2);

/// What every reconciliation shares.
pub struct ReconcileContext {
    pub client: Client,
    pub supervisor: Supervisor,
    /// The migrations' Leases: an engine runs only where its Lease is held.
    pub leases: MigrationLeases,
    /// The endpoints' slots (`maxConcurrentPerTarget`).
    pub slots: TargetSlots,
    /// Every migration this replica watches, for the line at each endpoint.
    pub known: Known,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// `application_name` of this instance's database connections.
    pub application_name: String,
    /// The DSQL endpoints each namespace may name.
    pub dsql_endpoints: DsqlEndpoints,
    /// How often a verified migration re-syncs while its cut-over window is closed.
    pub resync_while_waiting: Duration,
    /// The SchemaMigration runs of this replica.
    pub schema_tasks: super::schema_tasks::SchemaTasks,
}

#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum Error {
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("{0}")]
    Target(#[from] TargetError),
    #[error("cleanup: {0}")]
    Cleanup(#[source] EngineError),
    /// A TableMigration's key could not be read from its table.
    #[error("reading the table: {0}")]
    Table(#[source] EngineError),
    #[error("scaling quiesced workloads back: {0}")]
    Restore(#[source] QuiesceError),
    #[error("migration lease: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// Another replica holds the migration's Lease: it does the cleanup.
    #[error("another replica holds the migration's lease")]
    NotHolder,
}

impl Error {
    /// The label of `identity_migrator_reconcile_errors_total`: the variant's name.
    pub fn metric_label(&self) -> &'static str {
        self.into()
    }
}

pub async fn reconcile<K: MigrationResource>(obj: Arc<K>, ctx: Arc<ReconcileContext>) -> Result<Action, Error> {
    let key = Key::of(obj.as_ref());
    let span = tracing::info_span!("reconcile", kind = K::KIND, namespace = %key.namespace, name = %key.name);
    let started = Instant::now();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let labels = MigrationLabels::new(K::KIND, key.namespace.clone(), key.name.clone());
    let deleting = obj.meta().deletion_timestamp.is_some();
    let seen = obj.status().cloned().unwrap_or_default();
    let suspended = obj.spec().suspend();
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx).await,
            Finalizer::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    ctx.metrics.running_migrations.set(ctx.supervisor.running_count() as i64);
    ctx.metrics.held_leases.set(ctx.leases.held() as i64);
    if deleting {
        ctx.metrics.forget(&labels);
    } else {
        let engine_running = matches!(ctx.supervisor.task(&key), Task::Running { .. });
        ctx.metrics.observe_resource(&labels, &seen, Here { engine_running, suspended });
    }
    result
}

pub fn error_policy<K: MigrationResource>(obj: Arc<K>, error: &Error, _ctx: Arc<ReconcileContext>) -> Action {
    use kube::runtime::finalizer::Error as F;
    if let Error::Finalizer(e) = error {
        match e.as_ref() {
            F::CleanupFailed(Error::NotHolder) => return Action::requeue(LEASE_POLL),
            // Replicas add the finalizer together; the losers' JSON Patch test
            // fails (409 or 422), the ordinary outcome of that race.
            F::AddFinalizer(kube::Error::Api(s)) | F::RemoveFinalizer(kube::Error::Api(s))
                if s.code == 409 || s.code == 422 =>
            {
                tracing::debug!(name = %obj.name_any(), "another replica changed the finalizers first; looking again");
                return Action::requeue(Duration::from_millis(200));
            }
            _ => {}
        }
    }
    tracing::warn!(namespace = obj.namespace().as_deref(), name = %obj.name_any(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// The status a decision is made on: what the last task of this instance left
/// (a watch event may not have delivered it yet), else the object's.
fn freshest_status<K: MigrationResource>(obj: &K, ctx: &ReconcileContext) -> IdentityMigrationStatus {
    match ctx.supervisor.last_status(&Key::of(obj)) {
        Some((_, status)) => status,
        None => obj.status().cloned().unwrap_or_default(),
    }
}

async fn apply<K: MigrationResource>(obj: Arc<K>, ctx: &ReconcileContext) -> Result<Action, Error> {
    let key = Key::of(obj.as_ref());
    let generation = obj.meta().generation.unwrap_or(0);
    let task = ctx.supervisor.task(&key);
    if task == Task::None {
        // What an engine of this instance left is stale once another replica
        // may have run the migration since (the Lease was not held here all
        // along, even if it is held again now): the resource's status rules.
        ctx.supervisor.forget_unless_held_since(&key, ctx.leases.held_since(&key));
    }
    let status = freshest_status(obj.as_ref(), ctx);
    let decision = decide(obj.spec(), &status, generation, task, failed_for(&status));
    tracing::debug!(?decision, phase = %status.phase, "decided");
    if task == Task::None && !matches!(decision, Decision::Start) {
        // Nothing runs here and nothing is to start: let the Leases go.
        ctx.leases.release(&key);
        ctx.slots.release(&key);
    }
    match decision {
        Decision::Start => {
            // A migration whose turn has not come takes nothing and writes
            // nothing but its place in line: the cache tells, no Lease needed.
            if task == Task::None
                && ctx.slots.limit > 0
                && !ctx.slots.holding(&key)
                && let Some(endpoint) = endpoint_without_lease(obj.as_ref(), &status, ctx).await
                && let Turn::Wait { position } =
                    turn(obj.as_ref(), &status, ctx.slots.limit, &ctx.known, &key, &endpoint)
            {
                ctx.leases.release(&key);
                queue(obj.as_ref(), status, ctx, endpoint, position).await?;
                return Ok(Action::requeue(LEASE_POLL));
            }
            // A table renamed away is given back at once: ahead of the room
            // of this replica, the endpoint's slots and the line.
            let urgent = table_may_be_absent(&status);
            let room = if urgent || waits_for_window(obj.spec(), &status, jiff::Timestamp::now()) {
                Room::NotNeeded
            } else {
                let Some(permit) = ctx.supervisor.try_reserve() else {
                    // No room here: leave the migration to a replica that has some.
                    ctx.leases.release(&key);
                    ctx.slots.release(&key);
                    return Ok(Action::requeue(LEASE_POLL));
                };
                Room::Reserved(permit)
            };
            let Some(held) = ctx.leases.hold(&key, &obj.uid().unwrap_or_default()).await? else {
                // Another replica holds the Lease (perhaps since this one
                // missed a renewal): a slot kept here would never be used.
                ctx.slots.release(&key);
                return Ok(Action::requeue(LEASE_POLL));
            };
            // The engine starts from the status the last holder wrote, read
            // now: the watch cache may lag behind it, and an engine started on
            // a lagging status would redo a phase whose work is done (and,
            // at Validating, refuse the shadow table its predecessor created).
            let status = match ctx.supervisor.last_status(&key) {
                Some((_, own)) => own,
                None => {
                    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.namespace);
                    let fresh = api.get_status(&key.name).await.map_err(Error::Status)?;
                    let fresh_status = fresh.status().cloned().unwrap_or_default();
                    if decide(fresh.spec(), &fresh_status, generation, task, failed_for(&fresh_status))
                        != Decision::Start
                    {
                        return Ok(Action::requeue(LEASE_POLL));
                    }
                    fresh_status
                }
            };
            let target = obj.spec().target();
            let connector =
                match connector_for(&ctx.client, &key.namespace, target, &ctx.application_name, &ctx.dsql_endpoints)
                    .await
                {
                    Ok(connector) => Arc::new(connector),
                    Err(e) if e.needs_person() => {
                        reject(obj.as_ref(), status, ctx, e.to_string()).await?;
                        return Ok(Action::await_change());
                    }
                    Err(e) => return Err(e.into()),
                };
            let endpoint = connector.endpoint();
            let uid = obj.uid().unwrap_or_default();
            let admitted = admit(obj.as_ref(), &uid, &status, &ctx.slots, &ctx.known, &key, &endpoint)
                .await
                .map_err(|e| Error::Lease(kube_lease_manager::LeaseManagerError::KubeError(e)))?;
            match admitted {
                Admission::Run => start(obj, status, ctx, held, room, connector).await?,
                Admission::Queued { position } => {
                    // The room and the Lease are for migrations that can run.
                    drop((room, held));
                    ctx.leases.release(&key);
                    queue(obj.as_ref(), status, ctx, endpoint, position).await?;
                    return Ok(Action::requeue(LEASE_POLL));
                }
            }
            Ok(Action::requeue(WATCH_RUNNING))
        }
        Decision::Restart => {
            ctx.supervisor.direct(&key, Directive::Stop);
            Ok(Action::requeue(WATCH_RUNNING))
        }
        Decision::Suspend => {
            ctx.supervisor.direct(&key, Directive::Suspend);
            Ok(Action::await_change())
        }
        Decision::Wait => Ok(Action::requeue(WATCH_RUNNING)),
        Decision::RetryAfter(delay) => Ok(Action::requeue(delay)),
        Decision::Idle => {
            settle(obj.as_ref(), status, ctx).await?;
            Ok(Action::await_change())
        }
        Decision::Reject(invalid) => {
            reject(obj.as_ref(), status, ctx, invalid.to_string()).await?;
            Ok(Action::await_change())
        }
    }
}

/// The endpoint of a migration, known without its Lease: from its status,
/// else resolved from its target (a Secret read, once: the queued status
/// records it). None when the target cannot be resolved now (the Lease path
/// then says why).
async fn endpoint_without_lease<K: MigrationResource>(
    obj: &K,
    status: &IdentityMigrationStatus,
    ctx: &ReconcileContext,
) -> Option<String> {
    if let Some(endpoint) = &status.endpoint {
        return Some(endpoint.clone());
    }
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let target = obj.spec().target();
    connector_for(&ctx.client, &namespace, target, &ctx.application_name, &ctx.dsql_endpoints)
        .await
        .ok()
        .map(|c| c.endpoint())
}

/// Keeps the status of an idle migration true to its spec (suspended or not,
/// the generation observed) without rewriting it when nothing changed.
async fn settle<K: MigrationResource>(
    obj: &K,
    mut status: IdentityMigrationStatus,
    ctx: &ReconcileContext,
) -> Result<(), Error> {
    let before = status.clone();
    status.observed_generation = obj.meta().generation;
    // Not waiting for a slot any more: it has nothing to run.
    status.queued = None;
    let suspended = obj.spec().suspend() && !status.phase.is_terminal();
    refresh_conditions(&mut status, suspended, &now());
    if same_ignoring_time(&before, &status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &Key::of(obj).namespace);
    write_status(&api, &obj.name_any(), &status).await.map_err(Error::Status)
}

fn same_ignoring_time(a: &IdentityMigrationStatus, b: &IdentityMigrationStatus) -> bool {
    let strip = |s: &IdentityMigrationStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// Records bad input (Failed, Degraded, an Event) once per spec generation.
async fn reject<K: MigrationResource>(
    obj: &K,
    status: IdentityMigrationStatus,
    ctx: &ReconcileContext,
    message: String,
) -> Result<(), Error> {
    let already = status.phase == Phase::Failed
        && status.observed_generation == obj.meta().generation
        && status.last_error.as_ref().is_some_and(|e| e.invalid_input && e.message == message);
    if already {
        return Ok(());
    }
    let mut status = status;
    let phase = match status.phase {
        Phase::Failed | Phase::Pending => Phase::Validating,
        phase => phase,
    };
    status.phase = Phase::Failed;
    status.queued = None;
    status.observed_generation = obj.meta().generation;
    status.last_error = Some(LastError {
        phase,
        message: message.clone(),
        sqlstate: None,
        invalid_input: true,
        invalid_data: false,
        at: Some(now()),
    });
    refresh_conditions(&mut status, false, &now());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &Key::of(obj).namespace);
    write_status(&api, &obj.name_any(), &status).await.map_err(Error::Status)?;
    publish(&ctx.recorder, &obj.object_ref(&()), Severity::Warning, "InvalidSpec", message).await;
    Ok(())
}

/// Records that `obj` waits for a slot of `endpoint`, when that is news.
async fn queue<K: MigrationResource>(
    obj: &K,
    mut status: IdentityMigrationStatus,
    ctx: &ReconcileContext,
    endpoint: String,
    position: usize,
) -> Result<(), Error> {
    let before = status.clone();
    let since = before.queued.as_ref().and_then(|q| q.since.clone()).unwrap_or_else(now);
    status.endpoint = Some(endpoint);
    status.queued = Some(QueuedStatus { position: position as i64, limit: ctx.slots.limit as i64, since: Some(since) });
    status.observed_generation = obj.meta().generation;
    refresh_conditions(&mut status, false, &now());
    if same_ignoring_time(&before, &status) {
        return Ok(());
    }
    // No Lease is held while in line: written only over the version decided
    // on, never over what an engine that started meanwhile wrote.
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &Key::of(obj).namespace);
    let version = obj.meta().resource_version.clone().unwrap_or_default();
    if !write_status_at(&api, &obj.name_any(), &version, &status).await.map_err(Error::Status)? {
        return Ok(());
    }
    if before.queued.is_none() {
        let note =
            format!("waiting for one of the {} slots of {}", ctx.slots.limit, status.endpoint.unwrap_or_default());
        publish(&ctx.recorder, &obj.object_ref(&()), Severity::Normal, "Queued", note).await;
    }
    Ok(())
}

/// Starts the engine for `obj` from `status`.
async fn start<K: MigrationResource>(
    obj: Arc<K>,
    mut status: IdentityMigrationStatus,
    ctx: &ReconcileContext,
    held: Licence,
    room: Room,
    connector: Arc<Connector>,
) -> Result<(), Error> {
    let key = Key::of(obj.as_ref());
    let settings = match obj.settings(connector.clone()).await {
        Ok(settings) => settings,
        Err(EngineError::Invalid(invalid)) => return reject(obj.as_ref(), status, ctx, invalid.to_string()).await,
        Err(e) => return Err(Error::Table(e)),
    };
    let generation = obj.meta().generation.unwrap_or(0);
    status.observed_generation = Some(generation);
    status.endpoint = Some(connector.endpoint());
    status.queued = None;
    let job = Job {
        approved: obj.spec().cutover().approved,
        leading: Some(held.clone()),
        // Only an engine started for the wait (without room or slot) stays
        // for it; one that verified stops there and gives both back.
        resync_while_waiting: waits_for_window(obj.spec(), &status, jiff::Timestamp::now())
            .then_some(ctx.resync_while_waiting),
        workloads: Some(Arc::new(KubeWorkloads { client: ctx.client.clone(), namespace: key.namespace.clone() })),
        ..Job::shared(settings, connector)
    };
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let sink = ResourceSink::new(api, obj.as_ref(), ctx.recorder.clone(), ctx.metrics.clone()).while_held(held.clone());
    let span = tracing::info_span!("migration", kind = K::KIND, namespace = %key.namespace, name = %key.name);
    tracing::info!(parent: &span, phase = %status.phase, generation, "starting the engine");
    ctx.supervisor.start(key, generation, room, move |control| {
        async move {
            let (outcome, status, _) = Migration::new(job, Some(status), sink, control).run().await;
            tracing::info!(?outcome, phase = %status.phase, "engine stopped");
            (outcome, status)
        }
        .instrument(span)
    });
    Ok(())
}

async fn cleanup<K: MigrationResource>(obj: Arc<K>, ctx: &ReconcileContext) -> Result<Action, Error> {
    let key = Key::of(obj.as_ref());
    let uid = obj.uid().unwrap_or_default();
    if ctx.supervisor.task(&key) == Task::None {
        ctx.supervisor.forget_unless_held_since(&key, ctx.leases.held_since(&key));
    }
    let drop_shadow = cleanup_for(&freshest_status(obj.as_ref(), ctx)) == Cleanup::DropShadow;
    // An unfinished shadow is dropped by the holder of the migration's Lease
    // (which stops its engine first), never beside a running engine.
    if drop_shadow && ctx.supervisor.task(&key) == Task::None && ctx.leases.hold(&key, &uid).await?.is_none() {
        return Err(Error::NotHolder);
    }
    ctx.supervisor.stop(&key).await;
    let status = freshest_status(obj.as_ref(), ctx);
    restore_on_delete(obj.as_ref(), &status, ctx).await?;
    if cleanup_for(&status) == Cleanup::DropShadow {
        let target = obj.spec().target();
        let connector =
            connector_for(&ctx.client, &key.namespace, target, &ctx.application_name, &ctx.dsql_endpoints).await?;
        let connector = Arc::new(connector);
        let settings = obj.settings(connector.clone()).await.map_err(Error::Cleanup)?;
        let dropped = drop_unfinished_shadow(connector, settings).await.map_err(Error::Cleanup)?;
        if let Some(what) = dropped {
            publish(&ctx.recorder, &obj.object_ref(&()), Severity::Normal, "ShadowDropped", what).await;
        }
    }
    ctx.supervisor.forget(&key);
    ctx.slots.release(&key);
    ctx.leases.delete(&key, &uid).await;
    tracing::info!(kind = K::KIND, namespace = %key.namespace, name = %key.name, phase = %status.phase, "deleted; user data left in place");
    Ok(Action::await_change())
}

/// Deleting a migration scales back what it quiesced, before anything else
/// goes: the counts in its status, else those noted on the workloads.
async fn restore_on_delete<K: MigrationResource>(
    obj: &K,
    status: &IdentityMigrationStatus,
    ctx: &ReconcileContext,
) -> Result<(), Error> {
    let targets = &obj.spec().cutover().quiesce;
    if targets.is_empty() {
        return Ok(());
    }
    let workloads = KubeWorkloads { client: ctx.client.clone(), namespace: Key::of(obj).namespace };
    let in_status = status.cutover.as_ref().map(|c| c.saved_replicas.clone()).unwrap_or_default();
    let saved = saved_anywhere(&workloads, &in_status, targets).await.map_err(Error::Restore)?;
    if saved.is_empty() {
        return Ok(());
    }
    restore(&workloads, &saved).await.map_err(Error::Restore)?;
    let names: Vec<String> = saved.iter().map(|s| format!("{} to {}", s.name, s.replicas)).collect();
    let note = format!("the migration was deleted; scaled back: {}", names.join(", "));
    publish(&ctx.recorder, &obj.object_ref(&()), Severity::Normal, "Restored", note).await;
    Ok(())
}

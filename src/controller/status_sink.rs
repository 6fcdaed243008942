//! The engine's status and events, in the cluster: the status subresource of
//! the migration resource, Kubernetes Events on it, and Prometheus metrics.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};

use super::kind::MigrationResource;
use crate::api::IdentityMigrationStatus;
use crate::engine::error::StoreError;
use crate::engine::store::Severity;
use crate::engine::{EngineEvent, Licence, StatusSink};
use crate::metrics::{Here, Metrics, MigrationLabels, MigrationTotals};

pub const FIELD_MANAGER: &str = "identity-migrator";

/// Replaces the whole status through the status subresource. A JSON Patch
/// `add` replaces `/status` as one value, so fields the new status no longer
/// has (a cleared `lastError`) disappear instead of lingering as they would
/// with a merge patch.
pub async fn write_status<K: MigrationResource>(
    api: &Api<K>,
    name: &str,
    status: &IdentityMigrationStatus,
) -> Result<(), kube::Error> {
    replace_status(api, name, status).await
}

/// Replaces the whole status subresource of any kind: a field the status
/// leaves out is gone (a merge patch would keep it).
pub async fn replace_status<K>(api: &Api<K>, name: &str, status: &impl serde::Serialize) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let value = serde_json::to_value(status).expect("status serializes");
    let patch = json_patch::Patch(vec![json_patch::PatchOperation::Add(json_patch::AddOperation {
        path: json_patch::jsonptr::PointerBuf::parse("/status").expect("a valid pointer"),
        value,
    })]);
    api.patch_status(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await.map(|_| ())
}

/// Writes `status` only if the object is still at `version`: for a replica
/// that holds no Lease of the migration (one waiting in line), which must
/// never write over what a running engine wrote meanwhile. False when the
/// object changed (the next reconcile looks again).
pub async fn write_status_at<K: MigrationResource>(
    api: &Api<K>,
    name: &str,
    version: &str,
    status: &IdentityMigrationStatus,
) -> Result<bool, kube::Error> {
    use json_patch::jsonptr::PointerBuf;
    let value = serde_json::to_value(status).expect("status serializes");
    let patch = json_patch::Patch(vec![
        json_patch::PatchOperation::Test(json_patch::TestOperation {
            path: PointerBuf::parse("/metadata/resourceVersion").expect("a valid pointer"),
            value: serde_json::Value::String(version.to_string()),
        }),
        json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: PointerBuf::parse("/status").expect("a valid pointer"),
            value,
        }),
    ]);
    match api.patch_status(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Publishes an event about `reference`; a failure is logged, never fatal.
pub async fn publish(recorder: &Recorder, reference: &ObjectReference, severity: Severity, reason: &str, note: String) {
    let event = Event {
        type_: match severity {
            Severity::Warning => EventType::Warning,
            Severity::Normal => EventType::Normal,
        },
        reason: reason.to_string(),
        note: Some(note),
        action: "Migrate".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}

/// The engine's [`StatusSink`] for one migration resource.
pub struct ResourceSink<K: MigrationResource> {
    pub api: Api<K>,
    pub name: String,
    pub generation: i64,
    pub recorder: Recorder,
    pub reference: ObjectReference,
    pub metrics: Metrics,
    pub labels: MigrationLabels,
    totals: MigrationTotals,
    /// The migration's Lease: nothing is written once it is lost, since the
    /// replica that took it over writes the status from then on.
    held: Option<Licence>,
}

impl<K: MigrationResource> ResourceSink<K> {
    pub fn new(api: Api<K>, object: &K, recorder: Recorder, metrics: Metrics) -> Self {
        let meta = object.meta();
        let name = meta.name.clone().unwrap_or_default();
        let labels = MigrationLabels::new(K::KIND, meta.namespace.clone().unwrap_or_default(), name.clone());
        let totals = object.status().map(MigrationTotals::of).unwrap_or_default();
        Self {
            api,
            name,
            generation: meta.generation.unwrap_or(0),
            recorder,
            reference: object.object_ref(&()),
            metrics,
            labels,
            totals,
            held: None,
        }
    }

    /// Writes only while the migration's Lease is held.
    pub fn while_held(mut self, held: Licence) -> Self {
        self.held = Some(held);
        self
    }
}

impl<K: MigrationResource> StatusSink for ResourceSink<K> {
    async fn save(&mut self, status: &IdentityMigrationStatus) -> Result<(), StoreError> {
        if self.held.as_ref().is_some_and(|h| !h.holds()) {
            return Err("the migration's lease was lost; its new holder writes the status".into());
        }
        let mut status = status.clone();
        status.observed_generation = Some(self.generation);
        self.metrics.status_writes.get_or_create(&self.labels).inc();
        Ok(write_status(&self.api, &self.name, &status).await?)
    }

    async fn event(&mut self, event: EngineEvent) {
        publish(&self.recorder, &self.reference, event.severity, event.reason, event.message).await;
    }

    fn observe(&mut self, status: &IdentityMigrationStatus) {
        self.metrics.observe_status(&self.labels, &self.totals, status);
        // The engine's status is the freshest there is; the other replicas
        // follow it as their reconciles see it.
        let here = Here { engine_running: true, suspended: false };
        self.metrics.observe_resource(&self.labels, status, here);
        self.totals = MigrationTotals::of(status);
    }
}

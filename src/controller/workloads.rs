//! Scaling Deployments and StatefulSets through their `scale` subresource,
//! for `spec.cutover.quiesce`. RBAC needs only `get` and `patch` on
//! `deployments/scale` and `statefulsets/scale`.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::api::{WorkloadKind, WorkloadRef};
use crate::engine::steps::quiesce::{BoxFuture, QuiesceError, SAVED_REPLICAS, Workloads, kind_name};

pub struct KubeWorkloads {
    pub client: Client,
    pub namespace: String,
}

impl KubeWorkloads {
    async fn get(&self, w: &WorkloadRef) -> Result<Scale, QuiesceError> {
        let result = match w.kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(self.client.clone(), &self.namespace).get_scale(&w.name).await
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace).get_scale(&w.name).await
            }
        };
        result.map_err(|e| self.api_error("reading", w, e))
    }

    async fn set(&self, w: &WorkloadRef, replicas: i32) -> Result<(), QuiesceError> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        let params = PatchParams::default();
        let result = match w.kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
                    .patch_scale(&w.name, &params, &patch)
                    .await
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
                    .patch_scale(&w.name, &params, &patch)
                    .await
            }
        };
        result.map(|_| ()).map_err(|e| self.api_error("scaling", w, e))
    }

    /// The workload object itself (for its annotations).
    async fn annotations(&self, w: &WorkloadRef) -> Result<std::collections::BTreeMap<String, String>, QuiesceError> {
        let meta = match w.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
                .get(&w.name)
                .await
                .map(|d| d.metadata),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
                .get(&w.name)
                .await
                .map(|d| d.metadata),
        };
        meta.map(|m| m.annotations.unwrap_or_default()).map_err(|e| self.api_error("reading", w, e))
    }

    async fn annotate(&self, w: &WorkloadRef, value: Option<String>) -> Result<(), QuiesceError> {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {SAVED_REPLICAS: value}}}));
        let params = PatchParams::default();
        let result = match w.kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
                .patch(&w.name, &params, &patch)
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
                .patch(&w.name, &params, &patch)
                .await
                .map(|_| ()),
        };
        result.map_err(|e| self.api_error("annotating", w, e))
    }

    fn api_error(&self, action: &'static str, w: &WorkloadRef, e: kube::Error) -> QuiesceError {
        let name = format!("{}/{}", self.namespace, w.name);
        QuiesceError::Api { action, kind: kind_name(w.kind), name, source: Box::new(e) }
    }
}

impl Workloads for KubeWorkloads {
    fn replicas(&self, w: &WorkloadRef) -> BoxFuture<'_, Result<i32, QuiesceError>> {
        let w = w.clone();
        Box::pin(async move { Ok(self.get(&w).await?.spec.and_then(|s| s.replicas).unwrap_or(0)) })
    }

    fn scale(&self, w: &WorkloadRef, replicas: i32) -> BoxFuture<'_, Result<(), QuiesceError>> {
        let w = w.clone();
        Box::pin(async move { self.set(&w, replicas).await })
    }

    fn running(&self, w: &WorkloadRef) -> BoxFuture<'_, Result<i32, QuiesceError>> {
        let w = w.clone();
        Box::pin(async move { Ok(self.get(&w).await?.status.map_or(0, |s| s.replicas)) })
    }

    fn note_saved(&self, w: &WorkloadRef, replicas: Option<i32>) -> BoxFuture<'_, Result<(), QuiesceError>> {
        let w = w.clone();
        Box::pin(async move { self.annotate(&w, replicas.map(|n| n.to_string())).await })
    }

    fn noted(&self, w: &WorkloadRef) -> BoxFuture<'_, Result<Option<i32>, QuiesceError>> {
        let w = w.clone();
        Box::pin(async move { Ok(self.annotations(&w).await?.get(SAVED_REPLICAS).and_then(|v| v.parse().ok())) })
    }
}

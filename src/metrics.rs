//! Prometheus metrics of the operator, served on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{IdentityMigrationStatus, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MigrationLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PaceLabels {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub name: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// Every metric, shared by reconcilers, engine reporters and the HTTP server.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub rows_copied: Family<MigrationLabels, Counter>,
    pub batches: Family<MigrationLabels, Counter>,
    pub retries: Family<MigrationLabels, Counter>,
    pub phase: Family<PhaseLabels, Gauge>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub held_leases: Gauge,
    pub pace: Family<PaceLabels, Gauge>,
    pub running_migrations: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("identity_migrator");
        let rows_copied = Family::<MigrationLabels, Counter>::default();
        let batches = Family::<MigrationLabels, Counter>::default();
        let retries = Family::<MigrationLabels, Counter>::default();
        let phase = Family::<PhaseLabels, Gauge>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let held_leases = Gauge::default();
        let pace = Family::<PaceLabels, Gauge>::default();
        let running_migrations = Gauge::default();
        registry.register("rows_copied", "Rows copied into shadow tables", rows_copied.clone());
        registry.register("batches", "Copy transactions committed", batches.clone());
        registry.register("retries", "Transient database errors retried", retries.clone());
        registry.register("phase", "1 for the phase each migration is in", phase.clone());
        registry.register("reconcile_errors", "Reconciliations that failed, by error", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", reconcile_duration.clone());
        registry.register("held_leases", "Migration Leases this instance holds", held_leases.clone());
        registry.register(
            "pace_rows_per_second",
            "The copy's adaptive pace, under the reason for it (0 when unlimited or not the reason now)",
            pace.clone(),
        );
        registry.register("running_migrations", "Migrations this instance is running now", running_migrations.clone());
        Self {
            registry: Arc::new(registry),
            rows_copied,
            batches,
            retries,
            phase,
            reconcile_errors,
            reconcile_duration,
            held_leases,
            pace,
            running_migrations,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }

    pub fn observe_reconcile(&self, took: Duration, error: Option<&str>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(error) = error {
            self.reconcile_errors.get_or_create(&ErrorLabels { error: error.to_string() }).inc();
        }
    }

    /// Moves the counters of one migration forward to a new status.
    pub fn observe_status(&self, labels: &MigrationLabels, before: &MigrationTotals, status: &IdentityMigrationStatus) {
        let now = MigrationTotals::of(status);
        let bump = |family: &Family<MigrationLabels, Counter>, from: i64, to: i64| {
            if to > from {
                family.get_or_create(labels).inc_by((to - from) as u64);
            }
        };
        bump(&self.rows_copied, before.rows_copied, now.rows_copied);
        bump(&self.batches, before.batches, now.batches);
        bump(&self.retries, before.retries, now.retries);
        if let Some(pace) = status.progress.as_ref().and_then(|p| p.pace.as_ref()) {
            for reason in ["Clear", "CommitLatency", "Conflicts", "ReplicaLag"] {
                let value = if reason == pace.reason { pace.rows_per_second.unwrap_or(0) } else { 0 };
                let labels = PaceLabels {
                    namespace: labels.namespace.clone(),
                    name: labels.name.clone(),
                    reason: reason.into(),
                };
                self.pace.get_or_create(&labels).set(value);
            }
        }
        for phase in Phase::ALL {
            let value = i64::from(phase == status.phase);
            let labels = PhaseLabels {
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                phase: phase.to_string(),
            };
            self.phase.get_or_create(&labels).set(value);
        }
    }
}

/// The running totals a status carries, to turn into counter increments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrationTotals {
    pub rows_copied: i64,
    pub batches: i64,
    pub retries: i64,
}

impl MigrationTotals {
    pub fn of(status: &IdentityMigrationStatus) -> Self {
        let progress = status.progress.as_ref();
        Self {
            rows_copied: progress.map_or(0, |p| p.rows_copied),
            batches: progress.map_or(0, |p| p.batches),
            retries: status.retries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::progress::progress;

    #[test]
    fn status_changes_become_counter_increments_and_a_phase_gauge() {
        let m = Metrics::default();
        let labels = MigrationLabels { namespace: "blog".into(), name: "post-tag".into() };
        let mut status = IdentityMigrationStatus { phase: Phase::Copying, retries: 2, ..Default::default() };
        let mut p = progress(5800, 10_000, 0, 0, false);
        p.batches = 2;
        status.progress = Some(p);
        m.observe_status(&labels, &MigrationTotals::default(), &status);
        let before = MigrationTotals::of(&status);
        status.progress.as_mut().unwrap().rows_copied = 8700;
        m.observe_status(&labels, &before, &status);
        let text = m.render();
        assert!(
            text.contains("identity_migrator_rows_copied_total{namespace=\"blog\",name=\"post-tag\"} 8700"),
            "{text}"
        );
        assert!(text.contains("identity_migrator_retries_total{namespace=\"blog\",name=\"post-tag\"} 2"));
        assert!(text.contains("identity_migrator_phase{namespace=\"blog\",name=\"post-tag\",phase=\"Copying\"} 1"));
        assert!(text.contains("identity_migrator_phase{namespace=\"blog\",name=\"post-tag\",phase=\"Verifying\"} 0"));
        m.observe_reconcile(Duration::from_millis(3), Some("Kube"));
        assert!(m.render().contains("identity_migrator_reconcile_errors_total{error=\"Kube\"} 1"));
    }
}

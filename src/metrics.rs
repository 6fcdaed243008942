//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{IdentityMigrationStatus, Phase};
use crate::engine::plan::pace::FLOOR;

mod labels;
mod schema;
pub use labels::MigrationLabels;
pub use schema::{SCHEMA_STATES, SchemaMetrics};

/// Every reason the pace can give (`status.progress.pace.reason`).
const PACE_REASONS: [&str; 4] = ["Clear", "CommitLatency", "Conflicts", "ReplicaLag"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PaceLabels {
    #[prometheus(flatten)]
    pub migration: MigrationLabels,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    #[prometheus(flatten)]
    pub migration: MigrationLabels,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    #[prometheus(flatten)]
    pub migration: MigrationLabels,
    pub endpoint: String,
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
    /// From each migration's status, on every replica (dashboards and alerts
    /// take the max over replicas): see [`Metrics::observe_resource`].
    pub rows_to_copy: Family<MigrationLabels, Gauge>,
    pub copied_rows: Family<MigrationLabels, Gauge>,
    pub last_progress: Family<MigrationLabels, Gauge>,
    pub cutover_window: Family<MigrationLabels, Gauge<f64, AtomicU64>>,
    pub queued: Family<QueueLabels, Gauge>,
    pub table_missing: Family<MigrationLabels, Gauge>,
    pub blocking_sessions: Family<MigrationLabels, Gauge>,
    pub pace_at_floor: Family<MigrationLabels, Gauge>,
    /// 1 on the replica whose engine runs the migration.
    pub engine_running: Family<MigrationLabels, Gauge>,
    pub suspended: Family<MigrationLabels, Gauge>,
    pub status_writes: Family<MigrationLabels, Counter>,
    /// SchemaMigrations' own series.
    pub schema: SchemaMetrics,
    /// Per migration: what progress looked like at the last look, and the
    /// endpoint it was queued for.
    seen: Arc<Mutex<HashMap<MigrationLabels, Seen>>>,
}

/// What only this replica knows of a migration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Here {
    pub engine_running: bool,
    pub suspended: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    progress: (String, i64, i64, Option<i64>, i64, i64),
    endpoint: Option<String>,
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
        let rows_to_copy = Family::<MigrationLabels, Gauge>::default();
        let copied_rows = Family::<MigrationLabels, Gauge>::default();
        let last_progress = Family::<MigrationLabels, Gauge>::default();
        let cutover_window = Family::<MigrationLabels, Gauge<f64, AtomicU64>>::default();
        let queued = Family::<QueueLabels, Gauge>::default();
        let table_missing = Family::<MigrationLabels, Gauge>::default();
        let blocking_sessions = Family::<MigrationLabels, Gauge>::default();
        let pace_at_floor = Family::<MigrationLabels, Gauge>::default();
        let engine_running = Family::<MigrationLabels, Gauge>::default();
        let suspended = Family::<MigrationLabels, Gauge>::default();
        let status_writes = Family::<MigrationLabels, Counter>::default();
        registry.register(
            "rows_to_copy",
            "Rows the copy expects in all (status.progress.rowsTotal)",
            rows_to_copy.clone(),
        );
        registry.register("copied_rows", "Rows copied so far (status.progress.rowsCopied)", copied_rows.clone());
        registry.register(
            "last_progress_timestamp_seconds",
            "When this replica last saw the migration's status move (phase, rows, batches, verification)",
            last_progress.clone(),
        );
        registry.register(
            "cutover_window_seconds",
            "How long the table name was absent in the cut-over (status.cutover.windowMillis)",
            cutover_window.clone(),
        );
        registry.register("queued", "1 while the migration waits for room or an endpoint slot", queued.clone());
        registry.register(
            "table_missing",
            "1 while a failed cut-over has left the table without its name (condition TableMissing)",
            table_missing.clone(),
        );
        registry.register(
            "blocking_sessions",
            "Sessions whose locks the cut-over is waiting out (status.cutover.blockedBy)",
            blocking_sessions.clone(),
        );
        registry.register("pace_at_floor", "1 while the adaptive pace is held at its floor", pace_at_floor.clone());
        registry.register("engine_running", "1 on the replica whose engine runs the migration", engine_running.clone());
        registry.register("suspended", "1 while spec.suspend is true", suspended.clone());
        registry.register("status_writes", "Status writes of the migration by this replica", status_writes.clone());
        let schema = SchemaMetrics::default();
        schema.register(&mut registry);
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
            rows_to_copy,
            copied_rows,
            last_progress,
            cutover_window,
            queued,
            table_missing,
            blocking_sessions,
            pace_at_floor,
            engine_running,
            suspended,
            status_writes,
            schema,
            seen: Arc::default(),
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

    /// The gauges of one migration from its status as the resource shows it,
    /// on every replica, and whether this replica's engine runs it.
    pub fn observe_resource(&self, labels: &MigrationLabels, status: &IdentityMigrationStatus, here: Here) {
        let migration = || labels.clone();
        for phase in Phase::ALL {
            self.phase
                .get_or_create(&PhaseLabels { migration: migration(), phase: phase.as_str().to_string() })
                .set(i64::from(phase == status.phase));
        }
        let progress = status.progress.as_ref();
        let pace = progress.and_then(|p| p.pace.as_ref());
        for reason in PACE_REASONS {
            let value = match pace {
                Some(p) if p.reason == reason => p.rows_per_second.unwrap_or(0),
                _ => 0,
            };
            self.pace.get_or_create(&PaceLabels { migration: migration(), reason: reason.to_string() }).set(value);
        }
        let at_floor = pace.is_some_and(|p| p.rows_per_second.is_some_and(|r| r as f64 <= FLOOR));
        self.pace_at_floor.get_or_create(labels).set(i64::from(at_floor));
        self.rows_to_copy.get_or_create(labels).set(progress.map_or(0, |p| p.rows_total));
        self.copied_rows.get_or_create(labels).set(progress.map_or(0, |p| p.rows_copied));
        let cutover = status.cutover.as_ref();
        if let Some(ms) = cutover.and_then(|c| c.window_millis) {
            self.cutover_window.get_or_create(labels).set(ms as f64 / 1000.0);
        }
        self.table_missing.get_or_create(labels).set(i64::from(cutover.is_some_and(|c| c.table_missing)));
        self.blocking_sessions.get_or_create(labels).set(cutover.map_or(0, |c| c.blocked_by.len() as i64));
        self.engine_running.get_or_create(labels).set(i64::from(here.engine_running));
        self.suspended.get_or_create(labels).set(i64::from(here.suspended));

        let verification = status.verification.as_ref();
        let now = Seen {
            progress: (
                status.phase.as_str().to_string(),
                progress.map_or(0, |p| p.rows_copied),
                progress.map_or(0, |p| p.batches),
                verification.and_then(|v| v.verified_through),
                verification.map_or(0, |v| v.passes),
                verification.map_or(0, |v| v.rows_resynced),
            ),
            endpoint: Some(status.endpoint.clone().unwrap_or_default()),
        };
        let mut seen = self.seen.lock().expect("metrics lock");
        let before = seen.get(labels).cloned();
        if before.as_ref().map(|b| &b.progress) != Some(&now.progress) {
            self.stamp_progress(labels);
        }
        if let Some(endpoint) = before.as_ref().and_then(|b| b.endpoint.clone())
            && now.endpoint.as_ref() != Some(&endpoint)
        {
            self.queued.remove(&QueueLabels { migration: migration(), endpoint });
        }
        if let Some(endpoint) = &now.endpoint {
            self.queued
                .get_or_create(&QueueLabels { migration: migration(), endpoint: endpoint.clone() })
                .set(i64::from(status.queued.is_some()));
        }
        seen.insert(labels.clone(), now);
    }

    /// Records that the migration's status moved now.
    fn stamp_progress(&self, labels: &MigrationLabels) {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_progress.get_or_create(labels).set(stamp.as_secs() as i64);
    }

    /// The gauges of one SchemaMigration from its status, on every replica;
    /// `running_here` when this replica's runner applies it.
    pub fn observe_schema(
        &self,
        labels: &MigrationLabels,
        status: &crate::api::schema::SchemaMigrationStatus,
        running_here: bool,
    ) {
        if self.schema.observe(labels, status) {
            self.stamp_progress(labels);
        }
        self.engine_running.get_or_create(labels).set(i64::from(running_here));
    }

    /// Drops every series of a deleted SchemaMigration.
    pub fn forget_schema(&self, labels: &MigrationLabels) {
        self.schema.forget(labels);
        self.engine_running.remove(labels);
        self.last_progress.remove(labels);
    }

    /// Drops every series of a deleted migration.
    pub fn forget(&self, labels: &MigrationLabels) {
        let migration = || labels.clone();
        for phase in Phase::ALL {
            self.phase.remove(&PhaseLabels { migration: migration(), phase: phase.as_str().to_string() });
        }
        for reason in PACE_REASONS {
            self.pace.remove(&PaceLabels { migration: migration(), reason: reason.to_string() });
        }
        if let Some(endpoint) = self.seen.lock().expect("metrics lock").remove(labels).and_then(|s| s.endpoint) {
            self.queued.remove(&QueueLabels { migration: migration(), endpoint });
        }
        for family in [
            &self.rows_to_copy,
            &self.copied_rows,
            &self.last_progress,
            &self.table_missing,
            &self.blocking_sessions,
            &self.pace_at_floor,
            &self.engine_running,
            &self.suspended,
        ] {
            family.remove(labels);
        }
        self.cutover_window.remove(labels);
        for family in [&self.rows_copied, &self.batches, &self.retries, &self.status_writes] {
            family.remove(labels);
        }
    }

    /// Moves the counters of one migration forward to a new status.
    pub fn observe_status(&self, labels: &MigrationLabels, before: &MigrationTotals, status: &IdentityMigrationStatus) {
        let now = MigrationTotals::of(status);
        // Every series exists from the first look, so a rate over it is 0, not absent.
        let bump = |family: &Family<MigrationLabels, Counter>, from: i64, to: i64| {
            family.get_or_create(labels).inc_by(to.saturating_sub(from).max(0) as u64);
        };
        bump(&self.rows_copied, before.rows_copied, now.rows_copied);
        bump(&self.batches, before.batches, now.batches);
        bump(&self.retries, before.retries, now.retries);
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
        let labels = MigrationLabels::new("IdentityMigration", "blog", "post-tag");
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
            text.contains("identity_migrator_rows_copied_total{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 8700"),
            "{text}"
        );
        assert!(text.contains(
            "identity_migrator_retries_total{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 2"
        ));
        m.observe_reconcile(Duration::from_millis(3), Some("Kube"));
        assert!(m.render().contains("identity_migrator_reconcile_errors_total{error=\"Kube\"} 1"));
    }

    #[test]
    fn the_resource_status_becomes_gauges_and_a_deleted_migration_leaves_no_series() {
        use crate::api::{CutoverStatus, PaceStatus, QueuedStatus};
        let m = Metrics::default();
        let labels = MigrationLabels::new("IdentityMigration", "blog", "post-tag");
        let series = |text: &str, metric: &str| {
            let prefix = format!("identity_migrator_{metric}{{");
            text.lines().filter(|l| l.starts_with(&prefix)).map(str::to_string).collect::<Vec<_>>()
        };
        let queued = IdentityMigrationStatus {
            queued: Some(QueuedStatus { position: 2, limit: 4, since: None }),
            endpoint: Some("db.example:5432".into()),
            ..Default::default()
        };
        m.observe_resource(&labels, &queued, Here::default());
        let text = m.render();
        assert_eq!(
            series(&text, "queued"),
            [
                "identity_migrator_queued{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\",endpoint=\"db.example:5432\"} 1"
            ]
        );
        let mut p = progress(5800, 10_000, 0, 0, false);
        p.pace = Some(PaceStatus { rows_per_second: Some(50), reason: "Conflicts".into(), message: String::new() });
        let copying = IdentityMigrationStatus {
            phase: Phase::Copying,
            progress: Some(p),
            cutover: Some(CutoverStatus { table_missing: true, window_millis: Some(1500), ..Default::default() }),
            ..Default::default()
        };
        m.observe_resource(&labels, &copying, Here { engine_running: true, suspended: false });
        let text = m.render();
        assert_eq!(
            series(&text, "queued"),
            [
                "identity_migrator_queued{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\",endpoint=\"\"} 0"
            ],
            "no longer queued, and the series for its former endpoint is gone"
        );
        for line in [
            "identity_migrator_phase{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\",phase=\"Copying\"} 1",
            "identity_migrator_phase{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\",phase=\"Verifying\"} 0",
            "identity_migrator_pace_rows_per_second{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\",reason=\"Conflicts\"} 50",
            "identity_migrator_pace_at_floor{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 1",
            "identity_migrator_rows_to_copy{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 10000",
            "identity_migrator_copied_rows{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 5800",
            "identity_migrator_cutover_window_seconds{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 1.5",
            "identity_migrator_table_missing{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 1",
            "identity_migrator_engine_running{kind=\"IdentityMigration\",namespace=\"blog\",name=\"post-tag\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        m.forget(&labels);
        let text = m.render();
        assert!(!text.contains("post-tag"), "{text}");
    }
}

//! The series of a SchemaMigration: how many migrations wait, which state
//! its Ready condition says, and what this replica's runner applied. Its
//! labels are those of the other kinds, with `kind="SchemaMigration"`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::labels::MigrationLabels;
use crate::api::schema::SchemaMigrationStatus;

/// Every reason the Ready condition of a SchemaMigration can give.
pub const SCHEMA_STATES: [&str; 8] =
    ["Applying", "UpToDate", "AwaitingApproval", "AwaitingCutover", "Drifted", "Stalled", "Retrying", "Suspended"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    #[prometheus(flatten)]
    pub migration: MigrationLabels,
    pub state: String,
}

/// The SchemaMigration families, registered beside the others.
#[derive(Clone, Default)]
pub struct SchemaMetrics {
    pub pending: Family<MigrationLabels, Gauge>,
    pub state: Family<StateLabels, Gauge>,
    pub steps: Family<MigrationLabels, Counter>,
    pub applied: Family<MigrationLabels, Counter>,
    seen: Arc<Mutex<HashMap<MigrationLabels, SchemaSeen>>>,
}

impl SchemaMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "schema_pending",
            "Versioned migrations not applied yet (status.pending of a SchemaMigration)",
            self.pending.clone(),
        );
        registry.register(
            "schema_state",
            "1 for the state a SchemaMigration's Ready condition gives (UpToDate, Applying, Drifted ...)",
            self.state.clone(),
        );
        registry.register("schema_steps", "Steps of versioned migrations this replica began", self.steps.clone());
        registry.register(
            "schema_migrations_applied",
            "Versioned migrations this replica applied to the end",
            self.applied.clone(),
        );
    }
}

impl SchemaMetrics {
    /// Sets the gauges of one SchemaMigration from its status; answers
    /// whether its progress moved since the last look.
    pub fn observe(&self, labels: &MigrationLabels, status: &SchemaMigrationStatus) -> bool {
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.as_str());
        for state in SCHEMA_STATES {
            let labels = StateLabels { migration: labels.clone(), state: state.to_string() };
            self.state.get_or_create(&labels).set(i64::from(ready == Some(state)));
        }
        self.pending.get_or_create(labels).set(status.pending);
        // Every series exists from the first look, so a rate over it is 0, not absent.
        self.steps.get_or_create(labels).inc_by(0);
        self.applied.get_or_create(labels).inc_by(0);
        let in_flight = status.in_flight.as_ref();
        let progress = (
            ready.unwrap_or_default().to_string(),
            status.pending,
            status.current_version.clone().unwrap_or_default(),
            in_flight.map(|f| (f.version.clone(), f.step.clone(), f.batch_cursor.clone(), f.job_id.clone())),
        );
        let mut seen = self.seen.lock().expect("metrics lock");
        let moved = seen.get(labels) != Some(&progress);
        seen.insert(labels.clone(), progress);
        moved
    }

    /// Drops the SchemaMigration families' series of a deleted one.
    pub fn forget(&self, labels: &MigrationLabels) {
        for state in SCHEMA_STATES {
            self.state.remove(&StateLabels { migration: labels.clone(), state: state.to_string() });
        }
        self.pending.remove(labels);
        self.steps.remove(labels);
        self.applied.remove(labels);
        self.seen.lock().expect("metrics lock").remove(labels);
    }
}

/// What a SchemaMigration's progress looked like at the last look.
type SchemaSeen = (String, i64, String, Option<(String, String, Option<String>, Option<String>)>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::schema::InFlight;
    use crate::metrics::Metrics;
    use crate::versioned::status::{State, apply};

    fn lines(m: &Metrics) -> Vec<String> {
        m.render().lines().filter(|l| l.contains("name=\"shop\"")).map(str::to_string).collect()
    }

    #[test]
    fn a_schema_migrations_status_becomes_its_state_and_pending_gauges_and_goes_with_it() {
        let m = Metrics::default();
        let labels = MigrationLabels::new("SchemaMigration", "shop", "shop");
        let mut status = SchemaMigrationStatus::default();
        let now = crate::api::now();
        let in_flight = InFlight { version: "3".into(), step: "1/2 backfill".into(), ..Default::default() };
        apply(&mut status, &State::Applying { pending: 2, in_flight: Some(in_flight) }, Some(1), &now);
        m.observe_schema(&labels, &status, true);
        let text = lines(&m);
        let has = |line: &str| text.iter().any(|l| l == line);
        let series = "kind=\"SchemaMigration\",namespace=\"shop\",name=\"shop\"";
        assert!(has(&format!("identity_migrator_schema_pending{{{series}}} 2")), "{text:#?}");
        assert!(has(&format!("identity_migrator_schema_state{{{series},state=\"Applying\"}} 1")), "{text:#?}");
        assert!(has(&format!("identity_migrator_schema_state{{{series},state=\"Drifted\"}} 0")), "{text:#?}");
        assert!(has(&format!("identity_migrator_engine_running{{{series}}} 1")), "{text:#?}");
        assert!(text.iter().any(|l| l.starts_with("identity_migrator_last_progress_timestamp_seconds{")));

        apply(&mut status, &State::Drifted { message: "version 2 changed".into() }, Some(1), &now);
        m.observe_schema(&labels, &status, false);
        let text = lines(&m);
        let has = |line: &str| text.iter().any(|l| l == line);
        assert!(has(&format!("identity_migrator_schema_state{{{series},state=\"Drifted\"}} 1")), "{text:#?}");
        assert!(has(&format!("identity_migrator_schema_state{{{series},state=\"Applying\"}} 0")), "{text:#?}");
        assert!(has(&format!("identity_migrator_engine_running{{{series}}} 0")), "{text:#?}");

        m.forget_schema(&labels);
        assert!(lines(&m).is_empty(), "{:#?}", lines(&m));
    }
}

//! `identity-migrator controller`: the Kubernetes operator. Reconciles
//! IdentityMigration and TableMigration resources by running the same engine as `run`, with the
//! status kept in the resource.

pub mod admission;
pub mod decide;
pub mod kind;
pub mod lease_terms;
pub mod leases;
pub mod operator;
pub mod queue;
pub mod reconcile;
pub mod schema;
pub mod schema_tasks;
pub mod status_sink;
pub mod supervisor;
pub mod target;
pub mod target_slots;
pub mod workloads;

pub use operator::{OperatorConfig, default_concurrency, run};

//! The migration engine: the phases shared by the operator and the `run` command.
//!
//! Pure: `plan`, `sql`, `shape`, `validate`, `phase`, `progress`. Database I/O:
//! `catalog`, `shadow`, `copy`, `verify`, `swap`, driven by `migration`.

pub mod catalog;
pub mod copy;
pub mod failpoint;
pub mod job;
pub mod migration;
pub mod phase;
pub mod plan;
pub mod progress;
pub mod quiesce;
pub mod rollback;
pub mod script;
pub mod shadow;
pub mod shape;
pub mod sql;
pub mod store;
pub mod survey;
pub mod swap;
pub mod teardown;
pub mod tracker;
pub mod tracking;
pub mod validate;
pub mod verify;

pub use job::{Control, Directive, EngineError, Job, Outcome};
pub use migration::Migration;
pub use store::{EngineEvent, FileStore, Reporter};

#[cfg(test)]
pub(crate) mod testing;

//! The migration engine: the phases shared by the operator and the `run` command.
//!
//! Two halves and a driver:
//! - [`plan`], pure: what the engine will do, decided from plain data (the
//!   table's shape, the settings, the status) without a database. SQL text,
//!   batch sizes, validation, the phase machine, progress arithmetic.
//! - [`steps`], database I/O: each step of a migration against the database
//!   (read the catalog, create the shadow, copy, verify, swap, roll back,
//!   clean up) and the quiescing of workloads around the window.
//! - The driver at the root: [`migration`] walks the phase machine running the
//!   steps; [`job`] is what one run works with and how it ends;
//!   [`status_keeper`] is the only writer of the status; [`store`] is where the
//!   status goes (the front ends implement [`store::StatusSink`]);
//!   [`error`] says how a run fails; [`failpoint`] crashes the process on
//!   purpose for the crash tests.

pub mod error;
pub mod failpoint;
pub mod job;
pub mod licence;
pub mod migration;
pub mod plan;
pub mod status_keeper;
pub mod steps;
pub mod store;

pub use error::{CheckFailed, EngineError};
pub use job::{Control, Directive, Job, Outcome};
pub use licence::Licence;
pub use migration::Migration;
pub use store::{EngineEvent, FileStore, StatusSink};

#[cfg(test)]
pub(crate) mod testing;

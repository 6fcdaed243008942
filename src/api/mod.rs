//! The `IdentityMigration` custom resource: spec, status and their vocabulary.

pub mod conditions;
mod spec;
mod status;

pub use spec::*;
pub use status::*;

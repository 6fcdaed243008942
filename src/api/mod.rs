//! The `IdentityMigration` custom resource: spec, status and their vocabulary.

mod spec;
mod status;

pub use spec::*;
pub use status::*;

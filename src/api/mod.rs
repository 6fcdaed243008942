//! The `IdentityMigration` custom resource: spec, status and their vocabulary;
//! and the table changes a `TableMigration` makes ([`changes`]).

pub mod changes;
pub mod conditions;
pub mod schema;
mod spec;
mod status;
mod table;

pub use spec::*;
pub use status::*;
pub use table::*;

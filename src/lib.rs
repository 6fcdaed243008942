//! identity-migrator: moves existing Aurora DSQL and PostgreSQL tables onto
//! database-generated identity columns, in resumable batches.

pub mod api;
pub mod engine;

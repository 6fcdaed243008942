//! identity-migrator: moves existing Aurora DSQL and PostgreSQL tables onto
//! database-generated identity columns, in resumable batches.

pub mod api;
pub mod cli;
pub mod controller;
pub mod db;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod telemetry;
pub mod versioned;

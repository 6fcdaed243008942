//! The integration tests, built once as one binary: a module per area, and
//! the shared fixtures in `support` (PostgreSQL databases, the DSQL-strict
//! harness, the fake API server, a ledger writer).

mod support;

mod argocd;
mod bad_input;
mod chart;
mod claim;
mod cli;
mod controller;
mod controller_requests;
mod copy_capture;
mod crash;
mod crd;
mod dsql;
mod dsql_run;
mod dsql_truth;
mod edges;
mod failover;
mod fidelity;
mod fleet;
mod fleet_bench;
mod harness;
mod in_place;
mod layers;
mod lease_window;
mod live;
mod migrate;
mod observability;
mod oracle;
mod retry;
mod rollback;
mod schema;
mod schema_controller;
mod schema_resume;
mod seams;
mod spec_data;
mod stand_in;
mod table_changes;
mod table_controller;
mod table_rollback;
mod table_run;
mod table_truth;
mod tls;
mod window_capture;

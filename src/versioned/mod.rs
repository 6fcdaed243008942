//! Versioned SQL migrations (`SchemaMigration`): a team's files, read as
//! their tool writes them ([`files`]), split and parsed by the server's own
//! grammar ([`sql`]), each statement's effect read from its tree
//! ([`classify`]) and turned into steps by the target's rules ([`rules`]).
//! All of that is pure; the runner executes the steps.

pub mod backfill;
pub mod classify;
pub mod exec;
pub mod files;
pub mod history;
pub mod rebuild;
pub mod rules;
pub mod runner;
pub mod sql;
pub mod status;

//! Versioned SQL migrations (`SchemaMigration`): a team's files, read as
//! their tool writes them ([`files`]), split and parsed by the server's own
//! grammar ([`sql`]), each statement's effect read from its tree
//! ([`classify`]) and turned into steps by the target's rules ([`rules`]).
//! All of that is pure; the runner executes the steps.

pub mod classify;
pub mod files;
pub mod rules;
pub mod sql;

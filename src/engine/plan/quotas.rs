//! The limits the engine plans within: DSQL's quotas (rows, bytes, objects per
//! transaction and table) and PostgreSQL's identifier length, with the margins
//! the engine keeps below them. Constants only.

/// PostgreSQL (and DSQL) silently truncate longer identifiers.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// DSQL's quota: rows mutated per transaction, table rows plus index rows.
pub const DSQL_MUTATION_LIMIT: i64 = 3000;
/// What the engine plans for, leaving room for how DSQL counts edge cases.
pub const MUTATION_BUDGET: i64 = 2900;
/// DSQL's 10 MiB per transaction, with the same kind of margin.
pub const BYTE_BUDGET: i64 = 8 * 1024 * 1024;
/// DSQL quotas checked before anything is created.
pub const DSQL_MAX_COLUMNS: usize = 255;
pub const DSQL_MAX_INDEXES: usize = 24;
pub const DSQL_MAX_TABLES: i64 = 1000;

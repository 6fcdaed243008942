//! The pure half of the engine: every decision that needs no database.
//! Functions over plain data (a table's shape, validated settings, a status),
//! unit tested without a database or a cluster.
//!
//! - [`quote`]: identifier and literal quoting, the only way names enter SQL.
//! - [`shape`]: a table as the catalog describes it, and its qualified name.
//! - [`sql`]: the statements the engine runs, as text.
//! - [`ddl`]: the shadow table's `CREATE TABLE` and index builds.
//! - [`changes`]: a TableMigration's changes: the new shape, and per change in place or the rebuild.
//! - [`carried`]: what a table carries besides rows (owner, privileges, ...).
//! - [`fidelity`]: the statements that give that to the shadow table.
//! - [`not_carried`]: what the new table will not carry, and why.
//! - [`names`]: the names of the new table's objects.
//! - [`quotas`]: DSQL's limits and the margins kept below them.
//! - [`batches`]: batch sizes, id spans, ranges and chunks.
//! - [`validate`]: the spec on its own, and the settings it yields.
//! - [`preflight`]: the spec against the table, before anything is created.
//! - [`phase`]: the phase machine: every phase and transition.
//! - [`script`]: the whole migration as an ordered script (`plan` prints it).
//! - [`progress`]: rates, ETA, throttling and the status write gate.
//! - [`pace`]: the copy's adaptive pace (`spec.copy.pace`).
//! - [`window`]: cut-over windows: open now, or when next.
//! - [`capture`]: the trigger that notes written ids for the window (PostgreSQL).
//! - [`window_cost`]: how long the cut-over window will be, told beforehand.

pub mod batches;
pub mod capture;
pub mod carried;
pub mod changes;
pub mod ddl;
pub mod fidelity;
pub mod lexer;
pub mod names;
pub mod not_carried;
pub mod pace;
pub mod phase;
pub mod preflight;
pub mod progress;
pub mod quotas;
pub mod quote;
pub mod script;
pub mod shape;
pub mod sql;
pub mod validate;
pub mod window;
pub mod window_cost;

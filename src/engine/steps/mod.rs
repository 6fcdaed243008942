//! The database half of the engine: each step of a migration, run against the
//! database through a retrying [`crate::db::Session`]. Every step is
//! idempotent and decides from the catalog where it stands, so a crash at any
//! point resumes here.
//!
//! - [`blockers`]: sessions that would block a lock on the table, waited out.
//! - [`catalog`]: reads a table's shape and the state of the names and indexes.
//! - [`claim`]: one engine per table, claimed in the database.
//! - [`data_scan`]: the read-only scan that proves the data fits a table
//!   change's new shape.
//! - [`spec_check`]: every spec type and expression read by the server's
//!   parser, alone, before anything is planned.
//! - [`rehearsal`]: the changes rehearsed by ALTER TABLE on an empty
//!   temporary copy, for the definitions the new table takes (PostgreSQL).
//! - [`table_key`]: a TableMigration's key and settings, from the catalog.
//! - [`table_changes`]: a TableMigration's changes made in place.
//! - [`rebuild`]: a TableMigration's new table, in the new shape.
//! - [`survey`]: validation against the table, and the plan of the copy.
//! - [`shadow`]: creates the shadow table and builds its indexes.
//! - [`fidelity`]: gives the shadow the source's owner, privileges, comments,
//!   statistics and policies; moves column sequences at the swap.
//! - [`copy`]: the range workers that copy rows in batches.
//! - [`verify`]: chunked comparison of source and shadow, and re-sync.
//! - [`capture`]: the window's change capture by trigger (PostgreSQL).
//! - [`change_tracking`]: the window's sync by a change tracking column.
//! - [`swap`]: the cut-over window.
//! - [`in_place`]: `ADD GENERATED ... AS IDENTITY` on the table itself, where
//!   the server accepts it.
//! - [`identity`]: the identity moved past every id and read back.
//! - [`rollback`]: the window in reverse, after a completed migration.
//! - [`teardown`]: drops an unfinished shadow table when a migration is deleted.
//! - [`quiesce`]: scales workloads down around the window.

pub mod blockers;
pub mod capture;
pub mod catalog;
pub mod change_tracking;
pub mod claim;
pub mod copy;
pub mod data_scan;
pub mod fidelity;
pub mod identity;
pub mod in_place;
pub mod key_aside;
pub mod quiesce;
pub mod rebuild;
pub mod rehearsal;
pub mod rollback;
pub mod shadow;
pub mod spec_check;
pub mod stages;
pub mod survey;
pub mod swap;
pub mod table_changes;
pub mod table_key;
pub mod teardown;
pub mod verify;

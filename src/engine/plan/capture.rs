//! Change capture for the cut-over window on PostgreSQL: a trigger that
//! notes the id of every row written (inserted, updated or deleted) in a
//! log table, so that the window re-syncs only those rows instead of
//! re-reading the whole renamed table. Pure: names and statements.
//!
//! Why it is exact (see also docs/benchmarks.md, "The window"):
//! - The trigger runs inside the writing transaction: a write commits with
//!   its log row or not at all, subtransactions included (a rolled-back
//!   savepoint takes its log row with it). No snapshot, `xmin`, freezing or
//!   wraparound reasoning is involved.
//! - Before each verification pass, the log is emptied in a transaction that
//!   commits before the pass begins. A write committed before that
//!   transaction's snapshot is seen by every read of the pass; one committed
//!   after it left a log row the emptying did not see.
//! - Before the window, the table still live, the log is caught up: a
//!   `DELETE ... RETURNING` takes the rows it sees, and those ids are re-synced
//!   after it commits, so they read every write it took. A write it did not
//!   see keeps its row for the next round or the window.
//! - In the window the table is renamed away under ACCESS EXCLUSIVE: every
//!   writer has finished and none can start, so the log is complete.
//! - `TRUNCATE` fires no row trigger: a statement trigger notes it as a NULL
//!   id, and the window then re-reads everything, as without capture.
//! - The trigger is `ENABLE ALWAYS`, so sessions with
//!   `session_replication_role = replica` (logical replication, pg_restore)
//!   are noted too.
//!
//! The trigger lives from the first verification pass to the swap, and not
//! while the cut-over waits: writes pay one more insert for that time
//! (measured in docs/benchmarks.md).

use super::names::fit_identifier;
use super::quote::{ident, literal};
use super::shape::TableName;

/// The log's one column: its name tells the log from a table a user named
/// the same way, which is never written to or dropped.
const NOTED: &str = "idmig_noted_id";

/// The trigger's name on the table.
pub const TRIGGER: &str = "idmig_capture";
const TRUNCATE_TRIGGER: &str = "idmig_capture_truncate";

/// The capture objects of a migration whose new table is `shadow`.
#[derive(Clone, Debug, PartialEq)]
pub struct Capture {
    /// The log: one row per write, the id it touched (NULL: a TRUNCATE).
    pub log: TableName,
    /// The trigger function (same schema).
    pub function: TableName,
}

impl Capture {
    pub fn of(shadow: &TableName) -> Self {
        Self {
            log: shadow.sibling(fit_identifier(&format!("{}_log", shadow.name))),
            function: shadow.sibling(fit_identifier(&format!("{}_log_fn", shadow.name))),
        }
    }

    /// Statements that make the capture on `table` (keyed by the integer
    /// column `id`), each its own transaction, each safe to run again.
    pub fn create(&self, table: &TableName, id: &str) -> Vec<String> {
        let (log, function, id, noted) = (&self.log, &self.function, ident(id), ident(NOTED));
        vec![
            // A table of that name that is not a log makes the trigger
            // function's inserts fail at once: arming fails, nothing is written.
            format!("CREATE TABLE IF NOT EXISTS {log} ({noted} bigint)"),
            format!(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS {body}",
                body = literal(&format!(
                    "BEGIN \
                     IF TG_OP = 'TRUNCATE' THEN INSERT INTO {log} ({noted}) VALUES (NULL); RETURN NULL; END IF; \
                     IF TG_OP <> 'INSERT' THEN INSERT INTO {log} ({noted}) VALUES (OLD.{id}); END IF; \
                     IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.{id} IS DISTINCT FROM OLD.{id}) THEN \
                     INSERT INTO {log} ({noted}) VALUES (NEW.{id}); END IF; \
                     RETURN NULL; END"
                ))
            ),
            // One DDL a transaction (the harness that holds the PostgreSQL
            // path to DSQL's rules counts them); each made only when absent.
            create_trigger(table, TRIGGER, "AFTER INSERT OR UPDATE OR DELETE", "ROW", function),
            create_trigger(table, TRUNCATE_TRIGGER, "AFTER TRUNCATE", "STATEMENT", function),
            format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {}", ident(TRIGGER)),
            format!("ALTER TABLE {table} ENABLE ALWAYS TRIGGER {}", ident(TRUNCATE_TRIGGER)),
        ]
    }

    /// Whether the capture is on `table` as `create` makes it: both triggers,
    /// enabled ALWAYS, and the log (their function they depend on).
    pub fn is_armed(&self, table: &TableName) -> String {
        format!(
            "SELECT count(*) = 2 AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute \
             WHERE attrelid = to_regclass({log}) AND attname = {noted}) \
             FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass({rel}) AND tgname IN ({t}, {tt}) AND tgenabled = 'A'",
            log = literal(&self.log.to_string()),
            noted = literal(NOTED),
            rel = literal(&table.to_string()),
            t = literal(TRIGGER),
            tt = literal(TRUNCATE_TRIGGER),
        )
    }

    /// Whether anything of the capture is left: a trigger on one of
    /// `tables`, the function or the log.
    pub fn any_left(&self, tables: &[&TableName]) -> String {
        let rels: Vec<String> = tables.iter().map(|t| format!("to_regclass({})", literal(&t.to_string()))).collect();
        format!(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid IN ({rels}) AND tgname IN ({t}, {tt})) \
             OR to_regclass({log}) IS NOT NULL OR to_regprocedure({function}) IS NOT NULL",
            rels = if rels.is_empty() { "NULL".to_string() } else { rels.join(", ") },
            t = literal(TRIGGER),
            tt = literal(TRUNCATE_TRIGGER),
            log = literal(&self.log.to_string()),
            function = literal(&format!("{}()", self.function)),
        )
    }

    /// Empties the log: run (and committed) just before a pass begins.
    pub fn reset(&self) -> String {
        format!("DELETE FROM {}", self.log)
    }

    /// Takes the ids out of the log (a catch-up while the table is live):
    /// what a write commits after this statement's snapshot stays.
    pub fn take_written(&self) -> String {
        format!("DELETE FROM {} RETURNING {}", self.log, ident(NOTED))
    }

    /// The ids written since the reset, in order; a NULL among them (a
    /// TRUNCATE) sorts last.
    pub fn written_ids(&self) -> String {
        format!("SELECT DISTINCT {n} FROM {} ORDER BY {n} NULLS LAST", self.log, n = ident(NOTED))
    }

    /// Statements that take the triggers off `table`, each safe to run again.
    /// Each looks before it drops: `DROP TRIGGER IF EXISTS` would take the
    /// table's ACCESS EXCLUSIVE lock even when there is nothing to drop.
    pub fn drop_triggers(&self, table: &TableName) -> Vec<String> {
        [TRIGGER, TRUNCATE_TRIGGER]
            .iter()
            .map(|name| {
                format!(
                    "DO {}",
                    literal(&format!(
                        "BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass({rel}) \
                         AND tgname = {t}) THEN DROP TRIGGER {ti} ON {table}; END IF; END",
                        rel = literal(&table.to_string()),
                        t = literal(name),
                        ti = ident(name),
                    ))
                )
            })
            .collect()
    }

    /// Statements that remove the function and the log, each safe to run
    /// again. The function goes only once no trigger calls it (no CASCADE,
    /// which would lock the table of a trigger left behind).
    pub fn drop_objects(&self) -> Vec<String> {
        let drop_log = format!(
            "DO {}",
            literal(&format!(
                "BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass({rel}) \
                 AND attname = {noted}) THEN DROP TABLE {log}; END IF; END",
                rel = literal(&self.log.to_string()),
                noted = literal(NOTED),
                log = self.log,
            ))
        );
        vec![format!("DROP FUNCTION IF EXISTS {}()", self.function), drop_log]
    }
}

/// `CREATE TRIGGER name ...` on `table` unless it has one of that name
/// (`CREATE OR REPLACE TRIGGER` needs PostgreSQL 14).
fn create_trigger(table: &TableName, name: &str, when: &str, each: &str, function: &TableName) -> String {
    format!(
        "DO {}",
        literal(&format!(
            "BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = {rel}::regclass AND tgname = {t}) \
             THEN CREATE TRIGGER {ti} {when} ON {table} FOR EACH {each} EXECUTE FUNCTION {function}(); END IF; END",
            rel = literal(&table.to_string()),
            t = literal(name),
            ti = ident(name),
        ))
    )
}

/// What the log says of the writes since the reset.
#[derive(Clone, Debug, PartialEq)]
pub enum Written {
    /// Every row written has one of these ids (in order): re-sync them.
    Ids(Vec<i64>),
    /// A TRUNCATE: every row may have changed.
    Everything,
}

/// What the log's `ids` (sorted, NULL last) say.
pub fn written(ids: Vec<Option<i64>>) -> Written {
    ids.into_iter().collect::<Option<Vec<i64>>>().map_or(Written::Everything, Written::Ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_written_are_re_synced_and_a_truncate_means_everything() {
        assert_eq!(written(vec![Some(1), Some(60), Some(i64::MAX)]), Written::Ids(vec![1, 60, i64::MAX]));
        assert_eq!(written(vec![]), Written::Ids(vec![]));
        assert_eq!(written(vec![Some(3), None]), Written::Everything);
    }

    #[test]
    fn the_capture_notes_every_kind_of_write_and_survives_replica_sessions() {
        let c = Capture::of(&TableName::new("app", "orders_new"));
        assert_eq!(c.log, TableName::new("app", "orders_new_log"));
        let sql = c.create(&TableName::new("app", "orders"), "id").join(";\n");
        for part in ["AFTER INSERT OR UPDATE OR DELETE", "AFTER TRUNCATE", "ENABLE ALWAYS TRIGGER", "OLD.", "NEW."] {
            assert!(sql.contains(part), "{part} missing from:\n{sql}");
        }
        let dropped = c.drop_triggers(&TableName::new("app", "orders_old")).join(";\n");
        assert!(
            dropped.contains("IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger")
                && dropped.contains("DROP TRIGGER \"idmig_capture\" ON")
        );
        assert!(c.drop_objects()[1].contains(&format!("DROP TABLE {}", c.log)), "only a table with the log's column");
    }
}

//! The target's rules: each statement of each file as the steps that are
//! sent, and why. On DSQL one DDL statement a transaction, `CREATE INDEX
//! ASYNC` with its job awaited, constraints NOT VALID then validated by an
//! awaited job, every ALTER it refuses made by the table engine (consecutive
//! ones on a table in one rebuild), DML backfills in key-range batches, and
//! what it cannot do at all refused here, before anything runs. On
//! PostgreSQL the same, with `CONCURRENTLY` and plain VALIDATE. Pure.

use sha2::{Digest, Sha256};

use super::classify::{AlterPart, DmlKind, What, classify};
use super::files::VersionedFile;
use super::sql::Statement;
use crate::api::changes::Change;
use crate::db::Dialect;
use crate::engine::plan::quote::ident;
use crate::engine::plan::shape::TableName;

/// One step: what is sent, where it comes from, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// `file:line` of the statement it comes from.
    pub at: String,
    pub kind: StepKind,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    /// One DDL statement in its own transaction, retried on OCC conflicts;
    /// after a lost reply the catalog is read before it is sent again.
    Ddl { sql: String, creates: Option<TableName> },
    /// An index: `ASYNC` and its job awaited on DSQL, `CONCURRENTLY` on PostgreSQL.
    Index { sql: String, index: TableName },
    /// Validates a constraint added NOT VALID (an awaited job on DSQL).
    Validate { sql: String, table: TableName, constraint: String },
    /// Changes the table engine makes, in place where it can, else in one rebuild.
    Rebuild { table: TableName, changes: Vec<Change> },
    /// DML in key-range batches, each committed with its progress; `table`
    /// is the one whose key ranges make the batches (an INSERT's source).
    Backfill { sql: String, table: TableName },
    /// A statement sent as it is, in its own transaction.
    Dml { sql: String },
    /// DML that the file put in one transaction, kept together.
    Transaction { sql: Vec<String> },
}

impl StepKind {
    /// A short name for plans, status and logs.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Ddl { .. } => "ddl",
            StepKind::Index { .. } => "index",
            StepKind::Validate { .. } => "validate",
            StepKind::Rebuild { .. } => "rebuild",
            StepKind::Backfill { .. } => "backfill",
            StepKind::Dml { .. } => "dml",
            StepKind::Transaction { .. } => "transaction",
        }
    }
}

/// One migration's steps.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedMigration {
    pub version: String,
    pub description: String,
    pub file: String,
    pub checksum: String,
    pub repeatable: bool,
    pub steps: Vec<Step>,
    /// Drops a table or a column, truncates, or deletes without a WHERE.
    pub destructive: bool,
}

impl PlannedMigration {
    pub fn rebuilds(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.kind, StepKind::Rebuild { .. }))
    }
}

/// A statement the target cannot run: named by file, line and rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{at}: {rule} ({page})")]
pub struct Refused {
    pub at: String,
    pub rule: String,
    pub page: String,
}

const DSQL_INDEXES: &str =
    "https://docs.aws.amazon.com/aurora-dsql/latest/userguide/working-with-create-index-async.html";
const DSQL_TRANSACTIONS: &str = "https://docs.aws.amazon.com/aurora-dsql/latest/userguide/working-with-postgresql-compatibility-unsupported-features.html";

/// The steps of one file's statements on `dialect`.
pub fn plan_file(
    file: &VersionedFile,
    statements: &[Statement],
    dialect: Dialect,
) -> Result<PlannedMigration, Refused> {
    let mut planner = Planner { dialect, steps: Vec::new(), destructive: false, open_tx: None };
    for statement in statements {
        planner.statement(statement)?;
    }
    if let Some(tx) = planner.open_tx.take() {
        // A BEGIN without COMMIT: psql would leave it open; here it commits.
        planner.close(tx, "the file ends inside a transaction: it commits here");
    }
    Ok(PlannedMigration {
        version: file.version.text.clone(),
        description: file.description.clone(),
        file: file.file.clone(),
        checksum: file.checksum.clone(),
        repeatable: file.repeatable,
        steps: planner.steps,
        destructive: planner.destructive,
    })
}

/// A BEGIN of the file and what came after it, until its COMMIT.
struct OpenTransaction {
    at: String,
    statements: Vec<(Statement, What)>,
}

struct Planner {
    dialect: Dialect,
    steps: Vec<Step>,
    destructive: bool,
    open_tx: Option<OpenTransaction>,
}

impl Planner {
    fn refuse(&self, statement: &Statement, rule: impl Into<String>, page: &str) -> Refused {
        Refused { at: statement.at(), rule: rule.into(), page: page.to_string() }
    }

    fn statement(&mut self, statement: &Statement) -> Result<(), Refused> {
        let what =
            classify(&statement.tree).map_err(|why| self.refuse(statement, why, "the table engine's changes"))?;
        self.check(statement, &what)?;
        match (&what, self.open_tx.is_some()) {
            (What::Begin, false) => {
                self.open_tx = Some(OpenTransaction { at: statement.at(), statements: Vec::new() });
                Ok(())
            }
            (What::Commit, true) => {
                let tx = self.open_tx.take().expect("open");
                self.close(tx, "the file's BEGIN/COMMIT around DML: kept, one transaction");
                Ok(())
            }
            (What::Rollback, true) => {
                // What a file rolls back never happened: nothing is sent.
                self.open_tx = None;
                Ok(())
            }
            (What::Begin | What::Commit | What::Rollback, _) => Ok(()),
            (_, true) => {
                self.open_tx.as_mut().expect("open").statements.push((statement.clone(), what));
                Ok(())
            }
            (_, false) => self.one(statement, what),
        }
    }

    /// What the target refuses outright.
    fn check(&self, statement: &Statement, what: &What) -> Result<(), Refused> {
        if self.dialect != Dialect::Dsql {
            return Ok(());
        }
        match what {
            What::Ddl(d) => match &d.dsql_refuses {
                Some(r) => Err(self.refuse(statement, r.rule, r.page)),
                None => Ok(()),
            },
            What::CreateIndex(i) if !i.method.is_empty() && i.method != "btree" => {
                Err(self.refuse(statement, format!("DSQL builds B-tree indexes only, not {}", i.method), DSQL_INDEXES))
            }
            What::OtherTransaction(kind) => Err(self.refuse(
                statement,
                format!("{kind}: DSQL has no savepoints or two-phase commit"),
                DSQL_TRANSACTIONS,
            )),
            _ => Ok(()),
        }
    }

    /// A transaction of the file: kept when it holds only DML; otherwise
    /// each statement runs by the rules, one DDL a transaction.
    fn close(&mut self, tx: OpenTransaction, why: &str) {
        let dml_only = tx.statements.iter().all(|(_, w)| matches!(w, What::Dml(_) | What::Query));
        if dml_only && !tx.statements.is_empty() {
            self.destructive |= tx.statements.iter().any(|(_, w)| deletes_all(w));
            let sql = tx.statements.iter().map(|(s, _)| s.text.clone()).collect();
            self.steps.push(Step { at: tx.at, kind: StepKind::Transaction { sql }, why: why.to_string() });
            return;
        }
        for (statement, what) in tx.statements {
            // Checked when it was read; a refusal cannot come here.
            let _ = self.one(&statement, what);
            if let Some(step) = self.steps.last_mut() {
                step.why =
                    format!("{} (the file's BEGIN at {} is replaced by one transaction per DDL)", step.why, tx.at);
            }
        }
    }

    fn one(&mut self, statement: &Statement, what: What) -> Result<(), Refused> {
        let at = statement.at();
        let dsql = self.dialect == Dialect::Dsql;
        match what {
            What::CreateIndex(i) => {
                let (sql, why) = if dsql {
                    let sql = i.plain_sql.replacen(" INDEX ", " INDEX ASYNC ", 1);
                    (sql, "DSQL builds indexes only ASYNC: the job is awaited (sys.wait_for_job, then sys.jobs)")
                } else {
                    let sql = i.plain_sql.replacen(" INDEX ", " INDEX CONCURRENTLY ", 1);
                    (sql, "built CONCURRENTLY, so writes go on; an INVALID leftover is dropped and built once more")
                };
                self.push(at, StepKind::Index { sql, index: i.index }, why);
            }
            What::Alter { table, parts } => self.alter(&at, table, parts),
            What::Dml(d) => {
                self.destructive |= d.kind == DmlKind::Delete && !d.has_where;
                let batched = matches!(d.kind, DmlKind::Update | DmlKind::Delete);
                if batched {
                    let why = "a backfill: key-range batches under 3,000 rows, each committed with its progress row";
                    self.push(at, StepKind::Backfill { sql: statement.text.clone(), table: d.table }, why);
                } else if let Some(source) = d.source.filter(|s| s.table != d.table) {
                    let why = format!(
                        "an INSERT ... SELECT: batches by key ranges of {} under 3,000 rows, each committed with its progress row",
                        source.table
                    );
                    self.push(at, StepKind::Backfill { sql: statement.text.clone(), table: source.table }, &why);
                } else {
                    self.push(at, StepKind::Dml { sql: statement.text.clone() }, "DML, its own transaction");
                }
            }
            What::Query => self.push(at, StepKind::Dml { sql: statement.text.clone() }, "a query, run as it is"),
            What::Ddl(d) => {
                self.destructive |= d.destructive;
                let why = format!("{}: one DDL statement, its own transaction", d.what);
                self.push(at, StepKind::Ddl { sql: statement.text.clone(), creates: d.creates }, &why);
            }
            What::Begin | What::Commit | What::Rollback | What::OtherTransaction(_) => {}
        }
        Ok(())
    }

    fn alter(&mut self, at: &str, table: TableName, parts: Vec<AlterPart>) {
        let dsql = self.dialect == Dialect::Dsql;
        // Among the engine's changes, a plain part of the same statement is
        // one more change, so that one rebuild makes them all in order.
        let with_changes = parts.iter().any(|p| matches!(p, AlterPart::Change(_)));
        for part in parts {
            match part {
                AlterPart::Change(change) => self.change(at, &table, change),
                AlterPart::Plain { as_change: Some(change), destructive, .. } if with_changes => {
                    self.destructive |= destructive;
                    self.change(at, &table, change);
                }
                AlterPart::Plain { sql, destructive, .. } => {
                    self.destructive |= destructive;
                    let why = "an ALTER the target makes at once: its own transaction";
                    self.push(at.to_string(), StepKind::Ddl { sql, creates: None }, why);
                }
                AlterPart::Constraint { name, add_not_valid, validate } => {
                    let why = "added NOT VALID: no scan under a lock, and on DSQL the only form it takes";
                    self.push(at.to_string(), StepKind::Ddl { sql: add_not_valid, creates: None }, why);
                    if validate {
                        self.validate(at, &table, &name, dsql);
                    }
                }
                AlterPart::Validate { name } => self.validate(at, &table, &name, dsql),
            }
        }
    }

    fn validate(&mut self, at: &str, table: &TableName, name: &str, dsql: bool) {
        let (keyword, why) = if dsql {
            ("ALTER TABLE ASYNC", "validated by a DSQL job, awaited")
        } else {
            ("ALTER TABLE", "validated without blocking writes (SHARE UPDATE EXCLUSIVE)")
        };
        let sql = format!("{keyword} {table} VALIDATE CONSTRAINT {}", ident(name));
        let kind = StepKind::Validate { sql, table: table.clone(), constraint: name.to_string() };
        self.push(at.to_string(), kind, why);
    }

    /// A change of the table engine, folded into the rebuild just before
    /// when that one is of the same table.
    fn change(&mut self, at: &str, table: &TableName, change: Change) {
        if let Some(Step { kind: StepKind::Rebuild { table: t, changes }, why, .. }) = self.steps.last_mut()
            && t == table
        {
            changes.push(change);
            *why = rebuild_why(changes.len());
            return;
        }
        let kind = StepKind::Rebuild { table: table.clone(), changes: vec![change] };
        self.push(at.to_string(), kind, &rebuild_why(1));
    }

    fn push(&mut self, at: String, kind: StepKind, why: &str) {
        self.steps.push(Step { at, kind, why: why.to_string() });
    }
}

fn rebuild_why(n: usize) -> String {
    let changes = if n == 1 { "a change".to_string() } else { format!("{n} changes") };
    format!(
        "{changes} the target refuses or makes only under a long lock: the table engine makes each in place where \
         it can, the rest in one rebuild (copy, verification, swap)"
    )
}

fn deletes_all(what: &What) -> bool {
    matches!(what, What::Dml(d) if d.kind == DmlKind::Delete && !d.has_where)
}

/// The plan as text, the way `plan` prints it: each migration, each step
/// with its kind, place and reason, then the SQL sent.
pub fn render(plan: &[PlannedMigration]) -> String {
    let mut out = String::new();
    for m in plan {
        let flags = [(m.destructive, "destructive"), (m.rebuilds(), "rebuilds a table"), (m.repeatable, "repeatable")];
        let flags: Vec<&str> = flags.iter().filter(|(on, _)| *on).map(|(_, f)| *f).collect();
        let flags = if flags.is_empty() { String::new() } else { format!(" [{}]", flags.join(", ")) };
        out.push_str(&format!("-- version {} ({}): {}{flags}\n", m.version, m.file, m.description));
        for (n, step) in m.steps.iter().enumerate() {
            out.push_str(&format!(
                "-- step {}/{} {} at {}: {}\n",
                n + 1,
                m.steps.len(),
                step.kind.name(),
                step.at,
                step.why
            ));
            match &step.kind {
                StepKind::Ddl { sql, .. }
                | StepKind::Index { sql, .. }
                | StepKind::Validate { sql, .. }
                | StepKind::Backfill { sql, .. }
                | StepKind::Dml { sql } => out.push_str(&format!("{sql};\n")),
                StepKind::Transaction { sql } => {
                    out.push_str("BEGIN;\n");
                    for s in sql {
                        out.push_str(&format!("{s};\n"));
                    }
                    out.push_str("COMMIT;\n");
                }
                StepKind::Rebuild { table, changes } => {
                    let yaml = serde_json::to_string(changes).unwrap_or_default();
                    out.push_str(&format!("--   TableMigration of {table}: changes {yaml}\n"));
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The hash that `policy.approvedPlanHash` names: of the rendered plan.
pub fn plan_hash(plan: &[PlannedMigration]) -> String {
    let digest = Sha256::digest(render(plan).as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

//! `IdentityMigration.status`: where a migration stands. The same structure is
//! the `run` command's state file, so both front ends resume from it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IdentityMigrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Which way the identity is added, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityStatus>,
    /// A TableMigration's changes: the way of each, and the in-place
    /// statements made so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangesStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverStatus>,
    /// Transient errors retried so far (OCC conflicts, lost connections).
    #[serde(default)]
    pub retries: i64,
    /// Failures in a row without progress; the operator backs off longer after each.
    #[serde(default)]
    pub failures: i64,
    /// The last error, with the phase it stopped; cleared when the phase moves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// The database server (`host:port`) the migration runs against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Set while the migration waits for its turn on its endpoint
    /// (`maxConcurrentPerTarget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<QueuedStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    #[default]
    Pending,
    Validating,
    CreatingTarget,
    Copying,
    Verifying,
    AwaitingCutover,
    Swapping,
    Completed,
    Failed,
    RollingBack,
    RolledBack,
}

impl Phase {
    /// Every phase, in the order a migration meets them.
    pub const ALL: [Phase; 11] = [
        Phase::Pending,
        Phase::Validating,
        Phase::CreatingTarget,
        Phase::Copying,
        Phase::Verifying,
        Phase::AwaitingCutover,
        Phase::Swapping,
        Phase::Completed,
        Phase::Failed,
        Phase::RollingBack,
        Phase::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Validating => "Validating",
            Phase::CreatingTarget => "CreatingTarget",
            Phase::Copying => "Copying",
            Phase::Verifying => "Verifying",
            Phase::AwaitingCutover => "AwaitingCutover",
            Phase::Swapping => "Swapping",
            Phase::Completed => "Completed",
            Phase::Failed => "Failed",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
        }
    }

    /// Phases after which nothing more happens without a new instruction.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::RolledBack)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decided once, in Validating, and kept for the life of the migration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    pub shadow_table: String,
    pub old_table: String,
    pub batch_rows: i64,
    /// Lowest and highest id when the copy was planned; rows outside are caught up later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_max: Option<i64>,
    pub rows_estimated: i64,
    /// Secondary indexes recreated on the shadow table.
    #[serde(default)]
    pub secondary_indexes: i64,
    /// `postgres` or `dsql`: the SQL flavour the engine speaks.
    #[serde(default)]
    pub dialect: String,
    /// What the new table does not carry, and why: features the server
    /// lacks, index orderings it cannot keep, facts its catalog would not
    /// give, statements it refused. Each also said in a Warning event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_carried: Vec<String>,
    /// The OID of the table a rebuild started from: after the swap hands the
    /// new table the original names, it is what tells the two tables apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_oid: Option<i64>,
    /// The original primary key's name, and every other index's and unique
    /// constraint's (with those the changes add): the names the swap hands
    /// to the new table, recorded before anything changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub original_names: Vec<String>,
    /// How long the cut-over window is expected to keep the table renamed
    /// away, when that depends on the table's size (DSQL without a change
    /// tracking column re-reads every row); absent when it follows the writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_estimate_millis: Option<i64>,
}

/// Enough to resume with at most one batch per worker redone.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    #[serde(default)]
    pub ranges: Vec<RangeCheckpoint>,
    /// Highest id known to be in the shadow table from the catch-up of rows
    /// inserted above the planned range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up_through: Option<i64>,
    /// Whether the secondary indexes have been built on the shadow table.
    #[serde(default)]
    pub indexes_built: bool,
    /// The new table's primary key while the copy runs without it
    /// (PostgreSQL): put back before anything reads the table by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_aside: Option<KeyAside>,
}

/// A primary key taken off the new table for the copy, to be put back as it was.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KeyAside {
    pub name: String,
    /// As `pg_get_constraintdef` printed it: `PRIMARY KEY (id)`.
    pub definition: String,
    /// What the key carried besides its definition, as the server printed
    /// the statements that make it again (comments on the key and its
    /// index, CLUSTER ON, REPLICA IDENTITY USING INDEX).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<String>,
}

/// An inclusive id range `[from, to]`, copied up to and including `copiedThrough`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RangeCheckpoint {
    pub from: i64,
    pub to: i64,
    pub copied_through: i64,
}

impl RangeCheckpoint {
    pub fn new(from: i64, to: i64) -> Self {
        Self { from, to, copied_through: from.saturating_sub(1) }
    }

    pub fn is_done(&self) -> bool {
        self.copied_through >= self.to
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub rows_copied: i64,
    pub rows_total: i64,
    pub percent: i64,
    pub rows_per_second: i64,
    /// Human-readable time left, e.g. `21s` or `3m12s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    /// Rows the copy found already present (redone work after a crash).
    #[serde(default)]
    pub rows_recopied: i64,
    /// Copy transactions committed.
    #[serde(default)]
    pub batches: i64,
    /// Rows of the largest copy transaction (each stays within DSQL's limits).
    #[serde(default)]
    pub largest_batch: i64,
    /// The adaptive pace (`spec.copy.pace`), while the copy runs with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<PaceStatus>,
}

/// A migration waiting for one of its endpoint's slots, in creation order.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QueuedStatus {
    /// 1 for the next to start.
    pub position: i64,
    /// Migrations that run against the endpoint at once (`maxConcurrentPerTarget`).
    pub limit: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PaceStatus {
    /// Rows per second allowed now; absent while unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<i64>,
    /// `Clear`, or the threshold broken: `CommitLatency`, `Conflicts`, `ReplicaLag`.
    pub reason: String,
    /// The threshold in words, such as "commit latency p95 240 ms > 100 ms".
    pub message: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub source_rows: i64,
    pub target_rows: i64,
    pub mismatched_ranges: i64,
    /// Verification passes run (each compares every range).
    #[serde(default)]
    pub passes: i64,
    /// Rows re-synced into the shadow table because they changed during the copy.
    #[serde(default)]
    pub rows_resynced: i64,
    /// Highest id covered by the last clean pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_through: Option<i64>,
    /// Ranges still different after the last pass, as `from-to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// How the copy was proven: `Checksums` (every range of both tables
    /// compared; `sourceRows` and `targetRows` counted) or `ChangeCapture`
    /// (the capture on the table from before the copy's first row: every row
    /// written since re-synced and compared; the row counts are the new
    /// table's, as the copy and the re-sync left it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<VerifiedBy>,
}

/// `status.verification.by`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifiedBy {
    Checksums,
    ChangeCapture,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IdentityStatus {
    pub restart_with: i64,
    pub next_value: i64,
    /// In place: the id column's default before it became an identity (such
    /// as `nextval('t_id_seq')`); the sequence is kept, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_default: Option<String>,
}

/// The way taken: `InPlace` or `Copy`, and why.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StrategyStatus {
    pub taken: TakenStrategy,
    pub reason: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TakenStrategy {
    InPlace,
    #[default]
    Copy,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CutoverStatus {
    /// When the source was renamed away (the window opened); kept so a resumed
    /// run measures the whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_opened_at: Option<Time>,
    /// How long the table name was absent (writers saw errors), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_millis: Option<i64>,
    /// Rows copied inside the window.
    #[serde(default)]
    pub rows_in_window: i64,
    /// Replica counts saved before quiescing workloads, restored after the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved_replicas: Vec<SavedReplicas>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapped_at: Option<Time>,
    /// While the migration waits for `spec.cutover.window`: when it opens next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<Time>,
    /// A failed cut-over could not rename the original table back: the table
    /// name is absent until it can. Retried at once and until it succeeds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub table_missing: bool,
    /// Sessions that would block the cut-over's lock on the table (a long
    /// transaction, one idle in a transaction): the engine waits for them to
    /// end instead of queueing every reader and writer behind its lock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SavedReplicas {
    pub kind: String,
    pub name: String,
    pub replicas: i32,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    pub phase: Phase,
    pub message: String,
    /// SQLSTATE when the database reported the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// Bad input that a person must fix, as opposed to a failure of the run.
    #[serde(default)]
    pub invalid_input: bool,
    /// Rows break a table change's new shape: the data must be fixed first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invalid_data: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// The current time, as status timestamps and conditions carry it.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A TableMigration's changes as planned, and how far the in-place ones are.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChangesStatus {
    pub planned: Vec<PlannedChange>,
    /// The in-place statements, in order, each its own transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<String>,
    /// How many of `statements` have been made.
    #[serde(default)]
    pub applied: i64,
    /// The longest any in-place statement held the table's lock, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_lock_millis: Option<i64>,
    /// What `spec.rollback` makes to undo the in-place statements, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<String>,
    /// How many of `undo` have been made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub undone: i64,
    /// The changes that have no inverse in place, each `field: why`: a
    /// rollback is refused with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo_refused: Vec<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One change: `spec.changes[index]`, made in place or by the rebuild, and why.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlannedChange {
    pub index: i64,
    pub kind: String,
    /// `InPlace` or `Rebuild`.
    pub way: String,
    pub why: String,
}

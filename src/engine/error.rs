//! How an engine run fails: one enum whose variants say which kind of step
//! failed and on which object. The front ends read the category from the
//! variant (bad input or not) and the metrics label from its name.

use super::plan::changes::scan::InvalidData;
use super::plan::shape::TableName;
use super::plan::validate::InvalidInput;
use super::steps::claim::ClaimError;
use super::steps::quiesce::QuiesceError;
use crate::db::DbError;

/// A status store could not save (a state file, the custom resource).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum EngineError {
    /// The spec or the table is not acceptable: nothing was changed.
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    /// Rows break the new shape of a table change: nothing was changed.
    #[error("{0}")]
    InvalidData(#[from] InvalidData),
    #[error("{0}")]
    Db(#[from] DbError),
    /// A check of the engine's own promises failed.
    #[error("{0}")]
    Check(#[from] CheckFailed),
    #[error("cannot save status: {0}")]
    Store(#[source] StoreError),
    #[error("quiescing spec.cutover.quiesce: {0}")]
    Quiesce(#[source] QuiesceError),
    #[error("restoring quiesced workloads: {0}")]
    Restore(#[source] QuiesceError),
    /// Another engine works on the table, or this one lost its claim.
    #[error("{0}")]
    Claim(#[from] ClaimError),
    /// A DSQL index build failed twice (its job's own words).
    #[error("DSQL could not build index {index}, twice: {message}")]
    IndexBuild { index: String, message: String },
}

impl EngineError {
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            EngineError::Db(e) => e.sqlstate.clone(),
            _ => None,
        }
    }

    /// Taking the claim failed on a connection that broke (or a server
    /// briefly away): worth taking again, as a claim lost with its connection.
    pub fn claim_unreachable(&self) -> bool {
        matches!(self, EngineError::Claim(ClaimError::Db { source, .. }) if source.is_transient())
    }

    /// This engine lost its claim on the table: it must change nothing more,
    /// not even to put a table back (the engine that holds it now will).
    pub fn lost_claim(&self) -> bool {
        matches!(self, EngineError::Claim(ClaimError::Lost { .. }))
    }

    /// The table's lock could not be had because of other sessions (found
    /// before asking, or the lock timed out): wait for them, change nothing.
    pub fn blocked(&self) -> bool {
        matches!(self, EngineError::Check(CheckFailed::Blocked(_))) || self.sqlstate().as_deref() == Some("55P03")
    }

    /// Bad input: a person must change the spec, the table, its data or a Secret.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, EngineError::Invalid(_) | EngineError::InvalidData(_))
    }

    /// The condition reason of a failure a person must fix.
    pub fn invalid_reason(&self) -> Option<&'static str> {
        match self {
            EngineError::Invalid(_) => Some("InvalidSpec"),
            EngineError::InvalidData(_) => Some("InvalidData"),
            _ => None,
        }
    }

    /// The variant's name, for metrics labels.
    pub fn label(&self) -> &'static str {
        self.into()
    }
}

/// A promise of the engine that the database did not keep: verification,
/// the identity read-back, the catalog state of the cut-over.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
pub enum CheckFailed {
    #[error("the status has no plan; the migration must start over")]
    NoPlan,
    #[error("neither {source_table} nor {old} holds the original table")]
    OriginalMissing { source_table: TableName, old: TableName },
    #[error(
        "{0} exists but is not the shadow table this migration creates (columns or identity differ); drop it or rename it"
    )]
    ForeignShadow(TableName),
    #[error("the copy stopped with ranges left")]
    CopyUnfinished,
    #[error("cannot continue the cut-over of {table}: {state}")]
    CutoverState { table: TableName, state: String },
    #[error("final sync left id ranges different: {}", .0.join(", "))]
    WindowSyncDiffers(Vec<String>),
    #[error("rollback sync left id ranges different: {}", .0.join(", "))]
    RollbackSyncDiffers(Vec<String>),
    #[error("ids have reached the largest bigint; no identity values are left")]
    IdsExhausted,
    #[error("{table} has no identity sequence on {column:?}")]
    NoIdentitySequence { table: TableName, column: String },
    #[error("cannot read the state of sequence {0}")]
    SequenceUnreadable(String),
    #[error("nextval on {0} returned nothing")]
    NextvalEmpty(String),
    #[error("the identity would generate {next_value}, not above the highest id or startAfter ({floor})")]
    IdentityTooLow { next_value: i64, floor: i64 },
    #[error("workloads were quiesced, but this front end cannot scale them back; use the operator")]
    CannotRestoreWorkloads,
    #[error("sessions would block the lock on the table: {}", .0.join("; "))]
    Blocked(Vec<String>),
}

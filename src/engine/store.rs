//! Where status lives. The engine reports through [`StatusSink`]; the `run`
//! command keeps a state file ([`FileStore`]), the operator the custom
//! resource's status subresource.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::plan::phase::effective_phase;
use crate::api::{IdentityMigrationStatus, Phase};

/// Kubernetes' two kinds of event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// A Kubernetes-style event: phase changes, failures, retry storms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineEvent {
    pub severity: Severity,
    /// CamelCase: the phase entered (`Copying`), `Failed`, `InvalidSpec`, `RetryStorm`.
    pub reason: &'static str,
    pub message: String,
}

/// What a front end does with the engine's status and events.
pub trait StatusSink: Send {
    /// Persists the status. The engine calls it at most about once a second,
    /// and at every phase change; a failure of a phase-change save stops the engine.
    fn save(&mut self, status: &IdentityMigrationStatus) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Publishes an event; failures are the sink's to log.
    fn event(&mut self, event: EngineEvent) -> impl Future<Output = ()> + Send;

    /// Sees every progress change, unpersisted (progress bars, metrics).
    fn observe(&mut self, _status: &IdentityMigrationStatus) {}
}

/// Which migration a state file belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationKey {
    /// The database, without credentials: `postgres://user@host:port/db` or the DSQL endpoint.
    pub database: String,
    pub schema: String,
    pub table: String,
    pub id_column: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateFile {
    version: u32,
    migration: MigrationKey,
    /// Times this file was written by the runs that resumed from it.
    #[serde(default)]
    writes: u64,
    status: IdentityMigrationStatus,
}

const STATE_VERSION: u32 = 1;

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}; move it away to start over")]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} has version {found}, expected {STATE_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "state file {path} belongs to the migration of {}.{} (id {}) in {}, not this one; pass --state-file to use another",
        .owner.schema, .owner.table, .owner.id_column, .owner.database
    )]
    OtherMigration { path: PathBuf, owner: MigrationKey },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The `run` command's status: a JSON file replaced atomically (write, fsync,
/// rename), so a crash leaves the old or the new state, never half of one.
pub struct FileStore {
    path: PathBuf,
    key: MigrationKey,
    pub writes: u64,
}

/// The default state file: beside the manifest, `<manifest>.state.json`.
pub fn default_state_path(manifest: &Path) -> PathBuf {
    let name = manifest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "migration".into());
    manifest.with_file_name(format!("{name}.state.json"))
}

impl FileStore {
    pub fn new(path: PathBuf, key: MigrationKey) -> Self {
        Self { path, key, writes: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved status, if any. A state file of another migration is refused
    /// unless it never got past validation (nothing was created for it).
    pub fn load(&mut self) -> Result<Option<IdentityMigrationStatus>, StateFileError> {
        let path = self.path.clone();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateFileError::Read { path, source }),
        };
        let state: StateFile =
            serde_json::from_str(&text).map_err(|source| StateFileError::Invalid { path: path.clone(), source })?;
        if state.version != STATE_VERSION {
            return Err(StateFileError::Version { path, found: state.version });
        }
        if state.migration != self.key {
            if created_nothing(&state.status) {
                return Ok(None);
            }
            return Err(StateFileError::OtherMigration { path, owner: state.migration });
        }
        self.writes = state.writes;
        Ok(Some(state.status))
    }

    pub fn write(&mut self, status: &IdentityMigrationStatus) -> Result<(), StateFileError> {
        self.writes += 1;
        let state = StateFile {
            version: STATE_VERSION,
            migration: self.key.clone(),
            writes: self.writes,
            status: status.clone(),
        };
        let json = serde_json::to_vec_pretty(&state).expect("a status serializes");
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        result.map_err(|source| StateFileError::Write { path: self.path.clone(), source })?;
        Ok(())
    }
}

/// Nothing exists in the database for a status that failed in or before validation.
fn created_nothing(status: &IdentityMigrationStatus) -> bool {
    matches!(effective_phase(status), Phase::Pending | Phase::Validating)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LastError;

    fn key(table: &str) -> MigrationKey {
        MigrationKey {
            database: "postgres://u@h:5432/db".into(),
            schema: "public".into(),
            table: table.into(),
            id_column: "id".into(),
        }
    }

    #[test]
    fn state_round_trips_and_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_state_path(&dir.path().join("post-tag.yaml"));
        assert_eq!(path.file_name().unwrap(), "post-tag.yaml.state.json");
        let mut store = FileStore::new(path.clone(), key("post_tag"));
        assert_eq!(store.load().unwrap(), None);
        let status = IdentityMigrationStatus { phase: Phase::Copying, retries: 3, ..Default::default() };
        store.write(&status).unwrap();
        store.write(&status).unwrap();
        assert_eq!(store.load().unwrap(), Some(status));
        assert_eq!(store.writes, 2);
        let mut resumed = FileStore::new(path.clone(), key("post_tag"));
        resumed.load().unwrap();
        assert_eq!(resumed.writes, 2, "a resumed run keeps counting");
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn another_migrations_state_is_refused_once_it_created_something() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.state.json");
        let mut mine = FileStore::new(path.clone(), key("post_tag"));
        mine.write(&IdentityMigrationStatus { phase: Phase::Copying, ..Default::default() }).unwrap();
        let err = FileStore::new(path.clone(), key("other")).load().unwrap_err().to_string();
        assert!(err.contains("belongs to the migration of public.post_tag"), "{err}");
        let elsewhere = MigrationKey { database: "postgres://u@prod:5432/db".into(), ..key("post_tag") };
        let err = FileStore::new(path.clone(), elsewhere).load().unwrap_err().to_string();
        assert!(err.contains("in postgres://u@h:5432/db"), "another database is another migration: {err}");

        let failed_early = IdentityMigrationStatus {
            phase: Phase::Failed,
            last_error: Some(LastError { phase: Phase::Validating, ..Default::default() }),
            ..Default::default()
        };
        mine.write(&failed_early).unwrap();
        assert_eq!(FileStore::new(path.clone(), key("other")).load().unwrap(), None);

        std::fs::write(&path, "{not json").unwrap();
        assert!(mine.load().unwrap_err().to_string().contains("not valid"));
    }
}

//! The two kinds the operator reconciles, IdentityMigration and
//! TableMigration, seen the same way: one reconciler, one status, one engine.
//! They differ in how a spec becomes the engine's settings (a TableMigration
//! reads its key from the table) and in what can be checked without the database.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    CutoverSpec, IdentityMigration, IdentityMigrationSpec, IdentityMigrationStatus, TableMigration, TableMigrationSpec,
    Target,
};
use crate::db::Connector;
use crate::engine::EngineError;
use crate::engine::plan::validate::{InvalidInput, Settings, TargetSource, validate_spec};
use crate::engine::steps::table_key::{check_table_spec, table_settings};

/// What the controller reads of either kind's spec.
pub trait MigrationSpec {
    fn target(&self) -> &Target;
    fn cutover(&self) -> &CutoverSpec;
    fn suspend(&self) -> bool;
    fn rollback(&self) -> bool;
    /// The checks that need no database; a failure waits for a new spec.
    fn check(&self) -> Result<(), InvalidInput>;
}

impl MigrationSpec for IdentityMigrationSpec {
    fn target(&self) -> &Target {
        &self.target
    }
    fn cutover(&self) -> &CutoverSpec {
        &self.cutover
    }
    fn suspend(&self) -> bool {
        self.suspend
    }
    fn rollback(&self) -> bool {
        self.rollback
    }
    fn check(&self) -> Result<(), InvalidInput> {
        validate_spec(self, TargetSource::Spec).map(drop)
    }
}

impl MigrationSpec for TableMigrationSpec {
    fn target(&self) -> &Target {
        &self.target
    }
    fn cutover(&self) -> &CutoverSpec {
        &self.cutover
    }
    fn suspend(&self) -> bool {
        self.suspend
    }
    fn rollback(&self) -> bool {
        self.rollback
    }
    fn check(&self) -> Result<(), InvalidInput> {
        check_table_spec(self)
    }
}

/// A migration resource of either kind.
pub trait MigrationResource:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Spec: MigrationSpec + Send + Sync;
    /// Tells apart two migrations of one name in one namespace.
    const KIND: &'static str;
    fn spec(&self) -> &Self::Spec;
    fn status(&self) -> Option<&IdentityMigrationStatus>;
    /// The engine's settings (a TableMigration's read its key from the table).
    fn settings(&self, connector: Arc<Connector>) -> impl Future<Output = Result<Settings, EngineError>> + Send;
}

impl MigrationResource for IdentityMigration {
    type Spec = IdentityMigrationSpec;
    const KIND: &'static str = "IdentityMigration";
    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
    fn status(&self) -> Option<&IdentityMigrationStatus> {
        self.status.as_ref()
    }
    async fn settings(&self, _connector: Arc<Connector>) -> Result<Settings, EngineError> {
        Ok(validate_spec(&self.spec, TargetSource::Spec)?)
    }
}

impl MigrationResource for TableMigration {
    type Spec = TableMigrationSpec;
    const KIND: &'static str = "TableMigration";
    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
    fn status(&self) -> Option<&IdentityMigrationStatus> {
        self.status.as_ref()
    }
    async fn settings(&self, connector: Arc<Connector>) -> Result<Settings, EngineError> {
        table_settings(&self.spec, connector, TargetSource::Spec).await
    }
}

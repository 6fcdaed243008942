//! The database of a migration, resolved in the cluster: a PostgreSQL URL
//! from a Secret, or a DSQL endpoint with an optional CA bundle Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{IdentityMigrationSpec, SecretKeyRef};
use crate::db::{Connector, DatabaseTarget, DbError, SpecTargetError, resolve_target};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{field}: Secret {namespace}/{name} does not exist")]
    MissingSecret { field: &'static str, namespace: String, name: String },
    #[error("{field}: Secret {namespace}/{name} has no key {key:?}")]
    MissingKey { field: &'static str, namespace: String, name: String, key: String },
    #[error("{field}: the URL is not UTF-8")]
    NotUtf8 { field: &'static str },
    #[error(transparent)]
    Spec(#[from] SpecTargetError),
    #[error(transparent)]
    Connector(DbError),
    /// The API server could not be asked; try again.
    #[error("reading Secret {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl TargetError {
    /// The spec or a Secret is wrong: a person must fix it (the API server
    /// not answering is not that).
    pub fn needs_person(&self) -> bool {
        !matches!(self, TargetError::Kube { .. })
    }
}

async fn secret_value(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
    field: &'static str,
) -> Result<Vec<u8>, TargetError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (namespace, name) = (namespace.to_string(), r.name.clone());
    let secret = match secrets.get_opt(&r.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(TargetError::MissingSecret { field, namespace, name }),
        Err(source) => return Err(TargetError::Kube { namespace, name, source }),
    };
    let data = secret.data.unwrap_or_default();
    match data.get(&r.key) {
        Some(value) if !value.0.is_empty() => Ok(value.0.clone()),
        _ => Err(TargetError::MissingKey { field, namespace, name, key: r.key.clone() }),
    }
}

/// The connector for a migration in `namespace`. PostgreSQL connections carry
/// `application_name` (unless the URL sets one) so that the database shows
/// which instance holds them.
pub async fn connector_for(
    client: &Client,
    namespace: &str,
    spec: &IdentityMigrationSpec,
    application_name: &str,
) -> Result<Connector, TargetError> {
    let (target, ca) = match (&spec.target.postgres, &spec.target.dsql) {
        (Some(pg), None) => {
            let field = "spec.target.postgres.urlSecretRef";
            let url = secret_value(client, namespace, &pg.url_secret_ref, field).await?;
            let url = String::from_utf8(url).map_err(|_| TargetError::NotUtf8 { field })?;
            let mut target = resolve_target(&spec.target, Some((field, &url)))?;
            if let DatabaseTarget::Postgres(pg) = &mut target
                && !url.contains("application_name")
            {
                pg.config.application_name(application_name);
            }
            (target, None)
        }
        (None, Some(d)) => {
            let target = resolve_target(&spec.target, None)?;
            let ca = match &d.ca_bundle_secret_ref {
                Some(r) => Some(secret_value(client, namespace, r, "spec.target.dsql.caBundleSecretRef").await?),
                None => None,
            };
            (target, ca)
        }
        _ => {
            let source = crate::db::TargetError::NotExactlyOne;
            return Err(SpecTargetError { field: "spec.target", source }.into());
        }
    };
    Connector::new(target, ca).map_err(TargetError::Connector)
}

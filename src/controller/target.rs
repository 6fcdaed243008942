//! The database of a migration, resolved in the cluster: a PostgreSQL URL
//! from a Secret, or a DSQL endpoint with an optional CA bundle Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{IdentityMigrationSpec, SecretKeyRef};
use crate::cli::TOKEN_LIFETIME;
use crate::db::target::{dsql_target, parse_postgres_url};
use crate::db::{Connector, DatabaseTarget};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The spec or a Secret is wrong: a person must fix it.
    #[error("{0}")]
    Invalid(String),
    /// The API server could not be asked; try again.
    #[error("reading Secret {0}: {1}")]
    Kube(String, #[source] kube::Error),
}

async fn secret_value(client: &Client, namespace: &str, r: &SecretKeyRef, field: &str) -> Result<Vec<u8>, TargetError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(&r.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Err(TargetError::Invalid(format!("{field}: Secret {namespace}/{} does not exist", r.name)));
        }
        Err(e) => return Err(TargetError::Kube(format!("{namespace}/{}", r.name), e)),
    };
    let data = secret.data.unwrap_or_default();
    match data.get(&r.key) {
        Some(value) if !value.0.is_empty() => Ok(value.0.clone()),
        _ => Err(TargetError::Invalid(format!("{field}: Secret {namespace}/{} has no key {:?}", r.name, r.key))),
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
            let url =
                String::from_utf8(url).map_err(|_| TargetError::Invalid(format!("{field}: the URL is not UTF-8")))?;
            let mut target = parse_postgres_url(&url).map_err(|e| TargetError::Invalid(format!("{field}: {e}")))?;
            if !url.contains("application_name") {
                target.config.application_name(application_name);
            }
            (DatabaseTarget::Postgres(target), None)
        }
        (None, Some(d)) => {
            let target = dsql_target(&d.endpoint, d.region.as_deref(), &d.user, &d.database, TOKEN_LIFETIME)
                .map_err(|e| TargetError::Invalid(format!("spec.target.dsql: {e}")))?;
            let ca = match &d.ca_bundle_secret_ref {
                Some(r) => Some(secret_value(client, namespace, r, "spec.target.dsql.caBundleSecretRef").await?),
                None => None,
            };
            (DatabaseTarget::Dsql(target), ca)
        }
        _ => return Err(TargetError::Invalid("spec.target: exactly one of dsql and postgres must be set".into())),
    };
    Connector::new(target, ca).map_err(|e| TargetError::Invalid(e.to_string()))
}

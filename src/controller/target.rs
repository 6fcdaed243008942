//! The database of a migration, resolved in the cluster: a PostgreSQL URL
//! from a Secret, or a DSQL endpoint with an optional CA bundle Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{SecretKeyRef, Target};
use crate::db::{Connector, DatabaseTarget, DbError, SpecTargetError, resolve_target};

/// Which DSQL endpoints the migrations of each namespace may name: the
/// operator connects with its own IAM role, so it must not lend that role to
/// whoever can create an IdentityMigration (a confused deputy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DsqlEndpoints {
    /// Namespace (or `*`) to endpoint host names (or `*`).
    pub by_namespace: BTreeMap<String, Vec<String>>,
    /// The operator's own namespace: allowed any endpoint when it has no entry.
    pub home: String,
}

impl DsqlEndpoints {
    /// Parses the chart's `dsqlEndpoints` as JSON (`{"blog": ["host"], "*": []}`).
    pub fn parse(json: &str, home: &str) -> Result<Self, serde_json::Error> {
        let by_namespace = if json.trim().is_empty() { BTreeMap::new() } else { serde_json::from_str(json)? };
        Ok(Self { by_namespace, home: home.to_string() })
    }

    /// Whether a migration in `namespace` may connect to `endpoint` (host, or
    /// `host:port`): its namespace's entry decides, else the `*` entry, else
    /// only the operator's own namespace may.
    pub fn allows(&self, namespace: &str, endpoint: &str) -> bool {
        let host = endpoint.rsplit_once(':').map_or(endpoint, |(h, _)| h).trim().to_ascii_lowercase();
        match self.by_namespace.get(namespace).or_else(|| self.by_namespace.get("*")) {
            Some(allowed) => allowed.iter().any(|a| a == "*" || a.to_ascii_lowercase() == host),
            None => namespace == self.home,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "spec.target.dsql.endpoint: {endpoint} is not allowed for namespace {namespace}; \
         the operator's administrator lists it in the chart's dsqlEndpoints"
    )]
    EndpointNotAllowed { namespace: String, endpoint: String },
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
    target: &Target,
    application_name: &str,
    endpoints: &DsqlEndpoints,
) -> Result<Connector, TargetError> {
    let (resolved, ca) = match (&target.postgres, &target.dsql) {
        (Some(pg), None) => {
            let field = "spec.target.postgres.urlSecretRef";
            let url = secret_value(client, namespace, &pg.url_secret_ref, field).await?;
            let url = String::from_utf8(url).map_err(|_| TargetError::NotUtf8 { field })?;
            let mut resolved = resolve_target(target, Some((field, &url)))?;
            if let DatabaseTarget::Postgres(pg) = &mut resolved
                && !url.contains("application_name")
            {
                pg.config.application_name(application_name);
            }
            (resolved, None)
        }
        (None, Some(d)) => {
            if !endpoints.allows(namespace, &d.endpoint) {
                let endpoint = d.endpoint.clone();
                return Err(TargetError::EndpointNotAllowed { namespace: namespace.to_string(), endpoint });
            }
            let resolved = resolve_target(target, None)?;
            let ca = match &d.ca_bundle_secret_ref {
                Some(r) => Some(secret_value(client, namespace, r, "spec.target.dsql.caBundleSecretRef").await?),
                None => None,
            };
            (resolved, ca)
        }
        _ => {
            let source = crate::db::TargetError::NotExactlyOne;
            return Err(SpecTargetError { field: "spec.target", source }.into());
        }
    };
    Connector::new(resolved, ca).map_err(TargetError::Connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_namespace_reaches_only_the_endpoints_listed_for_it() {
        let e = DsqlEndpoints::parse(r#"{"blog": ["abc.dsql.us-east-1.on.aws"], "shop": ["*"]}"#, "identity-migrator")
            .unwrap();
        assert!(e.allows("blog", "abc.dsql.us-east-1.on.aws"));
        assert!(e.allows("blog", "ABC.dsql.us-east-1.on.aws:5432"), "the host decides, in any case, with any port");
        assert!(!e.allows("blog", "other.dsql.us-east-1.on.aws"));
        assert!(e.allows("shop", "anything.dsql.eu-west-1.on.aws"));
        // Unlisted namespaces: denied, but for the operator's own.
        assert!(!e.allows("intruder", "abc.dsql.us-east-1.on.aws"));
        assert!(e.allows("identity-migrator", "abc.dsql.us-east-1.on.aws"));
        let everyone = DsqlEndpoints::parse(r#"{"*": ["abc.dsql.us-east-1.on.aws"]}"#, "ns").unwrap();
        assert!(everyone.allows("any", "abc.dsql.us-east-1.on.aws") && !everyone.allows("any", "x.on.aws"));
        let unset = DsqlEndpoints::parse("", "home").unwrap();
        assert!(!unset.allows("blog", "abc.dsql.us-east-1.on.aws"), "deny cross-namespace use when unset");
        assert!(DsqlEndpoints::parse("[1, 2]", "home").is_err());
    }
}

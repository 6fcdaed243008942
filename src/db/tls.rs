//! TLS for database connections: rustls with the web PKI roots (Amazon Root CA 1
//! is among them), plus an optional private CA bundle. Every TLS connection
//! verifies the certificate chain and the host name; there is no switch to skip it.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::DbError;

/// Builds a verifying connector. `extra_ca_pem` adds trust anchors (PEM
/// certificates) to the web PKI roots, for private set-ups and tests.
pub fn verifying_connector(extra_ca_pem: Option<&[u8]>) -> Result<MakeRustlsConnect, DbError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| DbError::config("read CA bundle", format!("not a PEM certificate: {e}")))?;
            roots.add(cert).map_err(|e| DbError::config("read CA bundle", format!("unusable certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(DbError::config("read CA bundle", "no PEM certificate found"));
        }
    }
    // An explicit provider: with both ring and aws-lc-rs linked there is no
    // process default to fall back on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::config("configure TLS", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_pki_roots_alone_make_a_connector() {
        assert!(verifying_connector(None).is_ok());
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let err = verifying_connector(Some(b"not a certificate")).err().expect("refused");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}

//! TLS settings from [`RedisConfig`] turned into fred's rustls configuration.

use nautilus_core::{Error, Result};

use crate::config::RedisConfig;

/// Whether the URL asks for TLS (`rediss://`, `rediss-cluster://`, …).
fn tls_scheme(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.starts_with("rediss"))
}

/// Applies the TLS files of `config` to fred's configuration. Without TLS files the
/// URL alone decides (fred trusts the system's roots for `rediss://`).
pub(crate) fn apply(config: &RedisConfig, fred: &mut fred::prelude::Config) -> Result<()> {
    let files = config.tls_ca_file.is_some()
        || config.tls_cert_file.is_some()
        || config.tls_key_file.is_some();
    if !files {
        return Ok(());
    }
    if !tls_scheme(&config.url) {
        return Err(Error::invalid_argument(
            "TLS files are set but the URL does not ask for TLS: use rediss://",
        ));
    }
    build(config, fred)
}

#[cfg(feature = "tls")]
fn build(config: &RedisConfig, fred: &mut fred::prelude::Config) -> Result<()> {
    use std::path::Path;

    use fred::rustls::pki_types::pem::PemObject;
    use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use fred::rustls::{ClientConfig, RootCertStore};
    use fred::types::config::TlsConnector;

    fn unreadable(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
        Error::invalid_argument(format!("{what} {}: {e}", path.display()))
    }
    fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable(path, "TLS certificate file", e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| unreadable(path, "TLS certificate file", e))?;
        if certs.is_empty() {
            return Err(unreadable(path, "TLS certificate file", "no certificate"));
        }
        Ok(certs)
    }

    let mut roots = RootCertStore::empty();
    if let Some(ca) = &config.tls_ca_file {
        for cert in certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| unreadable(ca, "TLS CA file", e))?;
        }
    } else {
        let native = fred::rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system certificate rustls cannot parse is skipped, as browsers do.
            let _ = roots.add(cert);
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let client = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| unreadable(key, "TLS key file", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::invalid_argument(format!("TLS client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::invalid_argument(
                "a TLS client certificate needs both tls_cert_file and tls_key_file",
            ));
        }
    };
    fred.tls = Some(TlsConnector::from(client).into());
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn build(_config: &RedisConfig, _fred: &mut fred::prelude::Config) -> Result<()> {
    Err(Error::invalid_argument(
        "TLS files are set but nautilus-redis was built without its `tls` feature",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_need_a_tls_url() {
        let config = RedisConfig::new("redis://127.0.0.1:6380").tls_ca_file("/nonexistent/ca.pem");
        let mut fred = fred::prelude::Config::default();
        assert!(matches!(
            apply(&config, &mut fred),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_missing_ca_file_is_a_clear_error_naming_it() {
        let config = RedisConfig::new("rediss://127.0.0.1:6380").tls_ca_file("/nonexistent/ca.pem");
        let mut fred = fred::prelude::Config::default();
        match apply(&config, &mut fred) {
            Err(Error::InvalidArgument { reason }) => {
                assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_client_certificate_needs_its_key() {
        let mut config = RedisConfig::new("rediss://127.0.0.1:6380");
        config.tls_cert_file = Some("/tmp/cert.pem".into());
        let mut fred = fred::prelude::Config::default();
        assert!(matches!(
            apply(&config, &mut fred),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

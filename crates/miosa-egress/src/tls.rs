//! The rustls configurations the proxy builds once and reuses: the upstream
//! client configuration and the crypto provider behind every handshake.

use std::{path::Path, sync::Arc};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer},
    ClientConfig, RootCertStore,
};

use crate::{config::SYSTEM_ROOTS, EgressError};

/// ALPN for both legs: the proxy speaks HTTP/1.1 only.
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The `ring` provider, named explicitly so the process-wide default (which
/// another crate may set differently) does not matter.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The upstream client configuration: system roots plus `extra_ca`.
pub(crate) fn client_config(
    provider: &Arc<CryptoProvider>,
    extra_ca: Option<&Path>,
) -> Result<Arc<ClientConfig>, EgressError> {
    let mut roots = RootCertStore::empty();
    match CertificateDer::pem_file_iter(SYSTEM_ROOTS) {
        Ok(certs) => {
            let (added, ignored) = roots.add_parsable_certificates(certs.flatten());
            tracing::debug!(added, ignored, "loaded system roots");
        }
        Err(e) => tracing::warn!(path = SYSTEM_ROOTS, error = %e, "no system roots"),
    }
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| EgressError::ReadCa {
                path: path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EgressError::ReadCa {
                path: path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(EgressError::EmptyCa(path.to_owned()));
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

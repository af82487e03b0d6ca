//! Per-host TLS server configurations for interception, minted from the
//! sandbox's CA on first use and cached: a handshake for a host seen before
//! costs no signing and no certificate parsing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rustls::{crypto::CryptoProvider, ServerConfig};
use time::{Duration, OffsetDateTime};

use crate::{ca::SandboxCa, tls::ALPN_HTTP11, EgressError};

/// Hosts remembered per sandbox; past this the cache starts over.
const MAX_HOSTS: usize = 1024;
/// A leaf is replaced when it has less than this left to live.
const RENEW_BEFORE: Duration = Duration::hours(12);

/// The interception side of one sandbox: its CA and its leaves.
pub(crate) struct Leaves {
    ca: SandboxCa,
    provider: Arc<CryptoProvider>,
    configs: Mutex<HashMap<String, (OffsetDateTime, Arc<ServerConfig>)>>,
}

impl Leaves {
    pub(crate) fn new(ca: SandboxCa, provider: Arc<CryptoProvider>) -> Self {
        Self {
            ca,
            provider,
            configs: Mutex::new(HashMap::new()),
        }
    }

    /// The server configuration presenting a leaf for `host`.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, EgressError> {
        let now = OffsetDateTime::now_utc();
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((not_after, config)) = configs.get(host) {
            if *not_after - RENEW_BEFORE > now {
                return Ok(config.clone());
            }
        }
        let leaf = self.ca.mint_leaf(host)?;
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key)?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        let config = Arc::new(config);
        if configs.len() >= MAX_HOSTS {
            configs.clear();
        }
        configs.insert(host.to_owned(), (leaf.not_after, config.clone()));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miosa_core::SandboxId;

    #[test]
    fn configs_are_cached_per_host() {
        let ca = SandboxCa::generate(&SandboxId::generate()).unwrap();
        let leaves = Leaves::new(ca, crate::tls::provider());
        let a = leaves.server_config("api.openai.com").unwrap();
        let b = leaves.server_config("api.openai.com").unwrap();
        let c = leaves.server_config("api.github.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}

//! The egress proxy's view: a sandbox's resolved credentials with their
//! values, cached per sandbox and checked against the tenant's secrets epoch
//! on every request, so a disable (on any replica) takes effect on the very
//! next proxied request. The epoch comes from a read that started after the
//! request arrived, shared with the requests that arrived alongside it
//! (`epoch`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use miosa_core::{SandboxId, SandboxScopeKeys};
use miosa_egress::{Credential, CredentialSource, SandboxIdentity};

use crate::Secrets;

type Resolved = Arc<Vec<Credential>>;

/// Resolved credentials per sandbox, tagged with the epoch they were read at.
#[derive(Default)]
pub struct CredentialCache {
    inner: Mutex<HashMap<SandboxId, (i64, Resolved)>>,
}

impl CredentialCache {
    fn get(&self, sandbox: &SandboxId, epoch: i64) -> Option<Resolved> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(sandbox)
            .filter(|(e, _)| *e == epoch)
            .map(|(_, c)| Arc::clone(c))
    }

    fn put(&self, sandbox: SandboxId, epoch: i64, creds: Resolved) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(sandbox, (epoch, creds));
    }

    pub(crate) fn forget(&self, sandbox: &SandboxId) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(sandbox);
    }
}

impl Secrets {
    async fn load(&self, id: &SandboxIdentity) -> Result<Vec<Credential>, String> {
        let tenant = &id.tenant_id;
        let keys = SandboxScopeKeys::new(
            &id.sandbox_id,
            id.workspace_id.as_ref(),
            &id.labels,
            id.created_by_workspace_key,
        );
        let winners = self
            .winners(tenant, &keys)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(winners.len());
        for (_, meta, sealed) in winners {
            // A value that cannot be opened (wrong or rotated-away key, or a
            // row whose metadata was changed behind the vault's back) is
            // skipped: its placeholder then goes out unchanged.
            let aad = meta.associated_data(meta.version, sealed.aad);
            let plain = match self.vault.open(&sealed, &aad) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(secret = %meta.id, error = %e, "cannot open secret value");
                    continue;
                }
            };
            let Some(value) = plain.expose_str() else {
                tracing::error!(secret = %meta.id, "secret value is not UTF-8");
                continue;
            };
            out.push(Credential {
                placeholder: self.placeholder(&id.sandbox_id, &meta.id),
                value: miosa_egress::SecretValue::new(value.to_owned()),
                secret: meta,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl CredentialSource for Secrets {
    async fn credentials(&self, id: &SandboxIdentity) -> Result<Resolved, String> {
        let epoch = self.epochs.read(self.store.as_ref(), &id.tenant_id).await?;
        if let Some(hit) = self.cache.get(&id.sandbox_id, epoch) {
            return Ok(hit);
        }
        let creds = Arc::new(self.load(id).await?);
        self.cache
            .put(id.sandbox_id.clone(), epoch, Arc::clone(&creds));
        Ok(creds)
    }
}

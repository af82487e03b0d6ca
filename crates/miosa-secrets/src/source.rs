//! The egress proxy's view: a sandbox's resolved credentials with their
//! values, cached per sandbox and checked against the tenant's secrets epoch
//! on every request, so a disable (on any replica) takes effect on the very
//! next proxied request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use miosa_core::{secret, SandboxId, SandboxScopeKeys};
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

fn keys_of(id: &SandboxIdentity) -> SandboxScopeKeys {
    SandboxScopeKeys {
        sandbox_id: id.sandbox_id.as_str().to_owned(),
        owner_user_id: id.labels.owner_user_id.clone(),
        external_user_id: id.labels.external_user_id.clone(),
        external_workspace_id: id.labels.external_workspace_id.clone(),
        workspace_id: id.workspace_id.as_ref().map(|w| w.as_str().to_owned()),
    }
}

impl Secrets {
    async fn load(&self, id: &SandboxIdentity) -> Result<Vec<Credential>, String> {
        let tenant = &id.tenant_id;
        let keys = keys_of(id);
        let settings = self
            .store
            .get_settings(tenant)
            .await
            .map_err(|e| e.to_string())?;
        let candidates = self
            .store
            .candidate_secrets(tenant, &keys)
            .await
            .map_err(|e| e.to_string())?;
        let metas: Vec<_> = candidates.iter().map(|(s, _)| s.clone()).collect();
        let resolved = secret::resolve(&keys, &metas, settings.allow_end_user_credentials);
        let mut out = Vec::with_capacity(resolved.len());
        for chosen in resolved.values() {
            let Some((meta, sealed)) = candidates.iter().find(|(s, _)| s.id == chosen.id) else {
                continue;
            };
            // A value that cannot be opened (wrong or rotated-away key) is
            // skipped: its placeholder then goes out unchanged.
            let plain = match self.vault.open(sealed, tenant.as_str().as_bytes()) {
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
                secret: meta.clone(),
                value: miosa_egress::SecretValue::new(value.to_owned()),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl CredentialSource for Secrets {
    async fn credentials(&self, id: &SandboxIdentity) -> Result<Resolved, String> {
        let epoch = self
            .store
            .secrets_epoch(&id.tenant_id)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(hit) = self.cache.get(&id.sandbox_id, epoch) {
            return Ok(hit);
        }
        let creds = Arc::new(self.load(id).await?);
        self.cache
            .put(id.sandbox_id.clone(), epoch, Arc::clone(&creds));
        Ok(creds)
    }
}

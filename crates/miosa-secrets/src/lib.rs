//! Secrets as a service.
//!
//! - Writes: validate the input, decide the workspace binding, seal the value
//!   with the vault for exactly the secret and version it becomes (see
//!   `Secret::seal_context`), and write that version through the store,
//!   which checks the tenant's settings inside the same transaction.
//! - Reads: metadata only. Nothing here returns a value to a caller; the only
//!   reader of plaintext is the egress proxy, through [`CredentialSource`].
//! - Resolution: which secret fills each exposed variable of a sandbox
//!   (`miosa_core::secret::resolve`, first scope in precedence order wins),
//!   and the placeholder the sandbox sees instead.
#![forbid(unsafe_code)]

mod epoch;
mod error;
mod input;
mod source;
mod write;

use std::sync::Arc;

use miosa_audit::AuditLog;
use miosa_core::{audit::action, AuditCredential, AuditEntry, Outcome};
use miosa_core::{
    secret::{self, SandboxScopeKeys},
    Page, PageRequest, Sandbox, SandboxId, SealedValue, Secret, SecretId, SecretScope, TenantId,
    TenantSettings, WorkspaceId,
};
use miosa_store::{SecretFilter, SettingsPatch, Store};
use miosa_vault::KeyRing;

pub use error::{Result, SecretsError};
pub use input::{ListSecrets, SetSecret};
pub use source::CredentialCache;
pub use write::{SetOutcome, ANY_HOST_WARNING};

/// Who is acting on secrets: the API key, and for a workspace key its
/// workspace (it sees and writes only that workspace's secrets).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub key_id: &'a str,
    pub workspace: Option<&'a WorkspaceId>,
}

impl Actor<'_> {
    fn may_see(&self, secret: &Secret) -> bool {
        self.workspace
            .is_none_or(|own| secret.workspace_id.as_ref() == Some(own))
    }
}

/// One exposed variable of a sandbox and the secret that fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    pub env: String,
    pub secret: Secret,
    pub placeholder: String,
}

/// The secrets service.
pub struct Secrets {
    store: Arc<dyn Store>,
    vault: Arc<KeyRing>,
    /// Key for deriving placeholders (stable across restarts and replicas).
    placeholder_key: Vec<u8>,
    cache: CredentialCache,
    epochs: epoch::EpochReads,
    audit: AuditLog,
}

/// The audit row of an action on a secret (or the settings) by `actor`.
fn audit_row(tenant: &TenantId, actor: &str, act: &str, secret: Option<&Secret>) -> AuditEntry {
    let mut row = AuditEntry::new(tenant, act, Outcome::Success);
    row.actor = Some(actor.to_owned());
    let Some(s) = secret else { return row };
    row.target = Some(s.id.as_str().to_owned());
    row.credential = Some(AuditCredential::from(s));
    // The secret's scope key, in the column of the label it matches.
    let key = s.scope_key.clone();
    match s.scope {
        SecretScope::Sandbox => row.sandbox_id = key.and_then(|k| SandboxId::parse(&k).ok()),
        SecretScope::Workspace => row.workspace_id = key.and_then(|k| WorkspaceId::parse(&k).ok()),
        SecretScope::User => row.owner_user_id = key,
        SecretScope::ExternalUser => row.external_user_id = key,
        SecretScope::ExternalWorkspace => row.external_workspace_id = key,
        SecretScope::Tenant => {}
    }
    row
}

impl Secrets {
    pub fn new(
        store: Arc<dyn Store>,
        vault: Arc<KeyRing>,
        placeholder_key: Vec<u8>,
        audit: AuditLog,
    ) -> Self {
        Self {
            store,
            vault,
            placeholder_key,
            cache: CredentialCache::default(),
            epochs: epoch::EpochReads::default(),
            audit,
        }
    }

    /// One secret the actor may see: a workspace key sees only the
    /// secrets of its workspace; any other is not found.
    pub async fn get(&self, tenant: &TenantId, actor: &Actor<'_>, id: &str) -> Result<Secret> {
        let id = SecretId::parse(id).map_err(|_| SecretsError::NotFound)?;
        self.store
            .get_secret(tenant, &id)
            .await?
            .filter(|s| actor.may_see(s))
            .ok_or(SecretsError::NotFound)
    }

    pub async fn list(
        &self,
        tenant: &TenantId,
        actor: &Actor<'_>,
        query: ListSecrets,
        page: &PageRequest,
    ) -> Result<Page<Secret>> {
        let mut filter: SecretFilter = query.validate()?;
        if let Some(own) = actor.workspace {
            if filter.workspace_id.as_ref().is_some_and(|w| w != own) {
                // Another workspace's secrets do not exist for this key.
                return Ok(Page {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            filter.workspace_id = Some(own.clone());
        }
        Ok(self.store.list_secrets(tenant, &filter, page).await?)
    }

    /// Enables or disables; takes effect on the next proxied request.
    pub async fn set_enabled(
        &self,
        tenant: &TenantId,
        actor: &Actor<'_>,
        id: &str,
        enabled: bool,
    ) -> Result<Secret> {
        let secret = self.get(tenant, actor, id).await?;
        let secret = self
            .store
            .set_secret_enabled(tenant, &secret.id, enabled, miosa_core::time_util::now())
            .await?
            .ok_or(SecretsError::NotFound)?;
        let act = if enabled {
            action::SECRET_ENABLED
        } else {
            action::SECRET_DISABLED
        };
        self.audit
            .append_logged(audit_row(tenant, actor.key_id, act, Some(&secret)))
            .await;
        Ok(secret)
    }

    /// Deletes the secret with every version; returns what it was.
    pub async fn delete(&self, tenant: &TenantId, actor: &Actor<'_>, id: &str) -> Result<Secret> {
        let secret = self.get(tenant, actor, id).await?;
        if !self.store.delete_secret(tenant, &secret.id).await? {
            return Err(SecretsError::NotFound);
        }
        self.audit
            .append_logged(audit_row(
                tenant,
                actor.key_id,
                action::SECRET_DELETED,
                Some(&secret),
            ))
            .await;
        Ok(secret)
    }

    pub async fn settings(&self, tenant: &TenantId) -> Result<TenantSettings> {
        Ok(self.store.get_settings(tenant).await?)
    }

    pub async fn update_settings(
        &self,
        tenant: &TenantId,
        actor: &str,
        patch: &SettingsPatch,
    ) -> Result<TenantSettings> {
        if patch == &SettingsPatch::default() {
            return self.settings(tenant).await;
        }
        let settings = self
            .store
            .update_settings(tenant, patch, miosa_core::time_util::now())
            .await?;
        let mut row = audit_row(tenant, actor, action::SETTINGS_UPDATED, None);
        // What changed, as `setting=value` (settings hold no secrets).
        let changed: Vec<String> = [
            (
                "allow_end_user_credentials",
                patch.allow_end_user_credentials,
            ),
            ("require_allowed_hosts", patch.require_allowed_hosts),
            (
                "workspace_keys_use_unbound_secrets",
                patch.workspace_keys_use_unbound_secrets,
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect();
        row.target = Some(changed.join(","));
        self.audit.append_logged(row).await;
        Ok(settings)
    }

    /// The placeholder `sandbox` sees for `secret`.
    pub fn placeholder(&self, sandbox: &SandboxId, secret: &SecretId) -> String {
        secret::placeholder(&self.placeholder_key, sandbox, secret)
    }

    /// For each exposed variable of the sandbox, the secret that resolves
    /// and its placeholder (no values), sorted by variable name.
    pub async fn exposed(&self, sandbox: &Sandbox) -> Result<Vec<Exposed>> {
        let keys = SandboxScopeKeys::of(sandbox);
        Ok(self
            .winners(&sandbox.tenant_id, &keys)
            .await?
            .into_iter()
            .map(|(env, s, _)| Exposed {
                env,
                placeholder: self.placeholder(&sandbox.id, &s.id),
                secret: s,
            })
            .collect())
    }

    /// The secret that fills each exposed variable of the sandbox with
    /// `keys` (the tenant's settings applied), with its sealed value,
    /// sorted by variable name.
    async fn winners(
        &self,
        tenant: &TenantId,
        keys: &SandboxScopeKeys,
    ) -> Result<Vec<(String, Secret, SealedValue)>> {
        let settings = self.store.get_settings(tenant).await?;
        let mut candidates = self.store.candidate_secrets(tenant, keys).await?;
        let metas: Vec<Secret> = candidates.iter().map(|(s, _)| s.clone()).collect();
        let resolved = secret::resolve(keys, &metas, &settings);
        Ok(resolved
            .into_iter()
            .filter_map(|(env, chosen)| {
                let i = candidates.iter().position(|(s, _)| s.id == chosen.id)?;
                let (meta, sealed) = candidates.swap_remove(i);
                Some((env, meta, sealed))
            })
            .collect())
    }

    /// The variables a command in `sandbox` gets: name → placeholder.
    pub async fn env_for(
        &self,
        sandbox: &Sandbox,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        Ok(self
            .exposed(sandbox)
            .await?
            .into_iter()
            .map(|e| (e.env, e.placeholder))
            .collect())
    }

    /// Drops cached credentials of a sandbox that is gone.
    pub fn forget(&self, sandbox: &SandboxId) {
        self.cache.forget(sandbox);
    }
}

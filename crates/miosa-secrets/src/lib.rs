//! Secrets as a service.
//!
//! - Writes: validate the input, seal the value with the vault (the tenant ID
//!   is the associated data), and upsert a new version through the store.
//! - Reads: metadata only. Nothing here returns a value to a caller; the only
//!   reader of plaintext is the egress proxy, through [`CredentialSource`].
//! - Resolution: which secret fills each exposed variable of a sandbox
//!   (`miosa_core::secret::resolve`, first scope in precedence order wins),
//!   and the placeholder the sandbox sees instead.
#![forbid(unsafe_code)]

mod error;
mod input;
mod source;

use std::sync::Arc;

use miosa_audit::AuditLog;
use miosa_core::{audit::action, AuditCredential, AuditEntry, Outcome};
use miosa_core::{
    secret::{self, SandboxScopeKeys},
    NewSecretVersion, Page, PageRequest, Sandbox, SandboxId, SealedValue, Secret, SecretId,
    SecretScope, TenantId, TenantSettings, WorkspaceId,
};
use miosa_store::{SecretFilter, SettingsPatch, Store};
use miosa_vault::KeyRing;

pub use error::{Result, SecretsError};
pub use input::{ListSecrets, SetSecret};
pub use source::CredentialCache;

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
            audit,
        }
    }

    /// Creates a secret or adds a version to it (upsert by tenant, scope,
    /// scope key and name). `actor` (an API key ID) is recorded in the audit
    /// log, as for every write below.
    pub async fn set(&self, tenant: &TenantId, actor: &str, input: SetSecret) -> Result<Secret> {
        let v = input.validate()?;
        if v.scope == SecretScope::ExternalUser
            && !self
                .store
                .get_settings(tenant)
                .await?
                .allow_end_user_credentials
        {
            return Err(SecretsError::EndUserCredentialsDisabled);
        }
        // `allowed_hosts` left out of a new version keeps the current list
        // (so rotating a value never silently widens where it may go); `[]`
        // means any host.
        let allowed_hosts = match v.allowed_hosts {
            Some(hosts) => hosts,
            None => self
                .current(tenant, v.scope, v.scope_key.as_deref(), &v.name)
                .await?
                .map(|s| s.allowed_hosts)
                .unwrap_or_default(),
        };
        let sealed = self
            .vault
            .seal(v.value.expose().as_bytes(), tenant.as_str().as_bytes())?;
        let new = NewSecretVersion {
            tenant_id: tenant.clone(),
            id: SecretId::generate(),
            name: v.name,
            scope: v.scope,
            scope_key: v.scope_key,
            expose_as_env: v.expose_as_env,
            allowed_hosts,
            sealed,
            at: miosa_core::time_util::now(),
        };
        let secret = self.store.put_secret(&new).await?;
        tracing::info!(secret = %secret.id, version = secret.version, scope = secret.scope.as_str(), "secret set");
        self.audit
            .append_logged(audit_row(tenant, actor, action::SECRET_SET, Some(&secret)))
            .await;
        Ok(secret)
    }

    /// The secret a `set` with this scope, key and name would update.
    async fn current(
        &self,
        tenant: &TenantId,
        scope: SecretScope,
        scope_key: Option<&str>,
        name: &str,
    ) -> Result<Option<Secret>> {
        let filter = SecretFilter {
            scope: Some(scope),
            scope_key: scope_key.map(str::to_owned),
            name: Some(name.to_owned()),
        };
        let page = PageRequest {
            limit: 10,
            after: None,
        };
        let found = self.store.list_secrets(tenant, &filter, &page).await?;
        // Tenant scope has no key: the filter then matches any key, so
        // pick the one whose key is the same.
        Ok(found
            .items
            .into_iter()
            .find(|s| s.scope_key.as_deref() == scope_key))
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Secret> {
        let id = SecretId::parse(id).map_err(|_| SecretsError::NotFound)?;
        self.store
            .get_secret(tenant, &id)
            .await?
            .ok_or(SecretsError::NotFound)
    }

    pub async fn list(
        &self,
        tenant: &TenantId,
        query: ListSecrets,
        page: &PageRequest,
    ) -> Result<Page<Secret>> {
        let filter: SecretFilter = query.validate()?;
        Ok(self.store.list_secrets(tenant, &filter, page).await?)
    }

    /// Enables or disables; takes effect on the next proxied request.
    pub async fn set_enabled(
        &self,
        tenant: &TenantId,
        actor: &str,
        id: &str,
        enabled: bool,
    ) -> Result<Secret> {
        let id = SecretId::parse(id).map_err(|_| SecretsError::NotFound)?;
        let secret = self
            .store
            .set_secret_enabled(tenant, &id, enabled, miosa_core::time_util::now())
            .await?
            .ok_or(SecretsError::NotFound)?;
        let act = if enabled {
            action::SECRET_ENABLED
        } else {
            action::SECRET_DISABLED
        };
        self.audit
            .append_logged(audit_row(tenant, actor, act, Some(&secret)))
            .await;
        Ok(secret)
    }

    /// Deletes the secret with every version; returns what it was.
    pub async fn delete(&self, tenant: &TenantId, actor: &str, id: &str) -> Result<Secret> {
        let secret = self.get(tenant, id).await?;
        if !self.store.delete_secret(tenant, &secret.id).await? {
            return Err(SecretsError::NotFound);
        }
        self.audit
            .append_logged(audit_row(
                tenant,
                actor,
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
        row.target = patch
            .allow_end_user_credentials
            .map(|v| format!("allow_end_user_credentials={v}"));
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
        let resolved = secret::resolve(keys, &metas, settings.allow_end_user_credentials);
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

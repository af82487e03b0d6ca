//! Setting a secret: who may bind it where, sealing the value for the exact
//! version it becomes, and the warnings the caller should read.

use miosa_core::{
    audit::action, NewSecretVersion, Secret, SecretId, SecretScope, SubstituteIn, TenantId,
    WorkspaceId,
};
use miosa_store::{SecretKey, StoreError};

use crate::{
    audit_row, error::hosts_required, input::ValidSecret, Actor, Result, Secrets, SecretsError,
    SetSecret,
};

/// How often a write that loses the race for a version is tried again.
const ATTEMPTS: usize = 8;

/// What a write did.
#[derive(Debug, Clone)]
pub struct SetOutcome {
    pub secret: Secret,
    /// Things the caller should know about what was stored (a secret that
    /// may go to any host, substitution outside headers).
    pub warnings: Vec<String>,
}

impl SetOutcome {
    /// Whether this write created the secret (rather than adding a version).
    pub fn created(&self) -> bool {
        self.secret.version == 1
    }
}

/// The warning for a secret without `allowed_hosts`.
pub const ANY_HOST_WARNING: &str = "allowed_hosts is empty: the proxy will substitute this value \
    for any host the sandbox calls; list the hosts it is meant for (or turn on the tenant \
    setting require_allowed_hosts to refuse such secrets)";

fn warnings(secret: &Secret) -> Vec<String> {
    let mut out = Vec::new();
    if secret.allowed_hosts.is_empty() {
        out.push(ANY_HOST_WARNING.to_owned());
    }
    let SubstituteIn { query, body, .. } = secret.substitute_in;
    if query || body {
        let wh = match (query, body) {
            (true, true) => "the query string and the body",
            (true, false) => "the query string",
            _ => "the body",
        };
        out.push(format!(
            "substitute_in includes {wh}: the allowed hosts are trusted with the value there; a \
             host that echoes, transforms or stores what it receives can hand the value back to \
             the sandbox"
        ));
    }
    out
}

impl Secrets {
    /// Creates a secret or adds a version to it (upsert by tenant, scope,
    /// scope key, workspace binding and name). `actor` is recorded in the
    /// audit log; a workspace key's secrets are bound to its workspace.
    pub async fn set(
        &self,
        tenant: &TenantId,
        actor: &Actor<'_>,
        input: SetSecret,
    ) -> Result<SetOutcome> {
        let v = input.validate()?;
        let binding = self.binding(tenant, actor, &v).await?;
        let key = SecretKey {
            scope: v.scope,
            scope_key: v.scope_key.clone(),
            workspace_id: binding,
            name: v.name.clone(),
        };
        for _ in 0..ATTEMPTS {
            let current = self.store.find_secret(tenant, &key).await?;
            let kek = self.sealing_kek().await?;
            let new = self.next_version(tenant, &key, &v, current.as_ref(), &kek)?;
            match self.store.put_secret(&new).await {
                Ok(secret) => {
                    tracing::info!(secret = %secret.id, version = secret.version, scope = secret.scope.as_str(), "secret set");
                    self.audit
                        .append_logged(audit_row(
                            tenant,
                            actor.key_id,
                            action::SECRET_SET,
                            Some(&secret),
                        ))
                        .await;
                    return Ok(SetOutcome {
                        warnings: warnings(&secret),
                        secret,
                    });
                }
                // Another write got there first, or a rotation moved the
                // sealing key: read, seal and try again.
                Err(
                    StoreError::Conflict {
                        entity: "secret",
                        field: "version",
                    }
                    | StoreError::StaleSealingKey { .. },
                ) => continue,
                Err(StoreError::SettingForbids {
                    setting: "allow_end_user_credentials",
                }) => return Err(SecretsError::EndUserCredentialsDisabled),
                Err(StoreError::SettingForbids {
                    setting: "require_allowed_hosts",
                }) => return Err(hosts_required()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(SecretsError::Contended)
    }

    /// The version a write of `v` makes after `current`, its value sealed
    /// for exactly that secret, version and metadata. `allowed_hosts` and
    /// `substitute_in` left out keep the current ones (rotating a value
    /// never silently widens where it may go).
    fn next_version(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        v: &ValidSecret,
        current: Option<&Secret>,
        kek: &str,
    ) -> Result<NewSecretVersion> {
        let (id, version) = match current {
            Some(c) => (c.id.clone(), c.version.saturating_add(1)),
            None => (SecretId::generate(), 1),
        };
        let allowed_hosts = v
            .allowed_hosts
            .clone()
            .or_else(|| current.map(|c| c.allowed_hosts.clone()))
            .unwrap_or_default();
        let substitute_in = v
            .substitute_in
            .or(current.map(|c| c.substitute_in))
            .unwrap_or_default();
        let at = miosa_core::time_util::now();
        let meta = Secret {
            id,
            tenant_id: tenant.clone(),
            name: key.name.clone(),
            scope: key.scope,
            scope_key: key.scope_key.clone(),
            workspace_id: key.workspace_id.clone(),
            expose_as_env: v.expose_as_env.clone(),
            allowed_hosts,
            substitute_in,
            version,
            enabled: true,
            created_at: at,
            updated_at: at,
        };
        let sealed = self
            .vault
            .seal_under(
                kek,
                v.value.expose().as_bytes(),
                &meta.seal_context(version),
            )
            .map_err(|e| match e {
                miosa_vault::VaultError::UnknownKek { kek_id, .. } => {
                    SecretsError::SealingKeyUnavailable { kek_id }
                }
                e => e.into(),
            })?;
        Ok(NewSecretVersion::of(meta, sealed))
    }

    /// The key new values are sealed under: the one the database records
    /// (every replica agrees on it), else this server's current key.
    async fn sealing_kek(&self) -> Result<String> {
        Ok(match self.store.sealing_kek().await? {
            Some(kek) => kek,
            None => self.vault.current_id(),
        })
    }

    /// The workspace a new secret belongs to. An admin key binds end-user
    /// secrets where it asks to (or not at all); a `workspace` secret
    /// belongs to its workspace and a `sandbox` secret to its sandbox's. A
    /// workspace key may only write inside its own workspace, and every
    /// end-user secret it writes is bound there.
    async fn binding(
        &self,
        tenant: &TenantId,
        actor: &Actor<'_>,
        v: &ValidSecret,
    ) -> Result<Option<WorkspaceId>> {
        let own = actor.workspace;
        match v.scope {
            SecretScope::Tenant => match own {
                Some(_) => Err(SecretsError::WorkspaceKeyForbidden(
                    "a workspace key cannot set tenant-wide secrets; use scope `workspace` or an \
                     end-user scope",
                )),
                None => Ok(None),
            },
            SecretScope::Workspace => {
                let ws = v
                    .scope_key
                    .as_deref()
                    .map(WorkspaceId::parse)
                    .transpose()
                    .map_err(|_| SecretsError::NotFound)?;
                if own.is_some_and(|o| Some(o) != ws.as_ref()) {
                    return Err(SecretsError::WorkspaceKeyForbidden(
                        "a workspace key may only set secrets of its own workspace",
                    ));
                }
                Ok(ws)
            }
            SecretScope::Sandbox => {
                let Some(id) = v.scope_key.as_deref().and_then(|k| k.parse().ok()) else {
                    return Ok(None);
                };
                // A missing sandbox is refused by the write itself; one in
                // another workspace does not exist for a workspace key.
                let sandbox = self.store.get_sandbox(tenant, &id).await?;
                let ws = sandbox.and_then(|s| s.workspace_id);
                if own.is_some() && own != ws.as_ref() {
                    return Err(StoreError::MissingReference {
                        field: "sandbox_id",
                    }
                    .into());
                }
                Ok(ws)
            }
            SecretScope::User | SecretScope::ExternalUser | SecretScope::ExternalWorkspace => {
                match (own, &v.binding) {
                    (Some(o), Some(b)) if o != b => Err(SecretsError::WorkspaceKeyForbidden(
                        "a workspace key may only bind secrets to its own workspace",
                    )),
                    (Some(o), _) => Ok(Some(o.clone())),
                    (None, b) => Ok(b.clone()),
                }
            }
        }
    }
}

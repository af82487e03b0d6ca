//! Tenants, workspaces and API keys as the domain sees them.

use time::OffsetDateTime;

use crate::{ApiKeyId, KeyHash, TenantId, WorkspaceId};

/// A SaaS builder using Miosa.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: OffsetDateTime,
}

/// A workspace inside a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: OffsetDateTime,
}

/// What a tenant key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// Everything in the tenant: all workspaces, keys, settings.
    Admin,
    /// Only resources inside this workspace; no keys or settings.
    Workspace(WorkspaceId),
}

impl KeyScope {
    /// `"admin"` or `"workspace"`.
    pub fn name(&self) -> &'static str {
        match self {
            KeyScope::Admin => "admin",
            KeyScope::Workspace(_) => "workspace",
        }
    }

    pub fn workspace_id(&self) -> Option<&WorkspaceId> {
        match self {
            KeyScope::Admin => None,
            KeyScope::Workspace(ws) => Some(ws),
        }
    }

    /// Rebuilds a scope from its stored columns (`scope`, `workspace_id`);
    /// the error says what is inconsistent.
    pub fn from_columns(scope: &str, workspace_id: Option<&str>) -> Result<Self, String> {
        match (scope, workspace_id) {
            ("admin", None) => Ok(KeyScope::Admin),
            ("workspace", Some(ws)) => WorkspaceId::parse(ws)
                .map(KeyScope::Workspace)
                .map_err(|e| format!("workspace_id {ws:?}: {e}")),
            (scope, ws) => Err(format!("scope {scope:?} with workspace {ws:?}")),
        }
    }
}

/// An API key record. The key itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    pub scope: KeyScope,
    /// Last four characters of the key, to tell keys apart.
    pub hint: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A key about to be stored: the record plus the keyed hash of the secret.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub hash: KeyHash,
}

impl Tenant {
    /// A new tenant record with a fresh ID; `name` must already be validated.
    pub fn new(name: String) -> Self {
        Self {
            id: crate::TenantId::generate(),
            name,
            created_at: crate::time_util::now(),
        }
    }
}

impl Workspace {
    /// A new workspace record with a fresh ID; `name` must already be validated.
    pub fn new(tenant_id: TenantId, name: String) -> Self {
        Self {
            id: WorkspaceId::generate(),
            tenant_id,
            name,
            created_at: crate::time_util::now(),
        }
    }
}

/// Mints a key for a tenant: the record to store and the plain key to show
/// once. The kind (`msk_live_` or `msk_w_`) follows from the scope.
pub fn issue_key(
    tenant_id: &TenantId,
    name: String,
    scope: KeyScope,
    pepper: &crate::Pepper,
) -> Result<(NewApiKey, crate::PlainApiKey), crate::CoreError> {
    let kind = match scope {
        KeyScope::Admin => crate::ApiKeyKind::TenantAdmin,
        KeyScope::Workspace(_) => crate::ApiKeyKind::Workspace,
    };
    let plain = crate::PlainApiKey::generate(kind)?;
    let record = NewApiKey {
        key: ApiKey {
            id: ApiKeyId::generate(),
            tenant_id: tenant_id.clone(),
            name,
            scope,
            hint: plain.hint(),
            created_at: crate::time_util::now(),
            revoked_at: None,
        },
        hash: pepper.hash_key(plain.reveal()),
    };
    Ok((record, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_from_columns() {
        let ws = WorkspaceId::generate();
        assert_eq!(KeyScope::from_columns("admin", None), Ok(KeyScope::Admin));
        assert_eq!(
            KeyScope::from_columns("workspace", Some(ws.as_str())),
            Ok(KeyScope::Workspace(ws.clone()))
        );
        assert!(KeyScope::from_columns("admin", Some(ws.as_str())).is_err());
        assert!(KeyScope::from_columns("workspace", None).is_err());
        assert!(KeyScope::from_columns("workspace", Some("ten_x")).is_err());
        assert!(KeyScope::from_columns("root", None).is_err());
    }

    #[test]
    fn issued_key_matches_its_scope_and_hash() {
        let pepper = crate::Pepper::generate().unwrap();
        let t = Tenant::new("acme".into());
        let ws = Workspace::new(t.id.clone(), "prod".into());
        let (rec, plain) = issue_key(&t.id, "ci".into(), KeyScope::Admin, &pepper).unwrap();
        assert!(plain.reveal().starts_with("msk_live_"));
        assert!(rec.hash.ct_eq(&pepper.hash_key(plain.reveal())));
        assert!(plain.reveal().ends_with(&rec.key.hint));
        let (rec, plain) = issue_key(
            &t.id,
            "w".into(),
            KeyScope::Workspace(ws.id.clone()),
            &pepper,
        )
        .unwrap();
        assert!(plain.reveal().starts_with("msk_w_"));
        assert_eq!(rec.key.scope.workspace_id(), Some(&ws.id));
    }
}

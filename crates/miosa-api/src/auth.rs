//! Authentication and authorisation extractors.
//!
//! A handler names who may call it by the extractor it takes:
//! `RootCaller` (operator), `AdminCaller` (tenant admin key), `TenantCaller`
//! (any tenant key, admin or workspace) or `AnyCaller`.

use axum::{extract::FromRequestParts, http::request::Parts};
use miosa_core::{ApiKeyId, ApiKeyKind, KeyScope, TenantId, WorkspaceId};

use crate::{error::ApiError, AppState};

/// A request made with a tenant key.
#[derive(Debug, Clone)]
pub struct TenantCaller {
    pub tenant_id: TenantId,
    pub key_id: ApiKeyId,
    pub scope: KeyScope,
}

impl TenantCaller {
    /// The workspace this caller is confined to, if it is a workspace key.
    pub fn workspace(&self) -> Option<&WorkspaceId> {
        self.scope.workspace_id()
    }

    /// True when this caller may see resources in `ws`.
    pub fn can_access_workspace(&self, ws: &WorkspaceId) -> bool {
        self.workspace().is_none_or(|own| own == ws)
    }
}

/// Whoever presented a valid key.
#[derive(Debug, Clone)]
pub enum AnyCaller {
    Root,
    Tenant(TenantCaller),
}

/// The operator, holding the root key.
#[derive(Debug, Clone)]
pub struct RootCaller;

/// A tenant admin key (`msk_live_…`).
#[derive(Debug, Clone)]
pub struct AdminCaller(pub TenantCaller);

const MISSING: &str = "missing API key: send `Authorization: Bearer <key>`";
const INVALID: &str = "invalid or revoked API key";

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(MISSING))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized(INVALID))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized(MISSING))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(MISSING));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized(MISSING));
    }
    Ok(token)
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<AnyCaller, ApiError> {
    if let Some(cached) = parts.extensions.get::<AnyCaller>() {
        return Ok(cached.clone());
    }
    let token = bearer(parts)?;
    let kind = ApiKeyKind::of(token).ok_or(ApiError::Unauthorized(INVALID))?;
    let hash = state.keys.pepper.hash_key(token);
    let caller = match kind {
        ApiKeyKind::Root => match &state.keys.root_key_hash {
            Some(root) if root.ct_eq(&hash) => AnyCaller::Root,
            _ => return Err(ApiError::Unauthorized(INVALID)),
        },
        ApiKeyKind::TenantAdmin | ApiKeyKind::Workspace => {
            let key = state
                .store
                .find_active_api_key(&hash)
                .await?
                .ok_or(ApiError::Unauthorized(INVALID))?;
            // The prefix must agree with the stored scope; a mismatch means
            // the string was not a key we issued.
            let expected = match key.scope {
                KeyScope::Admin => ApiKeyKind::TenantAdmin,
                KeyScope::Workspace(_) => ApiKeyKind::Workspace,
            };
            if expected != kind {
                return Err(ApiError::Unauthorized(INVALID));
            }
            let span = tracing::Span::current();
            span.record("tenant", tracing::field::display(&key.tenant_id));
            span.record("key", tracing::field::display(&key.id));
            AnyCaller::Tenant(TenantCaller {
                tenant_id: key.tenant_id,
                key_id: key.id,
                scope: key.scope,
            })
        }
    };
    parts.extensions.insert(caller.clone());
    Ok(caller)
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await
    }
}

impl FromRequestParts<AppState> for RootCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(parts, state).await? {
            AnyCaller::Root => Ok(RootCaller),
            AnyCaller::Tenant(_) => Err(ApiError::forbidden(
                "this endpoint needs the operator's root key (msk_root_…)",
            )),
        }
    }
}

impl FromRequestParts<AppState> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(parts, state).await? {
            AnyCaller::Tenant(t) => Ok(t),
            AnyCaller::Root => Err(ApiError::forbidden(
                "the root key only manages tenants; use a tenant API key",
            )),
        }
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = TenantCaller::from_request_parts(parts, state).await?;
        match caller.scope {
            KeyScope::Admin => Ok(AdminCaller(caller)),
            KeyScope::Workspace(_) => Err(ApiError::forbidden(
                "a workspace key cannot do this; use a tenant admin key (msk_live_…)",
            )),
        }
    }
}

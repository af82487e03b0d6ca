//! `/v1/api-keys`: a tenant admin issues, lists and revokes keys.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use miosa_core::{
    audit::action, issue_key, time_util, validate, ApiKey, ApiKeyId, AuditEntry, KeyScope, Outcome,
    WorkspaceId,
};
use miosa_store::RevokeOutcome;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ListResponse;
use crate::{
    auth::{AdminCaller, TenantCaller},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{JsonBody, QueryParams},
    AppState,
};

/// What a new key may do.
#[derive(Deserialize, Serialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    /// Everything in the tenant (`msk_live_…`).
    Admin,
    /// Only one workspace's resources (`msk_w_…`).
    Workspace,
}

/// Input for creating a key.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label to tell keys apart, 1–128 characters.
    pub name: String,
    pub scope: ScopeName,
    /// Required when `scope` is `workspace`, refused otherwise.
    #[schema(value_type = Option<String>)]
    pub workspace_id: Option<WorkspaceId>,
}

/// An API key's record; the key itself is never shown again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    #[schema(value_type = String)]
    pub id: ApiKeyId,
    pub name: String,
    /// `admin` or `workspace`.
    pub scope: &'static str,
    #[schema(value_type = Option<String>)]
    pub workspace_id: Option<WorkspaceId>,
    /// The key's last four characters.
    pub hint: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it was revoked; `null` while active.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            scope: k.scope.name(),
            workspace_id: k.scope.workspace_id().cloned(),
            id: k.id,
            name: k.name,
            hint: k.hint,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A new key; `key` is shown only in this response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub record: ApiKeyView,
    /// The secret key. Store it now: it is never shown again.
    pub key: String,
}

/// Issues a key (tenant admin key).
#[utoipa::path(post, operation_id = "create_api_key", path = "/v1/api-keys", tag = "keys", security(("bearer" = [])),
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 422, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn create(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let name = validate::name("name", &input.name)?;
    let scope = match (input.scope, input.workspace_id) {
        (ScopeName::Admin, None) => KeyScope::Admin,
        (ScopeName::Admin, Some(_)) => {
            return Err(ApiError::invalid(
                "workspace_id",
                "must be omitted when scope is `admin`",
            ))
        }
        (ScopeName::Workspace, None) => {
            return Err(ApiError::invalid(
                "workspace_id",
                "is required when scope is `workspace`",
            ))
        }
        (ScopeName::Workspace, Some(ws)) => {
            if state
                .store
                .get_workspace(&caller.tenant_id, &ws)
                .await?
                .is_none()
            {
                return Err(ApiError::invalid(
                    "workspace_id",
                    "does not name a workspace of this tenant",
                ));
            }
            KeyScope::Workspace(ws)
        }
    };
    let (record, plain) = issue_key(&caller.tenant_id, name, scope, &state.keys.pepper)?;
    state.store.create_api_key(&record).await?;
    tracing::info!(key = %record.key.id, scope = record.key.scope.name(), "api key created");
    audit_key_action(&state, &caller, action::API_KEY_CREATED, &record.key).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            record: record.key.into(),
            key: plain.reveal().to_owned(),
        }),
    ))
}

/// Lists the tenant's keys, revoked ones included, newest first.
#[utoipa::path(get, operation_id = "list_api_keys", path = "/v1/api-keys", tag = "keys", security(("bearer" = [])),
    params(crate::openapi::PageParams),
    responses((status = 200, body = ListResponse<ApiKeyView>), (status = 403, body = ErrorBody)))]
pub async fn list(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<ApiKeyView>>> {
    query.allow_only(&["limit", "cursor"])?;
    let page = state
        .store
        .list_api_keys(&caller.tenant_id, &query.page()?)
        .await?;
    Ok(ListResponse::from_page(page, ApiKeyView::from))
}

/// Revokes a key at once; the next request with it gets 401. Revoking an
/// already revoked key is a no-op; the last active admin key cannot be revoked.
#[utoipa::path(delete, operation_id = "revoke_api_key", path = "/v1/api-keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Key ID (`key_…`)")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = ApiKeyId::parse(&id).map_err(|_| ApiError::NotFound("API key"))?;
    match state
        .store
        .revoke_api_key(&caller.tenant_id, &id, time_util::now())
        .await?
    {
        RevokeOutcome::Revoked => {
            tracing::info!(key = %id, "api key revoked");
            if let Some(key) = state.store.get_api_key(&caller.tenant_id, &id).await? {
                audit_key_action(&state, &caller, action::API_KEY_REVOKED, &key).await;
            }
            Ok(StatusCode::NO_CONTENT)
        }
        RevokeOutcome::AlreadyRevoked => Ok(StatusCode::NO_CONTENT),
        RevokeOutcome::NotFound => Err(ApiError::NotFound("API key")),
        RevokeOutcome::LastAdminKey => Err(ApiError::Conflict {
            code: "last_admin_key",
            message: "this is the tenant's last active admin key; create another admin key first"
                .into(),
        }),
    }
}

/// The audit row of a key being created or revoked by `caller`.
async fn audit_key_action(state: &AppState, caller: &TenantCaller, act: &str, key: &ApiKey) {
    state
        .audit
        .append_logged(AuditEntry {
            actor: Some(caller.key_id.to_string()),
            target: Some(key.id.to_string()),
            workspace_id: key.scope.workspace_id().cloned(),
            ..AuditEntry::new(&caller.tenant_id, act, Outcome::Success)
        })
        .await;
}

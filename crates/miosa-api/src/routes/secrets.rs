//! `/v1/secrets`: write-only secret values, readable metadata.
//!
//! No handler here (or anywhere) returns a value: responses carry metadata
//! only. An admin key manages every secret of the tenant; a workspace key
//! only its workspace's, and every end-user secret it sets is bound there.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use miosa_core::{Redacted, Secret, SecretId};
use miosa_secrets::{Actor, ListSecrets, SetSecret};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ListResponse;
use crate::{
    auth::TenantCaller,
    error::{ApiResult, ErrorBody},
    extract::{JsonBody, QueryParams},
    AppState,
};

/// Input for setting a secret. The scope's key goes in the field named
/// after it: `sandbox_id` (scope `sandbox`), `owner_user_id` (`user`),
/// `external_user_id` (`external_user`), `external_workspace_id`
/// (`external_workspace`), `workspace_id` (`workspace`); `tenant` takes none.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecretBody {
    /// 1–128 of `A-Z a-z 0-9 _ . -`; with the scope and its key, what a
    /// second call with the same name updates (a new version).
    pub name: String,
    /// The secret itself, 8 bytes to 64 KiB. Write-only: never returned.
    pub value: String,
    /// `sandbox`, `user`, `external_user`, `external_workspace`, `workspace` or `tenant`.
    pub scope: String,
    /// The environment variable that holds this secret's placeholder in sandboxes.
    pub expose_as_env: String,
    /// Hosts the value may be sent to: `api.openai.com`, `*.github.com`,
    /// with `:port` for a port other than 443 (`api.example.com:8443`).
    /// Omitted: any host for a new secret (the answer then carries a
    /// warning, or the tenant setting `require_allowed_hosts` refuses it),
    /// the current list for a new version; `[]`: any host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Where the proxy may substitute the value: `headers` (the default,
    /// including inside `Basic` credentials), `query` (path and query
    /// string), `body`. Opting in to `query` or `body` trusts the allowed
    /// hosts with the value there: a host that echoes, transforms or stores
    /// what it receives can hand it back. Omitted: `["headers"]` for a new
    /// secret, the current list for a new version.
    pub substitute_in: Option<Vec<String>>,
    pub sandbox_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    /// For scope `workspace`, the workspace; for `user`, `external_user`
    /// and `external_workspace`, the workspace the secret is bound to (it
    /// then resolves only in that workspace's sandboxes). A workspace key
    /// always binds to its own workspace.
    pub workspace_id: Option<String>,
}

/// A secret's metadata. There is no way to read a value back.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretView {
    #[schema(value_type = String)]
    pub id: SecretId,
    pub name: String,
    pub scope: &'static str,
    pub sandbox_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    /// The workspace the secret belongs to: the key of a `workspace`
    /// secret, a `sandbox` secret's sandbox's workspace, or an end-user
    /// secret's binding; `null` for tenant-level.
    pub workspace_id: Option<String>,
    pub expose_as_env: String,
    /// Empty: any host.
    pub allowed_hosts: Vec<String>,
    /// `headers`, `query`, `body`.
    pub substitute_in: Vec<&'static str>,
    /// 1, then +1 for each new value.
    pub version: u32,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<Secret> for SecretView {
    fn from(s: Secret) -> Self {
        use miosa_core::SecretScope as S;
        let key = |scope: S| s.scope_key.clone().filter(|_| s.scope == scope);
        Self {
            sandbox_id: key(S::Sandbox),
            owner_user_id: key(S::User),
            external_user_id: key(S::ExternalUser),
            external_workspace_id: key(S::ExternalWorkspace),
            workspace_id: s.workspace_id.as_ref().map(|w| w.to_string()),
            id: s.id,
            name: s.name,
            scope: s.scope.as_str(),
            expose_as_env: s.expose_as_env,
            allowed_hosts: s.allowed_hosts,
            substitute_in: s.substitute_in.names(),
            version: s.version,
            enabled: s.enabled,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A secret just set, and what the caller should know about it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SetSecretView {
    #[serde(flatten)]
    pub secret: SecretView,
    /// Things to read: a secret that may be sent to any host, or one
    /// substituted outside headers. Empty when there is nothing to say.
    pub warnings: Vec<String>,
}

fn actor(caller: &TenantCaller) -> Actor<'_> {
    Actor {
        key_id: caller.key_id.as_str(),
        workspace: caller.workspace(),
    }
}

/// Sets a secret: creates it (201) or adds a new version (200) when the
/// same name already exists in that scope, key and workspace. The response
/// never contains the value.
#[utoipa::path(post, operation_id = "set_secret", path = "/v1/secrets", tag = "secrets", security(("bearer" = [])),
    request_body = SetSecretBody,
    responses((status = 201, body = SetSecretView), (status = 200, body = SetSecretView),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn set(
    caller: TenantCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SetSecretBody>,
) -> ApiResult<(StatusCode, Json<SetSecretView>)> {
    let input = SetSecret {
        name: body.name,
        value: Redacted::new(body.value),
        scope: body.scope,
        expose_as_env: body.expose_as_env,
        allowed_hosts: body.allowed_hosts,
        substitute_in: body.substitute_in,
        sandbox_id: body.sandbox_id,
        owner_user_id: body.owner_user_id,
        external_user_id: body.external_user_id,
        external_workspace_id: body.external_workspace_id,
        workspace_id: body.workspace_id,
    };
    let done = state
        .secrets
        .set(&caller.tenant_id, &actor(&caller), input)
        .await?;
    let status = if done.created() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(SetSecretView {
            secret: done.secret.into(),
            warnings: done.warnings,
        }),
    ))
}

const LIST_PARAMS: &[&str] = &[
    "limit",
    "cursor",
    "scope",
    "name",
    "sandbox_id",
    "owner_user_id",
    "external_user_id",
    "external_workspace_id",
    "workspace_id",
];

/// Lists secrets (metadata), newest first. Filter by `scope`, `name`, one
/// scope key (which implies its scope) and `workspace_id` (the secrets
/// belonging to that workspace). A workspace key sees its workspace's only.
#[utoipa::path(get, operation_id = "list_secrets", path = "/v1/secrets", tag = "secrets", security(("bearer" = [])),
    params(crate::openapi::PageParams, crate::openapi::SecretListParams),
    responses((status = 200, body = ListResponse<SecretView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    caller: TenantCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<SecretView>>> {
    query.allow_only(LIST_PARAMS)?;
    let filters = ListSecrets {
        scope: query.get("scope")?,
        name: query.get("name")?,
        sandbox_id: query.get("sandbox_id")?,
        owner_user_id: query.get("owner_user_id")?,
        external_user_id: query.get("external_user_id")?,
        external_workspace_id: query.get("external_workspace_id")?,
        workspace_id: query.get("workspace_id")?,
    };
    let page = state
        .secrets
        .list(&caller.tenant_id, &actor(&caller), filters, &query.page()?)
        .await?;
    Ok(ListResponse::from_page(page, SecretView::from))
}

/// One secret's metadata.
#[utoipa::path(get, operation_id = "get_secret", path = "/v1/secrets/{id}", tag = "secrets", security(("bearer" = [])),
    params(("id" = String, Path, description = "Secret ID (`sec_…`)")),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)))]
pub async fn get(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SecretView>> {
    let secret = state
        .secrets
        .get(&caller.tenant_id, &actor(&caller), &id)
        .await?;
    Ok(Json(secret.into()))
}

/// Disables a secret: from the next proxied request on, its placeholder is
/// no longer replaced. Versions are kept; `enable` undoes it.
#[utoipa::path(post, operation_id = "disable_secret", path = "/v1/secrets/{id}/disable", tag = "secrets", security(("bearer" = [])),
    params(("id" = String, Path, description = "Secret ID (`sec_…`)")),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)))]
pub async fn disable(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SecretView>> {
    set_enabled(&state, &caller, &id, false).await
}

/// Enables a disabled secret again.
#[utoipa::path(post, operation_id = "enable_secret", path = "/v1/secrets/{id}/enable", tag = "secrets", security(("bearer" = [])),
    params(("id" = String, Path, description = "Secret ID (`sec_…`)")),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorBody)))]
pub async fn enable(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SecretView>> {
    set_enabled(&state, &caller, &id, true).await
}

async fn set_enabled(
    state: &AppState,
    caller: &TenantCaller,
    id: &str,
    enabled: bool,
) -> ApiResult<Json<SecretView>> {
    let s = state
        .secrets
        .set_enabled(&caller.tenant_id, &actor(caller), id, enabled)
        .await?;
    Ok(Json(s.into()))
}

/// Deletes a secret and every stored version of its value.
#[utoipa::path(delete, operation_id = "delete_secret", path = "/v1/secrets/{id}", tag = "secrets", security(("bearer" = [])),
    params(("id" = String, Path, description = "Secret ID (`sec_…`)")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .secrets
        .delete(&caller.tenant_id, &actor(&caller), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

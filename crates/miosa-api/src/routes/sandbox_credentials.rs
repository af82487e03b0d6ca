//! `GET /v1/sandboxes/{id}/credentials`: which secret fills each exposed
//! variable of a sandbox — the troubleshooting view. No values.

use axum::{
    extract::{Path, State},
    Json,
};
use serde::Serialize;

use super::sandboxes::workspace_hint;
use crate::{
    auth::TenantCaller,
    error::{ApiResult, ErrorBody},
    extract::QueryParams,
    AppState,
};

/// One exposed variable and the secret that resolves for it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// The environment variable in the sandbox.
    pub env: String,
    pub secret_id: String,
    pub name: String,
    /// The scope that won (first match in precedence order).
    pub scope: &'static str,
    /// What the sandbox sees instead of the value.
    pub placeholder: String,
    /// Hosts the value may be sent to; empty: any.
    pub allowed_hosts: Vec<String>,
}

/// The resolved credentials of a sandbox.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CredentialsView {
    pub data: Vec<CredentialView>,
}

/// For each exposed variable, the secret that resolves for this sandbox
/// (precedence: sandbox, user, external_user, external_workspace,
/// workspace, tenant). Values are never shown.
#[utoipa::path(get, operation_id = "get_sandbox_credentials", path = "/v1/sandboxes/{id}/credentials", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    responses((status = 200, body = CredentialsView), (status = 404, body = ErrorBody)))]
pub async fn credentials(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Json<CredentialsView>> {
    query.allow_only(&["workspace_id"])?;
    let sandbox = state
        .sandboxes()?
        .get(&(&caller).into(), &id, workspace_hint(&query)?.as_ref())
        .await?;
    let data = state
        .secrets
        .exposed(&sandbox)
        .await?
        .into_iter()
        .map(|e| CredentialView {
            env: e.env,
            secret_id: e.secret.id.to_string(),
            name: e.secret.name,
            scope: e.secret.scope.as_str(),
            placeholder: e.placeholder,
            allowed_hosts: e.secret.allowed_hosts,
        })
        .collect();
    Ok(Json(CredentialsView { data }))
}

//! `/v1/settings`: the tenant's security settings.

use axum::{extract::State, Json};
use miosa_core::TenantSettings;
use miosa_store::SettingsPatch;
use serde::{Deserialize, Serialize};

use crate::{
    auth::AdminCaller,
    error::{ApiResult, ErrorBody},
    extract::JsonBody,
    AppState,
};

/// The tenant's settings.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SettingsView {
    /// When false, `external_user` secrets cannot be created (403
    /// `end_user_credentials_disabled`) and existing ones stop resolving.
    pub allow_end_user_credentials: bool,
    /// When true, a secret without `allowed_hosts` (one the proxy would
    /// send to any host) is refused with 422. Default false.
    pub require_allowed_hosts: bool,
    /// When true, end-user secrets not bound to a workspace also resolve in
    /// sandboxes created through a workspace key. Default false: such a
    /// sandbox gets only the end-user secrets bound to its workspace, so a
    /// leaked workspace key cannot unlock other workspaces' end-users.
    pub workspace_keys_use_unbound_secrets: bool,
}

impl From<TenantSettings> for SettingsView {
    fn from(s: TenantSettings) -> Self {
        Self {
            allow_end_user_credentials: s.allow_end_user_credentials,
            require_allowed_hosts: s.require_allowed_hosts,
            workspace_keys_use_unbound_secrets: s.workspace_keys_use_unbound_secrets,
        }
    }
}

/// Changes to the settings; omitted fields stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    pub allow_end_user_credentials: Option<bool>,
    pub require_allowed_hosts: Option<bool>,
    pub workspace_keys_use_unbound_secrets: Option<bool>,
}

/// The tenant's settings.
#[utoipa::path(get, operation_id = "get_settings", path = "/v1/settings", tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = SettingsView), (status = 403, body = ErrorBody)))]
pub async fn get(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
) -> ApiResult<Json<SettingsView>> {
    Ok(Json(
        state.secrets.settings(&caller.tenant_id).await?.into(),
    ))
}

/// Updates the settings; takes effect on the next proxied request.
#[utoipa::path(patch, operation_id = "update_settings", path = "/v1/settings", tag = "settings", security(("bearer" = [])),
    request_body = UpdateSettings,
    responses((status = 200, body = SettingsView), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn update(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<UpdateSettings>,
) -> ApiResult<Json<SettingsView>> {
    let patch = SettingsPatch {
        allow_end_user_credentials: body.allow_end_user_credentials,
        require_allowed_hosts: body.require_allowed_hosts,
        workspace_keys_use_unbound_secrets: body.workspace_keys_use_unbound_secrets,
    };
    let s = state
        .secrets
        .update_settings(&caller.tenant_id, caller.key_id.as_str(), &patch)
        .await?;
    Ok(Json(s.into()))
}

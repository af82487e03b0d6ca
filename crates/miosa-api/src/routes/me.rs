//! Who am I?

use axum::Json;
use serde::Serialize;

use crate::auth::AnyCaller;

/// The identity behind the key that made this request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The key's tenant; `null` for the operator's root key.
    #[schema(value_type = Option<String>)]
    pub tenant_id: Option<miosa_core::TenantId>,
    /// The key's ID; `null` for the root key.
    #[schema(value_type = Option<String>)]
    pub key_id: Option<miosa_core::ApiKeyId>,
    /// `admin`, `workspace` or `root`.
    pub scope: &'static str,
    /// The workspace of a workspace-scoped key.
    #[schema(value_type = Option<String>)]
    pub workspace_id: Option<miosa_core::WorkspaceId>,
}

/// Describes the calling key.
#[utoipa::path(get, operation_id = "get_me", path = "/v1/me", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub async fn me(caller: AnyCaller) -> Json<Me> {
    Json(match caller {
        AnyCaller::Root => Me {
            tenant_id: None,
            key_id: None,
            scope: "root",
            workspace_id: None,
        },
        AnyCaller::Tenant(t) => Me {
            workspace_id: t.workspace().cloned(),
            scope: t.scope.name(),
            tenant_id: Some(t.tenant_id),
            key_id: Some(t.key_id),
        },
    })
}

//! `/v1/admin/tenants`: the operator creates and lists tenants.

use axum::{extract::State, http::StatusCode, Json};
use miosa_core::{issue_key, validate, KeyScope, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ListResponse;
use crate::{
    auth::RootCaller,
    error::{ApiResult, ErrorBody},
    extract::{JsonBody, QueryParams},
    AppState,
};

/// Name of the admin key every new tenant starts with.
pub const FIRST_KEY_NAME: &str = "initial admin key";

/// Input for creating a tenant.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Unique display name, 1–128 characters.
    pub name: String,
}

/// A tenant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantView {
    #[schema(value_type = String)]
    pub id: TenantId,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: t.created_at,
        }
    }
}

/// A new tenant with its first admin key, shown only in this response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: TenantView,
    /// The tenant's first admin key (`msk_live_…`). Store it now: it is never shown again.
    pub api_key: String,
}

/// Creates a tenant and its first admin key (root key only).
#[utoipa::path(post, operation_id = "create_tenant", path = "/v1/admin/tenants", tag = "admin", security(("bearer" = [])),
    request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    _: RootCaller,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<CreatedTenant>)> {
    let tenant = Tenant::new(validate::name("name", &input.name)?);
    let (key, plain) = issue_key(
        &tenant.id,
        FIRST_KEY_NAME.into(),
        KeyScope::Admin,
        &state.keys.pepper,
    )?;
    state.store.create_tenant(&tenant, &key).await?;
    tracing::info!(tenant = %tenant.id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: tenant.into(),
            api_key: plain.reveal().to_owned(),
        }),
    ))
}

/// Lists tenants, newest first (root key only).
#[utoipa::path(get, operation_id = "list_tenants", path = "/v1/admin/tenants", tag = "admin", security(("bearer" = [])),
    params(crate::openapi::PageParams),
    responses((status = 200, body = ListResponse<TenantView>), (status = 403, body = ErrorBody)))]
pub async fn list(
    _: RootCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<TenantView>>> {
    query.allow_only(&["limit", "cursor"])?;
    let page = state.store.list_tenants(&query.page()?).await?;
    Ok(ListResponse::from_page(page, TenantView::from))
}

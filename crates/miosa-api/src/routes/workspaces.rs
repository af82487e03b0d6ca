//! `/v1/workspaces`: a tenant's workspaces.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use miosa_core::{validate, Workspace, WorkspaceId};
use miosa_store::WorkspaceFilter;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ListResponse;
use crate::{
    auth::{AdminCaller, TenantCaller},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{JsonBody, QueryParams},
    AppState,
};

/// Input for creating a workspace.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Unique within the tenant, 1–128 characters.
    pub name: String,
}

/// A workspace.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkspaceView {
    #[schema(value_type = String)]
    pub id: WorkspaceId,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name,
            created_at: w.created_at,
        }
    }
}

/// Creates a workspace (tenant admin key).
#[utoipa::path(post, operation_id = "create_workspace", path = "/v1/workspaces", tag = "workspaces", security(("bearer" = [])),
    request_body = CreateWorkspace,
    responses((status = 201, body = WorkspaceView), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<WorkspaceView>)> {
    let ws = Workspace::new(caller.tenant_id, validate::name("name", &input.name)?);
    state.store.create_workspace(&ws).await?;
    Ok((StatusCode::CREATED, Json(ws.into())))
}

/// Lists workspaces, newest first. A workspace key sees only its own.
#[utoipa::path(get, operation_id = "list_workspaces", path = "/v1/workspaces", tag = "workspaces", security(("bearer" = [])),
    params(crate::openapi::PageParams),
    responses((status = 200, body = ListResponse<WorkspaceView>)))]
pub async fn list(
    caller: TenantCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<WorkspaceView>>> {
    query.allow_only(&["limit", "cursor"])?;
    let filter = WorkspaceFilter {
        only: caller.workspace().cloned(),
    };
    let page = state
        .store
        .list_workspaces(&caller.tenant_id, &filter, &query.page()?)
        .await?;
    Ok(ListResponse::from_page(page, WorkspaceView::from))
}

/// Gets one workspace.
#[utoipa::path(get, operation_id = "get_workspace", path = "/v1/workspaces/{id}", tag = "workspaces", security(("bearer" = [])),
    params(("id" = String, Path, description = "Workspace ID (`ws_…`)")),
    responses((status = 200, body = WorkspaceView), (status = 404, body = ErrorBody)))]
pub async fn get(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkspaceView>> {
    const NOT_FOUND: ApiError = ApiError::NotFound("workspace");
    let id = WorkspaceId::parse(&id).map_err(|_| NOT_FOUND)?;
    if !caller.can_access_workspace(&id) {
        return Err(NOT_FOUND);
    }
    let ws = state
        .store
        .get_workspace(&caller.tenant_id, &id)
        .await?
        .ok_or(NOT_FOUND)?;
    Ok(Json(ws.into()))
}

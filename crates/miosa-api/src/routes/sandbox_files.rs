//! `/v1/sandboxes/{id}/files`: list, read, write, remove and mkdir inside a
//! sandbox. Paths are absolute or relative to `/home/user`; the agent works
//! inside the sandbox's own mount namespace, so no path reaches the host.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures_util::TryStreamExt;
use miosa_agent::FileBody;
use serde::{Deserialize, Serialize};

use super::{
    sandboxes::{agent_of, run_as},
    ListResponse,
};
use crate::{
    auth::TenantCaller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{JsonBody, QueryParams},
    AppState,
};

/// Largest file accepted by one `PUT …/files/content`.
pub const MAX_UPLOAD_BYTES: usize = 256 * 1024 * 1024;

/// One directory entry.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FileEntryView {
    pub name: String,
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// Octal permission bits, e.g. `0644`.
    pub mode: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub modified_at: time::OffsetDateTime,
}

fn path_param(query: &QueryParams) -> Result<String, ApiError> {
    let path = query
        .get("path")?
        .ok_or_else(|| ApiError::invalid("path", "is required"))?;
    if path.is_empty() || path.contains('\0') || path.len() > 4096 {
        return Err(ApiError::invalid(
            "path",
            "must be 1 to 4096 bytes without NUL",
        ));
    }
    Ok(path)
}

/// Lists a directory (entries are not followed through symlinks).
#[utoipa::path(get, operation_id = "list_files", path = "/v1/sandboxes/{id}/files", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"),
           ("path" = String, Query, description = "Directory path"), crate::openapi::WorkspaceHint),
    responses((status = 200, body = ListResponse<FileEntryView>), (status = 404, body = ErrorBody)))]
pub async fn list(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<FileEntryView>>> {
    query.allow_only(&["path", "workspace_id"])?;
    let path = path_param(&query)?;
    let agent = agent_of(&state, &caller, &id, &query).await?;
    let entries = agent.list_dir(&path).await?;
    Ok(Json(ListResponse {
        data: entries
            .into_iter()
            .map(|e| FileEntryView {
                name: e.name,
                path: e.path,
                kind: e.file_type.as_str(),
                size: e.size,
                mode: e.mode,
                modified_at: e.modified_at,
            })
            .collect(),
        next_cursor: None,
    }))
}

/// Downloads a file's raw bytes.
#[utoipa::path(get, operation_id = "read_file", path = "/v1/sandboxes/{id}/files/content", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"),
           ("path" = String, Query, description = "File path"), crate::openapi::WorkspaceHint),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream"),
              (status = 404, body = ErrorBody)))]
pub async fn read(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.allow_only(&["path", "workspace_id"])?;
    let path = path_param(&query)?;
    let agent = agent_of(&state, &caller, &id, &query).await?;
    let stream = agent.read_file(&path).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Writes a file from the raw request body, creating parent directories.
#[utoipa::path(put, operation_id = "write_file", path = "/v1/sandboxes/{id}/files/content", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"),
           ("path" = String, Query, description = "File path"),
           ("user" = Option<String>, Query, description = "Owner: `user` (default) or `root`"),
           crate::openapi::WorkspaceHint),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn write(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
    body: Body,
) -> ApiResult<StatusCode> {
    query.allow_only(&["path", "user", "workspace_id"])?;
    let path = path_param(&query)?;
    let user = run_as(query.get("user")?.as_deref())?;
    let agent = agent_of(&state, &caller, &id, &query).await?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    agent
        .write_file(&path, FileBody::from_stream(stream), user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a file, symlink or directory (recursively).
#[utoipa::path(delete, operation_id = "remove_file", path = "/v1/sandboxes/{id}/files", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"),
           ("path" = String, Query, description = "Path to remove"), crate::openapi::WorkspaceHint),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<StatusCode> {
    query.allow_only(&["path", "workspace_id"])?;
    let path = path_param(&query)?;
    let agent = agent_of(&state, &caller, &id, &query).await?;
    agent.remove(&path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A directory to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mkdir {
    pub path: String,
    /// Owner: `user` (default) or `root`.
    pub user: Option<String>,
}

/// Creates a directory and its parents.
#[utoipa::path(post, operation_id = "make_directory", path = "/v1/sandboxes/{id}/files/mkdir", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    request_body = Mkdir,
    responses((status = 204), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn mkdir(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
    JsonBody(input): JsonBody<Mkdir>,
) -> ApiResult<StatusCode> {
    query.allow_only(&["workspace_id"])?;
    if input.path.is_empty() || input.path.contains('\0') {
        return Err(ApiError::invalid(
            "path",
            "must be a non-empty path without NUL",
        ));
    }
    let user = run_as(input.user.as_deref())?;
    let agent = agent_of(&state, &caller, &id, &query).await?;
    agent.mkdir(&input.path, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

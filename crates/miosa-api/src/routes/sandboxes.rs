//! `/v1/sandboxes`: create, find, change, pause, resume and delete sandboxes.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use miosa_core::{Sandbox, SandboxStatus, WorkspaceId};
use miosa_sandboxes::{Access, CreateRequest, UpdateRequest};
use miosa_store::SandboxFilter;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ListResponse;
use crate::{
    auth::TenantCaller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{JsonBody, QueryParams},
    AppState,
};

impl From<&TenantCaller> for Access {
    fn from(c: &TenantCaller) -> Self {
        Access {
            tenant: c.tenant_id.clone(),
            workspace: c.workspace().cloned(),
            actor: c.key_id.to_string(),
        }
    }
}

/// Input for creating a sandbox. Every field is optional.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// Slug unique among the workspace's live sandboxes: `[a-z0-9-]{1,63}`.
    pub name: Option<String>,
    /// `default` (the host's system directories).
    pub template: Option<String>,
    /// Implied by a workspace key; an admin key may name one or none.
    #[schema(value_type = Option<String>)]
    pub workspace_id: Option<WorkspaceId>,
    /// A Miosa-native user the sandbox belongs to: selects `user`-scoped
    /// secrets. Stamped at create, never changed.
    pub owner_user_id: Option<String>,
    /// Your end-user's ID. Stamped at create, never changed.
    pub external_user_id: Option<String>,
    /// Your end-user's workspace/organisation ID.
    pub external_workspace_id: Option<String>,
    /// Your project ID.
    pub external_project_id: Option<String>,
    /// Up to 50 string key/values, filterable with `metadata[KEY]=VALUE`.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Environment variables for every command.
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds until the sandbox is destroyed or paused (default 300).
    pub timeout_seconds: Option<i64>,
    /// `destroy` (default) or `pause`.
    pub on_timeout: Option<String>,
    /// vCPUs (default 1.0).
    pub cpu: Option<f64>,
    /// Memory limit in MiB (default 512).
    pub memory_mb: Option<i64>,
    /// Size of the sandbox's disk in MiB: its writable files, `/run/miosa`
    /// and its agent's log. Writing past it fails with `ENOSPC` inside.
    /// Default and maximum are the operator's (`sandbox_disk_mb`,
    /// `sandbox_max_disk_mb`; 2048 and 20480 unless configured).
    pub disk_mb: Option<i64>,
}

/// A sandbox.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SandboxView {
    #[schema(value_type = String)]
    pub id: miosa_core::SandboxId,
    pub name: Option<String>,
    /// `creating`, `running`, `paused`, `error`.
    pub status: &'static str,
    pub template: String,
    #[schema(value_type = Option<String>)]
    pub workspace_id: Option<WorkspaceId>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub cpu: f64,
    pub memory_mb: u32,
    /// Disk size in MiB (`null` for sandboxes made before disks were limited).
    pub disk_mb: Option<u32>,
    pub timeout_seconds: u32,
    pub on_timeout: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When the reaper acts (destroy, or pause with `on_timeout: pause`).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// The API key that created the sandbox (also in its egress audit rows).
    #[schema(value_type = Option<String>)]
    pub created_by_key_id: Option<miosa_core::ApiKeyId>,
}

impl From<Sandbox> for SandboxView {
    fn from(s: Sandbox) -> Self {
        Self {
            id: s.id,
            name: s.name,
            status: s.status.as_str(),
            template: s.template,
            workspace_id: s.workspace_id,
            owner_user_id: s.labels.owner_user_id,
            external_user_id: s.labels.external_user_id,
            external_workspace_id: s.labels.external_workspace_id,
            external_project_id: s.labels.external_project_id,
            metadata: s.metadata,
            cpu: s.cpu,
            memory_mb: s.memory_mb,
            disk_mb: s.disk_mb,
            timeout_seconds: s.timeout_seconds,
            on_timeout: s.on_timeout.as_str(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            created_by_key_id: s.created_by_key_id,
        }
    }
}

/// The optional `?workspace_id=` that scopes a name lookup for admin keys.
pub fn workspace_hint(query: &QueryParams) -> Result<Option<WorkspaceId>, ApiError> {
    query
        .get("workspace_id")?
        .map(|w| {
            WorkspaceId::parse(&w)
                .map_err(|_| ApiError::invalid("workspace_id", "must be a workspace ID (`ws_…`)"))
        })
        .transpose()
}

/// The account a command or file operation runs as: `user` (default) or `root`.
pub fn run_as(value: Option<&str>) -> Result<miosa_agent::RunAs, ApiError> {
    match value {
        None | Some("user") => Ok(miosa_agent::RunAs::User),
        Some("root") => Ok(miosa_agent::RunAs::Root),
        Some(_) => Err(ApiError::invalid("user", "must be `user` or `root`")),
    }
}

/// The agent refuses to start a command (exec or PTY) with `invalid` when a
/// size, the working directory or the program is unusable; name the request
/// parameter that caused it. `program_field` is the parameter that named the
/// program (`argv`, `command`, `cmd`).
pub fn start_refusal(e: miosa_agent::AgentError, program_field: &'static str) -> ApiError {
    match e {
        miosa_agent::AgentError::Invalid(m) => {
            let field = ["cols", "rows", "cwd"]
                .into_iter()
                .find(|f| m.starts_with(f))
                .unwrap_or(if m.starts_with("cannot start in") {
                    "cwd"
                } else {
                    program_field
                });
            ApiError::invalid(field, m)
        }
        other => other.into(),
    }
}

/// The agent of a running sandbox the caller may use (404/409 otherwise).
pub async fn agent_of(
    state: &AppState,
    caller: &TenantCaller,
    id: &str,
    query: &QueryParams,
) -> ApiResult<miosa_agent::AgentClient> {
    Ok(sandbox_and_agent(state, caller, id, query).await?.1)
}

async fn sandbox_and_agent(
    state: &AppState,
    caller: &TenantCaller,
    id: &str,
    query: &QueryParams,
) -> ApiResult<(Sandbox, miosa_agent::AgentClient)> {
    Ok(state
        .sandboxes()?
        .agent(&caller.into(), id, workspace_hint(query)?.as_ref())
        .await?)
}

/// The sandbox's agent plus the variables every command there gets: each
/// exposed secret's placeholder (never its value).
pub async fn agent_with_credentials(
    state: &AppState,
    caller: &TenantCaller,
    id: &str,
    query: &QueryParams,
) -> ApiResult<(miosa_agent::AgentClient, BTreeMap<String, String>)> {
    let (sandbox, agent) = sandbox_and_agent(state, caller, id, query).await?;
    let env = state.secrets.env_for(&sandbox).await?;
    Ok((agent, env))
}

/// Creates a sandbox and answers once it is ready to exec.
#[utoipa::path(post, operation_id = "create_sandbox", path = "/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])),
    request_body = CreateSandbox,
    responses((status = 201, body = SandboxView), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    caller: TenantCaller,
    State(state): State<AppState>,
    JsonBody(input): JsonBody<CreateSandbox>,
) -> ApiResult<(StatusCode, Json<SandboxView>)> {
    let req = CreateRequest {
        name: input.name,
        template: input.template,
        workspace_id: input.workspace_id,
        owner_user_id: input.owner_user_id,
        external_user_id: input.external_user_id,
        external_workspace_id: input.external_workspace_id,
        external_project_id: input.external_project_id,
        metadata: input.metadata,
        env: input.env,
        timeout_seconds: input.timeout_seconds,
        on_timeout: input.on_timeout,
        cpu: input.cpu,
        memory_mb: input.memory_mb,
        disk_mb: input.disk_mb,
    };
    let s = state.sandboxes()?.create(&(&caller).into(), req).await?;
    Ok((StatusCode::CREATED, Json(s.into())))
}

const LIST_PARAMS: &[&str] = &[
    "limit",
    "cursor",
    "workspace_id",
    "external_user_id",
    "external_workspace_id",
    "external_project_id",
    "status",
];

/// Lists sandboxes, newest first. Filters: `external_user_id`,
/// `external_workspace_id`, `external_project_id`, `status`, `workspace_id`,
/// and `metadata[KEY]=VALUE` (repeatable); all must match.
#[utoipa::path(get, operation_id = "list_sandboxes", path = "/v1/sandboxes", tag = "sandboxes", security(("bearer" = [])),
    params(crate::openapi::PageParams, crate::openapi::SandboxListParams),
    responses((status = 200, body = ListResponse<SandboxView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    caller: TenantCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<SandboxView>>> {
    let mut filter = SandboxFilter::default();
    for (k, v) in query.pairs() {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|r| r.strip_suffix(']'))
        {
            filter.metadata.push((key.to_owned(), v.clone()));
        } else if !LIST_PARAMS.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                k.clone(),
                format!(
                    "is not a parameter of this endpoint (known: {}, metadata[KEY])",
                    LIST_PARAMS.join(", ")
                ),
            ));
        }
    }
    filter.workspace_id = workspace_hint(&query)?;
    filter.external_user_id = query.get("external_user_id")?;
    filter.external_workspace_id = query.get("external_workspace_id")?;
    filter.external_project_id = query.get("external_project_id")?;
    filter.status = query
        .get("status")?
        .map(|s| {
            SandboxStatus::parse(&s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "must be one of creating, running, paused, error, destroyed",
                )
            })
        })
        .transpose()?;
    let page = state
        .sandboxes()?
        .list(&(&caller).into(), filter, &query.page()?)
        .await?;
    Ok(ListResponse::from_page(page, SandboxView::from))
}

/// Gets a sandbox by ID or by name.
#[utoipa::path(get, operation_id = "get_sandbox", path = "/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID (`sbx_…`) or name"),
           crate::openapi::WorkspaceHint),
    responses((status = 200, body = SandboxView), (status = 404, body = ErrorBody)))]
pub async fn get(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Json<SandboxView>> {
    query.allow_only(&["workspace_id"])?;
    let s = state
        .sandboxes()?
        .get(&(&caller).into(), &id, workspace_hint(&query)?.as_ref())
        .await?;
    Ok(Json(s.into()))
}

/// Changes to a sandbox. Attribution (`external_*`, `owner_user_id`) and
/// resources are fixed at create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSandbox {
    /// A new name, or `null` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// Replaces the whole metadata map.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Resets the deadline to this many seconds from now.
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    #[schema(ignore)]
    external_user_id: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(ignore)]
    external_workspace_id: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(ignore)]
    external_project_id: Option<serde_json::Value>,
    #[serde(default)]
    #[schema(ignore)]
    owner_user_id: Option<serde_json::Value>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Renames a sandbox, replaces its metadata or resets its timeout.
#[utoipa::path(patch, operation_id = "update_sandbox", path = "/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    request_body = UpdateSandbox,
    responses((status = 200, body = SandboxView), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "`immutable_field` for attribution labels")))]
pub async fn update(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
    JsonBody(input): JsonBody<UpdateSandbox>,
) -> ApiResult<Json<SandboxView>> {
    query.allow_only(&["workspace_id"])?;
    for (field, present) in [
        ("external_user_id", input.external_user_id.is_some()),
        (
            "external_workspace_id",
            input.external_workspace_id.is_some(),
        ),
        ("external_project_id", input.external_project_id.is_some()),
        ("owner_user_id", input.owner_user_id.is_some()),
    ] {
        if present {
            return Err(ApiError::Invalid {
                code: "immutable_field",
                field: field.into(),
                message: "is stamped at create and cannot change".into(),
            });
        }
    }
    let req = UpdateRequest {
        name: input.name,
        metadata: input.metadata,
        timeout_seconds: input.timeout_seconds,
    };
    let s = state
        .sandboxes()?
        .update(
            &(&caller).into(),
            &id,
            workspace_hint(&query)?.as_ref(),
            req,
        )
        .await?;
    Ok(Json(s.into()))
}

/// Destroys a sandbox: its processes, mounts, cgroups and files are removed.
#[utoipa::path(delete, operation_id = "destroy_sandbox", path = "/v1/sandboxes/{id}", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn destroy(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<StatusCode> {
    query.allow_only(&["workspace_id"])?;
    state
        .sandboxes()?
        .destroy(&(&caller).into(), &id, workspace_hint(&query)?.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a running sandbox (cgroup freezer). Exec answers 409 `sandbox_paused` until resumed.
#[utoipa::path(post, operation_id = "pause_sandbox", path = "/v1/sandboxes/{id}/pause", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    responses((status = 200, body = SandboxView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Json<SandboxView>> {
    query.allow_only(&["workspace_id"])?;
    let s = state
        .sandboxes()?
        .pause(&(&caller).into(), &id, workspace_hint(&query)?.as_ref())
        .await?;
    Ok(Json(s.into()))
}

/// Resumes a paused sandbox and restarts its timeout.
#[utoipa::path(post, operation_id = "resume_sandbox", path = "/v1/sandboxes/{id}/resume", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    responses((status = 200, body = SandboxView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Json<SandboxView>> {
    query.allow_only(&["workspace_id"])?;
    let s = state
        .sandboxes()?
        .resume(&(&caller).into(), &id, workspace_hint(&query)?.as_ref())
        .await?;
    Ok(Json(s.into()))
}

/// Input for resetting a sandbox's deadline.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeout {
    /// Seconds from now.
    pub timeout_seconds: i64,
}

/// Resets the deadline to `timeout_seconds` from now.
#[utoipa::path(post, operation_id = "set_sandbox_timeout", path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    request_body = SetTimeout,
    responses((status = 200, body = SandboxView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_timeout(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
    JsonBody(input): JsonBody<SetTimeout>,
) -> ApiResult<Json<SandboxView>> {
    query.allow_only(&["workspace_id"])?;
    let s = state
        .sandboxes()?
        .set_timeout(
            &(&caller).into(),
            &id,
            workspace_hint(&query)?.as_ref(),
            input.timeout_seconds,
        )
        .await?;
    Ok(Json(s.into()))
}

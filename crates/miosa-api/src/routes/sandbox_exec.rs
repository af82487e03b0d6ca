//! `/v1/sandboxes/{id}/exec` and `/processes`: run commands inside a sandbox.

use std::{collections::BTreeMap, convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    http::{header::ACCEPT, HeaderMap},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures_util::StreamExt;
use miosa_agent::{ExecEvent, ExecRequest, Signal};
use serde::{Deserialize, Serialize};

use super::{
    sandboxes::{agent_of, agent_with_credentials, run_as, start_refusal},
    ListResponse,
};
use crate::{
    auth::TenantCaller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{JsonBody, QueryParams},
    AppState,
};

/// Largest output kept per stream; the rest is drained and `truncated` set.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
const DEFAULT_TIMEOUT_SECONDS: u64 = 60;

/// A command to run. Give exactly one of `command` (run by `/bin/sh -c`) or `argv`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    pub command: Option<String>,
    pub argv: Option<Vec<String>>,
    /// Working directory (default: the user's home).
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: Option<BTreeMap<String, String>>,
    /// Text fed to standard input.
    pub stdin: Option<String>,
    /// `user` (uid 1000, default) or `root`.
    pub user: Option<String>,
    /// Killed after this many seconds (default 60); not applied to background commands unless given.
    pub timeout_seconds: Option<u64>,
    /// Start and return `{"pid"}` at once.
    #[serde(default)]
    pub background: bool,
}

/// The result of a finished command.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecResult {
    /// `null` when killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub timed_out: bool,
    /// True when stdout or stderr exceeded 1 MiB and was cut.
    pub truncated: bool,
}

/// A background command's process ID.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Started {
    pub pid: u32,
}

/// The request, whether it runs in the background, and which parameter
/// named the program (for refusals).
fn to_request(input: Exec) -> Result<(ExecRequest, bool, &'static str), ApiError> {
    let program_field = if input.command.is_some() {
        "command"
    } else {
        "argv"
    };
    let argv = match (input.command, input.argv) {
        (Some(c), None) => vec!["/bin/sh".into(), "-c".into(), c],
        (None, Some(a)) if !a.is_empty() => a,
        (None, Some(_)) => return Err(ApiError::invalid("argv", "must not be empty")),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "command",
                "give either `command` or `argv`, not both",
            ))
        }
        (None, None) => return Err(ApiError::invalid("command", "give `command` or `argv`")),
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("argv", "must not contain NUL"));
    }
    let user = run_as(input.user.as_deref())?;
    let env = miosa_core::sandbox::env("env", &input.env.unwrap_or_default())?;
    let timeout = match input.timeout_seconds {
        Some(0) => return Err(ApiError::invalid("timeout_seconds", "must be at least 1")),
        Some(t) if t > MAX_TIMEOUT_SECONDS => {
            return Err(ApiError::invalid(
                "timeout_seconds",
                format!("must be at most {MAX_TIMEOUT_SECONDS}"),
            ))
        }
        Some(t) => Some(Duration::from_secs(t)),
        None if input.background => None,
        None => Some(Duration::from_secs(DEFAULT_TIMEOUT_SECONDS)),
    };
    Ok((
        ExecRequest {
            argv,
            cwd: input.cwd,
            env,
            stdin: input.stdin.map(String::into_bytes),
            user,
            timeout,
            max_output_bytes: MAX_OUTPUT_BYTES,
        },
        input.background,
        program_field,
    ))
}

/// Runs a command. With `Accept: text/event-stream` the output streams as
/// server-sent events `stdout`, `stderr` (`{"data": "..."}`) and `exit`.
#[utoipa::path(post, operation_id = "exec_command", path = "/v1/sandboxes/{id}/exec", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    request_body = Exec,
    responses((status = 200, body = ExecResult, description = "finished (or `{\"pid\"}` with `background`)"),
              (status = 409, body = ErrorBody, description = "`sandbox_paused` or `sandbox_not_running`"),
              (status = 422, body = ErrorBody)))]
pub async fn exec(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
    headers: HeaderMap,
    JsonBody(input): JsonBody<Exec>,
) -> ApiResult<Response> {
    query.allow_only(&["workspace_id"])?;
    let (mut req, background, program_field) = to_request(input)?;
    let refused = |e| start_refusal(e, program_field);
    let (agent, credentials) = agent_with_credentials(&state, &caller, &id, &query).await?;
    // Placeholders first; a variable the request sets itself wins.
    for (k, v) in credentials {
        req.env.entry(k).or_insert(v);
    }
    if background {
        let pid = agent.spawn(&req).await.map_err(refused)?;
        return Ok(Json(Started { pid }).into_response());
    }
    let wants_stream = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        let events = agent.exec_stream(&req).await.map_err(refused)?;
        let sse = events.filter_map(|e| async move {
            let event = match e {
                Ok(ExecEvent::Stdout(b)) => Event::default()
                    .event("stdout")
                    .json_data(serde_json::json!({ "data": String::from_utf8_lossy(&b) })),
                Ok(ExecEvent::Stderr(b)) => Event::default()
                    .event("stderr")
                    .json_data(serde_json::json!({ "data": String::from_utf8_lossy(&b) })),
                Ok(ExecEvent::Exit(info)) => Event::default().event("exit").json_data(info),
                Ok(ExecEvent::Start { pid }) => Event::default()
                    .event("start")
                    .json_data(serde_json::json!({ "pid": pid })),
                Err(e) => {
                    tracing::warn!(error = %e, "exec stream broke");
                    Event::default().event("error").json_data(
                        serde_json::json!({ "message": "the sandbox stopped answering" }),
                    )
                }
            };
            event.ok().map(Ok::<_, Infallible>)
        });
        return Ok(Sse::new(sse)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let out = agent.exec(&req).await.map_err(refused)?;
    Ok(Json(ExecResult {
        exit_code: out.exit_code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        duration_ms: out.duration_ms,
        timed_out: out.timed_out,
        truncated: out.stdout_truncated || out.stderr_truncated,
    })
    .into_response())
}

/// A process started through the API and still running.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProcessView {
    pub pid: u32,
    pub argv: Vec<String>,
    /// `user` or `root`.
    pub user: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: time::OffsetDateTime,
    pub background: bool,
}

/// Lists processes started through the API that are still running.
#[utoipa::path(get, operation_id = "list_processes", path = "/v1/sandboxes/{id}/processes", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), crate::openapi::WorkspaceHint),
    responses((status = 200, body = ListResponse<ProcessView>), (status = 409, body = ErrorBody)))]
pub async fn processes(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<ProcessView>>> {
    query.allow_only(&["workspace_id"])?;
    let agent = agent_of(&state, &caller, &id, &query).await?;
    let list = agent.processes().await?;
    Ok(Json(ListResponse {
        data: list
            .into_iter()
            .map(|p| ProcessView {
                pid: p.pid,
                argv: p.argv,
                user: p.user.as_str(),
                started_at: p.started_at,
                background: p.background,
            })
            .collect(),
        next_cursor: None,
    }))
}

/// Which signal to send.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    /// `SIGKILL` (default), `SIGTERM`, `SIGINT` or `SIGHUP`.
    pub signal: Option<String>,
}

/// Sends a signal to a process in the sandbox.
#[utoipa::path(post, operation_id = "kill_process", path = "/v1/sandboxes/{id}/processes/{pid}/kill", tag = "sandboxes",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"),
           ("pid" = u32, Path, description = "Process ID inside the sandbox"),
           crate::openapi::WorkspaceHint),
    request_body = Kill,
    responses((status = 200, description = "`{\"killed\": true}`"), (status = 404, body = ErrorBody)))]
pub async fn kill(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
    query: QueryParams,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    query.allow_only(&["workspace_id"])?;
    let input: Kill = if body.iter().all(u8::is_ascii_whitespace) {
        Kill::default()
    } else {
        crate::extract::parse_json(&body)?
    };
    let pid: u32 = pid.parse().map_err(|_| ApiError::NotFound("process"))?;
    let signal = match input.signal.as_deref() {
        None | Some("SIGKILL") => Signal::KILL,
        Some("SIGTERM") => Signal::TERM,
        Some("SIGINT") => Signal::INT,
        Some("SIGHUP") => Signal::HUP,
        Some(_) => {
            return Err(ApiError::invalid(
                "signal",
                "must be SIGKILL, SIGTERM, SIGINT or SIGHUP",
            ))
        }
    };
    let agent = agent_of(&state, &caller, &id, &query).await?;
    agent.kill(pid, signal).await?;
    Ok(Json(serde_json::json!({ "killed": true })))
}

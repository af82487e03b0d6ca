//! HTTP routes: extract and validate, call the domain module, map the result.

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::Body,
    extract::{
        rejection::{JsonRejection, PathRejection, QueryRejection},
        ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade},
        DefaultBodyLimit, Path, Query, State as AxState,
    },
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bytes::BytesMut;
use futures_util::stream;
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::{exec, files, pty, State};
use crate::{
    protocol::{ErrorBody, ErrorDetail},
    AgentError, ExecEvent, ExecRequest, FileEntry, KillRequest, MkdirRequest, PathQuery,
    ProcessInfo, PtyRequest, Spawned, DEFAULT_EXEC_TIMEOUT,
};

/// Exec bodies carry stdin inline (base64).
const EXEC_BODY_LIMIT: usize = 64 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

type AppState = AxState<Arc<State>>;
type ApiResult<T> = Result<T, AgentError>;

pub(super) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/exec", post(exec_stream))
        .route("/exec/background", post(exec_background))
        .layer(DefaultBodyLimit::max(EXEC_BODY_LIMIT))
        .route("/processes", get(list_processes))
        .route("/processes/{pid}/kill", post(kill_process))
        .route("/files", get(list_dir).delete(remove))
        .route(
            "/files/content",
            get(read_file)
                .put(write_file)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/files/mkdir", post(mkdir))
        .route("/pty", get(pty_session))
        .with_state(state)
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) | Self::Remote(_) | Self::Protocol(_) | Self::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.message().to_owned(),
            },
        };
        (status, Json(body)).into_response()
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    body.map(|Json(v)| v)
        .map_err(|e| AgentError::Invalid(e.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| AgentError::Invalid(e.body_text()))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn exec_stream(
    AxState(state): AppState,
    body: Result<Json<ExecRequest>, JsonRejection>,
) -> ApiResult<Response> {
    let mut req = json_body(body)?;
    let started = exec::start(&state.exec, &state.processes, &req, true, false)?;
    let (tx, rx) = exec::event_channel();
    // Capacity is > 0 and nothing else has sent yet.
    let _ = tx.try_send(exec::event_line(ExecEvent::Start { pid: started.pid() }));
    let timeout = req.timeout.unwrap_or(DEFAULT_EXEC_TIMEOUT);
    tokio::spawn(exec::supervise(
        started,
        req.stdin.take(),
        Some(tx),
        Some(timeout),
        req.max_output_bytes,
    ));
    let lines = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

async fn exec_background(
    AxState(state): AppState,
    body: Result<Json<ExecRequest>, JsonRejection>,
) -> ApiResult<Json<Spawned>> {
    let mut req = json_body(body)?;
    let started = exec::start(&state.exec, &state.processes, &req, false, true)?;
    let pid = started.pid();
    tokio::spawn(exec::supervise(
        started,
        req.stdin.take(),
        None,
        req.timeout,
        0,
    ));
    Ok(Json(Spawned { pid }))
}

/// Starts the program before answering, so a bad request or a program that
/// cannot start is an HTTP error rather than a WebSocket that closes at once.
async fn pty_session(
    AxState(state): AppState,
    q: Result<Query<PtyRequest>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let req = query(q)?;
    let ws =
        ws.map_err(|e| AgentError::Invalid(format!("not a WebSocket upgrade: {}", e.body_text())))?;
    let session = pty::start(&state.exec, &state.processes, &req)?;
    Ok(ws
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "terminal upgrade failed"))
        .on_upgrade(move |socket| session.serve(socket)))
}

async fn list_processes(AxState(state): AppState) -> Json<Vec<ProcessInfo>> {
    Json(state.processes.list())
}

async fn kill_process(
    AxState(state): AppState,
    pid: Result<Path<u32>, PathRejection>,
    body: Result<Json<KillRequest>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(pid) = pid.map_err(|e| AgentError::Invalid(e.body_text()))?;
    // An empty body means the default signal.
    let req = match body {
        Err(JsonRejection::MissingJsonContentType(_)) => KillRequest::default(),
        other => json_body(other)?,
    };
    state.processes.kill(pid, req.signal)?;
    Ok(Json(json!({"killed": true})))
}

async fn list_dir(
    AxState(state): AppState,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<FileEntry>>> {
    let path = state.paths.resolve(&query(q)?.path)?;
    Ok(Json(files::blocking(move || files::list(&path)).await?))
}

async fn read_file(
    AxState(state): AppState,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let path = state.paths.resolve(&query(q)?.path)?;
    let (file, len) = files::open_read(&path).await?;
    let chunks = stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

async fn write_file(
    AxState(state): AppState,
    q: Result<Query<PathQuery>, QueryRejection>,
    body: Body,
) -> ApiResult<Json<FileEntry>> {
    let q = query(q)?;
    let path = state.paths.resolve(&q.path)?;
    let chunks = body.into_data_stream();
    Ok(Json(files::write(&path, chunks, q.user.into()).await?))
}

async fn remove(
    AxState(state): AppState,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let path = state.paths.resolve(&query(q)?.path)?;
    if path.parent().is_none() || state.paths.contains_protected(&path) {
        return Err(AgentError::Forbidden(format!(
            "refusing to remove {}",
            path.display()
        )));
    }
    files::blocking(move || files::remove(&path)).await?;
    Ok(Json(json!({"removed": true})))
}

async fn mkdir(
    AxState(state): AppState,
    body: Result<Json<MkdirRequest>, JsonRejection>,
) -> ApiResult<Json<FileEntry>> {
    let req = json_body(body)?;
    let path = state.paths.resolve(&req.path)?;
    let owner = req.user.into();
    let entry = files::blocking(move || {
        files::mkdir_all(&path, owner)?;
        files::stat(&path)
    })
    .await?;
    Ok(Json(entry))
}

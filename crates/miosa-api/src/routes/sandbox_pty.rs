//! `/v1/sandboxes/{id}/pty`: an interactive terminal in a sandbox, as a
//! WebSocket bridged to the sandbox agent's own terminal WebSocket.

use std::time::Duration;

use axum::{
    extract::{
        ws::{self, rejection::WebSocketUpgradeRejection, WebSocket, WebSocketUpgrade},
        Path, State,
    },
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures_util::{SinkExt, StreamExt};
use miosa_agent::{
    protocol::{valid_dimension, DEFAULT_PTY_COLS, DEFAULT_PTY_ROWS, MAX_PTY_DIMENSION},
    tokio_tungstenite::{
        tungstenite::{self, protocol::frame::coding::CloseCode},
        WebSocketStream,
    },
    PtyRequest,
};
use tokio::net::UnixStream;

use super::sandboxes::{agent_with_credentials, run_as, start_refusal};
use crate::{
    auth::TenantCaller,
    error::{ApiError, ApiResult, ErrorBody, ErrorDetail},
    extract::QueryParams,
    request_id, AppState,
};

/// How long the browser may take to answer the closing handshake once the
/// session ended.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What to run on the terminal.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PtyParams {
    /// Width in columns, 1–1000 (default 80).
    #[param(minimum = 1, maximum = 1000)]
    cols: Option<u16>,
    /// Height in rows, 1–1000 (default 24).
    #[param(minimum = 1, maximum = 1000)]
    rows: Option<u16>,
    /// `user` (uid 1000, default) or `root`.
    user: Option<String>,
    /// Working directory (default: the user's home).
    cwd: Option<String>,
    /// Command line run by `/bin/sh -c` (default: a login shell, `/bin/bash -l`).
    cmd: Option<String>,
}

fn dimension(query: &QueryParams, name: &str, default: u16) -> ApiResult<u16> {
    let Some(raw) = query.get(name)? else {
        return Ok(default);
    };
    raw.trim()
        .parse::<u16>()
        .ok()
        .filter(|v| valid_dimension(*v))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                format!("must be an integer between 1 and {MAX_PTY_DIMENSION}"),
            )
        })
}

fn text(query: &QueryParams, name: &str) -> ApiResult<Option<String>> {
    match query.get(name)? {
        Some(v) if v.is_empty() => Err(ApiError::invalid(name, "must not be empty")),
        Some(v) if v.contains('\0') => Err(ApiError::invalid(name, "must not contain NUL")),
        other => Ok(other),
    }
}

fn to_request(query: &QueryParams) -> ApiResult<PtyRequest> {
    query.allow_only(&["cols", "rows", "user", "cwd", "cmd", "workspace_id"])?;
    let user = run_as(query.get("user")?.as_deref())?;
    Ok(PtyRequest {
        cols: dimension(query, "cols", DEFAULT_PTY_COLS)?,
        rows: dimension(query, "rows", DEFAULT_PTY_ROWS)?,
        user,
        cwd: text(query, "cwd")?,
        cmd: text(query, "cmd")?,
        // Filled with the sandbox's credential placeholders by the handler.
        env: Default::default(),
    })
}

/// Not a (valid) WebSocket handshake: 426 Upgrade Required in the error
/// contract.
fn websocket_required(e: &WebSocketUpgradeRejection) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "websocket_required".into(),
            message: format!(
                "this endpoint is a WebSocket: connect with `Connection: Upgrade` and \
                 `Upgrade: websocket` ({})",
                e.body_text()
            ),
            request_id: request_id::current().unwrap_or_default(),
            field: None,
        },
    };
    (
        StatusCode::UPGRADE_REQUIRED,
        [(header::UPGRADE, "websocket")],
        Json(body),
    )
        .into_response()
}

/// Opens an interactive terminal (WebSocket upgrade).
///
/// `GET` with the WebSocket handshake headers (`Connection: Upgrade`,
/// `Upgrade: websocket`) and the usual `Authorization: Bearer` key. Before
/// the upgrade, failures are ordinary JSON errors (404 unknown sandbox, 409
/// paused or stopped, 422 bad parameter or unusable `cwd`/`cmd`). After it,
/// **binary frames are terminal bytes** in both directions (keystrokes in,
/// output out) and **text frames are JSON control messages**: send
/// `{"type":"resize","cols":N,"rows":N}`; receive `{"type":"start","pid":N}`
/// first and `{"type":"exit","exit_code":N|null,"signal":N|null}` last,
/// after which the server closes the WebSocket. The program runs as a
/// session leader with `TERM=xterm-256color` and is listed by
/// `GET /v1/sandboxes/{id}/processes` (kill it to end the session). Closing
/// the WebSocket hangs the terminal up: SIGHUP, then SIGKILL after a second.
#[utoipa::path(get, operation_id = "open_pty", path = "/v1/sandboxes/{id}/pty", tag = "sandboxes", security(("bearer" = [])),
    params(("id" = String, Path, description = "Sandbox ID or name"), PtyParams,
           crate::openapi::WorkspaceHint),
    responses((status = 101, description = "Switching Protocols: the terminal's WebSocket is open"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody),
              (status = 426, body = ErrorBody, description = "not a WebSocket handshake (`websocket_required`)")))]
pub async fn pty(
    caller: TenantCaller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryParams,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let mut req = to_request(&query)?;
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return Ok(websocket_required(&e)),
    };
    let (agent, credentials) = agent_with_credentials(&state, &caller, &id, &query).await?;
    req.env = credentials;
    // The program starts before the browser's upgrade, so a refusal is
    // still an HTTP error.
    let session = agent.pty(&req).await.map_err(|e| start_refusal(e, "cmd"))?;
    Ok(upgrade
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "terminal upgrade failed"))
        .on_upgrade(move |socket| async move {
            tracing::info!(sandbox = %id, "terminal session open");
            bridge(socket, session).await;
            tracing::info!(sandbox = %id, "terminal session closed");
        }))
}

/// Copies messages both ways until either side closes, then closes the
/// other.
async fn bridge(browser: WebSocket, agent: WebSocketStream<UnixStream>) {
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_agent, mut from_agent) = agent.split();
    let upstream = async move {
        while let Some(Ok(msg)) = from_browser.next().await {
            let close = matches!(msg, ws::Message::Close(_));
            if let Some(msg) = to_agent_message(msg) {
                if to_agent.send(msg).await.is_err() {
                    break;
                }
            }
            if close {
                break;
            }
        }
        let _ = to_agent.close().await;
    };
    let downstream = async move {
        while let Some(Ok(msg)) = from_agent.next().await {
            let close = matches!(msg, tungstenite::Message::Close(_));
            if let Some(msg) = to_browser_message(msg) {
                if to_browser.send(msg).await.is_err() {
                    break;
                }
            }
            if close {
                break;
            }
        }
        let _ = to_browser.close().await;
    };
    let mut upstream = std::pin::pin!(upstream);
    tokio::select! {
        () = &mut upstream => {}
        () = downstream => {
            // Let the browser answer the close before dropping it.
            let _ = tokio::time::timeout(CLOSE_GRACE, upstream).await;
        }
    }
}

/// Data and close frames cross; pings are answered by each side itself.
fn to_agent_message(msg: ws::Message) -> Option<tungstenite::Message> {
    match msg {
        ws::Message::Binary(b) => Some(tungstenite::Message::Binary(b)),
        ws::Message::Text(t) => Some(tungstenite::Message::text(t.as_str())),
        ws::Message::Close(frame) => Some(tungstenite::Message::Close(frame.map(|f| {
            tungstenite::protocol::CloseFrame {
                code: CloseCode::from(f.code),
                reason: f.reason.as_str().into(),
            }
        }))),
        ws::Message::Ping(_) | ws::Message::Pong(_) => None,
    }
}

fn to_browser_message(msg: tungstenite::Message) -> Option<ws::Message> {
    match msg {
        tungstenite::Message::Binary(b) => Some(ws::Message::Binary(b)),
        tungstenite::Message::Text(t) => Some(ws::Message::Text(t.as_str().into())),
        tungstenite::Message::Close(frame) => {
            Some(ws::Message::Close(frame.map(|f| ws::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            })))
        }
        tungstenite::Message::Ping(_)
        | tungstenite::Message::Pong(_)
        | tungstenite::Message::Frame(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::FromRequestParts;

    use super::*;
    use miosa_agent::{AgentError, RunAs};

    async fn parse(q: &str) -> ApiResult<PtyRequest> {
        let (mut parts, ()) = axum::http::Request::builder()
            .uri(format!("/v1/sandboxes/x/pty?{q}"))
            .body(())
            .unwrap()
            .into_parts();
        let query = QueryParams::from_request_parts(&mut parts, &()).await?;
        to_request(&query)
    }

    fn field(r: ApiResult<PtyRequest>) -> String {
        match r {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn parameters_are_validated() {
        assert_eq!(parse("").await.unwrap(), PtyRequest::default());
        let r = parse("cols=1000&rows=1&user=root&cwd=/tmp&cmd=top")
            .await
            .unwrap();
        assert_eq!((r.cols, r.rows, r.user), (1000, 1, RunAs::Root));
        assert_eq!(
            (r.cwd.as_deref(), r.cmd.as_deref()),
            (Some("/tmp"), Some("top"))
        );
        for (q, name) in [
            ("cols=0", "cols"),
            ("cols=1001", "cols"),
            ("cols=70000", "cols"),
            ("rows=-1", "rows"),
            ("rows=x", "rows"),
            ("rows=1&rows=2", "rows"),
            ("user=admin", "user"),
            ("cmd=", "cmd"),
            ("cwd=a%00b", "cwd"),
            ("colls=80", "colls"),
        ] {
            assert_eq!(field(parse(q).await), name, "{q}");
        }
    }

    #[test]
    fn agent_refusals_name_the_parameter() {
        let f = |m: &str| match start_refusal(AgentError::Invalid(m.into()), "cmd") {
            ApiError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(f("cannot start in /x: No such file or directory"), "cwd");
        assert_eq!(f("rows must be between 1 and 1000"), "rows");
        assert_eq!(f("cannot start \"/bin/sh\": Permission denied"), "cmd");
        assert!(matches!(
            start_refusal(AgentError::NotFound("x".into()), "cmd"),
            ApiError::NotFoundMessage(_)
        ));
    }
}

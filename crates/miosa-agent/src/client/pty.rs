//! `AgentClient::pty`: a terminal session over a WebSocket.

use bytes::Bytes;
use tokio::net::UnixStream;
use tokio_tungstenite::{
    client_async,
    tungstenite::{self, client::IntoClientRequest},
    WebSocketStream,
};

use super::AgentClient;
use crate::{protocol::ErrorBody, AgentError, PtyRequest};

impl AgentClient {
    /// Starts `opts` on a new pseudo-terminal in the sandbox and returns the
    /// session's WebSocket: Binary messages are terminal bytes both ways,
    /// Text messages JSON [`crate::PtyControl`]s (`start` first, `exit`
    /// last). A request the agent refuses (size, cwd, a program that cannot
    /// start) fails here with its usual error. Dropping the socket hangs the
    /// session up.
    pub async fn pty(&self, opts: &PtyRequest) -> Result<WebSocketStream<UnixStream>, AgentError> {
        opts.validate()?;
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            AgentError::Unavailable(format!(
                "connecting to {}: {}",
                self.socket.display(),
                crate::error::describe_io(&e)
            ))
        })?;
        let request = format!("ws://agent/pty?{}", opts.to_query())
            .into_client_request()
            .map_err(|e| AgentError::Protocol(format!("building the pty request: {e}")))?;
        let handshake = client_async(request, stream);
        let result = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, handshake).await.map_err(|_| {
                AgentError::Unavailable(format!("no answer from the agent within {limit:?}"))
            })?,
            None => handshake.await,
        };
        result.map(|(ws, _)| ws).map_err(handshake_error)
    }
}

fn handshake_error(e: tungstenite::Error) -> AgentError {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status();
            let body = Bytes::from(resp.into_body().unwrap_or_default());
            match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => AgentError::from_wire(&e.error.code, e.error.message),
                Err(_) => {
                    AgentError::Remote(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
                }
            }
        }
        tungstenite::Error::Io(e) => AgentError::Unavailable(format!(
            "connection to the agent failed: {}",
            crate::error::describe_io(&e)
        )),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            AgentError::Unavailable("the agent closed the connection".into())
        }
        other => AgentError::Protocol(format!("pty handshake: {other}")),
    }
}

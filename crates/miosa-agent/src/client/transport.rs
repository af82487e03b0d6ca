//! One HTTP/1.1 exchange with the agent over a fresh Unix-socket connection.

use std::{io, path::Path, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::{stream, Stream};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::{protocol::ErrorBody, AgentError};

/// Request body type: in-memory or streamed by the caller.
pub(crate) type ReqBody = UnsyncBoxBody<Bytes, io::Error>;

/// Cap on JSON answers and error bodies read into memory.
const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;
const MAX_ERROR_BYTES: usize = 64 * 1024;

pub(crate) fn empty() -> ReqBody {
    full(Bytes::new())
}

pub(crate) fn full(bytes: Bytes) -> ReqBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn json_body<T: serde::Serialize>(value: &T) -> Result<ReqBody, AgentError> {
    serde_json::to_vec(value)
        .map(|v| full(v.into()))
        .map_err(|e| AgentError::Protocol(format!("encoding request: {e}")))
}

pub(crate) fn request(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: ReqBody,
) -> Result<Request<ReqBody>, AgentError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "agent");
    if let Some(ct) = content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder
        .body(body)
        .map_err(|e| AgentError::Protocol(format!("building request {uri}: {e}")))
}

/// Sends `req` on a new connection; waits at most `timeout` for the response
/// head. Non-2xx answers become the matching [`AgentError`].
pub(crate) async fn send(
    socket: &Path,
    req: Request<ReqBody>,
    timeout: Option<Duration>,
) -> Result<Response<Incoming>, AgentError> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        AgentError::Unavailable(format!(
            "connecting to {}: {}",
            socket.display(),
            crate::error::describe_io(&e)
        ))
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(hyper_error)?;
    // Ends when the exchange is over or the response body is dropped, which
    // closes the socket (the agent then stops a streaming exec).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let exchange = sender.send_request(req);
    let resp = match timeout {
        Some(limit) => tokio::time::timeout(limit, exchange).await.map_err(|_| {
            AgentError::Unavailable(format!("no answer from the agent within {limit:?}"))
        })?,
        None => exchange.await,
    }
    .map_err(hyper_error)?;
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(error_from(resp).await)
    }
}

fn hyper_error(e: hyper::Error) -> AgentError {
    if e.is_parse() || e.is_parse_status() {
        AgentError::Protocol(e.to_string())
    } else if e.is_user() {
        AgentError::Invalid(format!("request body: {e}"))
    } else {
        AgentError::Unavailable(format!("connection to the agent failed: {e}"))
    }
}

fn body_error(e: hyper::Error) -> AgentError {
    AgentError::Unavailable(format!("connection to the agent lost: {e}"))
}

async fn error_from(resp: Response<Incoming>) -> AgentError {
    let status = resp.status();
    let body = match Limited::new(resp.into_body(), MAX_ERROR_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => AgentError::from_wire(&e.error.code, e.error.message),
        Err(_) if status == StatusCode::NOT_FOUND => {
            AgentError::NotFound(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
        }
        Err(_) => AgentError::Remote(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))),
    }
}

/// Reads a JSON answer.
pub(crate) async fn json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T, AgentError> {
    let body = Limited::new(resp.into_body(), MAX_JSON_BYTES)
        .collect()
        .await
        .map_err(|e| AgentError::Unavailable(format!("reading answer: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| AgentError::Protocol(format!("decoding answer: {e}")))
}

/// The response body as a stream of data chunks.
pub(crate) fn chunks(
    body: Incoming,
) -> impl Stream<Item = Result<Bytes, AgentError>> + Send + 'static {
    stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        loop {
            match body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), Some(body)));
                    }
                }
                Err(e) => return Some((Err(body_error(e)), None)),
            }
        }
    })
}

/// Splits a body into lines (without the `\n`), refusing lines over `max`.
pub(crate) fn lines(
    body: Incoming,
    max: usize,
) -> impl Stream<Item = Result<Bytes, AgentError>> + Send + 'static {
    struct Lines {
        body: Incoming,
        buf: BytesMut,
        /// Bytes of `buf` already known to hold no newline.
        scanned: usize,
        done: bool,
    }
    let state = Lines {
        body,
        buf: BytesMut::new(),
        scanned: 0,
        done: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(pos) = st.buf[st.scanned..].iter().position(|b| *b == b'\n') {
                let mut line = st.buf.split_to(st.scanned + pos + 1);
                st.scanned = 0;
                line.truncate(line.len() - 1);
                return Some((Ok(line.freeze()), st));
            }
            st.scanned = st.buf.len();
            if st.buf.len() > max {
                st.done = true;
                return Some((Err(AgentError::Protocol("event line too long".into())), st));
            }
            match st.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        st.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(body_error(e)), st));
                }
                None => {
                    st.done = true;
                    if !st.buf.is_empty() {
                        let rest = st.buf.split().freeze();
                        return Some((Ok(rest), st));
                    }
                    return None;
                }
            }
        }
    })
}

//! A WebSocket opened by a request that carried a secret value: the proxy
//! speaks WebSocket to both sides instead of splicing bytes, so that every
//! message and close reason the upstream sends is scrubbed before the
//! sandbox reads it. Messages from the sandbox go upstream unchanged (no
//! substitution in frames). Control frames are answered on each side by
//! the proxy rather than passed through. Compression was never offered
//! upstream (the extension header is dropped), and a frame that claims it
//! ends the connection.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    tungstenite::{
        protocol::{frame::CloseFrame, Role, WebSocketConfig},
        Message, Utf8Bytes,
    },
    WebSocketStream,
};

use crate::{
    audit::Record,
    io::{Counted, Shutdown},
    scrub::ScrubSet,
};

/// Largest message relayed either way; a larger one ends the connection.
const MAX_MESSAGE: usize = 16 << 20;

/// Relays messages between the sandbox's and the upstream's upgraded
/// streams until either side closes or the sandbox is detached.
pub(crate) async fn scrubbed<S, U>(
    sandbox: S,
    upstream: U,
    scrub: ScrubSet,
    record: Arc<Record>,
    stop: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let sandbox = WebSocketStream::from_raw_socket(
        Counted::new(sandbox, record.clone()),
        Role::Server,
        Some(config),
    )
    .await;
    let upstream = WebSocketStream::from_raw_socket(upstream, Role::Client, Some(config)).await;
    let (mut to_sandbox, mut from_sandbox) = sandbox.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();

    let up = async {
        while let Some(Ok(msg)) = from_sandbox.next().await {
            let close = msg.is_close();
            if forwarded(&msg) && to_upstream.send(msg).await.is_err() {
                break;
            }
            if close {
                break;
            }
        }
        let _ = to_upstream.close().await;
    };
    let down = async {
        loop {
            let msg = match from_upstream.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "scrubbed WebSocket: upstream error");
                    break;
                }
                None => break,
            };
            let close = msg.is_close();
            if forwarded(&msg) && to_sandbox.send(clean(msg, &scrub)).await.is_err() {
                break;
            }
            if close {
                break;
            }
        }
        let _ = to_sandbox.close().await;
    };
    tokio::select! {
        _ = futures_util::future::join(up, down) => {}
        () = stop.wait() => {}
    }
}

/// Data and close messages are relayed; pings and pongs are answered by
/// the proxy on each side (tungstenite replies to a ping itself).
fn forwarded(msg: &Message) -> bool {
    matches!(
        msg,
        Message::Text(_) | Message::Binary(_) | Message::Close(_)
    )
}

/// The message with every value the request carried replaced by its
/// placeholder. A value is UTF-8 and so is a placeholder, so a text message
/// stays text.
fn clean(msg: Message, scrub: &ScrubSet) -> Message {
    match msg {
        Message::Text(t) => match scrub.bytes(t.as_bytes()) {
            Some(b) => Message::Text(utf8(b)),
            None => Message::Text(t),
        },
        Message::Binary(b) => match scrub.bytes(&b) {
            Some(clean) => Message::Binary(clean.into()),
            None => Message::Binary(b),
        },
        Message::Close(Some(frame)) => match scrub.bytes(frame.reason.as_bytes()) {
            Some(reason) => Message::Close(Some(CloseFrame {
                code: frame.code,
                reason: utf8(reason),
            })),
            None => Message::Close(Some(frame)),
        },
        other => other,
    }
}

fn utf8(bytes: Vec<u8>) -> Utf8Bytes {
    // Replacing whole UTF-8 values with ASCII keeps text valid; a lossy
    // conversion is only a guard.
    Utf8Bytes::from(String::from_utf8_lossy(&bytes).into_owned())
}

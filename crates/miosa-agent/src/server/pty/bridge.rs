//! Bytes in and out of a terminal's master side, and the client → terminal
//! direction of the WebSocket.

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsFd, OwnedFd},
};

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{stream::SplitStream, StreamExt};
use tokio::io::unix::AsyncFd;

use crate::{protocol::valid_dimension, server::tty, PtyControl};

/// Input accepted from the client but not yet taken by the terminal; past
/// this, the client's messages wait (backpressure).
const INPUT_BUFFER: usize = 1024 * 1024;

/// The master side of a terminal, registered with the reactor.
pub(super) type Master = AsyncFd<OwnedFd>;

/// Reads what the program wrote. `EIO` means every holder of the terminal
/// closed it.
pub(super) async fn read(master: &Master, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = master.readable().await?;
        if let Ok(result) =
            ready.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from))
        {
            return result;
        }
    }
}

/// Writes some of `data` as the program's input.
async fn write(master: &Master, data: &[u8]) -> io::Result<usize> {
    loop {
        let mut ready = master.writable().await?;
        if let Ok(result) =
            ready.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
        {
            return result;
        }
    }
}

/// Client → terminal until the client closes or goes away: Binary messages
/// are input (queued so a program that does not read cannot hide the
/// client's departure), Text messages are [`PtyControl`]s.
pub(super) async fn pump_input(mut client: SplitStream<WebSocket>, master: std::sync::Arc<Master>) {
    let mut queue: VecDeque<Bytes> = VecDeque::new();
    let mut queued = 0usize;
    let mut writable = true;
    loop {
        let front = queue.front().map_or(&[][..], |b| &b[..]);
        tokio::select! {
            msg = client.next(), if queued < INPUT_BUFFER => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if writable && !data.is_empty() {
                        queued += data.len();
                        queue.push_back(data);
                    }
                }
                Some(Ok(Message::Text(text))) => control(&master, &text),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
            written = write(&master, front), if !queue.is_empty() => match written {
                Ok(n) => {
                    queued -= n;
                    if let Some(chunk) = queue.front_mut() {
                        if n >= chunk.len() {
                            queue.pop_front();
                        } else {
                            *chunk = chunk.slice(n..);
                        }
                    }
                }
                Err(e) => {
                    // The program is gone; its exit ends the session.
                    tracing::debug!(error = %e, "terminal input closed");
                    writable = false;
                    queue.clear();
                    queued = 0;
                }
            },
        }
    }
}

fn control(master: &Master, text: &str) {
    match serde_json::from_str::<PtyControl>(text) {
        Ok(PtyControl::Resize { cols, rows }) if valid_dimension(cols) && valid_dimension(rows) => {
            if let Err(e) = tty::set_size(master.get_ref().as_fd(), cols, rows) {
                tracing::debug!(error = %e, "cannot resize the terminal");
            }
        }
        // Unknown or invalid messages are ignored (forward compatibility).
        _ => tracing::debug!(message = text, "ignoring terminal control message"),
    }
}

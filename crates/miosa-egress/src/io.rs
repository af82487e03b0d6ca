//! Byte plumbing: a stream that replays bytes already read from it, a
//! stream that counts what passes through it, splicing two streams together,
//! and the shutdown signal every task of a sandbox watches.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};

use crate::audit::Record;

/// Counts a sandbox's live tasks (connections, tunnels, upgraded streams),
/// so detaching can wait for each to end and record its audit row.
#[derive(Clone, Default)]
pub(crate) struct Tasks(Arc<TasksInner>);

#[derive(Default)]
struct TasksInner {
    live: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

struct Live(Arc<TasksInner>);

impl Drop for Live {
    fn drop(&mut self) {
        if self
            .0
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tasks {
    /// Spawns `fut`, counted until it ends.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0
            .live
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let live = Live(self.0.clone());
        tokio::spawn(async move {
            fut.await;
            drop(live);
        });
    }

    /// Resolves once no counted task is running.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.0.live.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Resolves once a sandbox is detached (or the proxy is gone).
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the switch that fires it (send `true`, or drop it).
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub(crate) async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the switch was dropped: that is a shutdown too.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A stream that holds something (a connection slot) until it is dropped.
pub(crate) struct Held<T, H> {
    inner: T,
    _held: H,
}

impl<T, H> Held<T, H> {
    pub(crate) fn new(inner: T, held: H) -> Self {
        Self { inner, _held: held }
    }
}

impl<T: AsyncRead + Unpin, H: Unpin> AsyncRead for Held<T, H> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin, H: Unpin> AsyncWrite for Held<T, H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `inner`, with `prefix` (bytes already read from it) served first.
pub(crate) struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The sandbox's side of a spliced stream: what is read from it went out
/// (`bytes_out`), what is written to it came in (`bytes_in`).
pub(crate) struct Counted<T> {
    inner: T,
    record: Arc<Record>,
}

impl<T> Counted<T> {
    pub(crate) fn new(inner: T, record: Arc<Record>) -> Self {
        Self { inner, record }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.record.add_out(n as u64);
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.record.add_in(*n as u64);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies both ways between the sandbox's stream and the upstream's until
/// both are done or the sandbox is detached, counting into `record`.
pub(crate) async fn splice<S, U>(sandbox: S, mut upstream: U, record: Arc<Record>, stop: Shutdown)
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut sandbox = Counted::new(sandbox, record);
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut sandbox, &mut upstream) => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "spliced stream ended with an error");
            }
        }
        () = stop.wait() => {}
    }
}

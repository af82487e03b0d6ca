//! The egress bridge: the sandbox's only way out.
//!
//! The sandbox's network namespace has only `lo`; the host's egress proxy
//! listens on a per-sandbox Unix socket bind-mounted into the sandbox. Tools
//! inside expect an HTTP proxy on TCP (`HTTP_PROXY=http://127.0.0.1:3128`),
//! so the agent listens there and splices every connection, byte for byte,
//! onto a fresh connection to that socket. The bridge does not parse
//! anything: requests, `CONNECT` tunnels and their TLS are the proxy's
//! business. When the proxy cannot be reached, the client gets a plain
//! `502 Bad Gateway` instead of a reset, so tools report something a person
//! can act on.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixStream},
};

use crate::AgentError;

/// Where the bridge listens inside the sandbox by default.
pub const DEFAULT_EGRESS_LISTEN: &str = "127.0.0.1:3128";
/// The host proxy's socket as the sandbox sees it, by default.
pub const DEFAULT_EGRESS_SOCKET: &str = "/run/miosa/egress.sock";

/// A connect to a Unix socket normally answers at once; a proxy too busy to
/// accept within this long is treated as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the 502 answer may take to write and the client to hang up
/// before the connection is dropped.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (typically out of file descriptors) so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Per-direction copy buffer.
const COPY_BUFFER: usize = 16 * 1024;
const UNAVAILABLE_BODY: &str = "miosa egress proxy unavailable\n";

/// The bridge, bound to its TCP address and ready to serve.
pub struct EgressBridge {
    listener: TcpListener,
    upstream: PathBuf,
}

impl EgressBridge {
    /// Binds `listen`; connections will be bridged to the Unix socket
    /// `upstream`, which need not exist yet (the proxy may come and go).
    pub async fn bind(listen: SocketAddr, upstream: PathBuf) -> Result<Self, AgentError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| AgentError::io(format!("binding the egress bridge on {listen}"), &e))?;
        Ok(Self { listener, upstream })
    }

    /// The bound address (useful when binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, AgentError> {
        self.listener
            .local_addr()
            .map_err(|e| AgentError::io("egress bridge address", &e))
    }

    /// Accepts until `shutdown` resolves; each connection is bridged in its
    /// own task. Connections in flight are left to finish.
    pub async fn serve<F>(self, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        let Self { listener, upstream } = self;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %addr, upstream = %upstream.display(), "egress bridge listening");
        let upstream: Arc<Path> = upstream.into();
        let health = Arc::new(Health::default());
        let mut accept_failing = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        accept_failing = false;
                        tokio::spawn(bridge(tcp, Arc::clone(&upstream), Arc::clone(&health)));
                    }
                    Err(e) => {
                        // Once per streak: the log has no size limit.
                        if !std::mem::replace(&mut accept_failing, true) {
                            tracing::warn!(error = %e, "egress bridge: accept failed");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        tracing::info!("egress bridge stopped");
    }
}

/// Whether the proxy answered last time, so its going away and coming back
/// are logged once each rather than once per connection.
#[derive(Debug)]
struct Health {
    up: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
        }
    }
}

impl Health {
    fn reached(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("egress proxy reachable again");
        }
    }

    fn unreachable(&self, upstream: &Path, error: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(upstream = %upstream.display(), error = %error, "egress proxy unreachable; answering 502");
        }
    }
}

/// Splices `tcp` onto a new connection to `upstream` until both directions
/// reach end of stream: an EOF read on one side becomes a write shutdown on
/// the other, so half-closed connections keep working.
async fn bridge(mut tcp: TcpStream, upstream: Arc<Path>, health: Arc<Health>) {
    // Interactive protocols (TLS handshakes through CONNECT) must not wait
    // for Nagle.
    let _ = tcp.set_nodelay(true);
    let proxy = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&*upstream)).await {
        Ok(Ok(proxy)) => proxy,
        Ok(Err(e)) => {
            health.unreachable(&upstream, &e);
            refuse(tcp).await;
            return;
        }
        Err(_) => {
            health.unreachable(&upstream, &"connect timed out");
            refuse(tcp).await;
            return;
        }
    };
    health.reached();
    let mut proxy = proxy;
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut proxy, COPY_BUFFER, COPY_BUFFER)
            .await
    {
        tracing::debug!(error = %e, "egress bridge connection ended with an error");
    }
}

/// Answers 502 and closes without a reset: after our write side is shut,
/// whatever the client still sends is read and dropped until it hangs up
/// (closing with unread data would send RST, which can destroy the answer
/// before the client reads it).
async fn refuse(mut tcp: TcpStream) {
    let answer = format!(
        "HTTP/1.1 502 Bad Gateway\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n\
         {UNAVAILABLE_BODY}",
        UNAVAILABLE_BODY.len()
    );
    let linger = async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, linger).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::{net::UnixListener, sync::oneshot};

    /// A bridge on an ephemeral port towards `upstream`; stops when the
    /// returned sender is dropped.
    async fn start_bridge(upstream: PathBuf) -> (SocketAddr, oneshot::Sender<()>) {
        let bridge = EgressBridge::bind("127.0.0.1:0".parse().unwrap(), upstream)
            .await
            .unwrap();
        let addr = bridge.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(bridge.serve(async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Reads until EOF, failing after 10 s.
    async fn read_all<R: AsyncReadExt + Unpin>(r: &mut R) -> Vec<u8> {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn bridges_to_the_socket_and_propagates_half_closes_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, seen) = oneshot::channel::<Vec<u8>>();
        tokio::spawn(async move {
            // First connection: echo everything after the client's EOF.
            let (mut conn, _) = listener.accept().await.unwrap();
            let got = read_all(&mut conn).await;
            conn.write_all(&got).await.unwrap();
            conn.shutdown().await.unwrap();
            // Second: the server half-closes first and keeps reading.
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.write_all(b"greeting").await.unwrap();
            conn.shutdown().await.unwrap();
            let _ = tx.send(read_all(&mut conn).await);
        });
        let (addr, _stop) = start_bridge(path).await;

        // Client closes its side; the echo still comes back through the bridge.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(read_all(&mut client).await, payload);

        // Server closes its side; the client can still send afterwards.
        let mut client = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(&mut client).await, b"greeting");
        client.write_all(b"after the server's EOF").await.unwrap();
        client.shutdown().await.unwrap();
        let received = tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, b"after the server's EOF");
    }

    #[tokio::test]
    async fn answers_502_when_the_proxy_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        let (addr, _stop) = start_bridge(path.clone()).await;
        for _ in 0..2 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client
                .write_all(b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n")
                .await
                .unwrap();
            let reply = String::from_utf8(read_all(&mut client).await).unwrap();
            assert!(reply.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{reply}");
            assert!(
                reply.ends_with("\r\n\r\nmiosa egress proxy unavailable\n"),
                "{reply}"
            );
            assert!(reply.contains("Content-Length: 31\r\n"), "{reply}");
        }

        // A socket file with nobody listening is unavailable too.
        drop(UnixListener::bind(&path).unwrap());
        let mut client = TcpStream::connect(addr).await.unwrap();
        let reply = String::from_utf8(read_all(&mut client).await).unwrap();
        assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");

        // The proxy coming up later is picked up without restarting the bridge.
        std::fs::remove_file(&path).unwrap();
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            conn.write_all(b"up").await.unwrap();
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(&mut client).await, b"up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        let (addr, _stop) = start_bridge(path).await;
        let mut clients = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            clients.spawn(async move {
                let mut c = TcpStream::connect(addr).await.unwrap();
                let msg = format!("connection {i}");
                c.write_all(msg.as_bytes()).await.unwrap();
                // Every connection stays open until all have written.
                tokio::time::sleep(Duration::from_millis(100)).await;
                c.shutdown().await.unwrap();
                assert_eq!(read_all(&mut c).await, msg.as_bytes());
            });
        }
        while let Some(done) = clients.join_next().await {
            done.unwrap();
        }
    }

    #[tokio::test]
    async fn stops_accepting_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, stop) = start_bridge(dir.path().join("none.sock")).await;
        drop(stop);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

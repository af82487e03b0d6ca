//! Upstream connections: dialing (TCP, then TLS verified against the
//! configured roots with SNI = host) and a per-sandbox pool of kept-alive
//! HTTP/1.1 connections keyed by host, port, address and scheme. Sandboxes
//! never share an upstream connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::{pki_types::ServerName, ClientConfig};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;
use tracing::Instrument as _;

use crate::{body::ReqBody, io::Shutdown, EgressError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections older than this are not reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A pooled connection answers `ready` at once unless it is closing.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_IDLE_PER_KEY: usize = 32;
/// Idle connections one sandbox may keep across all upstreams.
const MAX_IDLE: usize = 256;

/// Which upstream connections are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    pub tls: bool,
}

/// A connection ready for one request.
pub(crate) struct Conn {
    pub sender: SendRequest<ReqBody>,
    pub key: PoolKey,
    /// Whether it served a request before (a failure to send on it is
    /// worth one retry on a fresh connection).
    pub reused: bool,
}

/// Returns a connection to its pool once its response has been read.
pub(crate) struct Checkin {
    pool: Arc<Pool>,
    conn: Conn,
}

impl Checkin {
    pub(crate) fn new(pool: Arc<Pool>, conn: Conn) -> Self {
        Self { pool, conn }
    }

    pub(crate) fn done(self) {
        self.pool.put(self.conn);
    }
}

struct Idle {
    sender: SendRequest<ReqBody>,
    since: Instant,
}

/// One sandbox's upstream connections.
pub(crate) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    tls: Arc<ClientConfig>,
    stop: Shutdown,
}

impl Pool {
    pub(crate) fn new(tls: Arc<ClientConfig>, stop: Shutdown) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            tls,
            stop,
        }
    }

    /// A kept-alive connection for `key`, else a new one.
    pub(crate) async fn get(&self, key: &PoolKey) -> Result<Conn, EgressError> {
        while let Some(mut idle) = self.take_idle(key) {
            if idle.since.elapsed() > IDLE_TIMEOUT || idle.sender.is_closed() {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, idle.sender.ready()).await {
                return Ok(Conn {
                    sender: idle.sender,
                    key: key.clone(),
                    reused: true,
                });
            }
        }
        self.connect(key).await
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(key)?.pop()
    }

    fn put(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut total: usize = idle.values().map(Vec::len).sum();
        if total >= MAX_IDLE {
            // Full: forget what is closed or stale before deciding.
            idle.retain(|_, list| {
                list.retain(|i| !i.sender.is_closed() && i.since.elapsed() <= IDLE_TIMEOUT);
                !list.is_empty()
            });
            total = idle.values().map(Vec::len).sum();
        }
        let list = idle.entry(conn.key).or_default();
        list.retain(|i| !i.sender.is_closed());
        if list.len() < MAX_IDLE_PER_KEY && total < MAX_IDLE {
            list.push(Idle {
                sender: conn.sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `key.addr` (never re-resolved).
    pub(crate) async fn connect(&self, key: &PoolKey) -> Result<Conn, EgressError> {
        let host = &key.host;
        let connect_err = |cause: String| EgressError::Connect {
            host: host.clone(),
            cause,
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(key.addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| connect_err(e.to_string()))?;
        let sender = if key.tls {
            let tls = self.tls_connect(host, tcp).await?;
            self.handshake(host, tls).await?
        } else {
            self.handshake(host, tcp).await?
        };
        Ok(Conn {
            sender,
            key: key.clone(),
            reused: false,
        })
    }

    async fn tls_connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, EgressError> {
        let tls_err = |cause: String| EgressError::UpstreamTls {
            host: host.to_owned(),
            cause,
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| tls_err("not a valid server name".into()))?;
        let connect = TlsConnector::from(self.tls.clone()).connect(name, tcp);
        tokio::time::timeout(TLS_TIMEOUT, connect)
            .await
            .map_err(|_| tls_err("handshake timed out".into()))?
            .map_err(|e| {
                // rustls errors name the problem (e.g. an unknown issuer)
                // and nothing of the request.
                let cause = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .map_or_else(|| e.to_string(), ToString::to_string);
                tls_err(cause)
            })
    }

    async fn handshake<T>(&self, host: &str, io: T) -> Result<SendRequest<ReqBody>, EgressError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| EgressError::Upstream {
                host: host.to_owned(),
                cause: e.to_string(),
            })?;
        let stop = self.stop.clone();
        tokio::spawn(
            async move {
                tokio::select! {
                    res = conn.with_upgrades() => {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "upstream connection ended with an error");
                        }
                    }
                    () = stop.wait() => {}
                }
            }
            .in_current_span(),
        );
        Ok(sender)
    }
}

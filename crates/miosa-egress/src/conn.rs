//! One connection from a sandbox's socket: HTTP/1.1 proxy requests with
//! keep-alive. Absolute-form `http://` requests are forwarded as they are;
//! `CONNECT host:port` opens a tunnel that is either intercepted (the first
//! byte is a TLS handshake: terminate TLS with a leaf from the sandbox's CA
//! and serve the HTTP/1.1 requests inside) or spliced raw.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::{
    body::Incoming,
    server::conn::http1,
    service::{service_fn, Service},
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::LazyConfigAcceptor;
use tracing::Instrument as _;

use crate::{
    audit::Record,
    body::RespBody,
    forward::{failure, forward},
    io::{splice, Prefixed, Shutdown},
    proxy::SandboxCtx,
    target::{normalize_host, Target},
    EgressError,
};

/// How long a tunnel waits for the client's first byte before treating it
/// as a protocol where the server speaks first (raw tunnel).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_millis(500);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS record carrying a handshake (the ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves one connection accepted on a sandbox's socket until it closes or
/// the sandbox is detached.
pub(crate) async fn serve<T>(stream: T, ctx: Arc<SandboxCtx>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let outer = Arc::new(Outer {
        ctx: ctx.clone(),
        resolved: Mutex::new(HashMap::new()),
    });
    let svc = service_fn(move |req| {
        let outer = outer.clone();
        async move {
            let _slot = match admit(&outer.ctx).await {
                Ok(slot) => slot,
                Err(refused) => return Ok::<_, Infallible>(refused),
            };
            Ok::<_, Infallible>(outer.handle(req).await)
        }
    });
    serve_http(stream, svc, &ctx.stop, ctx.shared.limits.header_timeout).await;
}

/// A request slot of the sandbox (held until the answer's head is sent)
/// once the audit log can take its row; else the 503 the sandbox gets
/// instead (the request is not sent; with the log unable to write, the
/// refusal itself is only logged).
async fn admit(ctx: &SandboxCtx) -> Result<tokio::sync::OwnedSemaphorePermit, Response<RespBody>> {
    let refuse = |why: String| {
        crate::forward::text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("miosa egress: {why}\n"),
            None,
        )
    };
    let wait = ctx.shared.limits.header_timeout;
    let slot = match tokio::time::timeout(wait, ctx.in_flight.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            tracing::debug!(sandbox = %ctx.identity.sandbox_id, "egress refused: too many requests in flight");
            return Err(refuse(format!(
                "too_many_requests: more than {} requests of this sandbox are in flight",
                ctx.shared.limits.max_in_flight
            )));
        }
    };
    if ctx.shared.audit.admit().await.is_err() {
        tracing::warn!(sandbox = %ctx.identity.sandbox_id, "egress refused: the audit log is unavailable");
        return Err(refuse(EgressError::AuditUnavailable.to_string()));
    }
    Ok(slot)
}

/// Serves HTTP/1.1 (with upgrades) on `io` until it closes or `stop`.
async fn serve_http<I, S>(io: I, svc: S, stop: &Shutdown, header_timeout: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<RespBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "proxy connection ended with an error");
            }
        }
        () = stop.wait() => {}
    }
}

/// The state of one proxy connection.
struct Outer {
    ctx: Arc<SandboxCtx>,
    /// Hosts resolved on this connection: each is resolved once.
    resolved: Mutex<HashMap<(String, u16), Target>>,
}

impl Outer {
    async fn handle(&self, req: Request<Incoming>) -> Response<RespBody> {
        if req.method() == Method::CONNECT {
            return self.connect(req).await;
        }
        let uri = req.uri();
        let (tls, authority) = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(a)) => (false, a),
            (Some("https"), Some(a)) => (true, a),
            _ => return self.bad_request(&req, "expected an absolute http:// URI or CONNECT"),
        };
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        match self.resolve(&host, port).await {
            Ok(target) => forward(&self.ctx, req, &target, tls).await,
            Err(err) => {
                let record = self.record(req.method().as_str(), &host, req.uri().path());
                failure(&err, record)
            }
        }
    }

    fn record(&self, method: &str, host: &str, path: &str) -> Arc<Record> {
        Record::new(
            self.ctx.shared.audit.clone(),
            self.ctx.identity.clone(),
            method,
            host,
            path,
        )
    }

    fn bad_request(&self, req: &Request<Incoming>, why: &'static str) -> Response<RespBody> {
        let host = req.uri().host().map(normalize_host).unwrap_or_default();
        let record = self.record(req.method().as_str(), &host, req.uri().path());
        failure(&EgressError::BadRequest(why), record)
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Target, EgressError> {
        let key = (host.to_owned(), port);
        if let Some(t) = self.lock_resolved().get(&key) {
            return Ok(t.clone());
        }
        let target = self.ctx.shared.resolver.resolve(host, port).await?;
        self.lock_resolved().insert(key, target.clone());
        Ok(target)
    }

    fn lock_resolved(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Target>> {
        self.resolved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `CONNECT host:port`: checks the destination, answers 200 and hands
    /// the connection to a tunnel.
    async fn connect(&self, req: Request<Incoming>) -> Response<RespBody> {
        let Some(authority) = req.uri().authority() else {
            return self.bad_request(&req, "CONNECT needs host:port");
        };
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(443);
        let record = self.record("CONNECT", &host, "");
        let target = match self.ctx.shared.resolver.resolve(&host, port).await {
            Ok(t) => t,
            Err(err) => return failure(&err, record),
        };
        record.set_status(StatusCode::OK.as_u16());
        let ctx = self.ctx.clone();
        self.ctx.tasks.spawn(
            async move {
                match hyper::upgrade::on(req).await {
                    Ok(upgraded) => tunnel(ctx, TokioIo::new(upgraded), target, record).await,
                    Err(e) => {
                        record.set_outcome(miosa_core::Outcome::Error);
                        tracing::debug!(error = %e, "CONNECT upgrade failed");
                    }
                }
            }
            .in_current_span(),
        );
        Response::new(RespBody::empty())
    }
}

/// Looks at the first byte the client sends through the tunnel: TLS is
/// intercepted, anything else (or silence) is spliced raw.
async fn tunnel<T>(ctx: Arc<SandboxCtx>, mut io: T, target: Target, record: Arc<Record>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut first = [0u8; 2048];
    let n = tokio::select! {
        read = tokio::time::timeout(FIRST_BYTE_TIMEOUT, io.read(&mut first)) => match read {
            // The client hung up without a byte: nothing to connect.
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "tunnel closed before its first byte");
                return;
            }
            Err(_) => 0,
        },
        () = ctx.stop.wait() => return,
    };
    let looks_tls = n > 0 && first[0] == TLS_HANDSHAKE;
    let io = Prefixed::new(Bytes::copy_from_slice(&first[..n]), io);
    if looks_tls {
        intercept(ctx, io, target, record).await;
    } else if ctx.shared.raw_tunnel_ports.contains(&target.port) {
        raw(ctx, io, target, record).await;
    } else {
        // The tunnel was already granted (200): closing it is the refusal.
        let err = EgressError::PortNotAllowed { port: target.port };
        record.set_status(err.status().as_u16());
        record.set_outcome(err.outcome());
        tracing::debug!(host = %target.host, error = %err, "raw tunnel refused");
    }
}

/// A tunnel for something other than TLS: bytes both ways, one row.
async fn raw<T>(ctx: Arc<SandboxCtx>, io: T, target: Target, record: Arc<Record>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let upstream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                record.set_outcome(miosa_core::Outcome::Error);
                tracing::debug!(host = %target.host, error = %e, "raw tunnel connect failed");
                return;
            }
            Err(_) => {
                record.set_outcome(miosa_core::Outcome::Error);
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    splice(io, upstream, record, ctx.stop.clone()).await;
}

/// Terminates the sandbox's TLS with a leaf for the name it asked for and
/// serves the HTTP/1.1 requests inside, each forwarded to the tunnel's
/// destination with substitution.
async fn intercept<T>(ctx: Arc<SandboxCtx>, io: T, target: Target, record: Arc<Record>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(start)) => start,
        _ => {
            record.set_outcome(miosa_core::Outcome::Error);
            return;
        }
    };
    // The certificate is for the host the tunnel goes to; a ClientHello
    // naming another host would reach this one with that one's secrets.
    if let Some(sni) = start.client_hello().server_name().map(normalize_host) {
        if sni != target.host {
            let err = EgressError::Misdirected {
                tunnel: target.host.clone(),
                named: sni,
            };
            record.set_status(err.status().as_u16());
            record.set_outcome(err.outcome());
            tracing::debug!(error = %err, "TLS server name does not match the tunnel");
            return;
        }
    }
    let name = target.host.clone();
    let config = match ctx.leaves.server_config(&name) {
        Ok(c) => c,
        Err(e) => {
            record.set_outcome(miosa_core::Outcome::Error);
            tracing::warn!(host = %name, error = %e, "minting a leaf certificate failed");
            return;
        }
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            record.set_outcome(miosa_core::Outcome::Error);
            tracing::debug!(host = %name, error = %e, "sandbox TLS handshake failed");
            return;
        }
        Err(_) => {
            record.set_outcome(miosa_core::Outcome::Error);
            return;
        }
    };
    // From here on, each request inside the tunnel gets its own row.
    record.silence();
    drop(record);

    let target = Arc::new(target);
    let stop = ctx.stop.clone();
    let header_timeout = ctx.shared.limits.header_timeout;
    let svc = service_fn(move |req| {
        let (ctx, target) = (ctx.clone(), target.clone());
        async move {
            let _slot = match admit(&ctx).await {
                Ok(slot) => slot,
                Err(refused) => return Ok::<_, Infallible>(refused),
            };
            if let Some(named) = misdirected(&req, &target) {
                let record = Record::new(
                    ctx.shared.audit.clone(),
                    ctx.identity.clone(),
                    req.method().as_str(),
                    &target.host,
                    req.uri().path(),
                );
                let err = EgressError::Misdirected {
                    tunnel: target.host.clone(),
                    named,
                };
                return Ok::<_, Infallible>(failure(&err, record));
            }
            Ok::<_, Infallible>(forward(&ctx, req, &target, true).await)
        }
    });
    serve_http(tls, svc, &stop, header_timeout).await;
}

/// The authority a request inside a tunnel names (its absolute-form target,
/// else its `Host` header), if that is not the tunnel's own host and port:
/// virtual hosting would otherwise deliver it, and the tunnel's secrets,
/// to another site on the same address.
fn misdirected<B>(req: &Request<B>, target: &Target) -> Option<String> {
    let named = match req.uri().authority() {
        Some(a) => a.as_str().to_owned(),
        None => req
            .headers()
            .get(http::header::HOST)?
            .to_str()
            .ok()?
            .to_owned(),
    };
    let authority: http::uri::Authority = match named.parse() {
        Ok(a) => a,
        Err(_) => return Some(named),
    };
    let host = normalize_host(authority.host());
    let port = authority.port_u16().unwrap_or(443);
    (host != target.host || port != target.port).then_some(named)
}

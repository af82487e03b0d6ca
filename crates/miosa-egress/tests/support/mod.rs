//! Test support for the egress proxy: local fake upstreams speaking real
//! HTTPS/HTTP over loopback, an in-memory credential source, a collecting
//! audit sink, and a client that talks to a sandbox's socket the way code
//! inside a sandbox would (through the agent's byte-for-byte relay).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Incoming, client::conn::http1::SendRequest, service::service_fn};
use hyper_util::rt::TokioIo;
use miosa_core::{
    ApiKeyId, AuditCompletion, AuditEntry, Labels, SandboxId, Secret, SecretId, SecretScope,
    SubstituteIn, TenantId, WorkspaceId,
};
use miosa_egress::{
    AuditSink, AuditUnavailable, Credential, CredentialSource, EgressConfig, EgressProxy,
    SandboxIdentity, SecretValue, SinkFuture, SocketPaths,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    ClientConfig, RootCertStore, ServerConfig,
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, UnixStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::{
    tungstenite::{protocol::Role, Message},
    WebSocketStream,
};

/// The body type test clients send.
pub type TBody = BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> TBody {
    Full::new(b.into()).boxed()
}

pub fn empty() -> TBody {
    full(Bytes::new())
}

/// A body sent chunked, in these pieces.
pub fn chunked(parts: Vec<Bytes>) -> TBody {
    let frames = parts
        .into_iter()
        .map(|p| Ok::<_, Infallible>(Frame::data(p)));
    BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// --- certificates ------------------------------------------------------------

/// A CA for fake upstreams, written to a PEM file the proxy can trust.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem_path: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test upstream CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_path, cert.pem()).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            pem_path,
        }
    }

    /// A TLS server configuration for `names`, signed by this CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// A TLS client trusting exactly `ca_pem`.
pub fn tls_client(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

// --- fake upstreams ------------------------------------------------------------

/// A request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// A local upstream (HTTPS or HTTP) that records what it receives.
///
/// Paths: `/echo` answers with the request's headers and body (and echoes
/// `Authorization` in `x-echo-auth`); `/chunked-echo?chunk=N` does the same
/// in N-byte chunks; `/status/NNN` answers that status; `/ws` is a
/// WebSocket echo; anything else answers `ok`.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn https(config: Arc<ServerConfig>) -> Self {
        Self::start(Some(TlsAcceptor::from(config))).await
    }

    pub async fn http() -> Self {
        Self::start(None).await
    }

    async fn start(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tcp.set_nodelay(true).unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let (s, tls) = (s.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve_upstream(stream, s).await;
                            }
                        }
                        None => serve_upstream(tcp, s).await,
                    }
                });
            }
        });
        Self {
            addr,
            seen,
            connections,
            task,
        }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw no request")
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve_upstream<T>(io: T, seen: Arc<Mutex<Vec<Seen>>>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| upstream_handle(req, seen.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<TBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/ws" || path == "/ws-auth" {
        seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
            body: Bytes::new(),
        });
        // `/ws-auth` first sends back the `Authorization` it received.
        let greeting = (path == "/ws-auth")
            .then(|| req.headers().get("authorization").cloned())
            .flatten()
            .map(|v| v.to_str().unwrap().to_owned());
        return Ok(ws_accept(&mut req, greeting));
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let s = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    seen.lock().unwrap().push(s);

    let echo = || {
        let mut out = Vec::new();
        for (k, v) in &parts.headers {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&body);
        out
    };
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut resp = if path == "/echo" {
        Response::new(full(echo()))
    } else if path == "/spaced" {
        // A transforming upstream (an LLM asked to repeat its input with
        // spaces between the characters).
        let spaced: Vec<u8> = body.iter().flat_map(|b| [*b, b' ']).collect();
        Response::new(full(spaced))
    } else if path == "/gzip-echo" {
        // Compressed whatever the request asked for.
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&echo()).unwrap();
        let mut r = Response::new(full(gz.finish().unwrap()));
        r.headers_mut()
            .insert("content-encoding", HeaderValue::from_static("gzip"));
        r
    } else if path == "/trailer-echo" {
        // The Authorization header comes back in a trailer.
        let trailers = {
            let mut t = HeaderMap::new();
            t.insert("x-echo-trailer", HeaderValue::from_str(&auth).unwrap());
            t
        };
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"body "))),
            Ok(Frame::trailers(trailers)),
        ];
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            frames,
        ))));
        r.headers_mut()
            .insert("trailer", HeaderValue::from_static("x-echo-trailer"));
        r
    } else if path == "/reason-echo" {
        // The Authorization header comes back as the reason phrase.
        let mut r = Response::new(full("reason"));
        *r.status_mut() = StatusCode::from_u16(299).unwrap();
        r.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::try_from(auth.clone().into_bytes()).unwrap());
        r
    } else if path == "/chunked-echo" {
        let chunk: usize = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("chunk="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(5);
        let data = echo();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for piece in data.chunks(chunk) {
                if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                    return;
                }
                // Separate TCP writes, so the proxy sees separate reads.
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        });
        Response::new(ChannelBody(rx).boxed())
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(full("status body"));
        *r.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        r
    } else {
        Response::new(full("ok"))
    };
    if let Some(auth) = parts.headers.get(http::header::AUTHORIZATION) {
        resp.headers_mut().insert("x-echo-auth", auth.clone());
    }
    Ok(resp)
}

fn ws_accept(req: &mut Request<Incoming>, greeting: Option<String>) -> Response<TBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if let Some(g) = greeting {
            if ws.send(Message::text(g)).await.is_err() {
                return;
            }
        }
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("upgrade"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).unwrap(),
    );
    resp
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A TCP server on loopback that sends `banner` first, then echoes.
pub async fn tcp_echo(banner: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !banner.is_empty() && s.write_all(banner).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

// --- credentials and audit -------------------------------------------------------

/// In-memory credentials; `set` swaps them (e.g. to simulate a disable).
#[derive(Default)]
pub struct TestCreds {
    creds: Mutex<Arc<Vec<Credential>>>,
    pub calls: AtomicUsize,
    pub fail: std::sync::atomic::AtomicBool,
}

impl TestCreds {
    pub fn set(&self, creds: Vec<Credential>) {
        *self.creds.lock().unwrap() = Arc::new(creds);
    }
}

#[async_trait]
impl CredentialSource for TestCreds {
    async fn credentials(&self, _: &SandboxIdentity) -> Result<Arc<Vec<Credential>>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err("vault sealed".into());
        }
        Ok(self.creds.lock().unwrap().clone())
    }
}

/// Collects audit rows; a durable row is completed in place. `fail`
/// makes it refuse durable rows, `refuse` makes it refuse to admit.
#[derive(Default)]
pub struct TestAudit {
    rows: Mutex<Vec<AuditEntry>>,
    /// How many durable rows were taken (in order with upstream arrivals,
    /// see [`Upstream::seen`]).
    pub durable: AtomicUsize,
    pub fail: std::sync::atomic::AtomicBool,
    pub refuse: std::sync::atomic::AtomicBool,
    /// While set, durable writes do not finish (a slow database).
    pub hold: std::sync::atomic::AtomicBool,
}

impl AuditSink for TestAudit {
    fn record(&self, entry: AuditEntry) {
        self.rows.lock().unwrap().push(entry);
    }

    fn record_durable(&self, entry: AuditEntry) -> SinkFuture<'_> {
        Box::pin(async move {
            while self.hold.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(AuditUnavailable);
            }
            assert!(entry.deferred);
            self.durable.fetch_add(1, Ordering::SeqCst);
            self.rows.lock().unwrap().push(entry);
            Ok(())
        })
    }

    fn complete(&self, c: AuditCompletion) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows
            .iter_mut()
            .find(|r| r.id == c.id && r.deferred)
            .expect("a completion for a durable row");
        let r = row.request.as_mut().unwrap();
        (r.status, r.bytes_out, r.bytes_in, r.duration_ms) =
            (c.status, c.bytes_out, c.bytes_in, c.duration_ms);
        row.outcome = c.outcome;
        // Completed: what the finished row looks like to the tests.
        row.deferred = false;
    }

    fn admit(&self) -> SinkFuture<'_> {
        let ok = !self.refuse.load(Ordering::SeqCst);
        Box::pin(std::future::ready(if ok {
            Ok(())
        } else {
            Err(AuditUnavailable)
        }))
    }
}

impl TestAudit {
    pub fn rows(&self) -> Vec<AuditEntry> {
        self.rows.lock().unwrap().clone()
    }

    /// Waits until at least `n` finished rows arrived (rows are written, or
    /// completed, when the last byte of a response has gone), then returns
    /// them all.
    pub async fn wait_for(&self, n: usize) -> Vec<AuditEntry> {
        for _ in 0..500 {
            let rows = self.rows();
            if rows.len() >= n && rows.iter().all(|r| !r.deferred) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} audit rows, got {:?}", self.rows());
    }
}

pub fn secret(name: &str, hosts: &[&str]) -> Secret {
    let now = time::OffsetDateTime::now_utc();
    Secret {
        id: SecretId::generate(),
        tenant_id: TenantId::generate(),
        name: name.into(),
        scope: SecretScope::ExternalUser,
        scope_key: Some("dr_smith".into()),
        workspace_id: None,
        expose_as_env: name.to_uppercase(),
        allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        substitute_in: SubstituteIn::HEADERS,
        version: 1,
        enabled: true,
        created_at: now,
        updated_at: now,
    }
}

// --- the harness -----------------------------------------------------------------

/// The real value of the main test secret: `+/=` need percent-encoding.
pub const VALUE: &str = "sk-live-0123456789abcdef+/=";
/// A second secret's value, with characters JSON must escape.
pub const JSON_VALUE: &str = "pa\"ss\\word-123";

/// A proxy with one attached sandbox and fake upstreams:
/// `api.openai.com` and `api.github.com` (trusted HTTPS), `untrusted.example`
/// (HTTPS from an unknown CA), `plain.example` (HTTP), `raw.example` (TCP
/// echo) and `banner.example` (TCP, speaks first).
pub struct Harness {
    pub dir: TempDir,
    pub proxy: EgressProxy,
    pub creds: Arc<TestCreds>,
    pub audit: Arc<TestAudit>,
    pub identity: SandboxIdentity,
    pub socket: PathBuf,
    pub paths: SocketPaths,
    pub ca_pem: String,
    pub upstream: Upstream,
    /// The PEM of the CA that signed `upstream`'s certificate.
    pub upstream_ca_pem: String,
    pub untrusted: Upstream,
    pub plain: Upstream,
    /// The main secret: allowed for `api.openai.com` and `*.github.com`.
    pub main: Credential,
    /// Allowed for `api.anthropic.com` only.
    pub other: Credential,
    /// No host restriction; a value JSON must escape.
    pub json: Credential,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut EgressConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "trusted");
        let rogue = TestCa::new(dir.path(), "rogue");
        let upstream =
            Upstream::https(ca.server_config(&["api.openai.com", "api.github.com"])).await;
        let untrusted = Upstream::https(rogue.server_config(&["untrusted.example"])).await;
        let plain = Upstream::http().await;
        let raw = tcp_echo(b"").await;
        let banner = tcp_echo(b"220 hello\r\n").await;
        let mut cfg = EgressConfig {
            resolve: vec![
                ("api.openai.com".into(), upstream.addr),
                ("api.github.com".into(), upstream.addr),
                ("untrusted.example".into(), untrusted.addr),
                ("plain.example".into(), plain.addr),
                ("raw.example".into(), raw),
                ("banner.example".into(), banner),
            ],
            upstream_extra_ca: Some(ca.pem_path.clone()),
            ..EgressConfig::default()
        };
        tweak(&mut cfg);
        let upstream_ca_pem = std::fs::read_to_string(&ca.pem_path).unwrap();
        let creds = Arc::new(TestCreds::default());
        let audit = Arc::new(TestAudit::default());
        let proxy = EgressProxy::new(cfg, creds.clone(), audit.clone()).unwrap();

        let identity = SandboxIdentity {
            tenant_id: TenantId::generate(),
            sandbox_id: SandboxId::generate(),
            workspace_id: Some(WorkspaceId::generate()),
            labels: Labels {
                owner_user_id: Some("owner-1".into()),
                external_user_id: Some("dr_smith".into()),
                external_workspace_id: Some("clinic-1".into()),
                external_project_id: Some("proj-1".into()),
            },
            created_by_key_id: Some(ApiKeyId::generate()),
            created_by_workspace_key: false,
        };
        let make = |name: &str, hosts: &[&str], value: &str| {
            let secret = secret(name, hosts);
            Credential {
                placeholder: miosa_core::secret::placeholder(
                    b"test placeholder key",
                    &identity.sandbox_id,
                    &secret.id,
                ),
                secret,
                value: SecretValue::new(value.into()),
            }
        };
        let main = make("openai", &["api.openai.com", "*.github.com"], VALUE);
        let other = make("anthropic", &["api.anthropic.com"], "sk-ant-another-value");
        let json = make("db-password", &[], JSON_VALUE);
        creds.set(vec![main.clone(), other.clone(), json.clone()]);

        let ca = proxy.new_ca(&identity.sandbox_id).unwrap();
        let ca_pem = ca.cert_pem().to_owned();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let socket = run.join("egress.sock");
        let paths = SocketPaths {
            path: socket.clone(),
            staging: dir.path().join("egress.sock.new"),
            owner: None,
        };
        proxy.attach(identity.clone(), ca, &paths).await.unwrap();
        Self {
            dir,
            proxy,
            creds,
            audit,
            identity,
            socket,
            paths,
            ca_pem,
            upstream,
            upstream_ca_pem,
            untrusted,
            plain,
            main,
            other,
            json,
        }
    }

    /// A connection to the sandbox's socket (what the agent's relay makes).
    pub async fn dial(&self) -> UnixStream {
        UnixStream::connect(&self.socket).await.unwrap()
    }

    /// `CONNECT authority`; the status line's code, the response head and
    /// body, and the stream (positioned after the response).
    pub async fn connect(&self, authority: &str) -> (u16, String, UnixStream) {
        let mut s = self.dial().await;
        s.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let (status, head) = read_response(&mut s).await;
        (status, head, s)
    }

    /// An HTTP/1.1 client inside TLS inside `CONNECT host:port`, trusting
    /// the sandbox's CA.
    pub async fn https(&self, host: &str, port: u16) -> SendRequest<TBody> {
        let (status, head, s) = self.connect(&format!("{host}:{port}")).await;
        assert_eq!(status, 200, "{head}");
        let name = ServerName::try_from(host.to_owned()).unwrap();
        let tls = tls_client(&self.ca_pem).connect(name, s).await.unwrap();
        http1(tls).await
    }

    /// Lets every test secret be substituted in the query string and the
    /// body too, not only in headers.
    pub fn substitute_everywhere(&self) {
        let mut creds = vec![self.main.clone(), self.other.clone(), self.json.clone()];
        for c in &mut creds {
            c.secret.substitute_in = SubstituteIn::ALL;
        }
        self.creds.set(creds);
    }

    /// An HTTP/1.1 client for absolute-form requests to the proxy.
    pub async fn plain_client(&self) -> SendRequest<TBody> {
        http1(self.dial().await).await
    }
}

/// Reads a response head (and a `Content-Length` body) byte by byte, so
/// nothing after it is consumed.
pub async fn read_response(s: &mut UnixStream) -> (u16, String) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let mut text = String::from_utf8(head).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    text.push_str(&String::from_utf8_lossy(&body));
    (status, text)
}

/// An HTTP/1.1 client over `io`.
pub async fn http1<T>(io: T) -> SendRequest<TBody>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// Sends `req` and reads the whole response.
pub async fn send(
    client: &mut SendRequest<TBody>,
    req: Request<TBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    client.ready().await.unwrap();
    let resp = client.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A request builder with `Host` set (hyper's connection-level client does
/// not add one).
pub fn request(method: &str, uri: &str, host: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host)
}

/// Percent-decodes a form/query value.
pub fn form_value(encoded: &str, key: &str) -> Option<String> {
    encoded.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
    })
}

/// Asserts no audit row mentions `value` anywhere in its `Debug` form.
pub fn assert_rows_clean(rows: &[AuditEntry], value: &str) {
    for row in rows {
        assert!(
            !format!("{row:?}").contains(value),
            "a row leaks the value: {row:?}"
        );
    }
}

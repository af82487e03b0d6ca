//! `miosa-bench-egress`: measures the egress proxy and the audit log of the
//! full stack on this machine and prints tables. Build and run with
//!
//! ```sh
//! cargo build --release -p miosa --bin miosa-bench-egress --bin miosa
//! target/release/miosa-bench-egress [--concurrency 1,8,32] [--requests 3000]
//! ```
//!
//! It starts a real server in-process (a fresh data dir under /tmp, SQLite
//! unless `--database-url` names an empty database), a local HTTPS upstream
//! that answers 200 only to the real token, and one sandbox whose tenant
//! secret `BENCH_TOKEN` is allowed for `api.bench.example`. Then:
//!
//! 1. direct: kept-alive HTTPS to the upstream with the real token, against
//!    proxied: the same requests carrying the sandbox's placeholder, sent
//!    into the sandbox's egress socket exactly as the agent's bridge relays
//!    them (`CONNECT`, TLS to the sandbox CA, HTTP/1.1), so each is
//!    substituted, resolved through the secrets service and audited;
//! 2. the same comparison from Python `requests` inside the sandbox (through
//!    the agent's bridge) and on the host (`/usr/bin/python3`);
//! 3. the audit log at `--audit-rows` rows (default 1,000,000, appended
//!    through the store): filtered first and second pages over HTTP and
//!    through the store.
//!
//! Everything listens on 127.0.0.1 and is removed at the end.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{
    body::{Bytes, Incoming},
    client::conn::http1::SendRequest,
    header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST},
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use miosa::config::Config;
use miosa_client::Client;
use miosa_core::{
    audit::action, AuditCredential, AuditEntry, AuditId, AuditRequest, Outcome, PageRequest,
    SandboxId, SecretId, SecretScope, TenantId,
};
use miosa_store::{AuditFilter, Store};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    ClientConfig, RootCertStore, ServerConfig,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixStream},
    sync::Barrier,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The fake third-party API; `MIOSA_EGRESS_RESOLVE` points it at loopback.
const UPSTREAM_HOST: &str = "api.bench.example";
const UPSTREAM_PATH: &str = "/v1/models";
/// The real value; only the upstream, the vault and the proxy's memory see it.
const TOKEN: &str = "sk-bench-4f1c9a7e2b8d6035c1e7a9f2";
const ENV_NAME: &str = "BENCH_TOKEN";
const AUDIT_BATCH: usize = 1_000;
const AUDIT_USERS: u64 = 1_000;
const PAGE: u32 = 50;

struct Args {
    concurrency: Vec<usize>,
    requests: usize,
    warmup: usize,
    inside: usize,
    audit_rows: usize,
    queries: usize,
    database_url: Option<String>,
}

const USAGE: &str =
    "miosa-bench-egress [--concurrency 1,8,32] [--requests N=3000 per level, 0: skip] \
[--warmup N=300] [--inside N=500, 0: skip] [--audit-rows N=1000000, 0: skip] [--queries N=200] \
[--database-url postgres://… (an empty database)]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        concurrency: vec![1, 8, 32],
        requests: 3_000,
        warmup: 300,
        inside: 500,
        audit_rows: 1_000_000,
        queries: 200,
        database_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut text = || it.next().with_context(|| format!("{a}: missing value"));
        let number = |v: String| v.parse::<usize>().context("not a number");
        match a.as_str() {
            "--concurrency" => {
                args.concurrency = text()?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<usize>()
                            .context("--concurrency: not a list like 1,8,32")
                    })
                    .collect::<anyhow::Result<_>>()?;
                ensure!(
                    args.concurrency.iter().all(|&n| n > 0),
                    "--concurrency: levels must be at least 1"
                );
            }
            "--requests" => args.requests = number(text()?)?,
            "--warmup" => args.warmup = number(text()?)?,
            "--inside" => args.inside = number(text()?)?,
            "--audit-rows" => args.audit_rows = number(text()?)?,
            "--queries" => args.queries = number(text()?)?.max(1),
            "--database-url" => args.database_url = Some(text()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

// --- measurements --------------------------------------------------------------

/// Latencies (sorted) and the wall time they took.
struct Stats {
    lat: Vec<Duration>,
    wall: Duration,
}

impl Stats {
    fn new(mut lat: Vec<Duration>, wall: Duration) -> Self {
        lat.sort();
        Self { lat, wall }
    }

    /// Nearest-rank percentile.
    fn p(&self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.lat.len() as f64).ceil() as usize;
        self.lat[rank.clamp(1, self.lat.len()) - 1]
    }

    fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// `a - b` in milliseconds, signed (the proxy can win at a percentile by noise).
fn added(a: Duration, b: Duration) -> String {
    format!("{:+.3} ms", (a.as_secs_f64() - b.as_secs_f64()) * 1000.0)
}

/// xorshift64*: enough to pick users without another dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Self(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

// --- TLS and the fake upstream ------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client trusting exactly the certificates in `ca_pem`.
fn tls_client(ca_pem: &str) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("bad CA PEM")?)?;
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// A bearer-token API on 127.0.0.1: 200 with a small JSON body for the real
/// token, 401 for anything else (so a 200 through the proxy proves the
/// placeholder was substituted).
struct Upstream {
    addr: SocketAddr,
    ca_pem: String,
    ca_file: PathBuf,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "miosa-bench-egress upstream CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec![UPSTREAM_HOST.to_owned()])?
            .signed_by(&leaf_key, &issuer)?;
        let ca_pem = ca_cert.pem();
        let ca_file = dir.join("upstream-ca.pem");
        std::fs::write(&ca_file, &ca_pem)?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(cfg));

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let expected = HeaderValue::from_str(&format!("Bearer {TOKEN}"))?;
        let (ok2, refused2) = (ok.clone(), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (acceptor, expected) = (acceptor.clone(), expected.clone());
                let (ok, refused) = (ok2.clone(), refused2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let authorized = req.headers().get(AUTHORIZATION) == Some(&expected);
                        let counter = if authorized { &ok } else { &refused };
                        counter.fetch_add(1, Ordering::Relaxed);
                        async move { Ok::<_, Infallible>(answer(authorized)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            ca_pem,
            ca_file,
            ok,
            refused,
            task,
        })
    }
}

fn answer(authorized: bool) -> Response<Full<Bytes>> {
    let (status, body) = if authorized {
        (
            StatusCode::OK,
            r#"{"object":"list","data":[{"id":"bench-model"}]}"#,
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
        )
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

// --- HTTP clients -------------------------------------------------------------------

type Conn = SendRequest<Empty<Bytes>>;

async fn http1<T>(io: T) -> anyhow::Result<Conn>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn server_name() -> anyhow::Result<ServerName<'static>> {
    Ok(ServerName::try_from(UPSTREAM_HOST)?)
}

/// A kept-alive HTTPS connection straight to the upstream.
async fn direct_conn(addr: SocketAddr, tls: &TlsConnector) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    http1(tls.connect(server_name()?, tcp).await?).await
}

/// A kept-alive HTTPS connection through the sandbox's egress socket, made
/// the way the agent's bridge relays one from `127.0.0.1:3128` inside.
async fn proxied_conn(socket: &Path, tls: &TlsConnector) -> anyhow::Result<Conn> {
    let mut s = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let authority = format!("{UPSTREAM_HOST}:443");
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    // Byte by byte, so nothing after the head (the TLS) is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(head.len() < 8192, "CONNECT response head too long");
        let mut b = [0u8; 1];
        ensure!(s.read(&mut b).await? == 1, "proxy closed during CONNECT");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    ensure!(
        head.split(' ').nth(1) == Some("200"),
        "CONNECT refused: {head}"
    );
    http1(tls.connect(server_name()?, s).await?).await
}

/// One GET; the status, after the whole body arrived.
async fn get(c: &mut Conn, auth: &HeaderValue) -> anyhow::Result<StatusCode> {
    let req = Request::get(UPSTREAM_PATH)
        .header(HOST, UPSTREAM_HOST)
        .header(AUTHORIZATION, auth.clone())
        .body(Empty::new())?;
    c.ready().await?;
    let resp = c.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}

/// Every connection sends back to back: its share of `warmup`, then (after
/// all finished warming up) its share of `requests`, timed. Any non-200 is
/// an error. Returns the measured stats and how many requests were sent.
async fn load(
    conns: Vec<Conn>,
    auth: HeaderValue,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<(Stats, usize)> {
    let n = conns.len();
    let (warm, per) = (warmup.div_ceil(n), requests.div_ceil(n));
    let start = Arc::new(Barrier::new(n + 1));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (auth, start) = (auth.clone(), start.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let mut result = Ok(());
                for _ in 0..warm {
                    if let Err(e) = expect_ok(&mut c, &auth).await {
                        result = Err(e);
                        break;
                    }
                }
                start.wait().await;
                result?;
                for _ in 0..per {
                    let t = Instant::now();
                    expect_ok(&mut c, &auth).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    start.wait().await;
    let t = Instant::now();
    let mut all = Vec::with_capacity(per * n);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((Stats::new(all, t.elapsed()), (warm + per) * n))
}

async fn expect_ok(c: &mut Conn, auth: &HeaderValue) -> anyhow::Result<()> {
    let status = get(c, auth).await?;
    ensure!(status == StatusCode::OK, "upstream answered {status}");
    Ok(())
}

// --- the audit log as the server writes it --------------------------------------------

/// Follows a tenant's chain (through a second store handle on the server's
/// database) and counts the `egress.request` rows of one sandbox.
struct AuditFollower {
    store: Arc<dyn Store>,
    tenant: TenantId,
    sandbox: SandboxId,
    head: i64,
    egress_rows: u64,
}

impl AuditFollower {
    async fn catch_up(&mut self) -> anyhow::Result<u64> {
        loop {
            let rows = self
                .store
                .audit_chain(&self.tenant, self.head, 5_000)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(self.egress_rows);
            };
            self.head = last.seq;
            self.egress_rows += rows
                .iter()
                .filter(|r| {
                    r.entry.action == action::EGRESS_REQUEST
                        && r.entry.sandbox_id.as_ref() == Some(&self.sandbox)
                })
                .count() as u64;
        }
    }

    /// Waits until `n` rows are in, or until none arrived for two seconds
    /// (rows the writer dropped never come); how long that took.
    async fn wait_for(&mut self, n: u64) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let (mut seen, mut progress) = (self.catch_up().await?, Instant::now());
        while seen < n && progress.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = self.catch_up().await?;
            if now > seen {
                (seen, progress) = (now, Instant::now());
            }
        }
        Ok(if seen < n { progress - t } else { t.elapsed() })
    }
}

/// Counts a sandbox's `egress.request` rows through `GET /v1/audit`.
async fn count_over_http(c: &Client, sandbox: &str) -> anyhow::Result<(u64, Option<Value>)> {
    let (mut n, mut cursor, mut sample) = (0u64, None::<String>, None);
    loop {
        let mut q = format!("action=egress.request&sandbox_id={sandbox}&limit=500");
        if let Some(cur) = &cursor {
            q.push_str(&format!("&cursor={cur}"));
        }
        let page = c.list_audit(&q).await?;
        if sample.is_none() {
            sample = page.data.first().map(serde_json::to_value).transpose()?;
        }
        n += page.data.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((n, sample)),
        }
    }
}

// --- main ------------------------------------------------------------------------------

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let agent = std::env::current_exe()?
        .parent()
        .context("no parent dir")?
        .join("miosa");
    if !agent.is_file() {
        bail!(
            "{} not found: build with `cargo build --release -p miosa --bin miosa-bench-egress --bin miosa`",
            agent.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("miosa-bench-egress")
        .tempdir()?;
    let data_dir = dir.path().join("data");
    let upstream = Upstream::start(dir.path()).await?;
    let mut vars = vec![
        ("MIOSA_LISTEN", "127.0.0.1:0".to_string()),
        ("MIOSA_DATA_DIR", data_dir.display().to_string()),
        ("MIOSA_AGENT_BINARY", agent.display().to_string()),
        ("MIOSA_LOG", "warn".to_string()),
        (
            "MIOSA_EGRESS_RESOLVE",
            format!("{UPSTREAM_HOST}={}", upstream.addr),
        ),
        (
            "MIOSA_EGRESS_UPSTREAM_CA",
            upstream.ca_file.display().to_string(),
        ),
    ];
    if let Some(url) = &args.database_url {
        vars.push(("MIOSA_DATABASE_URL", url.clone()));
    }
    let config = Config::load_with(None, |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })?;
    miosa::logging::init(&config);
    let server = miosa::server::start(&config).await?;
    let key = server
        .bootstrap
        .as_ref()
        .context("the database is not empty: --database-url must name a fresh database")?
        .admin_key
        .reveal()
        .to_owned();
    let c = Client::new(server.url(), Some(key));
    let result = run(&c, &config, &data_dir, &upstream, &args).await;
    // Clean up whatever is left, even after an error.
    if let Ok(list) = c.list_sandboxes("limit=500").await {
        for s in list.data {
            let _ = c.delete_sandbox(&s.id).await;
        }
    }
    server.shutdown().await?;
    result
}

async fn run(
    c: &Client,
    config: &Config,
    data_dir: &Path,
    upstream: &Upstream,
    args: &Args,
) -> anyhow::Result<()> {
    let tenant = TenantId::parse(c.me().await?.tenant_id.as_deref().unwrap_or_default())
        .context("the admin key has no tenant")?;
    // A second handle on the server's database, for following the audit
    // chain and appending the bulk rows.
    let store = miosa::storage::open(config.database_url.expose()).await?;
    let backend = store.backend();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nmiosa-bench-egress: {backend}, {cores} cores; server, proxy, upstream and client share one process"
    );

    if args.requests > 0 || args.inside > 0 {
        let secret = c
            .set_secret(&json!({
                "name": "bench", "value": TOKEN, "scope": "tenant",
                "expose_as_env": ENV_NAME, "allowed_hosts": [UPSTREAM_HOST]
            }))
            .await?;
        let sandbox = c
            .create_sandbox(&json!({"external_user_id": "bench-user", "timeout_seconds": 3600}))
            .await?;
        let creds = c.sandbox_credentials(&sandbox.id).await?.data;
        let placeholder = creds
            .iter()
            .find(|v| v["env"] == ENV_NAME)
            .and_then(|v| v["placeholder"].as_str())
            .context("no placeholder for BENCH_TOKEN in the sandbox's credentials")?
            .to_owned();
        ensure!(placeholder != TOKEN, "the placeholder is the value");
        let mut follower = AuditFollower {
            store: store.clone(),
            tenant: tenant.clone(),
            sandbox: SandboxId::parse(&sandbox.id)?,
            head: 0,
            egress_rows: 0,
        };
        let mut proxied_sent = 0u64;
        if args.requests > 0 {
            let run_dir = data_dir.join("sandboxes").join(&sandbox.id).join("run");
            proxy_vs_direct(
                args,
                upstream,
                &run_dir,
                &placeholder,
                &mut follower,
                &mut proxied_sent,
            )
            .await?;
        }
        if args.inside > 0 {
            proxied_sent += inside_vs_host(c, &sandbox.id, upstream, args.inside).await?;
        }
        let (rows, sample) = count_over_http(c, &sandbox.id).await?;
        println!();
        println!("| audit check | value |");
        println!("|---|---|");
        println!("| proxied requests sent (incl. warm-up) | {proxied_sent} |");
        println!("| `egress.request` rows for the sandbox (GET /v1/audit, paged) | {rows} |");
        println!(
            "| upstream: 200 (real token) / 401 (anything else) | {} / {} |",
            upstream.ok.load(Ordering::Relaxed),
            upstream.refused.load(Ordering::Relaxed)
        );
        if let Some(s) = sample {
            ensure!(
                !s.to_string().contains(TOKEN),
                "an audit row holds the value"
            );
            ensure!(
                s["credential"]["secret_id"] == secret.id.as_str(),
                "the newest row does not name the secret: {s}"
            );
            println!(
                "| newest row | {} {}{} → {}, secret `{}` ({}) |",
                s["request"]["method"].as_str().unwrap_or("?"),
                s["request"]["host"].as_str().unwrap_or("?"),
                s["request"]["path"].as_str().unwrap_or("?"),
                s["request"]["status"],
                s["credential"]["name"].as_str().unwrap_or("?"),
                s["credential"]["scope"].as_str().unwrap_or("?"),
            );
        }
        c.delete_sandbox(&sandbox.id).await?;
        if rows != proxied_sent {
            eprintln!("warning: {proxied_sent} proxied requests but {rows} audit rows");
        }
    }

    if args.audit_rows > 0 {
        audit_queries(c, store.as_ref(), &tenant, args, config).await?;
    }
    Ok(())
}

/// One concurrency level's results.
struct Level {
    n: usize,
    direct: Stats,
    proxied: Stats,
    /// Proxied requests, warm-up included: one audit row each.
    sent: usize,
    /// Rows still queued when the last response arrived.
    behind: u64,
    /// From the last response until the last row was written.
    drain: Duration,
    /// Rows that never arrived (the writer's queue overflowed).
    lost: u64,
    audit_rps: f64,
}

async fn proxy_vs_direct(
    args: &Args,
    upstream: &Upstream,
    run_dir: &Path,
    placeholder: &str,
    follower: &mut AuditFollower,
    proxied_sent: &mut u64,
) -> anyhow::Result<()> {
    let direct_tls = tls_client(&upstream.ca_pem)?;
    let sandbox_ca = std::fs::read_to_string(run_dir.join("egress-ca.pem"))
        .context("cannot read the sandbox's egress CA")?;
    let proxy_tls = tls_client(&sandbox_ca)?;
    let socket = run_dir.join("egress.sock");
    let real = HeaderValue::from_str(&format!("Bearer {TOKEN}"))?;
    let fake = HeaderValue::from_str(&format!("Bearer {placeholder}"))?;

    let mut levels = Vec::new();
    for &n in &args.concurrency {
        eprintln!("concurrency {n}: direct…");
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(direct_conn(upstream.addr, &direct_tls).await?);
        }
        let (direct, _) = load(conns, real.clone(), args.warmup, args.requests).await?;

        eprintln!("concurrency {n}: through the egress proxy…");
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(proxied_conn(&socket, &proxy_tls).await?);
        }
        let before = follower.catch_up().await?;
        let t = Instant::now();
        let (proxied, sent) = load(conns, fake.clone(), args.warmup, args.requests).await?;
        let load_time = t.elapsed();
        *proxied_sent += sent as u64;
        let expected = before + sent as u64;
        let behind = expected.saturating_sub(follower.catch_up().await?);
        let drain = follower.wait_for(expected).await?;
        let written = follower.egress_rows - before;
        levels.push(Level {
            n,
            direct,
            proxied,
            sent,
            behind,
            drain,
            lost: expected.saturating_sub(follower.egress_rows),
            audit_rps: written as f64 / (load_time + drain).as_secs_f64(),
        });
    }

    println!();
    println!(
        "GET https://{UPSTREAM_HOST}{UPSTREAM_PATH}, kept-alive HTTP/1.1, {} measured requests per level after {} warm-up; \
proxied = sandbox egress socket → CONNECT → TLS (sandbox CA) → placeholder substituted → upstream TLS; \
every proxied request is an audit row",
        args.requests, args.warmup
    );
    println!();
    println!("| conc. | direct p50 | direct p99 | direct req/s | proxied p50 | proxied p99 | proxied req/s | added p50 | added p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for Level {
        n,
        direct: d,
        proxied: p,
        ..
    } in &levels
    {
        println!(
            "| {n} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {} |",
            ms(d.p(50.0)),
            ms(d.p(99.0)),
            d.rps(),
            ms(p.p(50.0)),
            ms(p.p(99.0)),
            p.rps(),
            added(p.p(50.0), d.p(50.0)),
            added(p.p(99.0), d.p(99.0)),
        );
    }
    println!();
    println!("| conc. | proxied requests (incl. warm-up) | audit rows not yet written when the load ended | all written within | rows lost | audit rows/s (load + drain) |");
    println!("|---|---|---|---|---|---|");
    for l in &levels {
        println!(
            "| {} | {} | {} | {:.1} ms | {} | {:.0} |",
            l.n,
            l.sent,
            l.behind,
            l.drain.as_secs_f64() * 1000.0,
            l.lost,
            l.audit_rps
        );
    }
    if let (Some(first), Some(best)) = (
        levels.first(),
        levels.iter().map(|l| l.proxied.rps()).reduce(f64::max),
    ) {
        let added_p50 = first.proxied.p(50.0).saturating_sub(first.direct.p(50.0));
        println!();
        println!("| target | measured | |");
        println!("|---|---|---|");
        println!(
            "| added p50 ≤ 1 ms (concurrency {}) | {} | {} |",
            first.n,
            ms(added_p50),
            verdict(added_p50 <= Duration::from_millis(1))
        );
        println!(
            "| ≥ 3,000 proxied req/s (best level) | {best:.0} | {} |",
            verdict(best >= 3_000.0)
        );
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// A Python client: `requests.Session` (environment proxy and CA bundle),
/// sequential kept-alive GETs, its own timings as one JSON line.
/// `BENCH_CONNECT=ip:port` makes it dial there (host run, no proxy).
const PY_CLIENT: &str = r#"
import json, os, sys, time
try:
    import requests
except ImportError:
    print(json.dumps({"skip": "python3 has no requests module"})); sys.exit(0)
n, url = int(sys.argv[1]), sys.argv[2]
to = os.environ.get("BENCH_CONNECT")
if to:
    import urllib3.util.connection as uc
    host, port = to.rsplit(":", 1)
    orig = uc.create_connection
    uc.create_connection = lambda addr, *a, **k: orig((host, int(port)), *a, **k)
s = requests.Session()
h = {"Authorization": "Bearer " + os.environ["BENCH_TOKEN"]}
bad = 0
for _ in range(50):
    bad += s.get(url, headers=h).status_code != 200
lat = []
t0 = time.perf_counter()
for _ in range(n):
    t = time.perf_counter()
    bad += s.get(url, headers=h).status_code != 200
    lat.append(time.perf_counter() - t)
wall = time.perf_counter() - t0
lat.sort()
pick = lambda q: lat[max(1, -(-len(lat) * q // 100)) - 1] * 1000
print(json.dumps({"n": n + 50, "p50": pick(50), "p99": pick(99), "rps": n / wall, "bad": bad}))
"#;

/// Python `requests` inside the sandbox (agent bridge → proxy) and on the
/// host (straight to the upstream). Returns how many proxied requests the
/// sandbox sent.
async fn inside_vs_host(
    c: &Client,
    sandbox: &str,
    upstream: &Upstream,
    n: usize,
) -> anyhow::Result<u64> {
    let url = format!("https://{UPSTREAM_HOST}{UPSTREAM_PATH}");
    eprintln!("python inside the sandbox…");
    let r = c
        .exec(
            sandbox,
            &json!({"command": format!("python3 - {n} {url}"), "stdin": PY_CLIENT, "timeout_seconds": 600}),
        )
        .await?;
    ensure!(
        r.exit_code == Some(0),
        "python in the sandbox failed: {}{}",
        r.stdout,
        r.stderr
    );
    let inside: Value = serde_json::from_str(r.stdout.trim())
        .with_context(|| format!("python in the sandbox printed {:?}", r.stdout))?;

    eprintln!("python on the host…");
    let mut cmd = tokio::process::Command::new("/usr/bin/python3");
    cmd.args(["-", &n.to_string(), &url])
        .env("BENCH_TOKEN", TOKEN)
        .env("BENCH_CONNECT", upstream.addr.to_string())
        .env("REQUESTS_CA_BUNDLE", &upstream.ca_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    let host = match cmd.spawn() {
        Ok(mut child) => {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(PY_CLIENT.as_bytes()).await?;
            }
            let out = child.wait_with_output().await?;
            serde_json::from_slice::<Value>(&out.stdout)
                .unwrap_or_else(|_| json!({"skip": "host python3 failed"}))
        }
        Err(e) => json!({"skip": format!("cannot run /usr/bin/python3: {e}")}),
    };

    println!();
    println!("Python `requests.Session`, one client, sequential kept-alive GETs (50 warm-up)");
    println!();
    println!("| path | n | p50 | p99 | req/s | non-200 |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, v: &Value| match v["skip"].as_str() {
        Some(why) => println!("| {name} | skipped: {why} | | | | |"),
        None => println!(
            "| {name} | {n} | {:.3} ms | {:.3} ms | {:.0} | {} |",
            v["p50"].as_f64().unwrap_or(f64::NAN),
            v["p99"].as_f64().unwrap_or(f64::NAN),
            v["rps"].as_f64().unwrap_or(f64::NAN),
            v["bad"]
        ),
    };
    row("host → upstream", &host);
    row("sandbox → agent bridge → egress proxy → upstream", &inside);
    if let (Some(a), Some(b)) = (inside["p50"].as_f64(), host["p50"].as_f64()) {
        println!("| added p50 (inside − host) | | {:+.3} ms | | | |", a - b);
    }
    ensure!(
        inside["bad"].as_u64() == Some(0),
        "non-200 answers inside the sandbox: {inside}"
    );
    Ok(inside["n"].as_u64().unwrap_or(0))
}

// --- the audit log at scale -------------------------------------------------------------

fn bulk_entry(
    rng: &mut Rng,
    tenant: &TenantId,
    sandboxes: &[SandboxId],
    secret: &SecretId,
) -> AuditEntry {
    let user = rng.below(AUDIT_USERS);
    let sandbox = &sandboxes[rng.below(sandboxes.len() as u64) as usize];
    let kind = rng.below(10);
    let egress = kind < 8;
    AuditEntry {
        id: AuditId::generate(),
        tenant_id: tenant.clone(),
        time: miosa_core::time_util::now(),
        action: match kind {
            0..=7 => action::EGRESS_REQUEST,
            8 => action::SANDBOX_CREATED,
            _ => action::SANDBOX_DESTROYED,
        }
        .to_owned(),
        actor: (!egress).then(|| "system".to_owned()),
        target: None,
        sandbox_id: Some(sandbox.clone()),
        workspace_id: None,
        owner_user_id: None,
        external_user_id: Some(format!("bench-user-{user}")),
        external_workspace_id: Some(format!("bench-workspace-{}", user % 50)),
        external_project_id: None,
        request: egress.then(|| AuditRequest {
            method: "GET".into(),
            host: UPSTREAM_HOST.into(),
            path: UPSTREAM_PATH.into(),
            status: Some(200),
            bytes_out: 0,
            bytes_in: 48,
            duration_ms: 1,
        }),
        credential: egress.then(|| AuditCredential {
            secret_id: secret.clone(),
            name: "bench".into(),
            scope: SecretScope::Tenant,
        }),
        outcome: Outcome::Success,
    }
}

async fn audit_queries(
    c: &Client,
    store: &dyn Store,
    tenant: &TenantId,
    args: &Args,
    config: &Config,
) -> anyhow::Result<()> {
    let mut rng = Rng::seeded();
    let sandboxes: Vec<SandboxId> = (0..8).map(|_| SandboxId::generate()).collect();
    let secret = SecretId::generate();
    eprintln!("appending {} audit rows…", args.audit_rows);
    let t = Instant::now();
    let mut done = 0;
    while done < args.audit_rows {
        let n = AUDIT_BATCH.min(args.audit_rows - done);
        let batch: Vec<AuditEntry> = (0..n)
            .map(|_| bulk_entry(&mut rng, tenant, &sandboxes, &secret))
            .collect();
        store.append_audit(&batch).await?;
        done += n;
        if done % 100_000 == 0 {
            eprintln!(
                "  {done} rows, {:.0} rows/s",
                done as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    let insert = t.elapsed();

    eprintln!("{} filtered page queries…", args.queries);
    let users: Vec<String> = (0..args.queries)
        .map(|_| format!("bench-user-{}", rng.below(AUDIT_USERS)))
        .collect();
    let (mut http1st, mut http2nd, mut store1st, mut store2nd) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut returned = 0usize;
    let wall = Instant::now();
    for u in &users {
        let q = format!("external_user_id={u}&limit={PAGE}");
        let t = Instant::now();
        let page = c.list_audit(&q).await?;
        http1st.push(t.elapsed());
        ensure!(
            page.data
                .iter()
                .all(|e| e.external_user_id.as_deref() == Some(u.as_str())),
            "the filter returned another user's rows"
        );
        returned += page.data.len();
        if let Some(cursor) = &page.next_cursor {
            let t = Instant::now();
            c.list_audit(&format!("{q}&cursor={cursor}")).await?;
            http2nd.push(t.elapsed());
        }
    }
    let http_wall = wall.elapsed();
    for u in &users {
        let filter = AuditFilter {
            external_user_id: Some(u.clone()),
            ..AuditFilter::default()
        };
        let mut page = PageRequest {
            limit: PAGE,
            after: None,
        };
        let t = Instant::now();
        let first = store.list_audit(tenant, &filter, &page).await?;
        store1st.push(t.elapsed());
        if let Some(cursor) = first.next_cursor {
            page.after = Some(cursor);
            let t = Instant::now();
            store.list_audit(tenant, &filter, &page).await?;
            store2nd.push(t.elapsed());
        }
    }

    println!();
    println!(
        "Audit log: {} rows appended for one tenant over {AUDIT_USERS} external_user_ids, 8 sandboxes, 3 actions ({}; the server's own database)",
        args.audit_rows,
        store.backend()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| append (Store::append_audit, batches of {AUDIT_BATCH}, hash-chained) | {:.0} rows/s ({:.1} s) |",
        args.audit_rows as f64 / insert.as_secs_f64(),
        insert.as_secs_f64()
    );
    let db_file = config.data_dir.join("miosa.db");
    if store.backend() == "sqlite" {
        if let Ok(meta) = std::fs::metadata(&db_file) {
            println!(
                "| SQLite file size | {:.0} MiB |",
                meta.len() as f64 / (1024.0 * 1024.0)
            );
        }
    }
    println!(
        "| rows per first page (mean) | {:.1} |",
        returned as f64 / users.len() as f64
    );
    println!(
        "| HTTP page requests per second (sequential, both pages) | {:.0} |",
        (http1st.len() + http2nd.len()) as f64 / http_wall.as_secs_f64()
    );
    println!();
    println!("| query (external_user_id = random user, limit {PAGE}) | n | p50 | p99 | target p99 ≤ 20 ms |");
    println!("|---|---|---|---|---|");
    for (name, lat) in [
        ("GET /v1/audit (HTTP, typed client)", http1st),
        ("GET /v1/audit, second page via cursor", http2nd),
        ("Store::list_audit", store1st),
        ("Store::list_audit, second page", store2nd),
    ] {
        let s = Stats::new(lat, Duration::ZERO);
        if s.lat.is_empty() {
            println!("| {name} | 0 (no user had a second page) | – | – | – |");
            continue;
        }
        println!(
            "| {name} | {} | {} | {} | {} |",
            s.lat.len(),
            ms(s.p(50.0)),
            ms(s.p(99.0)),
            verdict(s.p(99.0) <= Duration::from_millis(20))
        );
    }
    Ok(())
}

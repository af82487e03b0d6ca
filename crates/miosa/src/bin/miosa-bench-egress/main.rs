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
//!    substituted, resolved through the secrets service and audited (its
//!    row committed before the request leaves), and the same once more with
//!    no placeholder (nothing substituted, the row queued): the difference
//!    is what fail-closed audit costs;
//! 2. the same comparison from Python `requests` inside the sandbox (through
//!    the agent's bridge) and on the host (`/usr/bin/python3`), skipped
//!    with the reason when Python or `requests` is missing;
//! 3. the audit log at `--audit-rows` rows (default 1,000,000, appended
//!    through the store): filtered first and second pages over HTTP and
//!    through the store.
//!
//! Everything listens on 127.0.0.1 and is removed at the end.

mod audit;
mod net;

use audit::*;
use net::*;

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
    /// Proxied requests that carry no placeholder: nothing substituted, so
    /// their audit rows go through the queue instead of being made durable
    /// before the request leaves.
    plain: Stats,
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
    let none = HeaderValue::from_static("Bearer no-secret-here");

    let mut levels = Vec::new();
    for &n in &args.concurrency {
        eprintln!("concurrency {n}: direct…");
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(direct_conn(upstream.addr, &direct_tls).await?);
        }
        let (direct, _) = load(
            conns,
            real.clone(),
            StatusCode::OK,
            args.warmup,
            args.requests,
        )
        .await?;

        eprintln!("concurrency {n}: through the egress proxy…");
        let conns = proxied_conns(n, &socket, &proxy_tls).await?;
        let before = follower.catch_up().await?;
        let t = Instant::now();
        let (proxied, sent) = load(
            conns,
            fake.clone(),
            StatusCode::OK,
            args.warmup,
            args.requests,
        )
        .await?;
        let load_time = t.elapsed();
        *proxied_sent += sent as u64;
        let expected = before + sent as u64;
        let behind = expected.saturating_sub(follower.catch_up().await?);
        let drain = follower.wait_for(expected).await?;
        let written = follower.egress_rows - before;
        let lost = expected.saturating_sub(follower.egress_rows);

        eprintln!("concurrency {n}: through the egress proxy, nothing substituted…");
        let conns = proxied_conns(n, &socket, &proxy_tls).await?;
        let (plain, plain_sent) = load(
            conns,
            none.clone(),
            StatusCode::UNAUTHORIZED,
            args.warmup,
            args.requests,
        )
        .await?;
        *proxied_sent += plain_sent as u64;
        follower
            .wait_for(follower.egress_rows + plain_sent as u64)
            .await?;
        levels.push(Level {
            n,
            direct,
            proxied,
            plain,
            sent,
            behind,
            drain,
            lost,
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
    println!(
        "Fail-closed audit: a request carrying a substituted value waits until its audit row is committed \
(group commit); one carrying none is audited through the queue. Same proxy, same upstream (which answers 401 to it)."
    );
    println!();
    println!("| conc. | no value p50 | no value p99 | no value req/s | with value p50 | with value p99 | cost of the durable row p50 | p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for l in &levels {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            l.n,
            ms(l.plain.p(50.0)),
            ms(l.plain.p(99.0)),
            l.plain.rps(),
            ms(l.proxied.p(50.0)),
            ms(l.proxied.p(99.0)),
            added(l.proxied.p(50.0), l.plain.p(50.0)),
            added(l.proxied.p(99.0), l.plain.p(99.0)),
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
        let durable_p50 = first.proxied.p(50.0).saturating_sub(first.plain.p(50.0));
        println!();
        println!("| target | measured | |");
        println!("|---|---|---|");
        println!(
            "| fail-closed audit adds p50 ≤ 1 ms (concurrency {}) | {} | {} |",
            first.n,
            ms(durable_p50),
            verdict(durable_p50 <= Duration::from_millis(1))
        );
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
    // A machine without Python (or without `requests`) skips this table
    // and says why; anything else going wrong is an error.
    let inside: Value = match r.exit_code {
        Some(127) => json!({"skip": "no python3 in the sandbox (the host's /usr)"}),
        Some(0) => serde_json::from_str(r.stdout.trim())
            .with_context(|| format!("python in the sandbox printed {:?}", r.stdout))?,
        _ => bail!("python in the sandbox failed: {}{}", r.stdout, r.stderr),
    };

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
    if inside["skip"].is_string() {
        return Ok(0);
    }
    ensure!(
        inside["bad"].as_u64() == Some(0),
        "non-200 answers inside the sandbox: {inside}"
    );
    Ok(inside["n"].as_u64().unwrap_or(0))
}

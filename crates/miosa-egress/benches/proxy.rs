#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Direct HTTPS vs. through the egress proxy (Unix socket → CONNECT →
//! intercepted TLS → proxy → local HTTPS upstream), kept-alive, one
//! substitution per request. Client, proxy and upstream share this
//! machine's cores. Run with `cargo bench -p miosa-egress`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::ServerName;
use support::{empty, http1, request, tls_client, Harness, TBody, VALUE};
use tokio::net::TcpStream;

const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);
const CONCURRENCY: [usize; 3] = [1, 8, 32];

struct Cell {
    p50: Duration,
    p99: Duration,
    rps: f64,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let h = Harness::start().await;
    let direct_tls = tls_client(&h.upstream_ca_pem);
    let mut rows = Vec::new();
    for &n in &CONCURRENCY {
        let mut direct = Vec::new();
        for _ in 0..n {
            let tcp = TcpStream::connect(h.upstream.addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let name = ServerName::try_from("api.openai.com").unwrap();
            let tls = direct_tls.connect(name, tcp).await.unwrap();
            direct.push(http1(tls).await);
        }
        let d = measure(direct, format!("Bearer {VALUE}")).await;

        let mut proxied = Vec::new();
        for _ in 0..n {
            proxied.push(h.https("api.openai.com", 443).await);
        }
        let p = measure(proxied, format!("Bearer {}", h.main.placeholder)).await;
        rows.push((n, d, p));
    }
    // The proxied requests really carried the substituted value.
    assert_eq!(
        h.upstream.last().header("authorization"),
        format!("Bearer {VALUE}")
    );

    println!();
    println!("egress proxy: GET over kept-alive HTTPS, one substitution per request (2 tokio workers; client, proxy and upstream on one machine)");
    println!(
        "{:>5} | {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>12}",
        "conc", "direct p50", "p99", "req/s", "proxy p50", "p99", "req/s", "added p50"
    );
    for (n, d, p) in rows {
        println!(
            "{:>5} | {:>10} {:>10} {:>10.0} | {:>10} {:>10} {:>10.0} | {:>12}",
            n,
            fmt(d.p50),
            fmt(d.p99),
            d.rps,
            fmt(p.p50),
            fmt(p.p99),
            p.rps,
            fmt(p.p50.saturating_sub(d.p50)),
        );
    }
}

fn fmt(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Each client sends requests back to back: a warm-up, then `MEASURE` of
/// recorded latencies.
async fn measure(clients: Vec<SendRequest<TBody>>, auth: String) -> Cell {
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(16 * 1024);
                let warm_until = start + WARMUP;
                let end = warm_until + MEASURE;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let req = request("GET", "/v1/models", "api.openai.com")
                        .header("authorization", &auth)
                        .body(empty())
                        .unwrap();
                    c.ready().await.unwrap();
                    let resp = c.send_request(req).await.unwrap();
                    assert!(resp.status().is_success());
                    http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .unwrap();
                    if t >= warm_until {
                        lat.push(t.elapsed());
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Cell {
        p50: pick(0.50),
        p99: pick(0.99),
        rps: all.len() as f64 / MEASURE.as_secs_f64(),
    }
}

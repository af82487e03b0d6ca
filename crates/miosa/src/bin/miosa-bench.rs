//! `miosa-bench`: measures sandbox latencies and density on this machine and
//! prints a table. Build and run with
//!
//! ```sh
//! cargo build --release -p miosa && target/release/miosa-bench [--sandboxes 50] [--idle 200]
//! ```
//!
//! It starts a real server in-process (SQLite, a fresh data dir under /tmp),
//! drives it over HTTP with the typed client, and removes everything it made.
//! The agent is the `miosa` binary next to this one.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use miosa::config::Config;
use miosa_client::Client;
use serde_json::json;

struct Args {
    sandboxes: usize,
    execs: usize,
    idle: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        sandboxes: 50,
        execs: 500,
        idle: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || -> anyhow::Result<usize> {
            it.next()
                .context("missing value")?
                .parse()
                .context("not a number")
        };
        match a.as_str() {
            "--sandboxes" => args.sandboxes = value()?,
            "--execs" => args.execs = value()?,
            "--idle" => args.idle = value()?,
            "-h" | "--help" => {
                println!("miosa-bench [--sandboxes N=50] [--execs N=500] [--idle N=200]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mem_available_kib() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemAvailable in /proc/meminfo")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let agent = std::env::current_exe()?
        .parent()
        .context("no parent dir")?
        .join("miosa");
    if !agent.is_file() {
        bail!(
            "{} not found: build with `cargo build --release -p miosa`",
            agent.display()
        );
    }
    let dir = tempfile::Builder::new().prefix("miosa-bench").tempdir()?;
    let data_dir: PathBuf = dir.path().join("data");
    let vars = [
        ("MIOSA_LISTEN", "127.0.0.1:0".to_string()),
        ("MIOSA_DATA_DIR", data_dir.display().to_string()),
        ("MIOSA_AGENT_BINARY", agent.display().to_string()),
        ("MIOSA_LOG", "warn".to_string()),
    ];
    let config = Config::load_with(None, |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })?;
    miosa::logging::init(&config);
    let server = miosa::server::start(&config).await?;
    let key = server
        .bootstrap
        .as_ref()
        .context("fresh database")?
        .admin_key
        .reveal()
        .to_owned();
    let c = Client::new(server.url(), Some(key));
    let result = run(&c, &args).await;
    // Clean up whatever is left, even after an error.
    if let Ok(list) = c.list_sandboxes("limit=500").await {
        for s in list.data {
            let _ = c.delete_sandbox(&s.id).await;
        }
    }
    server.shutdown().await?;
    result
}

async fn run(c: &Client, args: &Args) -> anyhow::Result<()> {
    // Warm up (first create builds the template).
    let w = c.create_sandbox(&json!({})).await?;
    c.delete_sandbox(&w.id).await?;

    eprintln!("creating {} sandboxes one after another…", args.sandboxes);
    let mut create = Vec::new();
    let mut ready = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..args.sandboxes {
        let t = Instant::now();
        let s = c.create_sandbox(&json!({})).await?;
        create.push(t.elapsed());
        let r = c.run(&s.id, "echo ready").await?;
        ready.push(t.elapsed());
        if r.stdout != "ready\n" {
            bail!("unexpected first exec output {:?}", r.stdout);
        }
        ids.push(s.id);
    }

    eprintln!("{} echo execs…", args.execs);
    let mut exec = Vec::new();
    for i in 0..args.execs {
        let id = &ids[i % ids.len()];
        let t = Instant::now();
        let r = c.run(id, "echo hi").await?;
        exec.push(t.elapsed());
        if r.stdout != "hi\n" {
            bail!("unexpected exec output {:?}", r.stdout);
        }
    }

    eprintln!("deleting…");
    let mut delete = Vec::new();
    for id in &ids {
        let t = Instant::now();
        c.delete_sandbox(id).await?;
        delete.push(t.elapsed());
    }

    eprintln!("holding {} idle sandboxes…", args.idle);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mem_available_kib()?;
    let mut idle = Vec::new();
    let mut held = 0;
    for _ in 0..args.idle {
        match c
            .create_sandbox(&json!({"timeout_seconds": 3600, "memory_mb": 128}))
            .await
        {
            Ok(s) => {
                idle.push(s.id);
                held += 1;
            }
            Err(e) => {
                eprintln!("stopped at {held}: {e}");
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mem_available_kib()?;
    let mut alive = 0;
    for id in &idle {
        if c.run(id, "true")
            .await
            .map(|r| r.exit_code == Some(0))
            .unwrap_or(false)
        {
            alive += 1;
        }
    }
    let per_sandbox_kib = before.saturating_sub(after) / held.max(1) as u64;
    for id in &idle {
        c.delete_sandbox(id).await?;
    }

    for v in [&mut create, &mut ready, &mut exec, &mut delete] {
        v.sort();
    }
    println!();
    println!("| measure | n | p50 | p99 |");
    println!("|---|---|---|---|");
    let rows = [
        ("create → 201 (ready to exec)", &create),
        ("create → first `echo` done", &ready),
        ("`echo` exec round-trip", &exec),
        ("delete → 204", &delete),
    ];
    for (name, v) in rows {
        println!(
            "| {name} | {} | {} | {} |",
            v.len(),
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0))
        );
    }
    println!();
    println!("| density | value |");
    println!("|---|---|");
    println!("| idle sandboxes held (asked {}) | {held} |", args.idle);
    println!("| of those answering an exec afterwards | {alive} |");
    println!(
        "| host memory per idle sandbox (MemAvailable delta) | {:.1} MiB |",
        per_sandbox_kib as f64 / 1024.0
    );
    Ok(())
}

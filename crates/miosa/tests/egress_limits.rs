//! One sandbox must not take the host down: 5,000 connections opened from
//! inside it leave the API, other sandboxes' egress and exec, and the
//! server's descriptor count in bounds; a link planted at its egress socket
//! before a restart never redirects a host file operation. With real runc
//! sandboxes and the real proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{start_background, upstream::Upstream, Backend, TestEnv, TestServer};
use miosa_client::Client;
use serde_json::json;

/// Descriptors this process (the server runs in it) has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The status of a call to the fake OpenAI from `sandbox` (no key: 401).
async fn egress(c: &Client, sandbox: &str) -> String {
    let r = c
        .run(
            sandbox,
            "curl -sS -m 20 -o /dev/null -w '%{http_code}' https://api.openai.com/v1/models",
        )
        .await
        .unwrap();
    r.stdout.trim().to_owned()
}

/// Opens `n` connections to the egress bridge and sends each a CONNECT,
/// keeping every one that stays open; prints how many, then holds them.
const FLOOD: &str = r#"
import socket, sys, time
n = int(sys.argv[1]); held = []; failed = 0
for i in range(n):
    try:
        c = socket.create_connection(("127.0.0.1", 3128), timeout=2)
        c.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        held.append(c)
    except OSError:
        failed += 1
print(len(held), failed, flush=True)
time.sleep(120)
"#;

async fn a_flood_from_one_sandbox_leaves_the_rest_alone(backend: Backend) {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(updir.path(), &["api.openai.com"], &[]).await;
    let mut env = TestEnv::new(backend).await;
    env.route_to(&up, &["api.openai.com"]);
    let t = TestServer::start_in(env).await;
    let c = &t.admin;
    let noisy = c
        .create_sandbox(&json!({"timeout_seconds": 600}))
        .await
        .unwrap();
    let quiet = c.create_sandbox(&json!({})).await.unwrap();
    assert_eq!(egress(c, &quiet.id).await, "401");
    let before = open_fds();

    let write = c
        .raw(
            reqwest::Method::PUT,
            &format!(
                "/v1/sandboxes/{}/files/content?path=/tmp/flood.py",
                noisy.id
            ),
            Some(miosa_client::RawBody::Text(FLOOD.into())),
        )
        .await
        .unwrap();
    assert!(write.status < 300, "{}", write.status);
    start_background(
        c,
        &noisy.id,
        "ulimit -n 65536 2>/dev/null; python3 /tmp/flood.py 5000 > /tmp/flood.out 2>&1",
    )
    .await;
    // Until the flood has run: its report appears.
    let report = loop {
        let r = c.run(&noisy.id, "cat /tmp/flood.out").await;
        if let Ok(r) = r {
            if !r.stdout.trim().is_empty() {
                break r.stdout;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    eprintln!("flood: held, failed = {}", report.trim());

    // While it holds its connections: the API answers, the other sandbox
    // has egress and exec, and the server's descriptors stay bounded.
    let during = open_fds();
    eprintln!("server descriptors: {before} before, {during} during the flood");
    // At most 256 of its connections are served; each such tunnel is three
    // descriptors here (the sandbox's socket, the upstream connection, and
    // the fake upstream's end, which runs in this process too).
    let limit = miosa_egress::config::DEFAULT_MAX_CONNECTIONS;
    assert!(
        during <= before + 3 * limit + 64,
        "descriptors grew from {before} to {during}"
    );
    let health = t
        .anon
        .raw(reqwest::Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(egress(c, &quiet.id).await, "401");
    assert_eq!(c.run(&quiet.id, "echo ok").await.unwrap().stdout, "ok\n");

    c.delete_sandbox(&noisy.id).await.unwrap();
    c.delete_sandbox(&quiet.id).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = open_fds();
    eprintln!("server descriptors after: {after}");
    assert!(
        after < before + 50,
        "descriptors left open: {before} → {after}"
    );
}

/// Root in a sandbox plants a link to a host file at its egress socket's
/// path; the server restarts and adopts the sandbox: the file is untouched
/// and the sandbox's egress works again.
async fn a_link_planted_before_a_restart_is_replaced(backend: Backend) {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(updir.path(), &["api.openai.com"], &[]).await;
    let mut env = TestEnv::new(backend).await;
    env.route_to(&up, &["api.openai.com"]);
    let mut t = TestServer::start_in(env).await;
    let victim = t.env.dir.path().join("host-victim");
    std::fs::write(&victim, "host only").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sbx = t.admin.create_sandbox(&json!({})).await.unwrap();
    let planted = t
        .admin
        .exec(
            &sbx.id,
            &json!({"user": "root", "command": format!(
                "ln -sfn {} /run/miosa/egress.sock && ls -l /run/miosa/egress.sock",
                victim.display()
            )}),
        )
        .await
        .unwrap();
    assert_eq!(planted.exit_code, Some(0), "{}", planted.stderr);
    assert!(planted.stdout.contains("->"), "{}", planted.stdout);

    t.stop().await;
    let env = std::mem::replace(&mut t.env, TestEnv::new(Backend::Sqlite).await);
    let server = miosa::server::start(&env.config()).await.unwrap();
    let c = Client::new(server.url(), Some(t.admin_key.clone()));
    assert_eq!(c.get_sandbox(&sbx.id).await.unwrap().status, "running");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().mode() & 0o7777,
        0o600,
        "the host file's mode is untouched"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host only");
    assert_eq!(egress(&c, &sbx.id).await, "401", "egress works again");
    c.delete_sandbox(&sbx.id).await.unwrap();
    server.shutdown().await.unwrap();
    drop(env);
}

/// Descriptors are counted for the whole test process, so the two
/// backends flood one after the other, never alongside another test of
/// this binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood() {
    a_flood_from_one_sandbox_leaves_the_rest_alone(Backend::Sqlite).await;
    a_flood_from_one_sandbox_leaves_the_rest_alone(Backend::Postgres).await;
    a_link_planted_before_a_restart_is_replaced(Backend::Sqlite).await;
    a_link_planted_before_a_restart_is_replaced(Backend::Postgres).await;
}

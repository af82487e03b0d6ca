//! The real `miosa` binary, as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Backend, TestEnv};
use miosa_client::{Client, CreateApiKey};

fn miosa(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_miosa"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env.vars)
        .env("MIOSA_LOG_FORMAT", "json")
        .current_dir(env.dir.path());
    cmd
}

/// A `miosa serve` child process and what it prints.
struct Serve {
    child: Child,
    url: String,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

fn serve(env: &TestEnv) -> Serve {
    let mut child = miosa(env)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let err_pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            if line.contains("miosa listening") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
            }
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("server did not start: {}", stderr.lock().unwrap()));
    Serve {
        child,
        url: format!("http://{addr}"),
        stdout,
        stderr,
    }
}

impl Serve {
    /// SIGTERM, wait for the exit, and return its status and stdout.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        (status, self.stdout.join().unwrap())
    }
}

/// `miosa admin tenant create --name NAME --json`: the tenant's id and key.
fn create_tenant_cli(env: &TestEnv, name: &str) -> (String, String) {
    let out = miosa(env)
        .args(["admin", "tenant", "create", "--name", name, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json_line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["api_key"].as_str().unwrap().to_owned(),
    )
}

/// The first whitespace-separated word starting with `prefix`.
fn word(text: &str, prefix: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .map(str::to_owned)
}

#[test]
fn config_default_prints_a_commented_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_miosa"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "listen",
        "data_dir",
        "database_url",
        "root_key",
        "MIOSA_LISTEN",
        "MIOSA_ROOT_KEY",
    ] {
        assert!(text.contains(key), "{key}");
    }
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let env = futures_block(TestEnv::new(Backend::Sqlite));
    let out = miosa(&env)
        .env("MIOSA_ROOT_KEY", "letmein")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("root_key") && err.contains("MIOSA_ROOT_KEY"),
        "{err}"
    );
    assert!(!err.contains("letmein"), "the bad value is not echoed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_keys_once_and_shuts_down_on_sigterm() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let s = serve(&env);
    let url = s.url.clone();
    let stderr = s.stderr.clone();
    let client = Client::new(&url, None);
    assert_eq!(client.health().await.unwrap()["status"], "ok");
    let (status, stdout) = s.stop();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
    let root = word(&stdout, "msk_root_").expect("root key printed");
    let admin = word(&stdout, "msk_live_").expect("admin key printed");
    let logs = stderr.lock().unwrap().clone();
    assert!(logs.contains("request finished"), "structured request logs");
    assert!(
        !logs.contains(&root) && !logs.contains(&admin),
        "keys never in logs"
    );

    // Second start: no banner, the printed keys work.
    let s = serve(&env);
    let c = Client::new(&s.url, Some(admin.clone()));
    assert_eq!(c.me().await.unwrap().scope, "admin");
    let c = Client::new(&s.url, Some(root));
    assert_eq!(c.me().await.unwrap().scope, "root");
    let (status, stdout) = s.stop();
    assert!(status.success());
    assert!(!stdout.contains("msk_"), "printed only once: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tenant_create_talks_to_the_database() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let (tenant_id, key) = create_tenant_cli(&env, "clinic-iq");
    assert!(tenant_id.starts_with("ten_"));

    let out = miosa(&env)
        .args(["admin", "tenant", "create", "--name", "clinic-iq"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let s = serve(&env);
    let c = Client::new(&s.url, Some(key));
    let me = c.me().await.unwrap();
    assert_eq!(me.tenant_id.as_deref(), Some(tenant_id.as_str()));
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_postgres_share_keys() {
    let mut env_a = TestEnv::new(Backend::Postgres).await;
    let (pepper, master) = ("ef".repeat(32), "9a".repeat(32));
    env_a
        .vars
        .insert("MIOSA_API_KEY_PEPPER".into(), pepper.clone());
    env_a.vars.insert("MIOSA_MASTER_KEY".into(), master.clone());
    let a = serve(&env_a);
    let mut env_b = TestEnv::new(Backend::Sqlite).await;
    env_b.vars.insert(
        "MIOSA_DATABASE_URL".into(),
        env_a.pg.as_ref().unwrap().url.clone(),
    );
    env_b.vars.insert("MIOSA_API_KEY_PEPPER".into(), pepper);
    // A replica with a master key of its own would seal secrets the others
    // cannot read: it refuses to start, naming the key it needs.
    let mut own = std::process::Command::new(env!("CARGO_BIN_EXE_miosa"));
    let out = own
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env_b.vars)
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("new secrets are sealed under master key kek_"),
        "{err}"
    );
    assert!(!err.contains(&master), "{err}");
    env_b.vars.insert("MIOSA_MASTER_KEY".into(), master);
    let b = serve(&env_b);

    // Find the admin key from A's banner only after stopping it, so create a
    // tenant via the CLI instead: it talks to the same database.
    let (_, admin) = create_tenant_cli(&env_a, "shared");

    let on_a = Client::new(&a.url, Some(admin.to_owned()));
    let k = on_a
        .create_api_key(&CreateApiKey {
            name: "made on a".into(),
            scope: "admin".into(),
            workspace_id: None,
        })
        .await
        .unwrap();
    let on_b = Client::new(&b.url, Some(k.key.clone()));
    assert_eq!(
        on_b.me().await.unwrap().key_id.as_deref(),
        Some(k.record.id.as_str())
    );
    Client::new(&b.url, Some(admin.to_owned()))
        .revoke_api_key(&k.record.id)
        .await
        .unwrap();
    assert_eq!(
        Client::new(&a.url, Some(k.key))
            .me()
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    assert!(a.stop().0.success());
    assert!(b.stop().0.success());
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `miosa serve` killed with SIGKILL and restarted: running and paused
/// sandboxes are adopted, one whose container died is marked `error`, and a
/// container with no row is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_reconciles_sandboxes() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let (_, key) = create_tenant_cli(&env, "crashy");

    let mut s = serve(&env);
    let c = Client::new(&s.url, Some(key.clone()));
    let keep = c
        .create_sandbox(&serde_json::json!({"name": "keep"}))
        .await
        .unwrap();
    let nap = c
        .create_sandbox(&serde_json::json!({"name": "nap"}))
        .await
        .unwrap();
    let dead = c
        .create_sandbox(&serde_json::json!({"name": "dead"}))
        .await
        .unwrap();
    c.write_file(&keep.id, "/home/user/state.txt", b"survives".to_vec())
        .await
        .unwrap();
    c.sandbox_action(&nap.id, "pause").await.unwrap();

    // Crash the server, kill one container behind its back, plant an orphan.
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    let runc_root = env.data_dir().join("runc");
    let killed = Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args(["kill", &dead.id, "KILL"])
        .status()
        .unwrap();
    assert!(killed.success());
    let runtime = miosa_runtime::Runtime::new(miosa_runtime::RuntimeConfig::new(
        env.data_dir(),
        env!("CARGO_BIN_EXE_miosa"),
    ))
    .await
    .unwrap();
    let orphan = "sbx_0000000000000000000000orph";
    runtime
        .create(&miosa_runtime::SandboxSpec {
            id: orphan.into(),
            hostname: "orphan".into(),
            env: vec![],
            cpu: 0.5,
            memory_mb: 128,
            disk_mb: 128,
            egress_ca_pem: None,
        })
        .await
        .unwrap();

    let s = serve(&env);
    let c = Client::new(&s.url, Some(key));
    let listed: Vec<(String, String)> = c
        .list_sandboxes("")
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|s| (s.name.unwrap(), s.status))
        .collect();
    assert_eq!(
        listed,
        [
            ("dead".to_string(), "error".to_string()),
            ("nap".into(), "paused".into()),
            ("keep".into(), "running".into())
        ]
    );
    assert_eq!(
        c.run(&keep.id, "cat state.txt").await.unwrap().stdout,
        "survives"
    );
    c.sandbox_action(&nap.id, "resume").await.unwrap();
    assert_eq!(c.run(&nap.id, "echo up").await.unwrap().stdout, "up\n");
    let e = c.run(&dead.id, "true").await.unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(409), Some("sandbox_not_running"))
    );
    c.delete_sandbox(&dead.id).await.unwrap();
    assert!(
        !env.data_dir().join("sandboxes").join(orphan).exists(),
        "orphan removed"
    );
    assert_eq!(runtime.state(orphan).await.unwrap(), None);
    for sb in [&keep, &nap] {
        c.delete_sandbox(&sb.id).await.unwrap();
    }
    assert!(s.stop().0.success());
}

/// `miosa sandbox create|list|get|exec|rm` against a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_cli_round_trip() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let (_, key) = create_tenant_cli(&env, "cli");
    let s = serve(&env);
    let cli = |args: &[&str]| {
        let out = miosa(&env)
            .env("MIOSA_API_URL", &s.url)
            .env("MIOSA_API_KEY", &key)
            .arg("sandbox")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = cli(&[
        "create",
        "--name",
        "cli-box",
        "--external-user-id",
        "u-1",
        "--metadata",
        "plan=pro",
        "--memory-mb",
        "256",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["metadata"]["plan"], "pro");
    assert_eq!(created["memory_mb"], 256);

    let (code, out, _) = cli(&["list"]);
    assert_eq!(code, Some(0));
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "a table: {out}");
    let row = lines.next().unwrap();
    assert!(
        row.contains(&id)
            && row.contains("cli-box")
            && row.contains("running")
            && row.contains("u-1"),
        "{row}"
    );

    let (code, out, _) = cli(&["get", "cli-box", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"],
        id.as_str()
    );

    let (code, out, err) = cli(&["exec", &id, "echo hi; echo oops >&2; exit 4"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(4), "hi\n", "oops\n")
    );

    let (code, out, _) = cli(&["rm", &id]);
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("removed {id}").as_str())
    );
    let (code, _, err) = cli(&["get", &id]);
    assert_ne!(code, Some(0));
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = miosa(&env)
        .env("MIOSA_API_URL", &s.url)
        .args(["sandbox", "list"])
        .output()
        .map(|o| {
            (
                o.status.code(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_ne!(code, Some(0));
    assert!(err.contains("MIOSA_API_KEY"), "{err}");
    assert!(s.stop().0.success());
}

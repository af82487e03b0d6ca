//! The agent as PID 1 of a fresh PID namespace (`unshare --pid --fork`): the
//! init reaps orphans, keeps its marker out of commands, and forwards SIGTERM
//! to the server, whose exit status it returns.
//!
//! Custom `main` (harness = false): the same binary is the agent inside the
//! namespace when `AGENT_SOCKET` is set.
#![allow(clippy::expect_used)]
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use miosa_agent::{AgentClient, ExecRequest};

const AGENT_SOCKET: &str = "MIOSA_AGENT_TEST_PID1_SOCKET";

fn main() -> ExitCode {
    if let Some(socket) = std::env::var_os(AGENT_SOCKET) {
        // The host's network namespace: no fixed port for the egress bridge.
        let mut args = miosa_agent::AgentArgs::new(socket.into());
        args.egress_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        return miosa_agent::run_with(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("running 1 test");
    let result = std::panic::catch_unwind(|| {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), init_reaps_forwards_and_exits())
                .await
                .expect("test timed out")
        })
    });
    let ok = result.is_ok();
    println!(
        "test init_reaps_forwards_and_exits ... {}",
        if ok { "ok" } else { "FAILED" }
    );
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; 0 filtered out\n",
        if ok { "ok" } else { "FAILED" },
        u8::from(ok),
        u8::from(!ok)
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn sh(client: &AgentClient, script: &str) -> String {
    let out = client.exec(&ExecRequest::shell(script)).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

async fn init_reaps_forwards_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut unshare = KillOnDrop(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
            .arg(std::env::current_exe().unwrap())
            .env(AGENT_SOCKET, &socket)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let unshare = &mut unshare.0;
    let client = AgentClient::new(&socket);
    wait_for_agent(&client, &socket).await;

    // PID 1 is the init; the server is its child; the marker stays private.
    let exe = std::env::current_exe().unwrap();
    let init_cmd = sh(&client, "tr '\\0' ' ' < /proc/1/cmdline").await;
    assert!(init_cmd.starts_with(exe.to_str().unwrap()), "{init_cmd}");
    let ppid_of_server = sh(&client, "awk '/^PPid/ {print $2}' /proc/$PPID/status").await;
    assert_eq!(ppid_of_server.trim(), "1");
    assert_eq!(
        sh(&client, "echo ${MIOSA_AGENT_CHILD:-unset}").await,
        "unset\n"
    );

    // Orphans reparent to PID 1 and are reaped there when they exit.
    let orphans = sh(
        &client,
        "for i in 1 2 3 4 5; do (sleep 0.3 & echo $!); done",
    )
    .await;
    let orphans: Vec<u32> = orphans.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(orphans.len(), 5);
    for pid in &orphans {
        let ppid = sh(
            &client,
            &format!("awk '/^PPid/ {{print $2}}' /proc/{pid}/status"),
        )
        .await;
        assert_eq!(
            ppid.trim(),
            "1",
            "orphan {pid} did not reparent to the init"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let zombies = sh(&client, "ps -eo stat=,pid=,comm= | awk '$1 ~ /^Z/' ").await;
    assert_eq!(zombies, "", "unreaped zombies");
    for pid in &orphans {
        let gone = sh(
            &client,
            &format!("test -e /proc/{pid} && echo present || echo gone"),
        )
        .await;
        assert_eq!(gone, "gone\n", "orphan {pid}");
    }

    // SIGTERM to the init (from outside the namespace) reaches the server,
    // which shuts down cleanly; the init exits with its status.
    let init_pid = child_of(unshare.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(init_pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = unshare.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket left behind");
}

/// Stops the namespace when the test fails (`--kill-child` takes the init
/// and so every process in it along).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_agent(client: &AgentClient, socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if socket.exists() && client.health().await.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "agent did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The only child of `pid` (unshare's forked init).
fn child_of(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}

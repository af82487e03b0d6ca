//! Background commands, the process list and signals.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{alive, start_agent, wait_gone};
use miosa_agent::{AgentError, ExecRequest, RunAs, Signal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_spawn_list_and_kill() {
    let agent = start_agent().await;
    let pid = agent
        .client
        .spawn(&ExecRequest::shell("sleep 30"))
        .await
        .unwrap();
    let mut root = ExecRequest::new(["sleep", "30"]);
    root.user = RunAs::Root;
    let root_pid = agent.client.spawn(&root).await.unwrap();
    assert!(alive(pid) && alive(root_pid));

    let list = agent.client.processes().await.unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let p = list.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(p.argv, ["/bin/sh", "-c", "sleep 30"]);
    assert_eq!(p.user, RunAs::User);
    assert!(p.background);
    assert!((time::OffsetDateTime::now_utc() - p.started_at).whole_seconds() < 10);

    agent.client.kill(pid, Signal::TERM).await.unwrap();
    assert!(wait_gone(pid, Duration::from_secs(3)).await);
    agent.client.kill(root_pid, Signal::KILL).await.unwrap();
    assert!(wait_gone(root_pid, Duration::from_secs(3)).await);

    // Reaped and unlisted shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !agent.client.processes().await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = agent.client.kill(pid, Signal::KILL).await.unwrap_err();
    assert!(matches!(err, AgentError::NotFound(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_timeout_applies() {
    let agent = start_agent().await;
    let mut req = ExecRequest::new(["sleep", "30"]);
    req.timeout = Some(Duration::from_millis(200));
    let pid = agent.client.spawn(&req).await.unwrap();
    assert!(wait_gone(pid, Duration::from_secs(3)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_refuses_init_and_agent() {
    let agent = start_agent().await;
    for pid in [1, std::process::id()] {
        let err = agent.client.kill(pid, Signal::KILL).await.unwrap_err();
        assert!(matches!(err, AgentError::Forbidden(_)), "{pid}: {err:?}");
    }
    let err = agent
        .client
        .kill(i32::MAX as u32, Signal::KILL)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NotFound(_)), "{err:?}");
    // A process the agent did not start but that runs in the sandbox.
    let mut outsider = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    agent.client.kill(outsider.id(), Signal(15)).await.unwrap();
    let status = outsider.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_agent_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let client = miosa_agent::AgentClient::new(dir.path().join("missing.sock"));
    let err = client.health().await.unwrap_err();
    assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");
    let err = client.exec(&ExecRequest::new(["true"])).await.unwrap_err();
    assert!(matches!(err, AgentError::Unavailable(_)), "{err:?}");
}

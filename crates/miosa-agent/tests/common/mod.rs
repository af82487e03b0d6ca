//! An agent served in-process on a socket in a temporary directory.
#![allow(clippy::expect_used)]
#![allow(dead_code, clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use miosa_agent::{AgentClient, AgentServer};
use tokio::sync::oneshot;

pub struct TestAgent {
    pub client: AgentClient,
    pub dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

/// Starts an agent (not as PID 1) and waits until it answers.
pub async fn start_agent() -> TestAgent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let server = AgentServer::bind(&socket).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let client = AgentClient::new(&socket);
    client.health().await.unwrap();
    TestAgent {
        client,
        dir,
        _stop: stop,
    }
}

/// Whether `pid` is running (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to be gone.
pub async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !alive(pid)
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

//! Waiting until a new sandbox's agent answers `GET /health`.

use std::path::Path;
use std::time::{Duration, Instant};

use miosa_agent::AgentClient;

use crate::error::{Result, RuntimeError};

/// How long a sandbox may take from `runc run` returning to a healthy agent.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between probes: the socket usually appears within milliseconds.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// How often to check that the container's process still lives.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(10);
/// Longest wait for one probe's answer once connected.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One `GET /health` through the agent's own client: `Ok` if it answers, else why not.
pub(crate) async fn probe(socket: &Path) -> Result<(), String> {
    AgentClient::new(socket)
        .with_timeout(Some(PROBE_TIMEOUT))
        .health()
        .await
        .map_err(|e| e.to_string())
}

/// Whether host PID `pid` is a live (not zombie) process.
pub(crate) fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Polls until the agent is healthy, the container's process is gone, or the
/// deadline passes. `log_tail` supplies the container output for errors.
pub(crate) async fn wait_healthy(
    id: &str,
    socket: &Path,
    pid: i32,
    log_tail: impl Fn() -> String,
) -> Result<()> {
    let start = Instant::now();
    let mut last_liveness_check = start;
    let mut attempt: u32 = 0;
    loop {
        let last_error = match probe(socket).await {
            Ok(()) => {
                tracing::debug!(
                    sandbox = id,
                    elapsed_ms = start.elapsed().as_millis(),
                    attempts = attempt,
                    "agent ready"
                );
                return Ok(());
            }
            Err(e) => e,
        };
        attempt += 1;
        if last_liveness_check.elapsed() >= LIVENESS_INTERVAL {
            last_liveness_check = Instant::now();
            if !process_alive(pid) {
                return Err(RuntimeError::ContainerExited {
                    id: id.to_string(),
                    log_tail: log_tail(),
                });
            }
        }
        if start.elapsed() >= READY_TIMEOUT {
            return Err(RuntimeError::AgentTimeout {
                id: id.to_string(),
                waited_ms: start.elapsed().as_millis(),
                last_error,
                log_tail: log_tail(),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    async fn serve_once(listener: UnixListener, reply: &'static [u8]) {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = conn.read(&mut buf).await.unwrap();
        conn.write_all(reply).await.unwrap();
    }

    fn socket_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("miosa-ready-{tag}-{}.sock", std::process::id()))
    }

    #[tokio::test]
    async fn accepts_200_and_rejects_other_statuses() {
        for (tag, reply, ok) in [
            (
                "ok",
                &b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}"[..],
                true,
            ),
            ("bad", &b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"[..], false),
            ("junk", &b"200 \r\n\r\n"[..], false),
        ] {
            let path = socket_path(tag);
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).unwrap();
            let server = tokio::spawn(serve_once(listener, reply));
            assert_eq!(probe(&path).await.is_ok(), ok, "{tag}");
            server.await.unwrap();
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[tokio::test]
    async fn a_missing_socket_is_not_ready() {
        let err = probe(Path::new("/nonexistent/agent.sock"))
            .await
            .unwrap_err();
        assert!(err.contains("/nonexistent/agent.sock"), "{err}");
    }

    #[tokio::test]
    async fn a_dead_process_ends_the_wait_early() {
        let start = Instant::now();
        // PID 0 never has a /proc entry.
        let err = wait_healthy("sbx_x", Path::new("/nonexistent/agent.sock"), 0, || {
            "tail".into()
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, RuntimeError::ContainerExited { ref log_tail, .. } if log_tail == "tail")
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(i32::try_from(std::process::id()).unwrap()));
    }
}

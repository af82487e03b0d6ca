//! The agent inside every sandbox and its host-side client.
//!
//! Inside the sandbox, `miosa agent --socket PATH` calls [`run`]: as PID 1 it
//! becomes a tiny init (see `init`) that starts the real server as its child;
//! the server speaks HTTP/1.1 + JSON on the Unix socket (exec with NDJSON
//! streaming, processes, files, terminals over a WebSocket). On the host,
//! [`AgentClient`] speaks the same protocol using the typed structs of
//! [`protocol`].

mod client;
mod error;
mod init;
pub mod protocol;
mod server;

use std::{path::PathBuf, process::ExitCode};

pub use client::{AgentClient, FileBody};
pub use error::AgentError;
pub use protocol::{
    ExecEvent, ExecOutput, ExecRequest, ExitInfo, FileEntry, FileType, KillRequest, MkdirRequest,
    PathQuery, ProcessInfo, PtyControl, PtyRequest, RunAs, Signal, Spawned, DEFAULT_EXEC_TIMEOUT,
    DEFAULT_MAX_OUTPUT_BYTES,
};
pub use server::AgentServer;
/// The WebSocket implementation of [`AgentClient::pty`], for callers that
/// handle its messages.
pub use tokio_tungstenite;

/// Entry point of `miosa agent --socket PATH`: runs inside the sandbox.
pub fn run(socket: PathBuf) -> ExitCode {
    init_logging();
    if std::process::id() == 1 && std::env::var_os(server::CHILD_MARKER).is_none() {
        init::run(&socket)
    } else {
        server::run(&socket)
    }
}

/// Logs to stderr (the runtime captures it); `MIOSA_LOG` sets the filter.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MIOSA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

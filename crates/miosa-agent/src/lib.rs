//! The agent inside every sandbox and its host-side client.
//!
//! Inside the sandbox, `miosa agent --socket PATH` calls [`run_with`] (or
//! [`run`]): as PID 1 it becomes a tiny init (see `init`) that starts the
//! real server as its child; the server speaks HTTP/1.1 + JSON on the Unix
//! socket (exec with NDJSON streaming, processes, files, terminals over a
//! WebSocket) and runs the [`EgressBridge`] from `127.0.0.1:3128` to the
//! host's egress proxy. On the host, [`AgentClient`] speaks the same protocol
//! using the typed structs of [`protocol`].

mod client;
mod egress;
mod error;
mod init;
pub mod protocol;
mod server;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

pub use client::{AgentClient, FileBody};
pub use egress::{EgressBridge, DEFAULT_EGRESS_LISTEN, DEFAULT_EGRESS_SOCKET};
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

/// Command-line flags of `miosa agent` (flatten into the binary's CLI).
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Unix socket to serve on.
    #[arg(long)]
    pub socket: PathBuf,
    /// TCP address the egress bridge listens on inside the sandbox.
    #[arg(long, default_value = DEFAULT_EGRESS_LISTEN)]
    pub egress_listen: SocketAddr,
    /// Unix socket of the host's egress proxy, as the sandbox sees it.
    #[arg(long, default_value = DEFAULT_EGRESS_SOCKET)]
    pub egress_socket: PathBuf,
}

impl AgentArgs {
    /// Serves on `socket` with the default egress bridge.
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            egress_listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            egress_socket: PathBuf::from(DEFAULT_EGRESS_SOCKET),
        }
    }
}

/// Entry point of `miosa agent --socket PATH` with every other flag at its
/// default: runs inside the sandbox.
pub fn run(socket: PathBuf) -> ExitCode {
    run_with(AgentArgs::new(socket))
}

/// Entry point of `miosa agent`: runs inside the sandbox.
pub fn run_with(args: AgentArgs) -> ExitCode {
    init_logging();
    if std::process::id() == 1 && std::env::var_os(server::CHILD_MARKER).is_none() {
        init::run(&args.socket)
    } else {
        server::run(&args)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn egress_flags_default_to_the_sandbox_layout() {
        let cli = Cli::try_parse_from(["agent", "--socket", "/run/miosa/agent.sock"]).unwrap();
        let defaults = AgentArgs::new(PathBuf::from("/run/miosa/agent.sock"));
        assert_eq!(cli.agent.egress_listen, defaults.egress_listen);
        assert_eq!(cli.agent.egress_listen.to_string(), DEFAULT_EGRESS_LISTEN);
        assert_eq!(cli.agent.egress_socket, defaults.egress_socket);

        let cli = Cli::try_parse_from([
            "agent",
            "--socket",
            "/s",
            "--egress-listen",
            "127.0.0.1:8080",
            "--egress-socket",
            "/e.sock",
        ])
        .unwrap();
        assert_eq!(cli.agent.egress_listen.port(), 8080);
        assert_eq!(cli.agent.egress_socket, PathBuf::from("/e.sock"));
    }
}

//! The agent's HTTP server on its Unix socket.

#[allow(unsafe_code)] // `pre_exec` for privilege drop and OOM score; see the module docs.
mod child;
mod exec;
mod files;
mod paths;
mod processes;
mod pty;
mod routes;
#[allow(unsafe_code)] // `ioctl` for the window size; see the module docs.
mod tty;

use std::{
    future::Future,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use tokio::net::UnixListener;

use crate::{AgentArgs, AgentError, EgressBridge};

/// Environment variable marking the server process started by the PID-1
/// init; never passed on to commands.
pub(crate) const CHILD_MARKER: &str = "MIOSA_AGENT_CHILD";
/// The agent's directory inside every sandbox; the file API never touches it.
const AGENT_DIR: &str = "/run/miosa";
const USER_HOME: &str = "/home/user";

/// Shared by all handlers.
pub(crate) struct State {
    pub exec: exec::ExecConfig,
    pub paths: paths::PathPolicy,
    pub processes: Arc<processes::Registry>,
}

/// The agent's server, bound to its socket and ready to serve.
pub struct AgentServer {
    listener: UnixListener,
    socket: PathBuf,
    state: Arc<State>,
}

impl AgentServer {
    /// Binds `socket` (replacing a stale one) with mode 0600. Must be called
    /// inside a tokio runtime.
    pub fn bind(socket: &Path) -> Result<Self, AgentError> {
        let err = |e: std::io::Error| AgentError::io(socket.display(), &e);
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(socket).map_err(err)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(err)?;

        let mut protected = vec![PathBuf::from(AGENT_DIR)];
        protected.extend(socket.parent().map(Path::to_path_buf));
        let base_env = std::env::vars_os()
            .filter(|(k, _)| k != CHILD_MARKER)
            .collect();
        let state = State {
            exec: exec::ExecConfig {
                base_env,
                user_home: PathBuf::from(USER_HOME),
            },
            paths: paths::PathPolicy::new(PathBuf::from(USER_HOME), protected),
            processes: Arc::default(),
        };
        Ok(Self {
            listener,
            socket: socket.to_path_buf(),
            state: Arc::new(state),
        })
    }

    /// Serves until `shutdown` resolves; then kills every command started
    /// through the agent and removes the socket.
    pub async fn serve<F>(self, shutdown: F) -> Result<(), AgentError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            socket,
            state,
        } = self;
        tracing::info!(socket = %socket.display(), "sandbox agent listening");
        let registry = Arc::clone(&state.processes);
        let app = routes::router(state);
        let stopping = async move {
            shutdown.await;
            tracing::info!("sandbox agent shutting down");
            // Ends the streaming execs so graceful shutdown can finish.
            registry.kill_all();
        };
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stopping)
            .await
            .map_err(|e| AgentError::Internal(format!("serving: {e}")));
        let _ = std::fs::remove_file(&socket);
        served
    }
}

/// The server process: a small multi-thread runtime serving the API and the
/// egress bridge until SIGTERM or SIGINT.
pub(crate) fn run(args: &AgentArgs) -> ExitCode {
    // The init spawns the server with its signals still blocked (the mask is
    // inherited); tokio needs SIGCHLD and SIGTERM delivered. Still one thread
    // here, so the mask of the whole process is reset.
    if let Err(e) = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    ) {
        tracing::error!(error = %e, "cannot unblock signals");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let server = AgentServer::bind(&args.socket)?;
        // Stops the bridge when this block ends, i.e. once the API is down.
        let (_bridge_stop, bridge_stopped) = tokio::sync::oneshot::channel::<()>();
        // Without the bridge the sandbox merely has no way out; the API must
        // still come up.
        match EgressBridge::bind(args.egress_listen, args.egress_socket.clone()).await {
            Ok(bridge) => {
                tokio::spawn(bridge.serve(async move {
                    let _ = bridge_stopped.await;
                }));
            }
            Err(e) => tracing::error!(error = %e, "egress bridge not started"),
        }
        server.serve(termination()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sandbox agent failed");
            ExitCode::FAILURE
        }
    }
}

async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot listen for termination signals");
            std::future::pending::<()>().await;
        }
    }
}

//! The one error type of the runtime.

use std::io;

/// Everything that can go wrong while managing sandboxes on the host.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime configuration cannot work on this host.
    #[error("invalid runtime config: {0}")]
    Config(String),

    /// A field of a [`crate::SandboxSpec`] (or a sandbox id) is unusable.
    #[error("invalid sandbox {field}: {reason}")]
    InvalidSpec {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },

    /// A sandbox with this id already exists on this host.
    #[error("sandbox {0} already exists")]
    AlreadyExists(String),

    /// No container with this id is known to runc.
    #[error("sandbox {0} not found")]
    NotFound(String),

    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// `runc` exited with a failure.
    #[error("runc {command} failed ({status}): {stderr}")]
    Runc {
        /// The subcommand and container id.
        command: String,
        /// Exit status.
        status: String,
        /// What runc printed (trimmed).
        stderr: String,
    },

    /// runc printed something we could not parse.
    #[error("unexpected output from runc {command}: {reason}")]
    RuncOutput {
        /// The subcommand.
        command: String,
        /// What was wrong.
        reason: String,
    },

    /// The container's process exited before the agent answered.
    #[error("sandbox {id} exited before its agent was ready; container log tail:\n{log_tail}")]
    ContainerExited {
        /// Sandbox id.
        id: String,
        /// Last lines of the container's stdout/stderr log.
        log_tail: String,
    },

    /// The agent did not answer `GET /health` in time.
    #[error("sandbox {id}: agent not ready after {waited_ms} ms ({last_error}); container log tail:\n{log_tail}")]
    AgentTimeout {
        /// Sandbox id.
        id: String,
        /// How long we waited.
        waited_ms: u128,
        /// The last probe failure.
        last_error: String,
        /// Last lines of the container's stdout/stderr log.
        log_tail: String,
    },

    /// Teardown could not remove everything; what is left is named.
    #[error("sandbox {id}: teardown incomplete: {reason}")]
    Teardown {
        /// Sandbox id.
        id: String,
        /// What remains and why.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    /// Wraps an [`io::Error`] with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// `map_err` helper: `.map_err(io_err(|| format!("reading {path}")))`.
pub(crate) fn io_err<F: FnOnce() -> String>(context: F) -> impl FnOnce(io::Error) -> RuntimeError {
    move |source| RuntimeError::io(context(), source)
}

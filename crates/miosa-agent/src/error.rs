//! The one error type of the agent and its client.

use std::io;

/// What went wrong talking to (or inside) the sandbox agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent could not be reached: the socket is missing, refused the
    /// connection or the connection dropped. The sandbox is gone or paused.
    #[error("sandbox agent unavailable: {0}")]
    Unavailable(String),
    /// The process, file or directory does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was malformed or cannot be carried out as given.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The operation is not allowed (the agent's own files, PID 1, …).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The target exists in a form that conflicts with the request.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The agent reported an internal failure (client side).
    #[error("sandbox agent failed: {0}")]
    Remote(String),
    /// The agent answered something this client does not understand.
    #[error("sandbox agent protocol error: {0}")]
    Protocol(String),
    /// An unexpected failure inside the agent (server side); clients see it as
    /// [`AgentError::Remote`].
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    /// Stable snake_case code used on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Invalid(_) => "invalid",
            Self::Forbidden(_) => "forbidden",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) | Self::Remote(_) | Self::Protocol(_) | Self::Internal(_) => {
                "internal"
            }
        }
    }

    /// The human message without the variant prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::Unavailable(m)
            | Self::NotFound(m)
            | Self::Invalid(m)
            | Self::Forbidden(m)
            | Self::Conflict(m)
            | Self::Remote(m)
            | Self::Protocol(m)
            | Self::Internal(m) => m,
        }
    }

    /// Rebuilds an error from a wire `code` and `message` (client side).
    pub(crate) fn from_wire(code: &str, message: String) -> Self {
        match code {
            "not_found" => Self::NotFound(message),
            "invalid" => Self::Invalid(message),
            "forbidden" => Self::Forbidden(message),
            "conflict" => Self::Conflict(message),
            _ => Self::Remote(message),
        }
    }

    /// Maps an I/O failure on `what` (a path, usually) to the fitting variant.
    pub(crate) fn io(what: impl std::fmt::Display, err: &io::Error) -> Self {
        let message = format!("{what}: {}", describe_io(err));
        match err.kind() {
            io::ErrorKind::NotFound => Self::NotFound(message),
            io::ErrorKind::PermissionDenied => Self::Forbidden(message),
            io::ErrorKind::AlreadyExists => Self::Conflict(message),
            io::ErrorKind::InvalidInput
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::IsADirectory
            | io::ErrorKind::DirectoryNotEmpty
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::StorageFull
            | io::ErrorKind::FileTooLarge
            | io::ErrorKind::QuotaExceeded => Self::Invalid(message),
            _ => Self::Internal(message),
        }
    }
}

/// `strerror` text without Rust's " (os error N)" suffix.
pub(crate) fn describe_io(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_owned(),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_codes() {
        let nf = io::Error::from_raw_os_error(2);
        let e = AgentError::io("/x", &nf);
        assert_eq!(e.code(), "not_found");
        assert_eq!(e.message(), "/x: No such file or directory");
        let perm = io::Error::from_raw_os_error(13);
        assert_eq!(AgentError::io("/y", &perm).code(), "forbidden");
        assert_eq!(
            AgentError::from_wire("weird", "m".into()).code(),
            "internal"
        );
    }
}

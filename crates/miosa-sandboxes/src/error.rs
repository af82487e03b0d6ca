//! The one error type of sandbox orchestration.

use miosa_core::FieldError;
use miosa_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such live sandbox visible to the caller.
    #[error("sandbox not found")]
    NotFound,
    /// Exec, files and processes need a running sandbox.
    #[error("the sandbox is paused; resume it first")]
    Paused,
    /// The sandbox is not in a state that allows this (e.g. `error`).
    #[error("the sandbox is {0}, not running")]
    NotRunning(&'static str),
    /// The sandbox runs on another node; requests are not routed yet.
    #[error("the sandbox runs on node {0}; send this request to that node")]
    OtherNode(String),
    #[error("the sandbox could not be started: {0}")]
    StartFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("runtime: {0}")]
    Runtime(#[from] miosa_runtime::RuntimeError),
}

pub type Result<T> = std::result::Result<T, SandboxError>;

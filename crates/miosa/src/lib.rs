//! The `miosa` binary as a library, so integration tests can start the real
//! server in-process.
#![forbid(unsafe_code)]

pub mod admin;
pub mod client_cli;
pub mod config;
pub mod init;
pub mod logging;
pub mod secrets_cli;
pub mod server;
pub mod storage;

//! Miosa's HTTP API: thin axum handlers that authenticate (extractors in
//! `auth`), validate into typed input, call the store or a domain function,
//! and map the result. Errors leave through `error::ApiError` only.
#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod request_id;
pub mod routes;
mod state;

pub use error::{ApiError, ApiResult};
pub use routes::router;
pub use state::{AppState, KeyConfig};

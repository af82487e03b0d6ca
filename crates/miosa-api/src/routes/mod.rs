//! Route table and the response shapes shared by every list.

pub mod api_keys;
pub mod audit;
pub mod audit_checkpoints;
pub mod health;
pub mod me;
pub mod sandbox_credentials;
pub mod sandbox_exec;
pub mod sandbox_files;
pub mod sandbox_pty;
pub mod sandboxes;
pub mod secrets;
pub mod settings;
pub mod tenants;
pub mod workspaces;

use axum::{
    extract::DefaultBodyLimit,
    middleware,
    routing::{delete, get, post},
    Json, Router,
};
use serde::Serialize;

use crate::{error::ApiError, request_id, AppState};

/// A page of results, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListResponse<T> {
    pub fn from_page<U>(page: miosa_core::Page<U>, f: impl FnMut(U) -> T) -> Json<Self> {
        Json(Self {
            data: page.items.into_iter().map(f).collect(),
            next_cursor: page.next_cursor,
        })
    }
}

/// Builds the whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(crate::openapi::serve))
        .route(
            "/v1/admin/tenants",
            post(tenants::create).get(tenants::list),
        )
        .route("/v1/me", get(me::me))
        .route(
            "/v1/workspaces",
            post(workspaces::create).get(workspaces::list),
        )
        .route("/v1/workspaces/{id}", get(workspaces::get))
        .route("/v1/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/v1/api-keys/{id}", delete(api_keys::revoke))
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(sandboxes::get)
                .patch(sandboxes::update)
                .delete(sandboxes::destroy),
        )
        .route("/v1/sandboxes/{id}/pause", post(sandboxes::pause))
        .route("/v1/sandboxes/{id}/resume", post(sandboxes::resume))
        .route("/v1/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/v1/sandboxes/{id}/exec", post(sandbox_exec::exec))
        .route("/v1/sandboxes/{id}/processes", get(sandbox_exec::processes))
        .route(
            "/v1/sandboxes/{id}/processes/{pid}/kill",
            post(sandbox_exec::kill),
        )
        .route(
            "/v1/sandboxes/{id}/files",
            get(sandbox_files::list).delete(sandbox_files::remove),
        )
        .route(
            "/v1/sandboxes/{id}/files/content",
            get(sandbox_files::read)
                .put(sandbox_files::write)
                .layer(DefaultBodyLimit::max(sandbox_files::MAX_UPLOAD_BYTES)),
        )
        .route("/v1/sandboxes/{id}/files/mkdir", post(sandbox_files::mkdir))
        .route("/v1/sandboxes/{id}/pty", get(sandbox_pty::pty))
        .route(
            "/v1/sandboxes/{id}/credentials",
            get(sandbox_credentials::credentials),
        )
        .route("/v1/secrets", post(secrets::set).get(secrets::list))
        .route(
            "/v1/secrets/{id}",
            get(secrets::get).delete(secrets::delete),
        )
        .route("/v1/secrets/{id}/disable", post(secrets::disable))
        .route("/v1/secrets/{id}/enable", post(secrets::enable))
        .route("/v1/settings", get(settings::get).patch(settings::update))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/export", get(audit::export))
        .route("/v1/audit/checkpoints", get(audit_checkpoints::list))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    ApiError::Internal("handler panicked".into()).into_response()
}

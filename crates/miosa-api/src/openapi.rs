//! The OpenAPI 3.1 document, generated from the handlers' annotations.
//! `docs/openapi.json` is a checked-in copy; a test fails when they differ.

use axum::Json;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use crate::routes::{
    api_keys, audit, audit_checkpoints, health, me, sandbox_credentials, sandbox_exec,
    sandbox_files, sandbox_pty, sandboxes, secrets, settings, tenants, workspaces,
};

/// `?limit=` and `?cursor=` on every list.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1–500 (default 50).
    #[allow(dead_code)]
    limit: Option<u32>,
    /// `next_cursor` from the previous page.
    #[allow(dead_code)]
    cursor: Option<String>,
}

/// Scopes a sandbox *name* lookup to a workspace (admin keys).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkspaceHint {
    /// Workspace whose sandbox names to search (a workspace key implies its own).
    #[allow(dead_code)]
    workspace_id: Option<String>,
}

/// Filters for `GET /v1/sandboxes`; `metadata[KEY]=VALUE` may repeat.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SandboxListParams {
    #[allow(dead_code)]
    workspace_id: Option<String>,
    #[allow(dead_code)]
    external_user_id: Option<String>,
    #[allow(dead_code)]
    external_workspace_id: Option<String>,
    #[allow(dead_code)]
    external_project_id: Option<String>,
    /// `creating`, `running`, `paused`, `error` or `destroyed` (default: all but destroyed).
    #[allow(dead_code)]
    status: Option<String>,
}

/// Filters for `GET /v1/secrets`; one scope key at most (it implies the scope).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SecretListParams {
    /// `sandbox`, `user`, `external_user`, `external_workspace`, `workspace` or `tenant`.
    scope: Option<String>,
    name: Option<String>,
    sandbox_id: Option<String>,
    owner_user_id: Option<String>,
    external_user_id: Option<String>,
    external_workspace_id: Option<String>,
    /// The secrets belonging to this workspace: its `workspace` secrets and
    /// the end-user secrets bound to it.
    workspace_id: Option<String>,
}

/// Filters for `GET /v1/audit` and its export; all must match.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditParams {
    /// From this time on (inclusive): `7d`, `24h`, `30m`, `90s` ago, or RFC 3339.
    since: Option<String>,
    /// Before this time (exclusive), same forms as `since`.
    until: Option<String>,
    external_user_id: Option<String>,
    external_workspace_id: Option<String>,
    external_project_id: Option<String>,
    sandbox_id: Option<String>,
    /// e.g. `egress.request`, `sandbox.created`, `secret.set`.
    action: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`msk_root_…` (operator), `msk_live_…` (tenant admin) or `msk_w_…` (workspace)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Miosa API",
        description = "Self-hostable, white-label sandbox platform. Errors are `{\"error\":{\"code\",\"message\",\"request_id\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        health::healthz,
        health::readyz,
        tenants::create,
        tenants::list,
        me::me,
        workspaces::create,
        workspaces::list,
        workspaces::get,
        api_keys::create,
        api_keys::list,
        api_keys::revoke,
        sandboxes::create,
        sandboxes::list,
        sandboxes::get,
        sandboxes::update,
        sandboxes::destroy,
        sandboxes::pause,
        sandboxes::resume,
        sandboxes::set_timeout,
        sandbox_exec::exec,
        sandbox_exec::processes,
        sandbox_exec::kill,
        sandbox_files::list,
        sandbox_files::read,
        sandbox_files::write,
        sandbox_files::remove,
        sandbox_files::mkdir,
        sandbox_pty::pty,
        sandbox_credentials::credentials,
        secrets::set,
        secrets::list,
        secrets::get,
        secrets::disable,
        secrets::enable,
        secrets::delete,
        settings::get,
        settings::update,
        audit::list,
        audit::export,
        audit_checkpoints::list,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "admin", description = "Operator endpoints (root key)"),
        (name = "workspaces", description = "Workspaces inside a tenant"),
        (name = "keys", description = "API keys and identity"),
        (name = "sandboxes", description = "Isolated sandboxes: lifecycle, exec, processes"),
        (name = "files", description = "Files inside a sandbox"),
        (name = "secrets", description = "Write-only secrets, injected by the egress proxy"),
        (name = "settings", description = "Tenant security settings"),
        (name = "audit", description = "The hash-chained audit log"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline (the checked-in form).
pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut s = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<serde_json::Value> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    Json(serde_json::to_value(doc).unwrap_or_default())
}

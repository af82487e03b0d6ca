//! `/v1/audit`: the tenant's hash-chained audit log, filtered and paged,
//! and the same rows as an NDJSON export.

use axum::{
    body::Body,
    extract::State,
    http::{header, StatusCode},
    response::Response,
    Json,
};
use miosa_core::{audit::parse_time_filter, AuditEvent, PageRequest, SandboxId};
use miosa_store::AuditFilter;
use serde::Serialize;
use time::OffsetDateTime;

use super::ListResponse;
use crate::{
    auth::AdminCaller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::QueryParams,
    AppState,
};

/// A proxied request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditRequestView {
    pub method: String,
    pub host: String,
    /// Without the query string.
    pub path: String,
    /// What the sandbox received; `null` if it got no response.
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
}

/// The secret that resolved — never its value.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditCredentialView {
    pub secret_id: String,
    pub name: String,
    pub scope: &'static str,
}

/// One audit row.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    /// e.g. `egress.request`, `sandbox.created`, `secret.set`.
    pub action: String,
    /// The API key ID; `system` for Miosa's own workers; `null` for sandbox traffic.
    pub actor: Option<String>,
    /// The resource acted on, when not the sandbox (`sec_…`, `key_…`).
    pub target: Option<String>,
    pub sandbox_id: Option<String>,
    pub workspace_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    pub request: Option<AuditRequestView>,
    pub credential: Option<AuditCredentialView>,
    /// `success`, `denied` or `error`; `pending` for a request carrying a
    /// secret whose row was written before it was sent and whose result
    /// has not come back (yet, or ever: the server stopped meanwhile).
    pub outcome: &'static str,
    /// The API key that created the row's sandbox.
    pub created_by_key_id: Option<String>,
    /// Position in the tenant's chain (1, 2, …).
    pub seq: i64,
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and this row's canonical form (for a row
    /// written before its request was sent, without the status, byte
    /// counts, duration and outcome, which complete it later).
    pub hash: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(ev: AuditEvent) -> Self {
        let e = ev.entry;
        Self {
            id: e.id.to_string(),
            time: e.time,
            action: e.action,
            actor: e.actor,
            target: e.target,
            sandbox_id: e.sandbox_id.map(|s| s.to_string()),
            workspace_id: e.workspace_id.map(|w| w.to_string()),
            owner_user_id: e.owner_user_id,
            external_user_id: e.external_user_id,
            external_workspace_id: e.external_workspace_id,
            external_project_id: e.external_project_id,
            request: e.request.map(|r| AuditRequestView {
                method: r.method,
                host: r.host,
                path: r.path,
                status: r.status,
                bytes_out: r.bytes_out,
                bytes_in: r.bytes_in,
                duration_ms: r.duration_ms,
            }),
            credential: e.credential.map(|c| AuditCredentialView {
                secret_id: c.secret_id.to_string(),
                name: c.name,
                scope: c.scope.as_str(),
            }),
            outcome: if ev.pending {
                "pending"
            } else {
                e.outcome.as_str()
            },
            created_by_key_id: e.created_by_key_id.map(|k| k.to_string()),
            seq: ev.seq,
            prev_hash: ev.prev_hash,
            hash: ev.hash,
        }
    }
}

const FILTER_PARAMS: &[&str] = &[
    "since",
    "until",
    "external_user_id",
    "external_workspace_id",
    "external_project_id",
    "sandbox_id",
    "action",
];

fn filter(query: &QueryParams) -> Result<AuditFilter, ApiError> {
    let now = miosa_core::time_util::now();
    let time = |name: &str| -> Result<Option<OffsetDateTime>, ApiError> {
        query
            .get(name)?
            .map(|v| parse_time_filter(name, &v, now).map_err(ApiError::from))
            .transpose()
    };
    let label = |name: &str| -> Result<Option<String>, ApiError> {
        query
            .get(name)?
            .map(|v| miosa_core::sandbox::label(name, &v).map_err(ApiError::from))
            .transpose()
    };
    let sandbox_id = query
        .get("sandbox_id")?
        .map(|v| {
            SandboxId::parse(&v)
                .map_err(|_| ApiError::invalid("sandbox_id", "must be a sandbox ID (`sbx_…`)"))
        })
        .transpose()?;
    let action = query.get("action")?;
    if let Some(a) = &action {
        if !miosa_core::audit::action::ALL.contains(&a.as_str()) {
            return Err(ApiError::invalid(
                "action",
                format!(
                    "must be one of {}",
                    miosa_core::audit::action::ALL.join(", ")
                ),
            ));
        }
    }
    Ok(AuditFilter {
        since: time("since")?,
        until: time("until")?,
        external_user_id: label("external_user_id")?,
        external_workspace_id: label("external_workspace_id")?,
        external_project_id: label("external_project_id")?,
        sandbox_id,
        action,
    })
}

/// Lists audit rows, newest first. Filters: `since` and `until` (`7d`,
/// `24h`, or RFC 3339), `external_user_id`, `external_workspace_id`,
/// `external_project_id`, `sandbox_id`, `action`; all must match.
#[utoipa::path(get, operation_id = "list_audit", path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(crate::openapi::PageParams, crate::openapi::AuditParams),
    responses((status = 200, body = ListResponse<AuditEventView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<AuditEventView>>> {
    let mut known = FILTER_PARAMS.to_vec();
    known.extend(["limit", "cursor"]);
    query.allow_only(&known)?;
    let filter = filter(&query)?;
    let page = state
        .store
        .list_audit(&caller.tenant_id, &filter, &query.page()?)
        .await?;
    Ok(ListResponse::from_page(page, AuditEventView::from))
}

/// Rows fetched per database round trip while exporting.
const EXPORT_PAGE: u32 = 500;

/// Streams every matching row as NDJSON (one JSON object per line, newest
/// first), with the same filters as the list.
#[utoipa::path(get, operation_id = "export_audit", path = "/v1/audit/export", tag = "audit", security(("bearer" = [])),
    params(crate::openapi::AuditParams),
    responses((status = 200, description = "NDJSON, one row per line", content_type = "application/x-ndjson"),
              (status = 422, body = ErrorBody)))]
pub async fn export(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Response> {
    query.allow_only(FILTER_PARAMS)?;
    let filter = filter(&query)?;
    let tenant = caller.tenant_id;
    let store = state.store.clone();
    // One page is read ahead before the stream starts, so a broken database
    // is still a proper error response rather than a truncated 200.
    let first = store
        .list_audit(
            &tenant,
            &filter,
            &PageRequest {
                limit: EXPORT_PAGE,
                after: None,
            },
        )
        .await?;
    let stream = async_stream(store, tenant, filter, first);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn async_stream(
    store: std::sync::Arc<dyn miosa_store::Store>,
    tenant: miosa_core::TenantId,
    filter: AuditFilter,
    first: miosa_core::Page<AuditEvent>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::unfold(Some(first), move |page| {
        let store = store.clone();
        let tenant = tenant.clone();
        let filter = filter.clone();
        async move {
            let page = page?;
            let mut buf = Vec::with_capacity(page.items.len() * 512);
            for ev in page.items {
                // Serialising plain data cannot fail.
                let _ = serde_json::to_writer(&mut buf, &AuditEventView::from(ev));
                buf.push(b'\n');
            }
            let next = match page.next_cursor {
                None => None,
                Some(cursor) => {
                    let req = PageRequest {
                        limit: EXPORT_PAGE,
                        after: Some(cursor),
                    };
                    match store.list_audit(&tenant, &filter, &req).await {
                        Ok(p) => Some(p),
                        Err(e) => {
                            tracing::error!(error = %e, "audit export stopped by a store error");
                            return Some((Err(std::io::Error::other("store error")), None));
                        }
                    }
                }
            };
            Some((Ok(buf), next))
        }
    })
}

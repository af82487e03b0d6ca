//! `/v1/audit/checkpoints`: the tenant's chain heads as signed by Miosa with
//! a key that is not in the database, to archive outside it. A checkpoint
//! verifies with the Ed25519 public key it carries; a chain rewritten
//! without that key no longer matches the checkpoints taken before.

use axum::{extract::State, Json};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use miosa_core::AuditCheckpoint;
use serde::Serialize;
use time::OffsetDateTime;

use super::ListResponse;
use crate::{
    auth::AdminCaller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::QueryParams,
    AppState,
};

/// A signed chain head.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditCheckpointView {
    /// The `seq` of the chain row signed.
    pub seq: i64,
    /// That row's `hash`.
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: OffsetDateTime,
    /// The master key the signing key derives from (`kek_…`).
    pub kek_id: String,
    /// Base64 Ed25519 signature over the UTF-8 text
    /// `miosa-audit-checkpoint-v1\n{tenant_id}\n{seq}\n{hash}\n{time in Unix microseconds}`.
    pub signature: String,
    /// Base64 Ed25519 public key that verifies `signature`; `null` if this
    /// server no longer holds that master key.
    pub public_key: Option<String>,
}

impl AuditCheckpointView {
    fn of(cp: AuditCheckpoint, vault: &miosa_vault::KeyRing) -> Self {
        let public_key = vault
            .audit_signer(&cp.kek_id)
            .ok()
            .map(|s| BASE64.encode(s.public_key()));
        Self {
            seq: cp.seq,
            hash: cp.hash,
            time: cp.time,
            kek_id: cp.kek_id,
            signature: BASE64.encode(&cp.signature),
            public_key,
        }
    }
}

/// Lists the tenant's signed checkpoints, newest first (`cursor` = the last
/// `seq` seen). Miosa signs each chain head every few minutes and whenever
/// `miosa admin audit verify` runs.
#[utoipa::path(get, operation_id = "list_audit_checkpoints", path = "/v1/audit/checkpoints", tag = "audit", security(("bearer" = [])),
    params(crate::openapi::PageParams),
    responses((status = 200, body = ListResponse<AuditCheckpointView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    AdminCaller(caller): AdminCaller,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ListResponse<AuditCheckpointView>>> {
    query.allow_only(&["limit", "cursor"])?;
    let page = miosa_core::PageRequest {
        limit: query.page()?.limit,
        after: query
            .get("cursor")?
            .map(|c| match c.parse::<i64>() {
                Ok(seq) if seq > 0 => Ok(seq.to_string()),
                _ => Err(ApiError::invalid(
                    "cursor",
                    "must be the `seq` of a checkpoint from a previous page",
                )),
            })
            .transpose()?,
    };
    let found = state
        .store
        .list_audit_checkpoints(&caller.tenant_id, &page)
        .await?;
    Ok(ListResponse::from_page(found, |cp| {
        AuditCheckpointView::of(cp, &state.vault)
    }))
}

//! The `api_keys` table.

use miosa_core::{ApiKey, ApiKeyId, KeyHash, KeyScope, NewApiKey, Page, PageRequest, TenantId};
use miosa_store::{RevokeOutcome, StoreResult};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use time::OffsetDateTime;

use crate::error::{corrupt, db, db_ref};
use crate::rows::{id, page_of, push_page};

const TABLE: &str = "api_keys";

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    tenant_id: String,
    name: String,
    scope: String,
    workspace_id: Option<String>,
    hint: String,
    created_at: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
}

impl KeyRow {
    fn into_key(self) -> StoreResult<ApiKey> {
        let scope = KeyScope::from_columns(&self.scope, self.workspace_id.as_deref())
            .map_err(|reason| corrupt(TABLE, reason))?;
        Ok(ApiKey {
            id: id(TABLE, &self.id)?,
            tenant_id: id(TABLE, &self.tenant_id)?,
            name: self.name,
            scope,
            hint: self.hint,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

const COLUMNS: &str =
    "SELECT id, tenant_id, name, scope, workspace_id, hint, created_at, revoked_at FROM api_keys";

pub(crate) async fn insert(conn: &mut PgConnection, new: &NewApiKey) -> StoreResult<()> {
    let k = &new.key;
    sqlx::query(
        "INSERT INTO api_keys \
         (id, tenant_id, name, scope, workspace_id, key_hash, hint, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(k.id.as_str())
    .bind(k.tenant_id.as_str())
    .bind(&k.name)
    .bind(k.scope.name())
    .bind(k.scope.workspace_id().map(|w| w.as_str()))
    .bind(new.hash.to_hex())
    .bind(&k.hint)
    .bind(k.created_at)
    .bind(k.revoked_at)
    .execute(conn)
    .await
    .map_err(|e| {
        // A workspace key's composite reference fails whenever its tenant or
        // workspace is wrong; an admin key can only miss its tenant.
        let field = match k.scope {
            KeyScope::Admin => "tenant_id",
            KeyScope::Workspace(_) => "workspace_id",
        };
        db_ref(e, field)
    })?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(tenant = %key.key.tenant_id, key = %key.key.id))]
pub(crate) async fn create(pool: &PgPool, key: &NewApiKey) -> StoreResult<()> {
    let mut conn = pool.acquire().await.map_err(db)?;
    insert(&mut conn, key).await
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, key = %id))]
pub(crate) async fn get(
    pool: &PgPool,
    tenant: &TenantId,
    id: &ApiKeyId,
) -> StoreResult<Option<ApiKey>> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    q.push(" AND id = ").push_bind(id.as_str());
    q.build_query_as::<KeyRow>()
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(KeyRow::into_key)
        .transpose()
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    page: &PageRequest,
) -> StoreResult<Page<ApiKey>> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    push_page(&mut q, page);
    let rows = q
        .build_query_as::<KeyRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?;
    page_of(rows, page, KeyRow::into_key, |k| k.id.to_string())
}

#[tracing::instrument(skip_all)]
pub(crate) async fn find_active(pool: &PgPool, hash: &KeyHash) -> StoreResult<Option<ApiKey>> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push(" WHERE key_hash = ").push_bind(hash.to_hex());
    q.push(" AND revoked_at IS NULL");
    q.build_query_as::<KeyRow>()
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(KeyRow::into_key)
        .transpose()
}

/// Locks the tenant row before checking, so two concurrent revocations of a
/// tenant's last two admin keys run one after the other and the second sees
/// the first. `FOR NO KEY UPDATE` does not block inserts that reference the
/// tenant.
#[tracing::instrument(skip_all, fields(tenant = %tenant, key = %id))]
pub(crate) async fn revoke(
    pool: &PgPool,
    tenant: &TenantId,
    id: &ApiKeyId,
    at: OffsetDateTime,
) -> StoreResult<RevokeOutcome> {
    let mut tx = pool.begin().await.map_err(db)?;
    let locked = sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    let row: Option<(String, Option<OffsetDateTime>)> = match locked {
        None => None,
        Some(_) => sqlx::query_as(
            "SELECT scope, revoked_at FROM api_keys WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?,
    };
    let outcome = match row {
        None => RevokeOutcome::NotFound,
        Some((_, Some(_))) => RevokeOutcome::AlreadyRevoked,
        Some((scope, None)) if scope == "admin" => {
            let other_admins: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM api_keys \
                 WHERE tenant_id = $1 AND scope = 'admin' AND revoked_at IS NULL AND id <> $2",
            )
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if other_admins == 0 {
                RevokeOutcome::LastAdminKey
            } else {
                RevokeOutcome::Revoked
            }
        }
        Some(_) => RevokeOutcome::Revoked,
    };
    if outcome != RevokeOutcome::Revoked {
        tx.rollback().await.map_err(db)?;
        return Ok(outcome);
    }
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(at)
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(outcome)
}

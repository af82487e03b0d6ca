//! The `tenant_settings` table: a tenant's settings and its secrets epoch.

use miosa_core::{TenantId, TenantSettings};
use miosa_store::{SettingsPatch, StoreResult};
use sqlx::{SqliteConnection, SqlitePool};
use time::OffsetDateTime;

use crate::error::{db, db_ref};
use crate::rows::micros;

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn get(pool: &SqlitePool, tenant: &TenantId) -> StoreResult<TenantSettings> {
    let allow: Option<bool> = sqlx::query_scalar(
        "SELECT allow_end_user_credentials FROM tenant_settings WHERE tenant_id = ?",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    Ok(
        allow.map_or_else(TenantSettings::default, |allow| TenantSettings {
            allow_end_user_credentials: allow,
        }),
    )
}

/// One upsert: a first update starts from the defaults.
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn update(
    pool: &SqlitePool,
    tenant: &TenantId,
    patch: &SettingsPatch,
    at: OffsetDateTime,
) -> StoreResult<TenantSettings> {
    let default = TenantSettings::default();
    let allow: bool = sqlx::query_scalar(
        "INSERT INTO tenant_settings \
         (tenant_id, allow_end_user_credentials, secrets_epoch, updated_at) \
         VALUES (?1, ?2, 1, ?4) \
         ON CONFLICT (tenant_id) DO UPDATE SET \
         allow_end_user_credentials = COALESCE(?3, allow_end_user_credentials), \
         secrets_epoch = secrets_epoch + 1, \
         updated_at = excluded.updated_at \
         RETURNING allow_end_user_credentials",
    )
    .bind(tenant.as_str())
    .bind(
        patch
            .allow_end_user_credentials
            .unwrap_or(default.allow_end_user_credentials),
    )
    .bind(patch.allow_end_user_credentials)
    .bind(micros(at)?)
    .fetch_one(pool)
    .await
    .map_err(|e| db_ref(e, "tenant_id"))?;
    Ok(TenantSettings {
        allow_end_user_credentials: allow,
    })
}

/// A primary-key lookup: it runs on every proxied request.
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn epoch(pool: &SqlitePool, tenant: &TenantId) -> StoreResult<i64> {
    let epoch: Option<i64> =
        sqlx::query_scalar("SELECT secrets_epoch FROM tenant_settings WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    Ok(epoch.unwrap_or(0))
}

/// Increments the tenant's epoch (creating its row with the default
/// settings); for use inside every secret-writing transaction. Does nothing
/// for a tenant that does not exist, whose writes find nothing to change.
pub(crate) async fn bump_epoch(conn: &mut SqliteConnection, tenant: &TenantId) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, allow_end_user_credentials, secrets_epoch) \
         SELECT id, ?, 1 FROM tenants WHERE id = ? \
         ON CONFLICT (tenant_id) DO UPDATE SET secrets_epoch = secrets_epoch + 1",
    )
    .bind(TenantSettings::default().allow_end_user_credentials)
    .bind(tenant.as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

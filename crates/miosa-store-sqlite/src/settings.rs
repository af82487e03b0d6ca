//! The `tenant_settings` table: a tenant's settings and its secrets epoch.

use miosa_core::{TenantId, TenantSettings};
use miosa_store::{SettingsPatch, StoreResult};
use sqlx::{SqliteConnection, SqlitePool};
use time::OffsetDateTime;

use crate::error::{db, db_ref};
use crate::rows::micros;

#[derive(sqlx::FromRow)]
struct SettingsRow {
    allow_end_user_credentials: bool,
    require_allowed_hosts: bool,
    workspace_keys_use_unbound_secrets: bool,
}

impl From<SettingsRow> for TenantSettings {
    fn from(r: SettingsRow) -> Self {
        Self {
            allow_end_user_credentials: r.allow_end_user_credentials,
            require_allowed_hosts: r.require_allowed_hosts,
            workspace_keys_use_unbound_secrets: r.workspace_keys_use_unbound_secrets,
        }
    }
}

const COLUMNS: &str =
    "allow_end_user_credentials, require_allowed_hosts, workspace_keys_use_unbound_secrets";

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn get(pool: &SqlitePool, tenant: &TenantId) -> StoreResult<TenantSettings> {
    let row: Option<SettingsRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_settings WHERE tenant_id = ?"
    ))
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    Ok(row.map_or_else(TenantSettings::default, TenantSettings::from))
}

/// One upsert: a first update starts from the defaults.
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn update(
    pool: &SqlitePool,
    tenant: &TenantId,
    patch: &SettingsPatch,
    at: OffsetDateTime,
) -> StoreResult<TenantSettings> {
    let d = TenantSettings::default();
    let row: SettingsRow = sqlx::query_as(&format!(
        "INSERT INTO tenant_settings \
         (tenant_id, allow_end_user_credentials, require_allowed_hosts, \
          workspace_keys_use_unbound_secrets, secrets_epoch, updated_at) \
         VALUES (?1, COALESCE(?2, ?3), COALESCE(?4, ?5), COALESCE(?6, ?7), 1, ?8) \
         ON CONFLICT (tenant_id) DO UPDATE SET \
         allow_end_user_credentials = COALESCE(?2, allow_end_user_credentials), \
         require_allowed_hosts = COALESCE(?4, require_allowed_hosts), \
         workspace_keys_use_unbound_secrets = COALESCE(?6, workspace_keys_use_unbound_secrets), \
         secrets_epoch = secrets_epoch + 1, \
         updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_str())
    .bind(patch.allow_end_user_credentials)
    .bind(d.allow_end_user_credentials)
    .bind(patch.require_allowed_hosts)
    .bind(d.require_allowed_hosts)
    .bind(patch.workspace_keys_use_unbound_secrets)
    .bind(d.workspace_keys_use_unbound_secrets)
    .bind(micros(at)?)
    .fetch_one(pool)
    .await
    .map_err(|e| db_ref(e, "tenant_id"))?;
    Ok(row.into())
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

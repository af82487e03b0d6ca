//! The `tenant_settings` table: a tenant's settings and its secrets epoch.
//!
//! Its row is also the per-tenant lock of secret writes: each one bumps the
//! epoch first, so it holds the row until it commits and the tenant's other
//! secret writers wait their turn.

use miosa_core::{TenantId, TenantSettings};
use miosa_store::{SettingsPatch, StoreResult};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use crate::error::{db, db_ref};

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
pub(crate) async fn get(pool: &PgPool, tenant: &TenantId) -> StoreResult<TenantSettings> {
    let row: Option<SettingsRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tenant_settings WHERE tenant_id = $1"
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
    pool: &PgPool,
    tenant: &TenantId,
    patch: &SettingsPatch,
    at: OffsetDateTime,
) -> StoreResult<TenantSettings> {
    let d = TenantSettings::default();
    let row: SettingsRow = sqlx::query_as(&format!(
        "INSERT INTO tenant_settings \
         (tenant_id, allow_end_user_credentials, require_allowed_hosts, \
          workspace_keys_use_unbound_secrets, secrets_epoch, updated_at) \
         VALUES ($1, COALESCE($2, $3), COALESCE($4, $5), COALESCE($6, $7), 1, $8) \
         ON CONFLICT (tenant_id) DO UPDATE SET \
         allow_end_user_credentials = \
             COALESCE($2, tenant_settings.allow_end_user_credentials), \
         require_allowed_hosts = COALESCE($4, tenant_settings.require_allowed_hosts), \
         workspace_keys_use_unbound_secrets = \
             COALESCE($6, tenant_settings.workspace_keys_use_unbound_secrets), \
         secrets_epoch = tenant_settings.secrets_epoch + 1, \
         updated_at = EXCLUDED.updated_at \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_str())
    .bind(patch.allow_end_user_credentials)
    .bind(d.allow_end_user_credentials)
    .bind(patch.require_allowed_hosts)
    .bind(d.require_allowed_hosts)
    .bind(patch.workspace_keys_use_unbound_secrets)
    .bind(d.workspace_keys_use_unbound_secrets)
    .bind(at)
    .fetch_one(pool)
    .await
    .map_err(|e| db_ref(e, "tenant_id"))?;
    Ok(row.into())
}

/// A primary-key lookup: it runs on every proxied request.
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn epoch(pool: &PgPool, tenant: &TenantId) -> StoreResult<i64> {
    let epoch: Option<i64> =
        sqlx::query_scalar("SELECT secrets_epoch FROM tenant_settings WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    Ok(epoch.unwrap_or(0))
}

/// Increments the tenant's epoch (creating its row with the default
/// settings) and so locks the row until the transaction ends; the first
/// statement of every secret-writing transaction. Does nothing for a tenant
/// that does not exist, whose writes find nothing to change.
pub(crate) async fn bump_epoch(conn: &mut PgConnection, tenant: &TenantId) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, allow_end_user_credentials, secrets_epoch) \
         SELECT id, $1, 1 FROM tenants WHERE id = $2 \
         ON CONFLICT (tenant_id) DO UPDATE SET secrets_epoch = tenant_settings.secrets_epoch + 1",
    )
    .bind(TenantSettings::default().allow_end_user_credentials)
    .bind(tenant.as_str())
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Locks the tenant's settings row (creating it with the defaults and epoch
/// 1 if missing) without bumping the epoch: for a transaction that may
/// change secrets only conditionally but must still take its turn among the
/// tenant's secret writers, first, as they all do.
pub(crate) async fn lock_secrets(conn: &mut PgConnection, tenant: &TenantId) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tenant_settings (tenant_id, allow_end_user_credentials, secrets_epoch) \
         SELECT id, $1, 1 FROM tenants WHERE id = $2 ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(TenantSettings::default().allow_end_user_credentials)
    .bind(tenant.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    sqlx::query("SELECT 1 FROM tenant_settings WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_str())
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

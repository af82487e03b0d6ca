//! The `secrets` and `secret_versions` tables.
//!
//! Every write runs in one `BEGIN IMMEDIATE` transaction that also bumps the
//! tenant's secrets epoch, so a reader that sees the new epoch sees the new
//! secrets too. A scope key the domain leaves out (`None`) is stored as ''.

use miosa_core::{
    NewSecretVersion, Page, PageRequest, SandboxScopeKeys, SealedValue, SealedVersion, Secret,
    SecretId, SecretScope, TenantId,
};
use miosa_store::{SecretFilter, StoreError, StoreResult};
use sqlx::types::Json;
use sqlx::{QueryBuilder, SqliteConnection, SqlitePool};
use time::OffsetDateTime;

use crate::error::{corrupt, db, db_ref};
use crate::rows::{from_micros, id, micros, page_of, push_page};
use crate::settings::bump_epoch;

const TABLE: &str = "secrets";
const VERSIONS: &str = "secret_versions";

/// The columns [`SecretRow`] reads, for `SELECT` and `RETURNING`.
macro_rules! columns {
    () => {
        "id, tenant_id, name, scope, scope_key, expose_as_env, allowed_hosts, version, enabled, \
         created_at, updated_at"
    };
}

const SELECT: &str = concat!("SELECT ", columns!(), " FROM secrets");

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: String,
    tenant_id: String,
    name: String,
    scope: String,
    scope_key: String,
    expose_as_env: String,
    allowed_hosts: Json<Vec<String>>,
    version: i64,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl SecretRow {
    fn into_secret(self) -> StoreResult<Secret> {
        Ok(Secret {
            id: id(TABLE, &self.id)?,
            tenant_id: id(TABLE, &self.tenant_id)?,
            name: self.name,
            scope: SecretScope::parse(&self.scope)
                .ok_or_else(|| corrupt(TABLE, format!("scope {:?}", self.scope)))?,
            scope_key: (!self.scope_key.is_empty()).then_some(self.scope_key),
            expose_as_env: self.expose_as_env,
            allowed_hosts: self.allowed_hosts.0,
            version: u32::try_from(self.version)
                .map_err(|_| corrupt(TABLE, format!("version {}", self.version)))?,
            enabled: self.enabled,
            created_at: from_micros(TABLE, self.created_at)?,
            updated_at: from_micros(TABLE, self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    kek_id: String,
    wrapped_key: Vec<u8>,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl SealedRow {
    fn into_sealed(self) -> SealedValue {
        SealedValue {
            kek_id: self.kek_id,
            wrapped_key: self.wrapped_key,
            nonce: self.nonce,
            ciphertext: self.ciphertext,
        }
    }
}

#[derive(sqlx::FromRow)]
struct CandidateRow {
    #[sqlx(flatten)]
    secret: SecretRow,
    #[sqlx(flatten)]
    sealed: SealedRow,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    secret_id: String,
    version: i64,
    #[sqlx(flatten)]
    sealed: SealedRow,
}

impl VersionRow {
    fn into_version(self) -> StoreResult<SealedVersion> {
        Ok(SealedVersion {
            secret_id: id(VERSIONS, &self.secret_id)?,
            version: u32::try_from(self.version)
                .map_err(|_| corrupt(VERSIONS, format!("version {}", self.version)))?,
            sealed: self.sealed.into_sealed(),
        })
    }
}

/// Upserts the metadata by (tenant, scope, scope key, name) and stores the
/// value as the version the upsert returns. A clash on `expose_as_env` is the
/// other unique constraint, outside the upsert's target, so it fails.
#[tracing::instrument(skip_all, fields(tenant = %new.tenant_id, scope = new.scope.as_str()))]
pub(crate) async fn put(pool: &SqlitePool, new: &NewSecretVersion) -> StoreResult<Secret> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    bump_epoch(&mut tx, &new.tenant_id).await?;
    check_scope_key(&mut tx, &new.tenant_id, new.scope, new.scope_key.as_deref()).await?;
    let at = micros(new.at)?;
    let row = sqlx::query_as::<_, SecretRow>(concat!(
        "INSERT INTO secrets \
         (id, tenant_id, name, scope, scope_key, expose_as_env, allowed_hosts, version, enabled, \
          created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?) \
         ON CONFLICT (tenant_id, scope, scope_key, name) DO UPDATE SET \
         expose_as_env = excluded.expose_as_env, \
         allowed_hosts = excluded.allowed_hosts, \
         version = version + 1, \
         updated_at = excluded.updated_at \
         RETURNING ",
        columns!()
    ))
    .bind(new.id.as_str())
    .bind(new.tenant_id.as_str())
    .bind(&new.name)
    .bind(new.scope.as_str())
    .bind(new.scope_key.as_deref().unwrap_or_default())
    .bind(&new.expose_as_env)
    .bind(Json(&new.allowed_hosts))
    .bind(at)
    .bind(at)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_ref(e, "tenant_id"))?;
    let s = &new.sealed;
    sqlx::query(
        "INSERT INTO secret_versions \
         (secret_id, version, kek_id, wrapped_key, nonce, ciphertext, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(row.version)
    .bind(&s.kek_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    row.into_secret()
}

/// A `sandbox` scope names a live sandbox of the tenant, a `workspace` scope
/// a workspace of the tenant; other scope keys are labels, not references.
async fn check_scope_key(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
    scope: SecretScope,
    key: Option<&str>,
) -> StoreResult<()> {
    let (sql, field) = match scope {
        SecretScope::Sandbox => (
            "SELECT 1 FROM sandboxes WHERE tenant_id = ? AND id = ? AND status <> 'destroyed'",
            "sandbox_id",
        ),
        SecretScope::Workspace => (
            "SELECT 1 FROM workspaces WHERE tenant_id = ? AND id = ?",
            "workspace_id",
        ),
        _ => return Ok(()),
    };
    let found: Option<i64> = sqlx::query_scalar(sql)
        .bind(tenant.as_str())
        .bind(key.unwrap_or_default())
        .fetch_optional(conn)
        .await
        .map_err(db)?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::MissingReference { field }),
    }
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, secret = %id))]
pub(crate) async fn get(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: &SecretId,
) -> StoreResult<Option<Secret>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    q.push(" AND id = ").push_bind(id.as_str());
    q.build_query_as::<SecretRow>()
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(SecretRow::into_secret)
        .transpose()
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn list(
    pool: &SqlitePool,
    tenant: &TenantId,
    filter: &SecretFilter,
    page: &PageRequest,
) -> StoreResult<Page<Secret>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    if let Some(scope) = filter.scope {
        q.push(" AND scope = ").push_bind(scope.as_str());
    }
    if let Some(key) = &filter.scope_key {
        q.push(" AND scope_key = ").push_bind(key.as_str());
    }
    if let Some(name) = &filter.name {
        q.push(" AND name = ").push_bind(name.as_str());
    }
    push_page(&mut q, page);
    let rows = q
        .build_query_as::<SecretRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?;
    page_of(rows, page, SecretRow::into_secret, |s| s.id.to_string())
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, secret = %id, enabled))]
pub(crate) async fn set_enabled(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: &SecretId,
    enabled: bool,
    at: OffsetDateTime,
) -> StoreResult<Option<Secret>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    bump_epoch(&mut tx, tenant).await?;
    let row = sqlx::query_as::<_, SecretRow>(concat!(
        "UPDATE secrets SET enabled = ?, updated_at = ? WHERE tenant_id = ? AND id = ? \
         RETURNING ",
        columns!()
    ))
    .bind(enabled)
    .bind(micros(at)?)
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        // Nothing changed, so neither does the epoch.
        tx.rollback().await.map_err(db)?;
        return Ok(None);
    };
    tx.commit().await.map_err(db)?;
    row.into_secret().map(Some)
}

/// The versions go with the secret (`ON DELETE CASCADE`).
#[tracing::instrument(skip_all, fields(tenant = %tenant, secret = %id))]
pub(crate) async fn delete(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: &SecretId,
) -> StoreResult<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    bump_epoch(&mut tx, tenant).await?;
    let deleted = sqlx::query("DELETE FROM secrets WHERE tenant_id = ? AND id = ?")
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
        == 1;
    if deleted {
        tx.commit().await.map_err(db)?;
    } else {
        tx.rollback().await.map_err(db)?;
    }
    Ok(deleted)
}

/// One `SELECT` per scope the sandbox offers a key to (the tenant scope
/// with '', every other scope with its label; an empty label matches
/// nothing), joined by `UNION ALL`, each joined to the latest version.
/// Each part is an equality on the leading columns of the unique index
/// `(tenant_id, scope, scope_key, name)`, so the cost follows the matching
/// secrets, not the tenant's (say, one per end-user). Sorted oldest first
/// here rather than by `ORDER BY`, which would lead SQLite to the
/// `(tenant_id, id)` index for its order, back to reading every secret.
#[tracing::instrument(skip_all, fields(tenant = %tenant, sandbox = %keys.sandbox_id))]
pub(crate) async fn candidates(
    pool: &SqlitePool,
    tenant: &TenantId,
    keys: &SandboxScopeKeys,
) -> StoreResult<Vec<(Secret, SealedValue)>> {
    let mut q = QueryBuilder::new("");
    for scope in SecretScope::PRECEDENCE {
        let key = match scope {
            SecretScope::Tenant => "",
            _ => match keys.key_for(scope).filter(|k| !k.is_empty()) {
                Some(key) => key,
                None => continue,
            },
        };
        if !q.sql().is_empty() {
            q.push(" UNION ALL ");
        }
        q.push(
            "SELECT s.id, s.tenant_id, s.name, s.scope, s.scope_key, s.expose_as_env, \
             s.allowed_hosts, s.version, s.enabled, s.created_at, s.updated_at, \
             v.kek_id, v.wrapped_key, v.nonce, v.ciphertext \
             FROM secrets s \
             JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.version \
             WHERE s.enabled = 1 AND s.tenant_id = ",
        );
        q.push_bind(tenant.as_str());
        q.push(" AND s.scope = ").push_bind(scope.as_str());
        q.push(" AND s.scope_key = ").push_bind(key);
    }
    let mut found = q
        .build_query_as::<CandidateRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(|r| Ok((r.secret.into_secret()?, r.sealed.into_sealed())))
        .collect::<StoreResult<Vec<_>>>()?;
    found.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    Ok(found)
}

#[tracing::instrument(skip_all, fields(kek_id = %kek_id))]
pub(crate) async fn sealed_not_under(
    pool: &SqlitePool,
    kek_id: &str,
    limit: u32,
) -> StoreResult<Vec<SealedVersion>> {
    sqlx::query_as::<_, VersionRow>(
        "SELECT secret_id, version, kek_id, wrapped_key, nonce, ciphertext FROM secret_versions \
         WHERE kek_id <> ? ORDER BY secret_id, version LIMIT ?",
    )
    .bind(kek_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(VersionRow::into_version)
    .collect()
}

/// Only the wrapping changes; a version deleted meanwhile is skipped.
#[tracing::instrument(skip_all, fields(rows = rows.len()))]
pub(crate) async fn rewrap(pool: &SqlitePool, rows: &[SealedVersion]) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    for r in rows {
        sqlx::query(
            "UPDATE secret_versions SET kek_id = ?, wrapped_key = ? \
             WHERE secret_id = ? AND version = ?",
        )
        .bind(&r.sealed.kek_id)
        .bind(&r.sealed.wrapped_key)
        .bind(r.secret_id.as_str())
        .bind(i64::from(r.version))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub(crate) async fn kek_ids_in_use(pool: &SqlitePool) -> StoreResult<Vec<String>> {
    sqlx::query_scalar("SELECT DISTINCT kek_id FROM secret_versions ORDER BY kek_id")
        .fetch_all(pool)
        .await
        .map_err(db)
}

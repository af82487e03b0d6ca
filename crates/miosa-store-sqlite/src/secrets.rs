//! The `secrets` and `secret_versions` tables.
//!
//! Every write runs in one `BEGIN IMMEDIATE` transaction that also bumps the
//! tenant's secrets epoch, so a reader that sees the new epoch sees the new
//! secrets too. A scope key the domain leaves out (`None`) is stored as ''.

use miosa_core::{
    AadVersion, NewSecretVersion, Page, PageRequest, SandboxScopeKeys, SealedValue, SealedVersion,
    Secret, SecretId, SecretScope, SubstituteIn, TenantId, WorkspaceId,
};
use miosa_store::{SecretFilter, SecretKey, StoreError, StoreResult};
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
        "id, tenant_id, name, scope, scope_key, workspace_id, expose_as_env, allowed_hosts, \
         substitute_in, version, enabled, created_at, updated_at"
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
    workspace_id: String,
    expose_as_env: String,
    allowed_hosts: Json<Vec<String>>,
    substitute_in: Json<Vec<String>>,
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
            workspace_id: (!self.workspace_id.is_empty())
                .then(|| id(TABLE, &self.workspace_id))
                .transpose()?,
            expose_as_env: self.expose_as_env,
            allowed_hosts: self.allowed_hosts.0,
            substitute_in: SubstituteIn::from_names(
                self.substitute_in.0.iter().map(String::as_str),
            ),
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
    aad_version: i16,
}

impl SealedRow {
    fn into_sealed(self) -> StoreResult<SealedValue> {
        Ok(SealedValue {
            aad: AadVersion::from_i16(self.aad_version)
                .ok_or_else(|| corrupt(VERSIONS, format!("aad_version {}", self.aad_version)))?,
            kek_id: self.kek_id,
            wrapped_key: self.wrapped_key,
            nonce: self.nonce,
            ciphertext: self.ciphertext,
        })
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
            sealed: self.sealed.into_sealed()?,
        })
    }
}

/// Creates the secret or adds the version `new` expects (see
/// `Store::put_secret`): the settings, references and current version are
/// read inside the `BEGIN IMMEDIATE` transaction, which holds SQLite's one
/// write lock, so nothing changes between the checks and the write.
#[tracing::instrument(skip_all, fields(tenant = %new.tenant_id, scope = new.scope.as_str()))]
pub(crate) async fn put(pool: &SqlitePool, new: &NewSecretVersion) -> StoreResult<Secret> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    bump_epoch(&mut tx, &new.tenant_id).await?;
    check_settings(&mut tx, new).await?;
    crate::system::check_sealing_kek(&mut tx, &new.sealed.kek_id).await?;
    check_scope_key(&mut tx, &new.tenant_id, new.scope, new.scope_key.as_deref()).await?;
    if let Some(ws) = &new.workspace_id {
        check_scope_key(
            &mut tx,
            &new.tenant_id,
            SecretScope::Workspace,
            Some(ws.as_str()),
        )
        .await?;
    }
    let current: Option<(String, i64)> = sqlx::query_as(
        "SELECT id, version FROM secrets WHERE tenant_id = ? AND scope = ? AND scope_key = ? \
         AND workspace_id = ? AND name = ?",
    )
    .bind(new.tenant_id.as_str())
    .bind(new.scope.as_str())
    .bind(new.scope_key.as_deref().unwrap_or_default())
    .bind(new.workspace_id.as_ref().map_or("", WorkspaceId::as_str))
    .bind(&new.name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let at = micros(new.at)?;
    let version = i64::from(new.version);
    let row = match current {
        None if new.version == 1 => sqlx::query_as::<_, SecretRow>(concat!(
            "INSERT INTO secrets \
             (id, tenant_id, name, scope, scope_key, workspace_id, expose_as_env, allowed_hosts, \
              substitute_in, version, enabled, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?) RETURNING ",
            columns!()
        ))
        .bind(new.id.as_str())
        .bind(new.tenant_id.as_str())
        .bind(&new.name)
        .bind(new.scope.as_str())
        .bind(new.scope_key.as_deref().unwrap_or_default())
        .bind(new.workspace_id.as_ref().map_or("", WorkspaceId::as_str))
        .bind(&new.expose_as_env)
        .bind(Json(&new.allowed_hosts))
        .bind(Json(new.substitute_in.names()))
        .bind(at)
        .bind(at),
        Some((id, v)) if id == new.id.as_str() && v + 1 == version => {
            sqlx::query_as::<_, SecretRow>(concat!(
                "UPDATE secrets SET expose_as_env = ?, allowed_hosts = ?, substitute_in = ?, \
                 version = ?, updated_at = ? WHERE id = ? RETURNING ",
                columns!()
            ))
            .bind(&new.expose_as_env)
            .bind(Json(&new.allowed_hosts))
            .bind(Json(new.substitute_in.names()))
            .bind(version)
            .bind(at)
            .bind(new.id.as_str())
        }
        _ => {
            return Err(StoreError::Conflict {
                entity: "secret",
                field: "version",
            })
        }
    }
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| db_ref(e, "tenant_id"))?;
    let s = &new.sealed;
    sqlx::query(
        "INSERT INTO secret_versions \
         (secret_id, version, kek_id, wrapped_key, nonce, ciphertext, aad_version, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(row.version)
    .bind(&s.kek_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(s.aad.as_i16())
    .bind(at)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    row.into_secret()
}

/// The tenant's settings as the write transaction sees them (its row
/// exists: the epoch was just bumped).
async fn check_settings(conn: &mut SqliteConnection, new: &NewSecretVersion) -> StoreResult<()> {
    let found: Option<(bool, bool)> = sqlx::query_as(
        "SELECT allow_end_user_credentials, require_allowed_hosts FROM tenant_settings \
         WHERE tenant_id = ?",
    )
    .bind(new.tenant_id.as_str())
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    let Some((allow_end_user, require_hosts)) = found else {
        return Err(StoreError::MissingReference { field: "tenant_id" });
    };
    if new.scope == SecretScope::ExternalUser && !allow_end_user {
        return Err(StoreError::SettingForbids {
            setting: "allow_end_user_credentials",
        });
    }
    if require_hosts && new.allowed_hosts.is_empty() {
        return Err(StoreError::SettingForbids {
            setting: "require_allowed_hosts",
        });
    }
    Ok(())
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

#[tracing::instrument(skip_all, fields(tenant = %tenant, scope = key.scope.as_str()))]
pub(crate) async fn find(
    pool: &SqlitePool,
    tenant: &TenantId,
    key: &SecretKey,
) -> StoreResult<Option<Secret>> {
    sqlx::query_as::<_, SecretRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM secrets WHERE tenant_id = ? AND scope = ? AND scope_key = ? \
         AND workspace_id = ? AND name = ?"
    ))
    .bind(tenant.as_str())
    .bind(key.scope.as_str())
    .bind(key.scope_key.as_deref().unwrap_or_default())
    .bind(key.workspace_id.as_ref().map_or("", WorkspaceId::as_str))
    .bind(&key.name)
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
    if let Some(ws) = &filter.workspace_id {
        q.push(" AND workspace_id = ").push_bind(ws.as_str());
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
            "SELECT s.id, s.tenant_id, s.name, s.scope, s.scope_key, s.workspace_id, \
             s.expose_as_env, s.allowed_hosts, s.substitute_in, s.version, s.enabled, \
             s.created_at, s.updated_at, \
             v.kek_id, v.wrapped_key, v.nonce, v.ciphertext, v.aad_version \
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
        .map(|r| Ok((r.secret.into_secret()?, r.sealed.into_sealed()?)))
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
        "SELECT secret_id, version, kek_id, wrapped_key, nonce, ciphertext, aad_version \
         FROM secret_versions WHERE kek_id <> ? ORDER BY secret_id, version LIMIT ?",
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

/// A version deleted meanwhile is skipped.
#[tracing::instrument(skip_all, fields(rows = rows.len()))]
pub(crate) async fn rewrap(pool: &SqlitePool, rows: &[SealedVersion]) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    for r in rows {
        sqlx::query(
            "UPDATE secret_versions SET kek_id = ?, wrapped_key = ?, nonce = ?, ciphertext = ?, \
             aad_version = ? WHERE secret_id = ? AND version = ?",
        )
        .bind(&r.sealed.kek_id)
        .bind(&r.sealed.wrapped_key)
        .bind(&r.sealed.nonce)
        .bind(&r.sealed.ciphertext)
        .bind(r.sealed.aad.as_i16())
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

#[tracing::instrument(skip_all)]
pub(crate) async fn legacy_latest(
    pool: &SqlitePool,
    limit: u32,
) -> StoreResult<Vec<(Secret, SealedVersion)>> {
    sqlx::query_as::<_, CandidateRow>(
        "SELECT s.id, s.tenant_id, s.name, s.scope, s.scope_key, s.workspace_id, \
         s.expose_as_env, s.allowed_hosts, s.substitute_in, s.version, s.enabled, \
         s.created_at, s.updated_at, \
         v.kek_id, v.wrapped_key, v.nonce, v.ciphertext, v.aad_version \
         FROM secret_versions v JOIN secrets s ON s.id = v.secret_id AND s.version = v.version \
         WHERE v.aad_version = 1 ORDER BY s.id LIMIT ?",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| {
        let secret = r.secret.into_secret()?;
        let version = SealedVersion {
            secret_id: secret.id.clone(),
            version: secret.version,
            sealed: r.sealed.into_sealed()?,
        };
        Ok((secret, version))
    })
    .collect()
}

//! The `sandboxes` table.
//!
//! No method reads then writes, so none needs a row lock: status changes
//! are compare-and-set `UPDATE`s (the move to `destroyed` also deletes the
//! sandbox's own secrets in the same transaction), and name uniqueness among
//! live sandboxes is the partial unique indexes' job (a concurrent insert of
//! the same name waits on the index entry and then fails).

use std::collections::BTreeMap;

use miosa_core::{
    ApiKeyId, Labels, OnTimeout, Page, PageRequest, Sandbox, SandboxId, SandboxStatus, TenantId,
    WorkspaceId,
};
use miosa_store::{SandboxFilter, SandboxPatch, StoreResult};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

use crate::error::{corrupt, db, db_ref};
use crate::rows::{id, page_of, push_page};
use crate::settings::{bump_epoch, lock_secrets};

const TABLE: &str = "sandboxes";

/// The columns [`SandboxRow`] reads, for `SELECT` and `RETURNING`.
macro_rules! columns {
    () => {
        "id, tenant_id, workspace_id, name, status, node_id, template, owner_user_id, \
         external_user_id, external_workspace_id, external_project_id, metadata, cpu, \
         memory_mb, timeout_seconds, on_timeout, created_at, expires_at, destroyed_at, \
         created_by_key_id, created_by_workspace_key, disk_mb"
    };
}

const SELECT: &str = concat!("SELECT ", columns!(), " FROM sandboxes");

#[derive(sqlx::FromRow)]
struct SandboxRow {
    id: String,
    tenant_id: String,
    workspace_id: Option<String>,
    name: Option<String>,
    status: String,
    node_id: String,
    template: String,
    owner_user_id: Option<String>,
    external_user_id: Option<String>,
    external_workspace_id: Option<String>,
    external_project_id: Option<String>,
    metadata: Json<BTreeMap<String, String>>,
    cpu: f64,
    memory_mb: i64,
    timeout_seconds: i64,
    on_timeout: String,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    destroyed_at: Option<OffsetDateTime>,
    created_by_key_id: Option<String>,
    created_by_workspace_key: bool,
    disk_mb: Option<i64>,
}

impl SandboxRow {
    fn into_sandbox(self) -> StoreResult<Sandbox> {
        Ok(Sandbox {
            id: id(TABLE, &self.id)?,
            tenant_id: id(TABLE, &self.tenant_id)?,
            workspace_id: self.workspace_id.map(|ws| id(TABLE, &ws)).transpose()?,
            name: self.name,
            status: SandboxStatus::parse(&self.status)
                .ok_or_else(|| corrupt(TABLE, format!("status {:?}", self.status)))?,
            node_id: self.node_id,
            template: self.template,
            labels: Labels {
                owner_user_id: self.owner_user_id,
                external_user_id: self.external_user_id,
                external_workspace_id: self.external_workspace_id,
                external_project_id: self.external_project_id,
            },
            metadata: self.metadata.0,
            cpu: self.cpu,
            memory_mb: u32_of("memory_mb", self.memory_mb)?,
            disk_mb: self.disk_mb.map(|v| u32_of("disk_mb", v)).transpose()?,
            timeout_seconds: u32_of("timeout_seconds", self.timeout_seconds)?,
            on_timeout: OnTimeout::parse(&self.on_timeout)
                .ok_or_else(|| corrupt(TABLE, format!("on_timeout {:?}", self.on_timeout)))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            destroyed_at: self.destroyed_at,
            created_by_key_id: self.created_by_key_id.map(|k| id(TABLE, &k)).transpose()?,
            created_by_workspace_key: self.created_by_workspace_key,
        })
    }
}

fn u32_of(column: &str, v: i64) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| corrupt(TABLE, format!("{column} {v}")))
}

#[tracing::instrument(skip_all, fields(tenant = %s.tenant_id, sandbox = %s.id))]
pub(crate) async fn create(pool: &PgPool, s: &Sandbox) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sandboxes \
         (id, tenant_id, workspace_id, name, status, node_id, template, owner_user_id, \
          external_user_id, external_workspace_id, external_project_id, metadata, cpu, \
          memory_mb, timeout_seconds, on_timeout, created_at, expires_at, destroyed_at, \
          created_by_key_id, created_by_workspace_key, disk_mb) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
          $19, $20, $21, $22)",
    )
    .bind(s.id.as_str())
    .bind(s.tenant_id.as_str())
    .bind(s.workspace_id.as_ref().map(WorkspaceId::as_str))
    .bind(s.name.as_deref())
    .bind(s.status.as_str())
    .bind(&s.node_id)
    .bind(&s.template)
    .bind(s.labels.owner_user_id.as_deref())
    .bind(s.labels.external_user_id.as_deref())
    .bind(s.labels.external_workspace_id.as_deref())
    .bind(s.labels.external_project_id.as_deref())
    .bind(Json(&s.metadata))
    .bind(s.cpu)
    .bind(i64::from(s.memory_mb))
    .bind(i64::from(s.timeout_seconds))
    .bind(s.on_timeout.as_str())
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(s.destroyed_at)
    .bind(s.created_by_key_id.as_ref().map(ApiKeyId::as_str))
    .bind(s.created_by_workspace_key)
    .bind(s.disk_mb.map(i64::from))
    .execute(pool)
    .await
    .map_err(|e| {
        // The composite reference fails whenever tenant or workspace is
        // wrong; without a workspace only the tenant can be missing.
        let field = match s.workspace_id {
            Some(_) => "workspace_id",
            None => "tenant_id",
        };
        db_ref(e, field)
    })?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, sandbox = %id))]
pub(crate) async fn get(
    pool: &PgPool,
    tenant: &TenantId,
    id: &SandboxId,
) -> StoreResult<Option<Sandbox>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    q.push(" AND id = ").push_bind(id.as_str());
    q.build_query_as::<SandboxRow>()
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(SandboxRow::into_sandbox)
        .transpose()
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn get_by_name(
    pool: &PgPool,
    tenant: &TenantId,
    workspace: Option<&WorkspaceId>,
    name: &str,
) -> StoreResult<Option<Sandbox>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    match workspace {
        Some(ws) => q.push(" AND workspace_id = ").push_bind(ws.as_str()),
        None => q.push(" AND workspace_id IS NULL"),
    };
    q.push(" AND name = ").push_bind(name);
    q.push(" AND status <> 'destroyed'");
    q.build_query_as::<SandboxRow>()
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(SandboxRow::into_sandbox)
        .transpose()
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &SandboxFilter,
    page: &PageRequest,
) -> StoreResult<Page<Sandbox>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    match filter.status {
        Some(status) => q.push(" AND status = ").push_bind(status.as_str()),
        None => q.push(" AND status <> 'destroyed'"),
    };
    if let Some(ws) = &filter.workspace_id {
        q.push(" AND workspace_id = ").push_bind(ws.as_str());
    }
    if let Some(v) = &filter.external_user_id {
        q.push(" AND external_user_id = ").push_bind(v.as_str());
    }
    if let Some(v) = &filter.external_workspace_id {
        q.push(" AND external_workspace_id = ")
            .push_bind(v.as_str());
    }
    if let Some(v) = &filter.external_project_id {
        q.push(" AND external_project_id = ").push_bind(v.as_str());
    }
    for (key, value) in &filter.metadata {
        // `->>` takes the key literally (dots included) and yields text.
        q.push(" AND metadata ->> ")
            .push_bind(key.as_str())
            .push(" = ")
            .push_bind(value.as_str());
    }
    push_page(&mut q, page);
    let rows = q
        .build_query_as::<SandboxRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?;
    page_of(rows, page, SandboxRow::into_sandbox, |s| s.id.to_string())
}

/// One `UPDATE … RETURNING`: fields the patch leaves out keep their values.
#[tracing::instrument(skip_all, fields(tenant = %tenant, sandbox = %id))]
pub(crate) async fn update(
    pool: &PgPool,
    tenant: &TenantId,
    id: &SandboxId,
    patch: &SandboxPatch,
) -> StoreResult<Option<Sandbox>> {
    sqlx::query_as::<_, SandboxRow>(concat!(
        "UPDATE sandboxes SET \
         name = CASE WHEN $1 THEN $2 ELSE name END, \
         metadata = COALESCE($3, metadata), \
         timeout_seconds = COALESCE($4, timeout_seconds), \
         expires_at = COALESCE($5, expires_at) \
         WHERE tenant_id = $6 AND id = $7 AND status <> 'destroyed' \
         RETURNING ",
        columns!()
    ))
    .bind(patch.name.is_some())
    .bind(patch.name.as_ref().and_then(Option::as_deref))
    .bind(patch.metadata.as_ref().map(Json))
    .bind(patch.timeout_seconds.map(i64::from))
    .bind(patch.expires_at)
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .map(SandboxRow::into_sandbox)
    .transpose()
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, sandbox = %id, to = to.as_str()))]
pub(crate) async fn transition(
    pool: &PgPool,
    tenant: &TenantId,
    id: &SandboxId,
    from: &[SandboxStatus],
    to: SandboxStatus,
    at: OffsetDateTime,
) -> StoreResult<bool> {
    if from.is_empty() {
        return Ok(false);
    }
    let mut tx = pool.begin().await.map_err(db)?;
    if to == SandboxStatus::Destroyed {
        // Secret writers lock this row first too: no deadlock, and no
        // sandbox secret slips in between the update and the delete.
        lock_secrets(&mut tx, tenant).await?;
    }
    let mut q = QueryBuilder::new("UPDATE sandboxes SET status = ");
    q.push_bind(to.as_str());
    if to == SandboxStatus::Destroyed {
        q.push(", destroyed_at = ").push_bind(at);
    }
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    q.push(" AND id = ").push_bind(id.as_str());
    q.push(" AND ");
    push_status_in(&mut q, from);
    let changed = q
        .build()
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected()
        == 1;
    if changed && to == SandboxStatus::Destroyed {
        delete_sandbox_secrets(&mut tx, tenant, id).await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(changed)
}

/// A destroyed sandbox's own secrets go with it (their versions cascade).
/// The epoch is bumped only when there were some, so destroying a sandbox
/// without secrets leaves the tenant's credential caches valid.
async fn delete_sandbox_secrets(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: &SandboxId,
) -> StoreResult<()> {
    let deleted = sqlx::query(
        "DELETE FROM secrets WHERE tenant_id = $1 AND scope = 'sandbox' AND scope_key = $2",
    )
    .bind(tenant.as_str())
    .bind(id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected();
    if deleted > 0 {
        bump_epoch(conn, tenant).await?;
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(node = %node))]
pub(crate) async fn in_status(
    pool: &PgPool,
    node: &str,
    statuses: &[SandboxStatus],
) -> StoreResult<Vec<Sandbox>> {
    if statuses.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE node_id = ").push_bind(node);
    q.push(" AND ");
    push_status_in(&mut q, statuses);
    q.push(" ORDER BY created_at, id");
    q.build_query_as::<SandboxRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(SandboxRow::into_sandbox)
        .collect()
}

#[tracing::instrument(skip_all, fields(node = %node))]
pub(crate) async fn expired(
    pool: &PgPool,
    node: &str,
    now: OffsetDateTime,
    limit: u32,
) -> StoreResult<Vec<Sandbox>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE node_id = ").push_bind(node);
    q.push(" AND ");
    push_status_in(&mut q, &[SandboxStatus::Running, SandboxStatus::Paused]);
    q.push(" AND expires_at < ").push_bind(now);
    q.push(" ORDER BY expires_at, id LIMIT ")
        .push_bind(i64::from(limit));
    q.build_query_as::<SandboxRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(SandboxRow::into_sandbox)
        .collect()
}

/// `status IN (…)` for a non-empty list.
fn push_status_in(q: &mut QueryBuilder<'_, Postgres>, statuses: &[SandboxStatus]) {
    q.push("status IN (");
    let mut list = q.separated(", ");
    for s in statuses {
        list.push_bind(s.as_str());
    }
    list.push_unseparated(")");
}

//! The `workspaces` table.

use miosa_core::{Page, PageRequest, TenantId, Workspace, WorkspaceId};
use miosa_store::{StoreResult, WorkspaceFilter};
use sqlx::{PgPool, QueryBuilder};
use time::OffsetDateTime;

use crate::error::{db, db_ref};
use crate::rows::{id, page_of, push_page};

const TABLE: &str = "workspaces";

#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    id: String,
    tenant_id: String,
    name: String,
    created_at: OffsetDateTime,
}

impl WorkspaceRow {
    fn into_workspace(self) -> StoreResult<Workspace> {
        Ok(Workspace {
            id: id(TABLE, &self.id)?,
            tenant_id: id(TABLE, &self.tenant_id)?,
            name: self.name,
            created_at: self.created_at,
        })
    }
}

#[tracing::instrument(skip_all, fields(tenant = %ws.tenant_id, workspace = %ws.id))]
pub(crate) async fn create(pool: &PgPool, ws: &Workspace) -> StoreResult<()> {
    sqlx::query("INSERT INTO workspaces (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(ws.id.as_str())
        .bind(ws.tenant_id.as_str())
        .bind(&ws.name)
        .bind(ws.created_at)
        .execute(pool)
        .await
        .map_err(|e| db_ref(e, "tenant_id"))?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, workspace = %id))]
pub(crate) async fn get(
    pool: &PgPool,
    tenant: &TenantId,
    id: &WorkspaceId,
) -> StoreResult<Option<Workspace>> {
    sqlx::query_as::<_, WorkspaceRow>(
        "SELECT id, tenant_id, name, created_at FROM workspaces WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db)?
    .map(WorkspaceRow::into_workspace)
    .transpose()
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &WorkspaceFilter,
    page: &PageRequest,
) -> StoreResult<Page<Workspace>> {
    let mut q = QueryBuilder::new(
        "SELECT id, tenant_id, name, created_at FROM workspaces WHERE tenant_id = ",
    );
    q.push_bind(tenant.as_str());
    if let Some(only) = &filter.only {
        q.push(" AND id = ").push_bind(only.as_str());
    }
    push_page(&mut q, page);
    let rows = q
        .build_query_as::<WorkspaceRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?;
    page_of(rows, page, WorkspaceRow::into_workspace, |w| {
        w.id.to_string()
    })
}

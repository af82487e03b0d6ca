//! The `tenants` table.

use miosa_core::{NewApiKey, Page, PageRequest, Tenant, TenantId};
use miosa_store::StoreResult;
use sqlx::{QueryBuilder, SqliteConnection, SqlitePool};

use crate::api_keys;
use crate::error::db;
use crate::rows::{from_micros, id, micros, page_of, push_page};

const TABLE: &str = "tenants";

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: String,
    name: String,
    created_at: i64,
}

impl TenantRow {
    fn into_tenant(self) -> StoreResult<Tenant> {
        Ok(Tenant {
            id: id(TABLE, &self.id)?,
            name: self.name,
            created_at: from_micros(TABLE, self.created_at)?,
        })
    }
}

pub(crate) async fn insert(conn: &mut SqliteConnection, t: &Tenant) -> StoreResult<()> {
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
        .bind(t.id.as_str())
        .bind(&t.name)
        .bind(micros(t.created_at)?)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(tenant = %tenant.id))]
pub(crate) async fn create(
    pool: &SqlitePool,
    tenant: &Tenant,
    first_key: &NewApiKey,
) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    insert(&mut tx, tenant).await?;
    api_keys::insert(&mut tx, first_key).await?;
    tx.commit().await.map_err(db)
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn get(pool: &SqlitePool, tenant: &TenantId) -> StoreResult<Option<Tenant>> {
    sqlx::query_as::<_, TenantRow>("SELECT id, name, created_at FROM tenants WHERE id = ?")
        .bind(tenant.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db)?
        .map(TenantRow::into_tenant)
        .transpose()
}

#[tracing::instrument(skip_all)]
pub(crate) async fn list(pool: &SqlitePool, page: &PageRequest) -> StoreResult<Page<Tenant>> {
    let mut q = QueryBuilder::new("SELECT id, name, created_at FROM tenants WHERE TRUE");
    push_page(&mut q, page);
    let rows = q
        .build_query_as::<TenantRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?;
    page_of(rows, page, TenantRow::into_tenant, |t| t.id.to_string())
}

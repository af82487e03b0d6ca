//! The `audit_checkpoints` table: signed chain heads.

use miosa_core::{AuditCheckpoint, Page, PageRequest, TenantId};
use miosa_store::StoreResult;
use sqlx::{QueryBuilder, SqlitePool};

use crate::error::{corrupt, db, db_ref};
use crate::rows::{from_micros, id, micros};

const TABLE: &str = "audit_checkpoints";
const SELECT: &str = "SELECT tenant_id, seq, hash, time, kek_id, signature FROM audit_checkpoints";

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    seq: i64,
    hash: String,
    time: i64,
    kek_id: String,
    signature: Vec<u8>,
}

impl Row {
    fn into_checkpoint(self) -> StoreResult<AuditCheckpoint> {
        Ok(AuditCheckpoint {
            tenant_id: id(TABLE, &self.tenant_id)?,
            seq: self.seq,
            hash: self.hash,
            time: from_micros(TABLE, self.time)?,
            kek_id: self.kek_id,
            signature: self.signature,
        })
    }
}

fn rows(rows: Vec<Row>) -> StoreResult<Vec<AuditCheckpoint>> {
    rows.into_iter().map(Row::into_checkpoint).collect()
}

#[tracing::instrument(skip_all, fields(tenant = %cp.tenant_id, seq = cp.seq))]
pub(crate) async fn put(pool: &SqlitePool, cp: &AuditCheckpoint) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (tenant_id, seq, hash, time, kek_id, signature) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, seq) DO NOTHING",
    )
    .bind(cp.tenant_id.as_str())
    .bind(cp.seq)
    .bind(&cp.hash)
    .bind(micros(cp.time)?)
    .bind(&cp.kek_id)
    .bind(&cp.signature)
    .execute(pool)
    .await
    .map_err(|e| db_ref(e, "tenant_id"))?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn list(
    pool: &SqlitePool,
    tenant: &TenantId,
    page: &PageRequest,
) -> StoreResult<Page<AuditCheckpoint>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    if let Some(after) = &page.after {
        let seq: i64 = after
            .parse()
            .map_err(|_| corrupt(TABLE, format!("cursor {after:?}")))?;
        q.push(" AND seq < ").push_bind(seq);
    }
    q.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(page.fetch_limit());
    let found = rows(
        q.build_query_as::<Row>()
            .fetch_all(pool)
            .await
            .map_err(db)?,
    )?;
    Ok(Page::from_rows(found, page, |c| c.seq.to_string()))
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, after_seq))]
pub(crate) async fn after(
    pool: &SqlitePool,
    tenant: &TenantId,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditCheckpoint>> {
    rows(
        sqlx::query_as::<_, Row>(&format!(
            "{SELECT} WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(tenant.as_str())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db)?,
    )
}

#[tracing::instrument(skip_all)]
pub(crate) async fn heads_to_sign(
    pool: &SqlitePool,
    limit: u32,
) -> StoreResult<Vec<(TenantId, i64, String)>> {
    let found: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT h.tenant_id, h.seq, h.hash FROM audit_heads h \
         WHERE h.seq > COALESCE( \
             (SELECT MAX(c.seq) FROM audit_checkpoints c WHERE c.tenant_id = h.tenant_id), 0) \
         ORDER BY h.tenant_id LIMIT ?",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(db)?;
    found
        .into_iter()
        .map(|(t, seq, hash)| Ok((id(TABLE, &t)?, seq, hash)))
        .collect()
}

#[tracing::instrument(skip_all, fields(kek_id))]
pub(crate) async fn not_under(
    pool: &SqlitePool,
    kek_id: &str,
    limit: u32,
) -> StoreResult<Vec<AuditCheckpoint>> {
    rows(
        sqlx::query_as::<_, Row>(&format!(
            "{SELECT} WHERE kek_id <> ? ORDER BY tenant_id, seq LIMIT ?"
        ))
        .bind(kek_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(db)?,
    )
}

#[tracing::instrument(skip_all, fields(checkpoints = cps.len()))]
pub(crate) async fn resign(pool: &SqlitePool, cps: &[AuditCheckpoint]) -> StoreResult<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    for cp in cps {
        sqlx::query(
            "UPDATE audit_checkpoints SET kek_id = ?, signature = ? WHERE tenant_id = ? AND seq = ?",
        )
        .bind(&cp.kek_id)
        .bind(&cp.signature)
        .bind(cp.tenant_id.as_str())
        .bind(cp.seq)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

//! The `audit_events` and `audit_heads` tables: one hash chain per tenant.
//!
//! An append runs in one `BEGIN IMMEDIATE` transaction, which holds SQLite's
//! single write lock: no other append (from this process or another) can read
//! a head between this one's read and its write.

use std::collections::hash_map::{Entry, HashMap};

use miosa_core::audit::{AuditCredential, AuditRequest, Outcome};
use miosa_core::{
    AuditCompletion, AuditEntry, AuditEvent, Page, PageRequest, SecretScope, TenantId,
};
use miosa_store::{AuditFilter, StoreError, StoreResult};
use sqlx::{QueryBuilder, SqliteConnection, SqlitePool};

use crate::error::{corrupt, db, db_ref};
use crate::rows::{from_micros, id, micros, page_of, push_page};

const TABLE: &str = "audit_events";

/// The columns of `audit_events`, in the order [`insert`] binds them.
macro_rules! columns {
    () => {
        "id, tenant_id, seq, time, action, actor, target, sandbox_id, workspace_id, \
         owner_user_id, external_user_id, external_workspace_id, external_project_id, \
         request_method, request_host, request_path, request_status, request_bytes_out, \
         request_bytes_in, request_duration_ms, credential_secret_id, credential_name, \
         credential_scope, outcome, prev_hash, hash, deferred, pending, created_by_key_id"
    };
}

const SELECT: &str = concat!("SELECT ", columns!(), " FROM audit_events");

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    tenant_id: String,
    seq: i64,
    time: i64,
    action: String,
    actor: Option<String>,
    target: Option<String>,
    sandbox_id: Option<String>,
    workspace_id: Option<String>,
    owner_user_id: Option<String>,
    external_user_id: Option<String>,
    external_workspace_id: Option<String>,
    external_project_id: Option<String>,
    request_method: Option<String>,
    request_host: Option<String>,
    request_path: Option<String>,
    request_status: Option<i64>,
    request_bytes_out: Option<i64>,
    request_bytes_in: Option<i64>,
    request_duration_ms: Option<i64>,
    credential_secret_id: Option<String>,
    credential_name: Option<String>,
    credential_scope: Option<String>,
    outcome: String,
    prev_hash: String,
    hash: String,
    deferred: bool,
    pending: bool,
    created_by_key_id: Option<String>,
}

impl AuditRow {
    fn into_event(self) -> StoreResult<AuditEvent> {
        let request = match (self.request_method, self.request_host, self.request_path) {
            (None, None, None) => None,
            (Some(method), Some(host), Some(path)) => Some(AuditRequest {
                method,
                host,
                path,
                status: self
                    .request_status
                    .map(|s| u16::try_from(s).map_err(|_| corrupt(TABLE, format!("status {s}"))))
                    .transpose()?,
                bytes_out: unsigned("request_bytes_out", self.request_bytes_out)?,
                bytes_in: unsigned("request_bytes_in", self.request_bytes_in)?,
                duration_ms: unsigned("request_duration_ms", self.request_duration_ms)?,
            }),
            _ => return Err(corrupt(TABLE, "request columns are partly NULL")),
        };
        let credential = match (
            self.credential_secret_id,
            self.credential_name,
            self.credential_scope,
        ) {
            (None, None, None) => None,
            (Some(secret_id), Some(name), Some(scope)) => Some(AuditCredential {
                secret_id: id(TABLE, &secret_id)?,
                name,
                scope: SecretScope::parse(&scope)
                    .ok_or_else(|| corrupt(TABLE, format!("credential_scope {scope:?}")))?,
            }),
            _ => return Err(corrupt(TABLE, "credential columns are partly NULL")),
        };
        Ok(AuditEvent {
            entry: AuditEntry {
                id: id(TABLE, &self.id)?,
                tenant_id: id(TABLE, &self.tenant_id)?,
                time: from_micros(TABLE, self.time)?,
                action: self.action,
                actor: self.actor,
                target: self.target,
                sandbox_id: self.sandbox_id.map(|s| id(TABLE, &s)).transpose()?,
                workspace_id: self.workspace_id.map(|w| id(TABLE, &w)).transpose()?,
                owner_user_id: self.owner_user_id,
                external_user_id: self.external_user_id,
                external_workspace_id: self.external_workspace_id,
                external_project_id: self.external_project_id,
                request,
                credential,
                outcome: Outcome::parse(&self.outcome)
                    .ok_or_else(|| corrupt(TABLE, format!("outcome {:?}", self.outcome)))?,
                created_by_key_id: self.created_by_key_id.map(|k| id(TABLE, &k)).transpose()?,
                deferred: self.deferred,
            },
            seq: self.seq,
            prev_hash: self.prev_hash,
            hash: self.hash,
            pending: self.pending,
        })
    }
}

fn unsigned(column: &str, v: Option<i64>) -> StoreResult<u64> {
    v.and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| corrupt(TABLE, format!("{column} {v:?}")))
}

fn signed(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|e| StoreError::Backend(Box::new(e)))
}

/// Heads are read once per tenant in the batch, entries linked in the given
/// order, each row inserted with the same (cached) prepared statement, and
/// every touched head written back.
#[tracing::instrument(skip_all, fields(entries = entries.len()))]
pub(crate) async fn append(
    pool: &SqlitePool,
    entries: &[AuditEntry],
) -> StoreResult<Vec<AuditEvent>> {
    write(pool, entries, &[]).await
}

/// Appends `entries` and applies `completions` in one transaction.
pub(crate) async fn write(
    pool: &SqlitePool,
    entries: &[AuditEntry],
    completions: &[AuditCompletion],
) -> StoreResult<Vec<AuditEvent>> {
    if entries.is_empty() && completions.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let events = append_in(&mut tx, entries).await?;
    complete_in(&mut tx, completions).await?;
    tx.commit().await.map_err(db)?;
    Ok(events)
}

async fn append_in(
    tx: &mut SqliteConnection,
    entries: &[AuditEntry],
) -> StoreResult<Vec<AuditEvent>> {
    let mut heads: HashMap<&TenantId, Option<(i64, String)>> = HashMap::new();
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let head = match heads.entry(&entry.tenant_id) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(read_head(&mut *tx, &entry.tenant_id).await?),
        };
        let mut entry = entry.clone();
        // The hash covers whole microseconds, which is what the column keeps.
        entry.time = entry
            .time
            .replace_microsecond(entry.time.microsecond())
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let event = entry.link(head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())));
        insert(&mut *tx, &event).await?;
        *head = Some((event.seq, event.hash.clone()));
        events.push(event);
    }
    for (tenant, head) in heads {
        let Some((seq, hash)) = head else { continue };
        sqlx::query(
            "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?, ?, ?) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .bind(tenant.as_str())
        .bind(seq)
        .bind(hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_ref(e, "tenant_id"))?;
    }
    Ok(events)
}

async fn read_head(
    conn: &mut SqliteConnection,
    tenant: &TenantId,
) -> StoreResult<Option<(i64, String)>> {
    sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?")
        .bind(tenant.as_str())
        .fetch_optional(conn)
        .await
        .map_err(db)
}

async fn insert(conn: &mut SqliteConnection, ev: &AuditEvent) -> StoreResult<()> {
    let e = &ev.entry;
    let r = e.request.as_ref();
    let c = e.credential.as_ref();
    sqlx::query(concat!(
        "INSERT INTO audit_events (",
        columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(e.id.as_str())
    .bind(e.tenant_id.as_str())
    .bind(ev.seq)
    .bind(micros(e.time)?)
    .bind(&e.action)
    .bind(e.actor.as_deref())
    .bind(e.target.as_deref())
    .bind(e.sandbox_id.as_ref().map(|s| s.as_str()))
    .bind(e.workspace_id.as_ref().map(|w| w.as_str()))
    .bind(e.owner_user_id.as_deref())
    .bind(e.external_user_id.as_deref())
    .bind(e.external_workspace_id.as_deref())
    .bind(e.external_project_id.as_deref())
    .bind(r.map(|r| r.method.as_str()))
    .bind(r.map(|r| r.host.as_str()))
    .bind(r.map(|r| r.path.as_str()))
    .bind(r.and_then(|r| r.status).map(i64::from))
    .bind(r.map(|r| signed(r.bytes_out)).transpose()?)
    .bind(r.map(|r| signed(r.bytes_in)).transpose()?)
    .bind(r.map(|r| signed(r.duration_ms)).transpose()?)
    .bind(c.map(|c| c.secret_id.as_str()))
    .bind(c.map(|c| c.name.as_str()))
    .bind(c.map(|c| c.scope.as_str()))
    .bind(e.outcome.as_str())
    .bind(&ev.prev_hash)
    .bind(&ev.hash)
    .bind(e.deferred)
    .bind(ev.pending)
    .bind(e.created_by_key_id.as_ref().map(|k| k.as_str()))
    .execute(conn)
    .await
    .map_err(|e| db_ref(e, "tenant_id"))?;
    Ok(())
}

/// Each attribute filter has an index `(tenant_id, attribute, id)` that
/// yields its rows newest first; `since`, `until` and further attributes are
/// checked on the rows it yields. SQLite keeps no statistics here, so it
/// cannot tell a rare value from a common one: the most selective attribute
/// given (in [`attributes`] order) picks the index, and the others are
/// written `+column`, which SQLite documents as disqualifying a term from
/// index use. Otherwise it may walk, say, all of a tenant's `egress.request`
/// rows to find one user's.
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn list(
    pool: &SqlitePool,
    tenant: &TenantId,
    filter: &AuditFilter,
    page: &PageRequest,
) -> StoreResult<Page<AuditEvent>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    let mut indexed = false;
    for (column, value) in attributes(filter) {
        let Some(value) = value else { continue };
        q.push(if indexed { " AND +" } else { " AND " });
        q.push(column).push(" = ").push_bind(value);
        indexed = true;
    }
    if let Some(t) = filter.since {
        q.push(" AND time >= ").push_bind(micros(t)?);
    }
    if let Some(t) = filter.until {
        q.push(" AND time < ").push_bind(micros(t)?);
    }
    push_page(&mut q, page);
    let rows = q
        .build_query_as::<AuditRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?;
    page_of(rows, page, AuditRow::into_event, |e| e.entry.id.to_string())
}

/// The attribute filters as (column, value), most selective first: a
/// sandbox's rows are usually a subset of one user's, a user's of a
/// project's or workspace's, and an action has few values.
fn attributes(filter: &AuditFilter) -> [(&'static str, Option<&str>); 5] {
    [
        ("sandbox_id", filter.sandbox_id.as_ref().map(|s| s.as_str())),
        ("external_user_id", filter.external_user_id.as_deref()),
        ("external_project_id", filter.external_project_id.as_deref()),
        (
            "external_workspace_id",
            filter.external_workspace_id.as_deref(),
        ),
        ("action", filter.action.as_deref()),
    ]
}

#[tracing::instrument(skip_all, fields(tenant = %tenant, after_seq))]
pub(crate) async fn chain(
    pool: &SqlitePool,
    tenant: &TenantId,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<AuditEvent>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    q.push(" AND seq > ").push_bind(after_seq);
    q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
    q.build_query_as::<AuditRow>()
        .fetch_all(pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(AuditRow::into_event)
        .collect()
}

/// The tenant's chain head: the last `seq` and `hash` appended.
pub(crate) async fn head(
    pool: &SqlitePool,
    tenant: &TenantId,
) -> StoreResult<Option<(i64, String)>> {
    sqlx::query_as::<_, (i64, String)>(
        "SELECT seq, hash FROM audit_heads WHERE tenant_id = ? AND seq > 0",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db)
}

/// One `UPDATE` per completion, all in one transaction.
#[tracing::instrument(skip_all, fields(completions = completions.len()))]
pub(crate) async fn complete(
    pool: &SqlitePool,
    completions: &[AuditCompletion],
) -> StoreResult<()> {
    write(pool, &[], completions).await.map(drop)
}

async fn complete_in(
    tx: &mut SqliteConnection,
    completions: &[AuditCompletion],
) -> StoreResult<()> {
    for c in completions {
        sqlx::query(
            "UPDATE audit_events SET request_status = ?, request_bytes_out = ?, \
             request_bytes_in = ?, request_duration_ms = ?, outcome = ?, pending = 0 \
             WHERE tenant_id = ? AND id = ? AND pending = 1 AND request_method IS NOT NULL",
        )
        .bind(c.status.map(i64::from))
        .bind(signed(c.bytes_out)?)
        .bind(signed(c.bytes_in)?)
        .bind(signed(c.duration_ms)?)
        .bind(c.outcome.as_str())
        .bind(c.tenant_id.as_str())
        .bind(c.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

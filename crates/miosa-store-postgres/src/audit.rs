//! The `audit_events` and `audit_heads` tables: one hash chain per tenant.
//!
//! An append locks the heads of the tenants it touches (`FOR UPDATE`, in
//! tenant order so that two multi-tenant appends cannot deadlock) and holds
//! them until it commits: appends to one chain, from any replica, run one
//! after the other, and each links on the head the previous one left.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

mod fast;

use miosa_core::audit::{AuditCredential, AuditRequest, Outcome, GENESIS_HASH};
use miosa_core::{
    AuditCompletion, AuditEntry, AuditEvent, Page, PageRequest, SecretScope, TenantId,
};
use miosa_store::{AuditFilter, StoreError, StoreResult};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use time::OffsetDateTime;

use crate::error::{corrupt, db, db_ref};
use crate::rows::{id, page_of, push_page};

const TABLE: &str = "audit_events";

/// The columns of `audit_events`, in the order [`insert_all`] binds them.
macro_rules! columns {
    () => {
        "id, tenant_id, seq, time, action, actor, target, sandbox_id, workspace_id, \
         owner_user_id, external_user_id, external_workspace_id, external_project_id, \
         request_method, request_host, request_path, request_status, request_bytes_out, \
         request_bytes_in, request_duration_ms, credential_secret_id, credential_name, \
         credential_scope, outcome, prev_hash, hash, deferred, pending, created_by_key_id"
    };
}
use columns;

const SELECT: &str = concat!("SELECT ", columns!(), " FROM audit_events");

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: String,
    tenant_id: String,
    seq: i64,
    time: OffsetDateTime,
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
    request_status: Option<i32>,
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
                time: self.time,
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

/// Four statements whatever the batch size: create missing heads, lock and
/// read them, insert every row from column arrays (`UNNEST`), move the heads.
/// A missing head is created as (0, genesis hash), which links like none.
pub(crate) async fn append(
    pool: &PgPool,
    cache: &HeadCache,
    entries: &[AuditEntry],
) -> StoreResult<Vec<AuditEvent>> {
    write(pool, cache, entries, &[]).await
}

/// Appends `entries` and applies `completions` atomically.
///
/// The usual case takes one round trip: when this process knows every
/// touched chain's head (it wrote it last), the rows are linked on those
/// heads and one statement moves each head on only if it is still where
/// it was, inserts the rows and applies the completions. A head moved by
/// anyone else (another replica, a concurrent append here) fails that
/// statement as a whole (`fast::write`); the write is then done the locking
/// way, which reads the heads under `FOR UPDATE`.
#[tracing::instrument(skip_all, fields(entries = entries.len(), completions = completions.len()))]
pub(crate) async fn write(
    pool: &PgPool,
    cache: &HeadCache,
    entries: &[AuditEntry],
    completions: &[AuditCompletion],
) -> StoreResult<Vec<AuditEvent>> {
    if entries.is_empty() {
        return complete(pool, completions).await.map(|()| Vec::new());
    }
    if let Some(plan) = cache.plan(entries)? {
        if fast::write(pool, &plan, completions).await.is_ok() {
            cache.advance(&plan.heads);
            return Ok(plan.events);
        }
        cache.forget(plan.heads.iter().map(|h| h.tenant.as_str()));
    }
    let mut tx = pool.begin().await.map_err(db)?;
    let (events, heads) = append_in(&mut tx, entries).await?;
    complete_in(&mut tx, completions).await?;
    tx.commit().await.map_err(db)?;
    cache.advance(&heads);
    Ok(events)
}

/// Locks the heads of `tenants`, in tenant order (a tenant with no head
/// yet is missing from the answer).
async fn lock_heads(
    tx: &mut PgConnection,
    tenants: &[&str],
) -> StoreResult<HashMap<String, (i64, String)>> {
    let locked: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT tenant_id, seq, hash FROM audit_heads WHERE tenant_id = ANY($1) \
         ORDER BY tenant_id FOR UPDATE",
    )
    .bind(tenants)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    Ok(locked
        .into_iter()
        .map(|(tenant, seq, hash)| (tenant, (seq, hash)))
        .collect())
}

async fn append_in(
    tx: &mut PgConnection,
    entries: &[AuditEntry],
) -> StoreResult<(Vec<AuditEvent>, Vec<HeadMove>)> {
    let mut tenants: Vec<&str> = entries.iter().map(|e| e.tenant_id.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();

    // Every chain but a tenant's first has its head: lock it in one round
    // trip, creating the missing ones only when there are any.
    let mut heads = lock_heads(tx, &tenants).await?;
    if heads.len() < tenants.len() {
        sqlx::query(
            "INSERT INTO audit_heads (tenant_id, seq, hash) \
             SELECT t, 0, $2 FROM UNNEST($1::text[]) AS t ORDER BY t \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(&tenants)
        .bind(GENESIS_HASH)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_ref(e, "tenant_id"))?;
        heads = lock_heads(tx, &tenants).await?;
    }

    let (events, moves) = link(entries, heads)?;
    insert_all(tx, &events).await?;
    let (tenants, seqs, hashes): (Vec<&str>, Vec<i64>, Vec<&str>) = moves
        .iter()
        .map(|m| (m.tenant.as_str(), m.seq, m.hash.as_str()))
        .collect();
    sqlx::query(
        "UPDATE audit_heads AS h SET seq = v.seq, hash = v.hash \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS v (tenant_id, seq, hash) \
         WHERE h.tenant_id = v.tenant_id",
    )
    .bind(tenants)
    .bind(seqs)
    .bind(hashes)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok((events, moves))
}

/// Links `entries` on `from` (tenant → seq, hash): the events, and how
/// each head moves.
fn link(
    entries: &[AuditEntry],
    from: HashMap<String, (i64, String)>,
) -> StoreResult<(Vec<AuditEvent>, Vec<HeadMove>)> {
    let mut heads = from.clone();
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let head = heads
            .get_mut(entry.tenant_id.as_str())
            .ok_or(StoreError::MissingReference { field: "tenant_id" })?;
        let mut entry = entry.clone();
        // The hash covers whole microseconds, which is what the column keeps.
        entry.time = entry
            .time
            .replace_microsecond(entry.time.microsecond())
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        let event = entry.link(Some((head.0, head.1.as_str())));
        *head = (event.seq, event.hash.clone());
        events.push(event);
    }
    let moves = heads
        .into_iter()
        .filter_map(|(tenant, (seq, hash))| {
            let (old_seq, old_hash) = from.get(&tenant)?.clone();
            Some(HeadMove {
                tenant,
                old_seq,
                old_hash,
                seq,
                hash,
            })
        })
        .collect();
    Ok((events, moves))
}

/// One chain's head before and after a write.
#[derive(Debug, Clone)]
pub(crate) struct HeadMove {
    tenant: String,
    old_seq: i64,
    old_hash: String,
    seq: i64,
    hash: String,
}

/// The chain heads this process wrote last, by tenant: a guess at where
/// each head is, which the one-statement write checks.
#[derive(Debug, Default)]
pub(crate) struct HeadCache(Mutex<HashMap<String, (i64, String)>>);

/// Rows linked on cached heads, and the head moves they make.
pub(crate) struct Plan {
    events: Vec<AuditEvent>,
    heads: Vec<HeadMove>,
}

impl HeadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, String)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rows linked on the cached heads, when every tenant has one.
    fn plan(&self, entries: &[AuditEntry]) -> StoreResult<Option<Plan>> {
        let from: HashMap<String, (i64, String)> = {
            let cached = self.lock();
            let mut from = HashMap::new();
            for e in entries {
                let tenant = e.tenant_id.as_str();
                if from.contains_key(tenant) {
                    continue;
                }
                let Some(head) = cached.get(tenant) else {
                    return Ok(None);
                };
                from.insert(tenant.to_owned(), head.clone());
            }
            from
        };
        let (events, heads) = link(entries, from)?;
        Ok(Some(Plan { events, heads }))
    }

    /// Records heads written; an older one never replaces a newer one.
    fn advance(&self, moves: &[HeadMove]) {
        let mut cached = self.lock();
        for m in moves {
            match cached.get(&m.tenant) {
                Some((seq, _)) if *seq >= m.seq => {}
                _ => {
                    cached.insert(m.tenant.clone(), (m.seq, m.hash.clone()));
                }
            }
        }
    }

    fn forget<'a>(&self, tenants: impl Iterator<Item = &'a str>) {
        let mut cached = self.lock();
        for t in tenants {
            cached.remove(t);
        }
    }
}

/// The rows as one array per column, bound to one `INSERT … SELECT FROM
/// UNNEST(…)`: a single statement (prepared once) for any batch size.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<&'a str>,
    tenant_id: Vec<&'a str>,
    seq: Vec<i64>,
    time: Vec<OffsetDateTime>,
    action: Vec<&'a str>,
    actor: Vec<Option<&'a str>>,
    target: Vec<Option<&'a str>>,
    sandbox_id: Vec<Option<&'a str>>,
    workspace_id: Vec<Option<&'a str>>,
    owner_user_id: Vec<Option<&'a str>>,
    external_user_id: Vec<Option<&'a str>>,
    external_workspace_id: Vec<Option<&'a str>>,
    external_project_id: Vec<Option<&'a str>>,
    request_method: Vec<Option<&'a str>>,
    request_host: Vec<Option<&'a str>>,
    request_path: Vec<Option<&'a str>>,
    request_status: Vec<Option<i32>>,
    request_bytes_out: Vec<Option<i64>>,
    request_bytes_in: Vec<Option<i64>>,
    request_duration_ms: Vec<Option<i64>>,
    credential_secret_id: Vec<Option<&'a str>>,
    credential_name: Vec<Option<&'a str>>,
    credential_scope: Vec<Option<&'a str>>,
    outcome: Vec<&'a str>,
    prev_hash: Vec<&'a str>,
    hash: Vec<&'a str>,
    deferred: Vec<bool>,
    pending: Vec<bool>,
    created_by_key_id: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, ev: &'a AuditEvent) -> StoreResult<()> {
        let e = &ev.entry;
        let r = e.request.as_ref();
        let c = e.credential.as_ref();
        self.id.push(e.id.as_str());
        self.tenant_id.push(e.tenant_id.as_str());
        self.seq.push(ev.seq);
        self.time.push(e.time);
        self.action.push(&e.action);
        self.actor.push(e.actor.as_deref());
        self.target.push(e.target.as_deref());
        self.sandbox_id
            .push(e.sandbox_id.as_ref().map(|s| s.as_str()));
        self.workspace_id
            .push(e.workspace_id.as_ref().map(|w| w.as_str()));
        self.owner_user_id.push(e.owner_user_id.as_deref());
        self.external_user_id.push(e.external_user_id.as_deref());
        self.external_workspace_id
            .push(e.external_workspace_id.as_deref());
        self.external_project_id
            .push(e.external_project_id.as_deref());
        self.request_method.push(r.map(|r| r.method.as_str()));
        self.request_host.push(r.map(|r| r.host.as_str()));
        self.request_path.push(r.map(|r| r.path.as_str()));
        self.request_status
            .push(r.and_then(|r| r.status).map(i32::from));
        self.request_bytes_out
            .push(r.map(|r| signed(r.bytes_out)).transpose()?);
        self.request_bytes_in
            .push(r.map(|r| signed(r.bytes_in)).transpose()?);
        self.request_duration_ms
            .push(r.map(|r| signed(r.duration_ms)).transpose()?);
        self.credential_secret_id
            .push(c.map(|c| c.secret_id.as_str()));
        self.credential_name.push(c.map(|c| c.name.as_str()));
        self.credential_scope.push(c.map(|c| c.scope.as_str()));
        self.outcome.push(e.outcome.as_str());
        self.prev_hash.push(&ev.prev_hash);
        self.hash.push(&ev.hash);
        self.deferred.push(e.deferred);
        self.pending.push(ev.pending);
        self.created_by_key_id
            .push(e.created_by_key_id.as_ref().map(|k| k.as_str()));
        Ok(())
    }
}

/// `UNNEST` over the 29 event columns bound from `$1` by [`bind_events`].
macro_rules! unnest_events {
    () => {
        "UNNEST($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], \
         $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
         $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::int[], \
         $18::bigint[], $19::bigint[], $20::bigint[], $21::text[], $22::text[], $23::text[], \
         $24::text[], $25::text[], $26::text[], $27::bool[], $28::bool[], $29::text[])"
    };
}
use unnest_events;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the events' columns, in [`columns!`] order.
fn bind_events<'q>(q: PgQuery<'q>, events: &'q [AuditEvent]) -> StoreResult<PgQuery<'q>> {
    let mut c = Columns::default();
    for ev in events {
        c.push(ev)?;
    }
    Ok(q.bind(c.id)
        .bind(c.tenant_id)
        .bind(c.seq)
        .bind(c.time)
        .bind(c.action)
        .bind(c.actor)
        .bind(c.target)
        .bind(c.sandbox_id)
        .bind(c.workspace_id)
        .bind(c.owner_user_id)
        .bind(c.external_user_id)
        .bind(c.external_workspace_id)
        .bind(c.external_project_id)
        .bind(c.request_method)
        .bind(c.request_host)
        .bind(c.request_path)
        .bind(c.request_status)
        .bind(c.request_bytes_out)
        .bind(c.request_bytes_in)
        .bind(c.request_duration_ms)
        .bind(c.credential_secret_id)
        .bind(c.credential_name)
        .bind(c.credential_scope)
        .bind(c.outcome)
        .bind(c.prev_hash)
        .bind(c.hash)
        .bind(c.deferred)
        .bind(c.pending)
        .bind(c.created_by_key_id))
}

async fn insert_all(conn: &mut sqlx::PgConnection, events: &[AuditEvent]) -> StoreResult<()> {
    let q = sqlx::query(concat!(
        "INSERT INTO audit_events (",
        columns!(),
        ") SELECT * FROM ",
        unnest_events!()
    ));
    bind_events(q, events)?
        .execute(conn)
        .await
        .map_err(|e| db_ref(e, "tenant_id"))?;
    Ok(())
}

/// Each attribute filter has an index `(tenant_id, attribute, id)` that
/// yields its rows newest first; `since`, `until` and further attributes are
/// checked on the rows it yields.
///
/// Sent as an unnamed (not cached) statement, so PostgreSQL plans it for the
/// actual values every time. A cached statement may switch to a generic plan
/// after five runs, and the generic plan for, say, `action = $2` assumes an
/// average value: it walks the primary key newest first and filters, which
/// for a rare value (or a small tenant) reads the whole table (350 ms on
/// 1,000,000 rows with the generic plan forced, against 0.03 ms through the
/// index). Parsing anew costs far less than that risk on a list call.
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub(crate) async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    filter: &AuditFilter,
    page: &PageRequest,
) -> StoreResult<Page<AuditEvent>> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE tenant_id = ").push_bind(tenant.as_str());
    for (column, value) in attributes(filter) {
        let Some(value) = value else { continue };
        q.push(" AND ").push(column).push(" = ").push_bind(value);
    }
    if let Some(t) = filter.since {
        q.push(" AND time >= ").push_bind(t);
    }
    if let Some(t) = filter.until {
        q.push(" AND time < ").push_bind(t);
    }
    push_page(&mut q, page);
    let rows = q
        .build_query_as::<AuditRow>()
        .persistent(false)
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
    pool: &PgPool,
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
pub(crate) async fn head(pool: &PgPool, tenant: &TenantId) -> StoreResult<Option<(i64, String)>> {
    sqlx::query_as::<_, (i64, String)>(
        "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 AND seq > 0",
    )
    .bind(tenant.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db)
}

/// One statement over the whole batch (`UNNEST`).
#[tracing::instrument(skip_all, fields(completions = completions.len()))]
pub(crate) async fn complete(pool: &PgPool, completions: &[AuditCompletion]) -> StoreResult<()> {
    if completions.is_empty() {
        return Ok(());
    }
    complete_in(&mut *pool.acquire().await.map_err(db)?, completions).await
}

/// Binds the completions' 7 columns (tenant, id, status, bytes out, bytes
/// in, duration, outcome).
fn bind_completions<'q>(
    q: PgQuery<'q>,
    completions: &'q [AuditCompletion],
) -> StoreResult<PgQuery<'q>> {
    let tenants: Vec<&str> = completions.iter().map(|c| c.tenant_id.as_str()).collect();
    let ids: Vec<&str> = completions.iter().map(|c| c.id.as_str()).collect();
    let statuses: Vec<Option<i32>> = completions
        .iter()
        .map(|c| c.status.map(i32::from))
        .collect();
    let nums = |f: fn(&AuditCompletion) -> u64| -> StoreResult<Vec<i64>> {
        completions.iter().map(|c| signed(f(c))).collect()
    };
    let outcomes: Vec<&str> = completions.iter().map(|c| c.outcome.as_str()).collect();
    Ok(q.bind(tenants)
        .bind(ids)
        .bind(statuses)
        .bind(nums(|c| c.bytes_out)?)
        .bind(nums(|c| c.bytes_in)?)
        .bind(nums(|c| c.duration_ms)?)
        .bind(outcomes))
}

/// Completes pending deferred rows, the completions bound from `$n` on.
macro_rules! complete_rows {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $f:literal, $g:literal) => {
        concat!(
            "UPDATE audit_events AS a SET request_status = v.status, \
             request_bytes_out = v.bytes_out, request_bytes_in = v.bytes_in, \
             request_duration_ms = v.duration_ms, outcome = v.outcome, pending = FALSE \
             FROM UNNEST($",
            $a,
            "::text[], $",
            $b,
            "::text[], $",
            $c,
            "::int[], $",
            $d,
            "::bigint[], $",
            $e,
            "::bigint[], $",
            $f,
            "::bigint[], $",
            $g,
            "::text[]) \
                 AS v (tenant_id, id, status, bytes_out, bytes_in, duration_ms, outcome) \
             WHERE a.tenant_id = v.tenant_id AND a.id = v.id AND a.pending \
               AND a.request_method IS NOT NULL"
        )
    };
}
use complete_rows;

async fn complete_in(tx: &mut PgConnection, completions: &[AuditCompletion]) -> StoreResult<()> {
    if completions.is_empty() {
        return Ok(());
    }
    let q = sqlx::query(complete_rows!(1, 2, 3, 4, 5, 6, 7));
    bind_completions(q, completions)?
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    Ok(())
}

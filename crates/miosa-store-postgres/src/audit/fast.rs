//! The one-statement audit write, on heads this process expects.
//!
//! ```text
//! WITH locked AS (SELECT … FROM audit_heads … ORDER BY tenant_id FOR UPDATE),
//!      heads AS (UPDATE audit_heads … WHERE seq = expected AND hash = expected),
//!      ins   AS (INSERT INTO audit_events … WHERE every head moved),
//!      done  AS (UPDATE audit_events … completions)
//! SELECT rows inserted, or a division by zero when a head had moved
//! ```
//!
//! The heads are locked first, in tenant order like the locking write
//! does (so the two cannot deadlock), then moved (the insert waits on
//! their count): a head that another transaction held is waited for and
//! then found moved, and the statement fails as a whole — no head moves
//! without its rows. The unique
//! `(tenant_id, seq)` key backs this up: rows linked on a stale head repeat
//! a stored seq. A failure here is never reported; the caller writes the
//! locking way, which reports what is really wrong.

use miosa_core::AuditCompletion;
use miosa_store::{StoreError, StoreResult};
use sqlx::{PgPool, Row};

use super::{bind_completions, bind_events, columns, complete_rows, unnest_events, Plan};
use crate::error::db;

const SQL: &str = concat!(
    "WITH locked AS (\
       SELECT tenant_id FROM audit_heads WHERE tenant_id = ANY($30::text[]) \
       ORDER BY tenant_id FOR UPDATE), \
     heads AS (\
       UPDATE audit_heads AS h SET seq = v.seq, hash = v.hash \
       FROM UNNEST($30::text[], $31::bigint[], $32::text[], $33::bigint[], $34::text[]) \
         AS v (tenant_id, old_seq, old_hash, seq, hash) \
       WHERE h.tenant_id = v.tenant_id AND h.seq = v.old_seq AND h.hash = v.old_hash \
         AND (SELECT count(*) FROM locked) = $42 \
       RETURNING 1), \
     ins AS (INSERT INTO audit_events (",
    columns!(),
    ") SELECT * FROM ",
    unnest_events!(),
    " WHERE (SELECT count(*) FROM heads) = $42 RETURNING 1), \
     done AS (",
    complete_rows!(35, 36, 37, 38, 39, 40, 41),
    " RETURNING 1) \
     SELECT CASE WHEN (SELECT count(*) FROM heads) = $42 \
       THEN (SELECT count(*) FROM ins) \
       ELSE (SELECT count(*) FROM heads) / 0 END"
);

/// Writes `plan` and `completions` in one statement; an error when any
/// head is no longer where the plan expects it (nothing is then written).
pub(super) async fn write(
    pool: &PgPool,
    plan: &Plan,
    completions: &[AuditCompletion],
) -> StoreResult<()> {
    let h = &plan.heads;
    let q = bind_events(sqlx::query(SQL), &plan.events)?
        .bind(h.iter().map(|m| m.tenant.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|m| m.old_seq).collect::<Vec<_>>())
        .bind(h.iter().map(|m| m.old_hash.as_str()).collect::<Vec<_>>())
        .bind(h.iter().map(|m| m.seq).collect::<Vec<_>>())
        .bind(h.iter().map(|m| m.hash.as_str()).collect::<Vec<_>>());
    let heads = i64::try_from(h.len()).map_err(|e| StoreError::Backend(Box::new(e)))?;
    let row = bind_completions(q, completions)?
        .bind(heads)
        .fetch_one(pool)
        .await
        .map_err(db)?;
    let inserted: i64 = row.try_get(0).map_err(db)?;
    if inserted != plan.events.len() as i64 {
        return Err(StoreError::Backend(
            format!("{inserted} of {} audit rows inserted", plan.events.len()).into(),
        ));
    }
    Ok(())
}

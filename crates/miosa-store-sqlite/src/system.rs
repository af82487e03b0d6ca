//! The `system_state` table: what the database knows about its own
//! initialisation.

use miosa_core::KeyHash;
use miosa_store::{Bootstrap, StoreError, StoreResult, SystemInfo};
use sqlx::{SqliteConnection, SqlitePool};

use crate::error::{corrupt, db};
use crate::{api_keys, tenants};

const TABLE: &str = "system_state";
/// Present once bootstrap has run; inserting it is how bootstrap claims the
/// database. Its value is the first tenant's ID.
const BOOTSTRAPPED: &str = "bootstrapped";
const PEPPER_FINGERPRINT: &str = "pepper_fingerprint";
const ROOT_KEY_HASH: &str = "root_key_hash";
/// The key-encryption key new secret values are sealed under.
const SEALING_KEK: &str = "sealing_kek_id";

#[tracing::instrument(skip_all)]
pub(crate) async fn info(pool: &SqlitePool) -> StoreResult<SystemInfo> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key, value FROM system_state WHERE key IN (?, ?)")
            .bind(PEPPER_FINGERPRINT)
            .bind(ROOT_KEY_HASH)
            .fetch_all(pool)
            .await
            .map_err(db)?;
    let mut info = SystemInfo::default();
    for (key, value) in rows {
        if key == PEPPER_FINGERPRINT {
            info.pepper_fingerprint = Some(value);
        } else {
            info.root_key_hash = Some(
                KeyHash::from_hex(&value)
                    .ok_or_else(|| corrupt(TABLE, "root_key_hash is not a hex hash"))?,
            );
        }
    }
    Ok(info)
}

/// `BEGIN IMMEDIATE` serialises concurrent bootstraps; the second one finds
/// the `bootstrapped` row and writes nothing.
#[tracing::instrument(skip_all, fields(tenant = %b.tenant.id))]
pub(crate) async fn bootstrap(pool: &SqlitePool, b: &Bootstrap) -> StoreResult<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
    let claimed = sqlx::query(
        "INSERT INTO system_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
    )
    .bind(BOOTSTRAPPED)
    .bind(b.tenant.id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected()
        == 1;
    if !claimed {
        tx.rollback().await.map_err(db)?;
        return Ok(false);
    }
    set(&mut tx, PEPPER_FINGERPRINT, &b.pepper_fingerprint).await?;
    if let Some(hash) = &b.root_key_hash {
        set(&mut tx, ROOT_KEY_HASH, &hash.to_hex()).await?;
    }
    tenants::insert(&mut tx, &b.tenant).await?;
    api_keys::insert(&mut tx, &b.admin_key).await?;
    tx.commit().await.map_err(db)?;
    Ok(true)
}

async fn set(conn: &mut SqliteConnection, key: &str, value: &str) -> StoreResult<()> {
    sqlx::query("INSERT INTO system_state (key, value) VALUES (?, ?)")
        .bind(key)
        .bind(value)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub(crate) async fn sealing_kek(pool: &SqlitePool) -> StoreResult<Option<String>> {
    sqlx::query_scalar("SELECT value FROM system_state WHERE key = ?")
        .bind(SEALING_KEK)
        .fetch_optional(pool)
        .await
        .map_err(db)
}

#[tracing::instrument(skip_all, fields(kek_id))]
pub(crate) async fn claim_sealing_kek(pool: &SqlitePool, kek_id: &str) -> StoreResult<String> {
    sqlx::query("INSERT INTO system_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
        .bind(SEALING_KEK)
        .bind(kek_id)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(sealing_kek(pool)
        .await?
        .unwrap_or_else(|| kek_id.to_owned()))
}

#[tracing::instrument(skip_all, fields(kek_id))]
pub(crate) async fn set_sealing_kek(pool: &SqlitePool, kek_id: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO system_state (key, value) VALUES (?, ?) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(SEALING_KEK)
    .bind(kek_id)
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// Refuses a value sealed under another key than the recorded sealing key
/// (none recorded: anything goes). The write transaction holds SQLite's one write lock, so a rotation's
/// update waits for it.
pub(crate) async fn check_sealing_kek(
    conn: &mut SqliteConnection,
    kek_id: &str,
) -> StoreResult<()> {
    let current: Option<String> =
        sqlx::query_scalar("SELECT value FROM system_state WHERE key = ?")
            .bind(SEALING_KEK)
            .fetch_optional(conn)
            .await
            .map_err(db)?;
    match current {
        Some(current) if current != kek_id => Err(StoreError::StaleSealingKey { current }),
        _ => Ok(()),
    }
}

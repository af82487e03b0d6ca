//! The `system_state` table: what the database knows about its own
//! initialisation.

use miosa_core::KeyHash;
use miosa_store::{Bootstrap, StoreResult, SystemInfo};
use sqlx::{SqliteConnection, SqlitePool};

use crate::error::{corrupt, db};
use crate::{api_keys, tenants};

const TABLE: &str = "system_state";
/// Present once bootstrap has run; inserting it is how bootstrap claims the
/// database. Its value is the first tenant's ID.
const BOOTSTRAPPED: &str = "bootstrapped";
const PEPPER_FINGERPRINT: &str = "pepper_fingerprint";
const ROOT_KEY_HASH: &str = "root_key_hash";

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

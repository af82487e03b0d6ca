//! Picks the store backend from the database URL.

use std::sync::Arc;

use miosa_store::{Store, StoreResult};

/// Connects (and migrates) the backend named by `url`.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            miosa_store_postgres::PostgresStore::connect(url).await?,
        ))
    } else {
        Ok(Arc::new(
            miosa_store_sqlite::SqliteStore::connect(url).await?,
        ))
    }
}

//! The backend-conformance story on SQLite, each area on a fresh database
//! file in a temporary directory.
#![allow(clippy::expect_used)]

use miosa_store::Store;
use miosa_store_conformance::fixtures::new_tenant;
use miosa_store_sqlite::SqliteStore;

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("miosa.db").display())
}

async fn with_store(area: impl AsyncFnOnce(&dyn Store)) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::connect(&url(&dir)).await.expect("connect");
    area(&store).await;
    store.close().await;
}

miosa_store_conformance::store_tests!(with_store);

/// The areas also hold when they share one store.
#[tokio::test]
async fn whole_story_on_one_store() {
    with_store(async |store| miosa_store_conformance::run_all(store).await).await;
}

#[tokio::test]
async fn reopening_keeps_data() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::connect(&url(&dir)).await.expect("connect");
    let (tenant, _) = new_tenant(&store).await;
    store.close().await;

    let store = SqliteStore::connect(&url(&dir)).await.expect("connect");
    assert_eq!(
        store.get_tenant(&tenant.id).await.expect("get_tenant"),
        Some(tenant)
    );
    store.close().await;
}

/// Appends through two pools on one file (two processes) still make one
/// gapless chain per tenant.
#[tokio::test]
async fn audit_appends_from_two_pools() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let one = SqliteStore::connect(&url(&dir)).await.expect("connect");
    let other = SqliteStore::connect(&url(&dir)).await.expect("connect");
    miosa_store_conformance::audit_race(&one, &other).await;
    one.close().await;
    other.close().await;
}

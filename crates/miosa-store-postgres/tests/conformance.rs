//! The backend-conformance story on PostgreSQL, each area on a fresh
//! database of the test cluster (`MIOSA_TEST_DATABASE_URL`).
#![allow(clippy::expect_used)]

use miosa_store::Store;
use miosa_store_conformance::fixtures::new_tenant;
use miosa_store_conformance::PgTestDb;
use miosa_store_postgres::PostgresStore;

async fn with_store(area: impl AsyncFnOnce(&dyn Store)) {
    let db = PgTestDb::create().await;
    let store = PostgresStore::connect(&db.url).await.expect("connect");
    area(&store).await;
    store.close().await;
    db.cleanup().await;
}

miosa_store_conformance::store_tests!(with_store);

/// The areas also hold when they share one store.
#[tokio::test]
async fn whole_story_on_one_store() {
    with_store(async |store| miosa_store_conformance::run_all(store).await).await;
}

/// Replicas starting together migrate once, and data survives a restart.
#[tokio::test]
async fn concurrent_first_starts_migrate_once() {
    let db = PgTestDb::create().await;
    let (a, b) = tokio::join!(
        PostgresStore::connect(&db.url),
        PostgresStore::connect(&db.url)
    );
    let (a, b) = (a.expect("connect a"), b.expect("connect b"));
    let (tenant, _) = new_tenant(&a).await;
    a.close().await;
    assert_eq!(
        b.get_tenant(&tenant.id).await.expect("get_tenant"),
        Some(tenant)
    );
    b.close().await;
    db.cleanup().await;
}

/// Appends through two pools (two replicas) still make one gapless chain
/// per tenant: the head row lock works across connections, not just tasks.
#[tokio::test]
async fn audit_appends_from_two_replicas() {
    let db = PgTestDb::create().await;
    let one = PostgresStore::connect(&db.url).await.expect("connect");
    let other = PostgresStore::connect(&db.url).await.expect("connect");
    miosa_store_conformance::audit_race(&one, &other).await;
    one.close().await;
    other.close().await;
    db.cleanup().await;
}

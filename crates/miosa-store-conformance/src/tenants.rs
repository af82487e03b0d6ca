//! Tenants: creation with the first key, uniqueness, atomicity, paging.

use miosa_core::time_util::now;
use miosa_core::{KeyScope, Tenant, TenantId};
use miosa_store::Store;

use crate::fixtures::{all_pages, assert_conflict, assert_newest_first, key, new_tenant, tenant};

/// Create, get, duplicate names, a failed create leaving nothing, paging.
pub async fn tenants(store: &dyn Store) {
    let (t, k) = new_tenant(store).await;
    assert_eq!(
        store.get_tenant(&t.id).await.expect("get_tenant"),
        Some(t.clone())
    );
    assert_eq!(
        store
            .get_tenant(&TenantId::generate())
            .await
            .expect("get_tenant"),
        None
    );
    assert_eq!(
        store.find_active_api_key(&k.hash).await.expect("find"),
        Some(k.key.clone()),
        "the first key is created with the tenant"
    );

    // A taken name: nothing of the second tenant is left behind.
    let dup = Tenant {
        id: TenantId::generate(),
        name: t.name.clone(),
        created_at: now(),
    };
    let dup_key = key(&dup.id, KeyScope::Admin);
    assert_conflict(store.create_tenant(&dup, &dup_key).await, "tenant", "name");
    assert_eq!(store.get_tenant(&dup.id).await.expect("get_tenant"), None);
    assert_eq!(
        store
            .find_active_api_key(&dup_key.hash)
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        store
            .get_api_key(&dup.id, &dup_key.key.id)
            .await
            .expect("get_api_key"),
        None
    );

    // The key fails after the tenant row went in: the tenant is rolled back.
    let other = tenant();
    let mut clashing_key = key(&other.id, KeyScope::Admin);
    clashing_key.hash = k.hash;
    assert_conflict(
        store.create_tenant(&other, &clashing_key).await,
        "api_key",
        "key_hash",
    );
    assert_eq!(store.get_tenant(&other.id).await.expect("get_tenant"), None);

    // Paging through all tenants (other areas may have added some).
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(new_tenant(store).await.0);
    }
    let pages = all_pages(
        3,
        |t: &Tenant| t.id.to_string(),
        async |p| store.list_tenants(p).await,
    )
    .await;
    let listed: Vec<Tenant> = pages.into_iter().flatten().collect();
    let ids: Vec<String> = listed.iter().map(|t| t.id.to_string()).collect();
    assert_newest_first(&ids);
    for t in &created {
        assert!(listed.contains(t), "tenant {} is listed as created", t.id);
    }
}

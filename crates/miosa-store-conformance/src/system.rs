//! Health, system info and bootstrap: the one area that needs an empty store.

use miosa_core::{KeyScope, PageRequest};
use miosa_store::{Bootstrap, Store, SystemInfo};

use crate::fixtures::{key, pepper, tenant, unique};

fn bootstrap_input(with_root_key: bool) -> Bootstrap {
    let t = tenant();
    let admin_key = key(&t.id, KeyScope::Admin);
    Bootstrap {
        pepper_fingerprint: unique("fingerprint"),
        root_key_hash: with_root_key.then(|| pepper().hash_key(&unique("msk_root"))),
        tenant: t,
        admin_key,
    }
}

/// `backend`, `ping`, `system_info` and a bootstrap race. Needs a store that
/// was never bootstrapped and holds no tenants.
pub async fn system(store: &dyn Store) {
    assert!(
        matches!(store.backend(), "sqlite" | "postgres"),
        "unknown backend name {:?}",
        store.backend()
    );
    store.ping().await.expect("ping");
    assert_eq!(
        store.system_info().await.expect("system_info"),
        SystemInfo::default(),
        "an empty database knows nothing about itself"
    );

    let a = bootstrap_input(true);
    let b = bootstrap_input(false);
    let (ra, rb) = tokio::join!(store.bootstrap(&a), store.bootstrap(&b));
    let (ra, rb) = (ra.expect("bootstrap a"), rb.expect("bootstrap b"));
    assert!(
        ra != rb,
        "exactly one of two concurrent bootstraps wins: {ra}, {rb}"
    );
    let (won, lost) = if ra { (&a, &b) } else { (&b, &a) };

    let info = SystemInfo {
        pepper_fingerprint: Some(won.pepper_fingerprint.clone()),
        root_key_hash: won.root_key_hash,
    };
    assert_eq!(store.system_info().await.expect("system_info"), info);
    let tenants = store
        .list_tenants(&PageRequest::default())
        .await
        .expect("list_tenants");
    assert_eq!(
        tenants.items,
        vec![won.tenant.clone()],
        "only the winner's tenant exists"
    );
    assert_eq!(
        store
            .find_active_api_key(&won.admin_key.hash)
            .await
            .expect("find"),
        Some(won.admin_key.key.clone())
    );
    assert_eq!(
        store
            .find_active_api_key(&lost.admin_key.hash)
            .await
            .expect("find"),
        None
    );

    let later = bootstrap_input(true);
    assert!(
        !store.bootstrap(&later).await.expect("bootstrap"),
        "bootstrap runs once"
    );
    assert_eq!(
        store.system_info().await.expect("system_info"),
        info,
        "a later bootstrap writes nothing"
    );
    assert_eq!(
        store
            .get_tenant(&later.tenant.id)
            .await
            .expect("get_tenant"),
        None
    );
    assert_eq!(
        store
            .find_active_api_key(&later.admin_key.hash)
            .await
            .expect("find"),
        None
    );
}

//! API keys: scopes, references, lookup by hash, revocation, paging.

use miosa_core::time_util::now;
use miosa_core::{ApiKey, ApiKeyId, KeyScope, WorkspaceId};
use miosa_store::{RevokeOutcome, Store};

use crate::fixtures::{
    all_pages, assert_conflict, assert_missing, key, new_key, new_tenant, new_workspace, pepper,
    unique,
};

/// Create, get, find by hash, workspace references, revocation rules, paging.
pub async fn api_keys(store: &dyn Store) {
    let (t, admin) = new_tenant(store).await;
    let ws = new_workspace(store, &t.id).await;
    let wk = new_key(store, &t.id, KeyScope::Workspace(ws.id.clone())).await;
    assert_eq!(
        store.get_api_key(&t.id, &wk.key.id).await.expect("get"),
        Some(wk.key.clone())
    );
    assert_eq!(
        store
            .get_api_key(&t.id, &ApiKeyId::generate())
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store.find_active_api_key(&wk.hash).await.expect("find"),
        Some(wk.key.clone())
    );
    let unknown = pepper().hash_key(&unique("msk_live"));
    assert_eq!(
        store.find_active_api_key(&unknown).await.expect("find"),
        None
    );

    // A workspace key must name a workspace of its own tenant.
    let (other, _) = new_tenant(store).await;
    let other_ws = new_workspace(store, &other.id).await;
    let foreign = key(&t.id, KeyScope::Workspace(other_ws.id.clone()));
    assert_missing(store.create_api_key(&foreign).await, "workspace_id");
    assert_eq!(
        store
            .get_api_key(&t.id, &foreign.key.id)
            .await
            .expect("get"),
        None
    );
    let dangling = key(&t.id, KeyScope::Workspace(WorkspaceId::generate()));
    assert_missing(store.create_api_key(&dangling).await, "workspace_id");
    let mut same_hash = key(&t.id, KeyScope::Admin);
    same_hash.hash = wk.hash;
    assert_conflict(
        store.create_api_key(&same_hash).await,
        "api_key",
        "key_hash",
    );

    // Revoking a workspace key, twice.
    let at = now();
    assert_eq!(revoke(store, &wk.key, at).await, RevokeOutcome::Revoked);
    let revoked = store.get_api_key(&t.id, &wk.key.id).await.expect("get");
    assert_eq!(revoked.map(|k| k.revoked_at), Some(Some(at)));
    assert_eq!(
        store.find_active_api_key(&wk.hash).await.expect("find"),
        None
    );
    assert_eq!(
        revoke(store, &wk.key, now()).await,
        RevokeOutcome::AlreadyRevoked
    );
    let still = store.get_api_key(&t.id, &wk.key.id).await.expect("get");
    assert_eq!(
        still.map(|k| k.revoked_at),
        Some(Some(at)),
        "a second revoke changes nothing"
    );
    let ghost = ApiKey {
        id: ApiKeyId::generate(),
        ..admin.key.clone()
    };
    assert_eq!(revoke(store, &ghost, now()).await, RevokeOutcome::NotFound);

    // The last active admin key stays.
    assert_eq!(
        revoke(store, &admin.key, now()).await,
        RevokeOutcome::LastAdminKey
    );
    assert!(store
        .find_active_api_key(&admin.hash)
        .await
        .expect("find")
        .is_some());
    let admin2 = new_key(store, &t.id, KeyScope::Admin).await;
    assert_eq!(
        revoke(store, &admin.key, now()).await,
        RevokeOutcome::Revoked
    );
    assert_eq!(
        revoke(store, &admin2.key, now()).await,
        RevokeOutcome::LastAdminKey
    );
    let wk2 = new_key(store, &t.id, KeyScope::Workspace(ws.id.clone())).await;
    assert_eq!(
        revoke(store, &wk2.key, now()).await,
        RevokeOutcome::Revoked,
        "workspace keys can always be revoked"
    );

    // Seven keys, revoked ones included, in pages of three: 3, 3, 1.
    let (u, first) = new_tenant(store).await;
    let u_ws = new_workspace(store, &u.id).await;
    let mut created = vec![first.key];
    for i in 0..6 {
        let scope = if i % 2 == 0 {
            KeyScope::Admin
        } else {
            KeyScope::Workspace(u_ws.id.clone())
        };
        created.push(new_key(store, &u.id, scope).await.key);
    }
    let at = now();
    assert_eq!(revoke(store, &created[3], at).await, RevokeOutcome::Revoked);
    created[3].revoked_at = Some(at);
    created.sort_by(|x, y| y.id.cmp(&x.id));
    let pages = all_pages(
        3,
        |k: &ApiKey| k.id.to_string(),
        async |p| store.list_api_keys(&u.id, p).await,
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(pages.concat(), created);
}

async fn revoke(store: &dyn Store, k: &ApiKey, at: time::OffsetDateTime) -> RevokeOutcome {
    store
        .revoke_api_key(&k.tenant_id, &k.id, at)
        .await
        .expect("revoke_api_key")
}

/// Revoking a tenant's two admin keys at once leaves exactly one.
pub async fn concurrent_revoke(store: &dyn Store) {
    for _ in 0..5 {
        let (t, first) = new_tenant(store).await;
        let second = new_key(store, &t.id, KeyScope::Admin).await;
        let (r1, r2) = tokio::join!(
            revoke(store, &first.key, now()),
            revoke(store, &second.key, now())
        );
        let mut outcomes = [format!("{r1:?}"), format!("{r2:?}")];
        outcomes.sort();
        assert_eq!(
            outcomes,
            ["LastAdminKey", "Revoked"],
            "one revoke wins, one is refused"
        );
        let mut active = 0;
        for k in [&first, &second] {
            if store
                .find_active_api_key(&k.hash)
                .await
                .expect("find")
                .is_some()
            {
                active += 1;
            }
        }
        assert_eq!(active, 1, "exactly one admin key is left");
    }
}

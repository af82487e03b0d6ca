//! Tenancy: nothing of one tenant is visible or changeable through another.

use miosa_core::time_util::now;
use miosa_core::{ApiKeyId, KeyScope, NewApiKey, PageRequest, TenantId, Workspace};
use miosa_store::{RevokeOutcome, Store, WorkspaceFilter};

use crate::fixtures::{new_key, new_tenant, new_workspace};

/// A tenant with a workspace, a workspace key and two admin keys (so a
/// refusal to revoke cannot come from the last-admin rule).
struct World {
    tenant: TenantId,
    workspace: Workspace,
    keys: Vec<NewApiKey>,
}

async fn world(store: &dyn Store) -> World {
    let (t, admin) = new_tenant(store).await;
    let workspace = new_workspace(store, &t.id).await;
    let wk = new_key(store, &t.id, KeyScope::Workspace(workspace.id.clone())).await;
    let admin2 = new_key(store, &t.id, KeyScope::Admin).await;
    World {
        tenant: t.id,
        workspace,
        keys: vec![admin, wk, admin2],
    }
}

/// Tenant A cannot get, list or revoke tenant B's workspaces and keys.
pub async fn tenant_isolation(store: &dyn Store) {
    let a = world(store).await;
    let b = world(store).await;
    let everything = PageRequest::default();

    assert_eq!(
        store
            .get_workspace(&a.tenant, &b.workspace.id)
            .await
            .expect("get"),
        None
    );
    let listed = store
        .list_workspaces(&a.tenant, &WorkspaceFilter::default(), &everything)
        .await
        .expect("list");
    assert_eq!(listed.items, vec![a.workspace.clone()]);
    let only_b = WorkspaceFilter {
        only: Some(b.workspace.id.clone()),
    };
    let listed = store
        .list_workspaces(&a.tenant, &only_b, &everything)
        .await
        .expect("list");
    assert_eq!(
        listed.items,
        Vec::new(),
        "`only` cannot reach into another tenant"
    );

    let listed = store
        .list_api_keys(&a.tenant, &everything)
        .await
        .expect("list");
    let mut ids: Vec<ApiKeyId> = listed.items.into_iter().map(|k| k.id).collect();
    ids.sort();
    let mut own: Vec<ApiKeyId> = a.keys.iter().map(|k| k.key.id.clone()).collect();
    own.sort();
    assert_eq!(ids, own, "A lists exactly its own keys");

    for k in &b.keys {
        assert_eq!(
            store.get_api_key(&a.tenant, &k.key.id).await.expect("get"),
            None
        );
        let outcome = store
            .revoke_api_key(&a.tenant, &k.key.id, now())
            .await
            .expect("revoke");
        assert_eq!(outcome, RevokeOutcome::NotFound);
    }
    for k in &b.keys {
        assert_eq!(
            store.find_active_api_key(&k.hash).await.expect("find"),
            Some(k.key.clone()),
            "B's keys are untouched"
        );
    }
}

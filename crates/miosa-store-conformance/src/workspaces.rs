//! Workspaces: per-tenant names, references, filters, paging.

use miosa_core::time_util::now;
use miosa_core::{PageRequest, TenantId, Workspace, WorkspaceId};
use miosa_store::{Store, WorkspaceFilter};

use crate::fixtures::{
    all_pages, assert_conflict, assert_missing, new_tenant, new_workspace, workspace,
};

/// Create, get, names unique per tenant, unknown tenants, `only`, paging.
pub async fn workspaces(store: &dyn Store) {
    let (a, _) = new_tenant(store).await;
    let (b, _) = new_tenant(store).await;
    let ws = new_workspace(store, &a.id).await;
    assert_eq!(
        store.get_workspace(&a.id, &ws.id).await.expect("get"),
        Some(ws.clone())
    );
    assert_eq!(
        store
            .get_workspace(&a.id, &WorkspaceId::generate())
            .await
            .expect("get"),
        None
    );

    let dup = Workspace {
        id: WorkspaceId::generate(),
        tenant_id: a.id.clone(),
        name: ws.name.clone(),
        created_at: now(),
    };
    assert_conflict(store.create_workspace(&dup).await, "workspace", "name");
    assert_eq!(
        store.get_workspace(&a.id, &dup.id).await.expect("get"),
        None
    );
    let same_name_elsewhere = Workspace {
        tenant_id: b.id.clone(),
        ..dup
    };
    store
        .create_workspace(&same_name_elsewhere)
        .await
        .expect("the same name in another tenant is fine");

    assert_missing(
        store
            .create_workspace(&workspace(&TenantId::generate()))
            .await,
        "tenant_id",
    );

    // Seven workspaces in pages of three: 3, 3, 1, newest first.
    let (c, _) = new_tenant(store).await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(new_workspace(store, &c.id).await);
    }
    created.sort_by(|x, y| y.id.cmp(&x.id));
    let all = WorkspaceFilter::default();
    let pages = all_pages(
        3,
        |w: &Workspace| w.id.to_string(),
        async |p| store.list_workspaces(&c.id, &all, p).await,
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(pages.concat(), created);

    let third = created[2].clone();
    let only = WorkspaceFilter {
        only: Some(third.id.clone()),
    };
    let page = store
        .list_workspaces(&c.id, &only, &PageRequest::default())
        .await
        .expect("list");
    assert_eq!(page.items, vec![third]);
    assert_eq!(page.next_cursor, None);
}

//! Builders for rows with fresh IDs and unique names, for the story and for
//! backend-specific tests; and the assertions the story repeats.

use std::fmt::Debug;

use miosa_core::id::new_body;
use miosa_core::time_util::now;
use miosa_core::{
    ApiKey, ApiKeyId, ApiKeyKind, KeyScope, NewApiKey, Page, PageRequest, Pepper, PlainApiKey,
    Tenant, TenantId, Workspace,
};
use miosa_store::{Store, StoreError, StoreResult};

/// A name no other run of the story uses: `prefix-<random>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", new_body())
}

/// A tenant with a fresh ID and a unique name.
pub fn tenant() -> Tenant {
    Tenant {
        id: TenantId::generate(),
        name: unique("tenant"),
        created_at: now(),
    }
}

/// A workspace of `tenant` with a fresh ID and a unique name.
pub fn workspace(tenant: &TenantId) -> Workspace {
    Workspace {
        id: miosa_core::WorkspaceId::generate(),
        tenant_id: tenant.clone(),
        name: unique("ws"),
        created_at: now(),
    }
}

/// The pepper every fixture key is hashed with.
pub fn pepper() -> Pepper {
    Pepper::new(vec![0x5a; 32]).expect("a 32-byte pepper is valid")
}

/// A random key of `scope`, hashed with [`pepper`].
pub fn key(tenant: &TenantId, scope: KeyScope) -> NewApiKey {
    let kind = match scope {
        KeyScope::Admin => ApiKeyKind::TenantAdmin,
        KeyScope::Workspace(_) => ApiKeyKind::Workspace,
    };
    let plain = PlainApiKey::generate(kind).expect("operating system RNG");
    NewApiKey {
        key: ApiKey {
            id: ApiKeyId::generate(),
            tenant_id: tenant.clone(),
            name: unique("key"),
            scope,
            hint: plain.hint(),
            created_at: now(),
            revoked_at: None,
        },
        hash: pepper().hash_key(plain.reveal()),
    }
}

/// Creates a tenant with its first admin key.
pub async fn new_tenant(store: &dyn Store) -> (Tenant, NewApiKey) {
    let t = tenant();
    let k = key(&t.id, KeyScope::Admin);
    store.create_tenant(&t, &k).await.expect("create_tenant");
    (t, k)
}

/// Creates a workspace of `tenant`.
pub async fn new_workspace(store: &dyn Store, tenant: &TenantId) -> Workspace {
    let ws = workspace(tenant);
    store.create_workspace(&ws).await.expect("create_workspace");
    ws
}

/// Creates a key of `tenant`.
pub async fn new_key(store: &dyn Store, tenant: &TenantId, scope: KeyScope) -> NewApiKey {
    let k = key(tenant, scope);
    store.create_api_key(&k).await.expect("create_api_key");
    k
}

pub(crate) fn assert_conflict<T: Debug>(r: StoreResult<T>, entity: &str, field: &str) {
    match r {
        Err(StoreError::Conflict {
            entity: e,
            field: f,
        }) if e == entity && f == field => {}
        other => panic!("expected Conflict {{ {entity}, {field} }}, got {other:?}"),
    }
}

pub(crate) fn assert_missing<T: Debug>(r: StoreResult<T>, field: &str) {
    match r {
        Err(StoreError::MissingReference { field: f }) if f == field => {}
        other => panic!("expected MissingReference {{ {field} }}, got {other:?}"),
    }
}

/// Walks a list to its end with pages of `limit`, checking each page's
/// shape, and returns the pages.
pub(crate) async fn all_pages<T>(
    limit: u32,
    id_of: impl Fn(&T) -> String,
    mut fetch: impl AsyncFnMut(&PageRequest) -> StoreResult<Page<T>>,
) -> Vec<Vec<T>> {
    let mut req = PageRequest { limit, after: None };
    let mut pages = Vec::new();
    loop {
        let page = fetch(&req).await.expect("list");
        assert!(
            page.items.len() <= limit as usize,
            "a page holds at most `limit` items"
        );
        let Some(cursor) = page.next_cursor else {
            pages.push(page.items);
            return pages;
        };
        assert_eq!(
            page.items.len(),
            limit as usize,
            "only the last page is short"
        );
        assert_eq!(
            page.items.last().map(&id_of),
            Some(cursor.clone()),
            "the cursor is the last ID"
        );
        assert!(pages.len() < 10_000, "paging does not end");
        pages.push(page.items);
        req.after = Some(cursor);
    }
}

/// Checks that IDs strictly decrease: newest first, no repeats.
pub(crate) fn assert_newest_first(ids: &[String]) {
    for pair in ids.windows(2) {
        assert!(
            pair[0] > pair[1],
            "lists are newest first without repeats: {ids:?}"
        );
    }
}

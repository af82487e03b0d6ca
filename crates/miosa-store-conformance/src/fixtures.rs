//! Builders for rows with fresh IDs and unique names, for the story and for
//! backend-specific tests; and the assertions the story repeats.

use std::collections::BTreeMap;
use std::fmt::Debug;

use miosa_core::audit::Outcome;
use miosa_core::id::new_body;
use miosa_core::time_util::now;
use miosa_core::{
    AadVersion, ApiKey, ApiKeyId, ApiKeyKind, AuditEntry, AuditId, KeyScope, Labels, NewApiKey,
    NewSecretVersion, OnTimeout, Page, PageRequest, Pepper, PlainApiKey, Sandbox, SandboxId,
    SandboxStatus, SealedValue, Secret, SecretId, SecretScope, SubstituteIn, Tenant, TenantId,
    Workspace, WorkspaceId,
};
use miosa_store::{SecretKey, Store, StoreError, StoreResult};

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

/// The node [`sandbox`] puts its sandboxes on. Areas that ask per-node
/// questions (`sandboxes_in_status`, `expired_sandboxes`) use nodes of
/// their own, named with [`unique`], so the answers are exact even on a
/// shared store.
pub const NODE: &str = "node-test";

/// A running sandbox of `tenant` (in `workspace`, if given) on [`NODE`] with
/// a fresh ID and a unique name, no labels or metadata, expiring in an hour.
pub fn sandbox(tenant: &TenantId, workspace: Option<&WorkspaceId>) -> Sandbox {
    let created_at = now();
    Sandbox {
        id: SandboxId::generate(),
        tenant_id: tenant.clone(),
        workspace_id: workspace.cloned(),
        name: Some(unique("box")),
        status: SandboxStatus::Running,
        node_id: NODE.to_owned(),
        template: "base".to_owned(),
        labels: Labels::default(),
        metadata: BTreeMap::new(),
        cpu: 1.0,
        memory_mb: 512,
        disk_mb: Some(2048),
        timeout_seconds: 3600,
        on_timeout: OnTimeout::Destroy,
        created_at,
        expires_at: created_at + time::Duration::hours(1),
        destroyed_at: None,
        created_by_key_id: None,
        created_by_workspace_key: false,
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

/// Creates `sandbox`.
pub async fn new_sandbox(store: &dyn Store, sandbox: Sandbox) -> Sandbox {
    store
        .create_sandbox(&sandbox)
        .await
        .expect("create_sandbox");
    sandbox
}

/// A sealed value whose bytes differ with `kek_id` and `n`, so versions and
/// re-wraps can be told apart (the store never looks inside).
pub fn sealed(kek_id: &str, n: u8) -> SealedValue {
    SealedValue {
        kek_id: kek_id.to_owned(),
        wrapped_key: [&[n; 28][..], kek_id.as_bytes(), &[0, 0xff]].concat(),
        nonce: vec![n ^ 0xa5; 12],
        ciphertext: [&b"ct\0"[..], &[n, 0xfe, 0x00, 0x80]].concat(),
        aad: AadVersion::Bound,
    }
}

/// A new secret of `tenant` (`key` is the scope key), with no host limits,
/// sealed under `kek-test`, set now; a `workspace` secret belongs to its
/// workspace, any other to none.
pub fn secret(
    tenant: &TenantId,
    scope: SecretScope,
    key: Option<&str>,
    name: &str,
    env: &str,
) -> NewSecretVersion {
    NewSecretVersion {
        tenant_id: tenant.clone(),
        id: SecretId::generate(),
        name: name.to_owned(),
        scope,
        scope_key: key.map(str::to_owned),
        workspace_id: key
            .filter(|_| scope == SecretScope::Workspace)
            .and_then(|k| WorkspaceId::parse(k).ok()),
        expose_as_env: env.to_owned(),
        allowed_hosts: Vec::new(),
        substitute_in: SubstituteIn::HEADERS,
        version: 1,
        sealed: sealed("kek-test", 1),
        at: now(),
    }
}

/// The write that adds the version after `stored` (as `put_secret` returned
/// it) with the rest of `new`: same secret ID, next version, a value that
/// differs by version.
pub fn next_version(new: &NewSecretVersion, stored: &Secret) -> NewSecretVersion {
    NewSecretVersion {
        id: stored.id.clone(),
        version: stored.version + 1,
        sealed: sealed(&new.sealed.kek_id, (stored.version + 1) as u8),
        at: now(),
        ..new.clone()
    }
}

/// `new` as the secrets service writes it: version 1 under its own ID when
/// no secret has its scope, key, workspace and name, else the next version
/// of the one that does.
pub async fn as_upsert(store: &dyn Store, new: &NewSecretVersion) -> NewSecretVersion {
    let key = SecretKey {
        scope: new.scope,
        scope_key: new.scope_key.clone(),
        workspace_id: new.workspace_id.clone(),
        name: new.name.clone(),
    };
    match store
        .find_secret(&new.tenant_id, &key)
        .await
        .expect("find_secret")
    {
        Some(current) => NewSecretVersion {
            id: current.id,
            version: current.version + 1,
            ..new.clone()
        },
        None => NewSecretVersion {
            version: 1,
            ..new.clone()
        },
    }
}

/// Writes `new` as an upsert (see [`as_upsert`]).
pub async fn try_upsert(store: &dyn Store, new: &NewSecretVersion) -> StoreResult<Secret> {
    let new = as_upsert(store, new).await;
    store.put_secret(&new).await
}

/// Writes `new` as an upsert (see [`as_upsert`]); it must succeed.
pub async fn upsert_secret(store: &dyn Store, new: &NewSecretVersion) -> Secret {
    try_upsert(store, new).await.expect("put_secret")
}

/// Stores `new` (a new secret or a new version).
pub async fn put_secret(store: &dyn Store, new: &NewSecretVersion) -> Secret {
    store.put_secret(new).await.expect("put_secret")
}

/// An audit entry of `tenant` with a fresh ID, now, no attribution, request
/// or credential.
pub fn audit_entry(tenant: &TenantId, action: &str) -> AuditEntry {
    AuditEntry {
        id: AuditId::generate(),
        tenant_id: tenant.clone(),
        time: now(),
        action: action.to_owned(),
        actor: None,
        target: None,
        sandbox_id: None,
        workspace_id: None,
        owner_user_id: None,
        external_user_id: None,
        external_workspace_id: None,
        external_project_id: None,
        request: None,
        credential: None,
        outcome: Outcome::Success,
        created_by_key_id: None,
        deferred: false,
    }
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

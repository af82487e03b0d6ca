//! Secrets: versions by upsert, the `expose_as_env` rule, scope keys that
//! must name the tenant's rows, tenancy, filters and paging. What the proxy
//! and the vault read is in [`crate::secret_lookup`].
//!
//! `sealed_versions_not_under` sees every tenant; the checks that use it
//! look only at their own secrets.

use miosa_core::time_util::now;
use miosa_core::{
    NewSecretVersion, PageRequest, SandboxScopeKeys, SandboxStatus, SealedValue, SealedVersion,
    Secret, SecretId, SecretScope, SubstituteIn, TenantId,
};
use miosa_store::{SecretFilter, Store};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::fixtures::{
    all_pages, assert_conflict, assert_missing, new_sandbox, new_tenant, new_workspace, sandbox,
    sealed, secret, try_upsert, unique, upsert_secret,
};

use SecretScope::{ExternalUser, ExternalWorkspace, Tenant, User, Workspace};

/// The whole secrets story.
pub async fn secrets(store: &dyn Store) {
    versions(store).await;
    env_conflicts(store).await;
    references(store).await;
    isolation(store).await;
    filters_and_paging(store).await;
    crate::secret_writes::secret_writes(store).await;
}

pub(crate) async fn get(store: &dyn Store, tenant: &TenantId, id: &SecretId) -> Option<Secret> {
    store.get_secret(tenant, id).await.expect("get_secret")
}

pub(crate) async fn set_enabled(
    store: &dyn Store,
    tenant: &TenantId,
    id: &SecretId,
    enabled: bool,
    at: OffsetDateTime,
) -> Option<Secret> {
    store
        .set_secret_enabled(tenant, id, enabled, at)
        .await
        .expect("set_secret_enabled")
}

pub(crate) async fn epoch_of(store: &dyn Store, tenant: &TenantId) -> i64 {
    store.secrets_epoch(tenant).await.expect("secrets_epoch")
}

/// The candidates, ordered by ID (the contract leaves the order open).
pub(crate) async fn candidates_of(
    store: &dyn Store,
    tenant: &TenantId,
    keys: &SandboxScopeKeys,
) -> Vec<(Secret, SealedValue)> {
    let mut got = store
        .candidate_secrets(tenant, keys)
        .await
        .expect("candidate_secrets");
    got.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    got
}

pub(crate) async fn list_all(
    store: &dyn Store,
    tenant: &TenantId,
    filter: &SecretFilter,
) -> Vec<Secret> {
    let page = PageRequest {
        limit: 500,
        after: None,
    };
    let page = store
        .list_secrets(tenant, filter, &page)
        .await
        .expect("list_secrets");
    assert_eq!(page.next_cursor, None, "everything fits on one page");
    page.items
}

/// Every stored version of `id` (any order from the store), by version.
pub(crate) async fn versions_of(store: &dyn Store, id: &SecretId) -> Vec<SealedVersion> {
    let mut got: Vec<SealedVersion> = store
        .sealed_versions_not_under(&unique("kek-none"), 100_000)
        .await
        .expect("sealed_versions_not_under")
        .into_iter()
        .filter(|v| v.secret_id == *id)
        .collect();
    got.sort_by_key(|v| v.version);
    got
}

/// Keys of a sandbox with no labels.
pub(crate) fn bare_keys() -> SandboxScopeKeys {
    SandboxScopeKeys {
        sandbox_id: miosa_core::SandboxId::generate().to_string(),
        ..SandboxScopeKeys::default()
    }
}

/// The first value makes version 1; the same (scope, key, name) again adds
/// a version with the new variable and hosts but keeps ID, creation time
/// and `enabled`. Every version is kept until the secret is deleted.
async fn versions(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let key = "Dr. Smith ✓ 'quoted\" Ω";
    let t1 = datetime!(2001-02-03 04:05:06.123_456 +05:30);
    let first = NewSecretVersion {
        allowed_hosts: vec!["api.openai.com".to_owned(), "*.openai.azure.com".to_owned()],
        sealed: sealed("kek-a", 1),
        at: t1,
        ..secret(
            &t.id,
            ExternalUser,
            Some(key),
            "openai-key_1.v2",
            "OPENAI_API_KEY",
        )
    };
    let v1 = upsert_secret(store, &first).await;
    let want = Secret {
        id: first.id.clone(),
        tenant_id: t.id.clone(),
        name: first.name.clone(),
        scope: ExternalUser,
        scope_key: Some(key.to_owned()),
        workspace_id: None,
        expose_as_env: "OPENAI_API_KEY".to_owned(),
        allowed_hosts: first.allowed_hosts.clone(),
        substitute_in: SubstituteIn::HEADERS,
        version: 1,
        enabled: true,
        created_at: t1,
        updated_at: t1,
    };
    assert_eq!(v1, want);
    assert_eq!(get(store, &t.id, &v1.id).await, Some(want.clone()));

    let t2 = datetime!(2001-02-03 05:00:00.000_001 UTC);
    let want = Secret {
        enabled: false,
        updated_at: t2,
        ..want
    };
    assert_eq!(
        set_enabled(store, &t.id, &v1.id, false, t2).await,
        Some(want.clone())
    );
    assert_eq!(get(store, &t.id, &v1.id).await, Some(want.clone()));

    let t3 = datetime!(2024-05-06 07:08:09.999_999 -08:00);
    let second = NewSecretVersion {
        id: SecretId::generate(),
        expose_as_env: "OPENAI_KEY".to_owned(),
        allowed_hosts: Vec::new(),
        sealed: sealed("kek-b", 2),
        at: t3,
        ..first.clone()
    };
    let want = Secret {
        version: 2,
        expose_as_env: "OPENAI_KEY".to_owned(),
        allowed_hosts: Vec::new(),
        updated_at: t3,
        ..want
    };
    assert_eq!(
        upsert_secret(store, &second).await,
        want,
        "a new version keeps the ID, creation time and the disabled flag"
    );
    assert_eq!(get(store, &t.id, &first.id).await, Some(want.clone()));
    assert_eq!(
        get(store, &t.id, &second.id).await,
        None,
        "the ID of a new version's request is not used"
    );

    let keys = SandboxScopeKeys {
        external_user_id: Some(key.to_owned()),
        ..bare_keys()
    };
    assert_eq!(
        candidates_of(store, &t.id, &keys).await,
        Vec::new(),
        "a disabled secret is no candidate"
    );
    let t4 = datetime!(2024-05-06 07:08:10 UTC);
    let want = Secret {
        enabled: true,
        updated_at: t4,
        ..want
    };
    assert_eq!(
        set_enabled(store, &t.id, &first.id, true, t4).await,
        Some(want.clone())
    );
    assert_eq!(
        candidates_of(store, &t.id, &keys).await,
        vec![(want.clone(), sealed("kek-b", 2))],
        "the candidate carries the latest value"
    );

    let third = NewSecretVersion {
        sealed: sealed("kek-c", 3),
        at: now(),
        ..second.clone()
    };
    let v3 = upsert_secret(store, &third).await;
    assert_eq!((v3.version, v3.enabled), (3, true));
    assert_eq!(
        candidates_of(store, &t.id, &keys).await,
        vec![(v3.clone(), sealed("kek-c", 3))]
    );
    let kept: Vec<(u32, SealedValue)> = versions_of(store, &first.id)
        .await
        .into_iter()
        .map(|v| (v.version, v.sealed))
        .collect();
    assert_eq!(
        kept,
        vec![
            (1, sealed("kek-a", 1)),
            (2, sealed("kek-b", 2)),
            (3, sealed("kek-c", 3))
        ],
        "every version is kept"
    );

    // Deleting removes the secret and every version; the same name then
    // starts again at version 1 under the new ID.
    assert!(store.delete_secret(&t.id, &first.id).await.expect("delete"));
    assert_eq!(get(store, &t.id, &first.id).await, None);
    assert_eq!(versions_of(store, &first.id).await, Vec::new());
    assert_eq!(candidates_of(store, &t.id, &keys).await, Vec::new());
    assert!(
        !store.delete_secret(&t.id, &first.id).await.expect("delete"),
        "a second delete finds nothing"
    );
    assert_eq!(
        store
            .set_secret_enabled(&t.id, &first.id, false, now())
            .await
            .expect("set"),
        None
    );
    let fresh = secret(
        &t.id,
        ExternalUser,
        Some(key),
        "openai-key_1.v2",
        "OPENAI_API_KEY",
    );
    let again = upsert_secret(store, &fresh).await;
    assert_eq!((&again.id, again.version), (&fresh.id, 1));
    assert_eq!(
        list_all(store, &t.id, &SecretFilter::default()).await,
        vec![again]
    );
}

/// A variable is exposed by at most one secret per (scope, key); other
/// scopes, keys and tenants may use it. A refused write changes nothing.
async fn env_conflicts(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let (u, _) = new_tenant(store).await;
    let a = upsert_secret(store, &secret(&t.id, Tenant, None, "a", "TOKEN")).await;
    let before = epoch_of(store, &t.id).await;

    let b = secret(&t.id, Tenant, None, "b", "TOKEN");
    assert_conflict(try_upsert(store, &b).await, "secret", "expose_as_env");
    assert_eq!(get(store, &t.id, &b.id).await, None);
    assert_eq!(
        epoch_of(store, &t.id).await,
        before,
        "a refused put leaves the epoch"
    );

    for (scope, key) in [
        (ExternalUser, "u1"),
        (ExternalUser, "u2"),
        (ExternalWorkspace, "u1"),
        (User, "u1"),
    ] {
        upsert_secret(store, &secret(&t.id, scope, Some(key), "b", "TOKEN")).await;
    }
    upsert_secret(store, &secret(&u.id, Tenant, None, "b", "TOKEN")).await;
    assert_conflict(
        try_upsert(
            store,
            &secret(&t.id, ExternalUser, Some("u1"), "c", "TOKEN"),
        )
        .await,
        "secret",
        "expose_as_env",
    );
    upsert_secret(store, &secret(&t.id, Tenant, None, "c", "token")).await;

    // A new version may not take another secret's variable, and its value
    // is not stored.
    let b = upsert_secret(store, &secret(&t.id, Tenant, None, "b", "OTHER")).await;
    let steal = NewSecretVersion {
        sealed: sealed("kek-stolen", 9),
        ..secret(&t.id, Tenant, None, "b", "TOKEN")
    };
    assert_conflict(try_upsert(store, &steal).await, "secret", "expose_as_env");
    assert_eq!(get(store, &t.id, &b.id).await, Some(b.clone()));
    assert_eq!(versions_of(store, &b.id).await.len(), 1);

    // Once `a` moves to another variable, `b` can take it; keeping one's own
    // variable is no conflict.
    let a2 = upsert_secret(store, &secret(&t.id, Tenant, None, "a", "RENAMED")).await;
    assert_eq!((&a2.id, a2.version), (&a.id, 2));
    let b2 = upsert_secret(store, &secret(&t.id, Tenant, None, "b", "TOKEN")).await;
    assert_eq!(
        (&b2.id, b2.version, b2.expose_as_env.as_str()),
        (&b.id, 2, "TOKEN")
    );
    let b3 = upsert_secret(store, &secret(&t.id, Tenant, None, "b", "TOKEN")).await;
    assert_eq!(b3.version, 3);
}

/// A `sandbox` scope key must be a live sandbox of the tenant, a `workspace`
/// key a workspace of the tenant; the other keys are free labels.
async fn references(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let ws = new_workspace(store, &t.id).await;
    let sbx = new_sandbox(store, sandbox(&t.id, Some(&ws.id))).await;
    let gone = new_sandbox(store, sandbox(&t.id, None)).await;
    let changed = store
        .transition_sandbox(
            &t.id,
            &gone.id,
            &SandboxStatus::ALL,
            SandboxStatus::Destroyed,
            now(),
        )
        .await
        .expect("transition_sandbox");
    assert!(changed);
    let (u, _) = new_tenant(store).await;
    let u_ws = new_workspace(store, &u.id).await;
    let u_sbx = new_sandbox(store, sandbox(&u.id, None)).await;

    let mut ok = vec![
        upsert_secret(
            store,
            &secret(&t.id, SecretScope::Sandbox, Some(sbx.id.as_str()), "s", "A"),
        )
        .await,
        upsert_secret(
            store,
            &secret(&t.id, Workspace, Some(ws.id.as_str()), "w", "A"),
        )
        .await,
    ];
    let before = epoch_of(store, &t.id).await;

    let missing_sandbox = [
        Some(u_sbx.id.as_str()),
        Some(gone.id.as_str()),
        Some("sbx_01jdq3x5m8v2k7f4c9n6r1w0ab"),
        Some(""),
        None,
    ];
    for key in missing_sandbox {
        let new = secret(&t.id, SecretScope::Sandbox, key, "s2", "B");
        assert_missing(try_upsert(store, &new).await, "sandbox_id");
    }
    for key in [Some(u_ws.id.as_str()), Some(sbx.id.as_str()), None] {
        let new = secret(&t.id, Workspace, key, "w2", "B");
        assert_missing(try_upsert(store, &new).await, "workspace_id");
    }
    assert_eq!(
        epoch_of(store, &t.id).await,
        before,
        "refused puts leave no trace"
    );

    // Labels are not references: any key will do, even another tenant's ID.
    for scope in [User, ExternalUser, ExternalWorkspace] {
        ok.push(
            upsert_secret(
                store,
                &secret(&t.id, scope, Some(u_sbx.id.as_str()), "l", "B"),
            )
            .await,
        );
    }
    ok.sort_by(|x, y| y.id.cmp(&x.id));
    assert_eq!(list_all(store, &t.id, &SecretFilter::default()).await, ok);

    let orphan = secret(&TenantId::generate(), Tenant, None, "o", "A");
    assert_missing(try_upsert(store, &orphan).await, "tenant_id");
}

/// Nothing of tenant B can be read, listed, resolved or changed through A.
async fn isolation(store: &dyn Store) {
    let (a, _) = new_tenant(store).await;
    let (b, _) = new_tenant(store).await;
    let mine = vec![
        upsert_secret(
            store,
            &secret(&a.id, ExternalUser, Some("shared"), "k", "K"),
        )
        .await,
        upsert_secret(store, &secret(&a.id, Tenant, None, "k", "K")).await,
    ];
    let theirs = vec![
        upsert_secret(
            store,
            &secret(&b.id, ExternalUser, Some("shared"), "k", "K"),
        )
        .await,
        upsert_secret(store, &secret(&b.id, Tenant, None, "k", "K")).await,
    ];
    let (epoch_a, epoch_b) = (epoch_of(store, &a.id).await, epoch_of(store, &b.id).await);

    for s in &theirs {
        assert_eq!(
            get(store, &a.id, &s.id).await,
            None,
            "get reaches no other tenant"
        );
        assert_eq!(
            set_enabled(store, &a.id, &s.id, false, now()).await,
            None,
            "disable reaches no other tenant"
        );
        assert!(
            !store.delete_secret(&a.id, &s.id).await.expect("delete"),
            "delete reaches no other tenant"
        );
        assert_eq!(
            get(store, &b.id, &s.id).await,
            Some(s.clone()),
            "B is untouched"
        );
    }
    assert_eq!(epoch_of(store, &a.id).await, epoch_a);
    assert_eq!(epoch_of(store, &b.id).await, epoch_b);

    let mut own = mine.clone();
    own.sort_by(|x, y| y.id.cmp(&x.id));
    assert_eq!(list_all(store, &a.id, &SecretFilter::default()).await, own);
    let by_name = SecretFilter {
        name: Some("k".to_owned()),
        scope_key: Some("shared".to_owned()),
        ..SecretFilter::default()
    };
    assert_eq!(
        list_all(store, &a.id, &by_name).await,
        vec![mine[0].clone()]
    );

    let keys = SandboxScopeKeys {
        external_user_id: Some("shared".to_owned()),
        ..bare_keys()
    };
    let got: Vec<Secret> = candidates_of(store, &a.id, &keys)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(got, mine, "candidates come from the tenant's own secrets");
}

/// Each filter alone and together, newest first, disabled secrets listed;
/// paging by cursor.
async fn filters_and_paging(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let ws = new_workspace(store, &t.id).await;
    let sbx = new_sandbox(store, sandbox(&t.id, Some(&ws.id))).await;
    let specs = [
        (Tenant, None, "n1"),
        (ExternalUser, Some("u1"), "n1"),
        (ExternalUser, Some("u2"), "n2"),
        (User, Some("u1"), "n1"),
        (Workspace, Some(ws.id.as_str()), "n2"),
        (SecretScope::Sandbox, Some(sbx.id.as_str()), "n1"),
        (ExternalWorkspace, Some("u1"), "n3"),
    ];
    let mut all = Vec::new();
    for (i, (scope, key, name)) in specs.into_iter().enumerate() {
        let s = upsert_secret(store, &secret(&t.id, scope, key, name, &format!("E{i}"))).await;
        all.push(s);
    }
    all[2] = set_enabled(store, &t.id, &all[2].id, false, now())
        .await
        .expect("the secret exists");
    // Same names and keys in another tenant never show up.
    let (other, _) = new_tenant(store).await;
    upsert_secret(
        store,
        &secret(&other.id, ExternalUser, Some("u1"), "n1", "E1"),
    )
    .await;

    let s = |v: &str| Some(v.to_owned());
    let f = SecretFilter::default;
    let cases: Vec<(&str, SecretFilter, Vec<usize>)> = vec![
        ("none", f(), vec![0, 1, 2, 3, 4, 5, 6]),
        (
            "scope",
            SecretFilter {
                scope: Some(ExternalUser),
                ..f()
            },
            vec![1, 2],
        ),
        (
            "scope and key",
            SecretFilter {
                scope: Some(ExternalUser),
                scope_key: s("u1"),
                ..f()
            },
            vec![1],
        ),
        (
            "key across scopes",
            SecretFilter {
                scope_key: s("u1"),
                ..f()
            },
            vec![1, 3, 6],
        ),
        (
            "name",
            SecretFilter {
                name: s("n1"),
                ..f()
            },
            vec![0, 1, 3, 5],
        ),
        (
            "name and key",
            SecretFilter {
                name: s("n1"),
                scope_key: s("u1"),
                ..f()
            },
            vec![1, 3],
        ),
        (
            "tenant scope",
            SecretFilter {
                scope: Some(Tenant),
                ..f()
            },
            vec![0],
        ),
        (
            "sandbox binding",
            SecretFilter {
                scope: Some(SecretScope::Sandbox),
                scope_key: Some(sbx.id.to_string()),
                ..f()
            },
            vec![5],
        ),
        (
            "no match",
            SecretFilter {
                scope: Some(Workspace),
                scope_key: s("ws_01jdq3x5m8v2k7f4c9n6r1w0ab"),
                ..f()
            },
            vec![],
        ),
        (
            "case-sensitive name",
            SecretFilter {
                name: s("N1"),
                ..f()
            },
            vec![],
        ),
    ];
    for (label, filter, idx) in cases {
        let want: Vec<Secret> = idx.iter().rev().map(|&i| all[i].clone()).collect();
        assert_eq!(list_all(store, &t.id, &filter).await, want, "{label}");
    }

    let newest_first: Vec<Secret> = all.iter().rev().cloned().collect();
    let pages = all_pages(
        3,
        |s: &Secret| s.id.to_string(),
        async |p| store.list_secrets(&t.id, &SecretFilter::default(), p).await,
    )
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(pages.concat(), newest_first);
    let n1 = SecretFilter {
        name: s("n1"),
        ..f()
    };
    let pages = all_pages(
        3,
        |s: &Secret| s.id.to_string(),
        async |p| store.list_secrets(&t.id, &n1, p).await,
    )
    .await;
    let ids: Vec<Vec<SecretId>> = pages
        .iter()
        .map(|p| p.iter().map(|s| s.id.clone()).collect())
        .collect();
    assert_eq!(
        ids,
        vec![
            vec![all[5].id.clone(), all[3].id.clone(), all[1].id.clone()],
            vec![all[0].id.clone()]
        ]
    );
}

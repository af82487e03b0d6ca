//! How a secret write is checked inside its transaction: the version it
//! expects, the tenant's settings, workspace bindings; and what goes with a
//! destroyed sandbox, and which values still wait to be re-sealed.

use miosa_core::time_util::now;
use miosa_core::{
    AadVersion, NewSecretVersion, SandboxScopeKeys, SandboxStatus, SealedVersion, SecretId,
    SecretScope, SubstituteIn,
};
use miosa_store::{SecretFilter, SecretKey, SettingsPatch, Store, StoreError};

use crate::fixtures::{
    assert_conflict, assert_missing, new_sandbox, new_tenant, new_workspace, next_version,
    put_secret, sandbox, sealed, secret, upsert_secret,
};
use crate::secrets::{bare_keys, candidates_of, epoch_of, get, list_all, versions_of};

use SecretScope::{ExternalUser, ExternalWorkspace, Tenant, User};

/// The whole story of checked writes.
pub(crate) async fn secret_writes(store: &dyn Store) {
    expected_versions(store).await;
    settings_decide_inside_the_write(store).await;
    workspace_bindings(store).await;
    sandbox_secrets_go_with_the_sandbox(store).await;
    legacy_sealing(store).await;
}

/// A write names the version it makes; any other state of the secret is a
/// version conflict that writes nothing.
async fn expected_versions(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let first = NewSecretVersion {
        allowed_hosts: vec!["api.example.com:8443".to_owned()],
        substitute_in: SubstituteIn::ALL,
        ..secret(&t.id, ExternalUser, Some("u1"), "k", "K")
    };
    let v1 = put_secret(store, &first).await;
    assert_eq!(
        (v1.version, v1.substitute_in, v1.allowed_hosts.clone()),
        (1, SubstituteIn::ALL, first.allowed_hosts.clone())
    );
    let key = SecretKey {
        scope: ExternalUser,
        scope_key: Some("u1".to_owned()),
        workspace_id: None,
        name: "k".to_owned(),
    };
    assert_eq!(
        store.find_secret(&t.id, &key).await.expect("find"),
        Some(v1.clone())
    );
    let elsewhere = SecretKey {
        name: "other".to_owned(),
        ..key.clone()
    };
    assert_eq!(
        store.find_secret(&t.id, &elsewhere).await.expect("find"),
        None
    );

    let before = epoch_of(store, &t.id).await;
    // Creating again, skipping a version, or another ID: all refused.
    let again = secret(&t.id, ExternalUser, Some("u1"), "k", "K");
    assert_conflict(store.put_secret(&again).await, "secret", "version");
    let skip = NewSecretVersion {
        version: 3,
        ..next_version(&first, &v1)
    };
    assert_conflict(store.put_secret(&skip).await, "secret", "version");
    let wrong_id = NewSecretVersion {
        id: SecretId::generate(),
        ..next_version(&first, &v1)
    };
    assert_conflict(store.put_secret(&wrong_id).await, "secret", "version");
    assert_eq!(
        epoch_of(store, &t.id).await,
        before,
        "refusals write nothing"
    );
    assert_eq!(versions_of(store, &v1.id).await.len(), 1);

    // The expected next version goes in, with its metadata.
    let second = NewSecretVersion {
        substitute_in: SubstituteIn::HEADERS,
        ..next_version(&first, &v1)
    };
    let v2 = put_secret(store, &second).await;
    assert_eq!((v2.id.clone(), v2.version), (v1.id.clone(), 2));
    assert_eq!(v2.substitute_in, SubstituteIn::HEADERS);
    // The same write twice: the second is stale.
    assert_conflict(store.put_secret(&second).await, "secret", "version");
}

/// `allow_end_user_credentials` and `require_allowed_hosts` are read inside
/// the write, so a concurrent settings change cannot slip past.
async fn settings_decide_inside_the_write(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let refused = |r: Result<_, StoreError>, setting: &str| match r {
        Err(StoreError::SettingForbids { setting: s }) if s == setting => {}
        other => panic!("expected SettingForbids {{ {setting} }}, got {other:?}"),
    };
    let off = SettingsPatch {
        allow_end_user_credentials: Some(false),
        ..SettingsPatch::default()
    };
    store
        .update_settings(&t.id, &off, now())
        .await
        .expect("update_settings");
    let before = epoch_of(store, &t.id).await;
    let eu = secret(&t.id, ExternalUser, Some("u1"), "k", "K");
    refused(store.put_secret(&eu).await, "allow_end_user_credentials");
    assert_eq!(get(store, &t.id, &eu.id).await, None);
    assert_eq!(epoch_of(store, &t.id).await, before);
    // Other end-user scopes are not `external_user`.
    upsert_secret(
        store,
        &secret(&t.id, ExternalWorkspace, Some("w1"), "k", "K"),
    )
    .await;

    let strict = SettingsPatch {
        allow_end_user_credentials: Some(true),
        require_allowed_hosts: Some(true),
        ..SettingsPatch::default()
    };
    store
        .update_settings(&t.id, &strict, now())
        .await
        .expect("update_settings");
    let anywhere = secret(&t.id, Tenant, None, "t", "T");
    refused(store.put_secret(&anywhere).await, "require_allowed_hosts");
    let limited = NewSecretVersion {
        allowed_hosts: vec!["api.openai.com".to_owned()],
        ..anywhere.clone()
    };
    put_secret(store, &limited).await;
    let eu = NewSecretVersion {
        allowed_hosts: vec!["api.openai.com".to_owned()],
        ..eu
    };
    upsert_secret(store, &eu).await;
}

/// The same end-user secret bound to two workspaces is two secrets; a
/// binding must name a workspace of the tenant; lists filter by it.
async fn workspace_bindings(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let (u, _) = new_tenant(store).await;
    let a = new_workspace(store, &t.id).await;
    let b = new_workspace(store, &t.id).await;
    let theirs = new_workspace(store, &u.id).await;
    let bound = |ws: Option<&miosa_core::WorkspaceId>, scope| NewSecretVersion {
        workspace_id: ws.cloned(),
        ..secret(&t.id, scope, Some("bob"), "openai", "OPENAI_API_KEY")
    };
    let in_a = upsert_secret(store, &bound(Some(&a.id), ExternalUser)).await;
    let in_b = upsert_secret(store, &bound(Some(&b.id), ExternalUser)).await;
    let unbound = upsert_secret(store, &bound(None, ExternalUser)).await;
    let user_in_a = upsert_secret(store, &bound(Some(&a.id), User)).await;
    assert_ne!(in_a.id, in_b.id);
    assert_ne!(in_a.id, unbound.id);
    assert_eq!(in_a.workspace_id.as_ref(), Some(&a.id));
    assert_eq!(unbound.workspace_id, None);
    // A second value for A's binding is a version of A's secret only.
    let again = upsert_secret(store, &bound(Some(&a.id), ExternalUser)).await;
    assert_eq!((&again.id, again.version), (&in_a.id, 2));
    assert_eq!(get(store, &t.id, &in_b.id).await.expect("b").version, 1);

    assert_missing(
        store
            .put_secret(&bound(Some(&theirs.id), ExternalUser))
            .await,
        "workspace_id",
    );

    let only_a = SecretFilter {
        workspace_id: Some(a.id.clone()),
        ..SecretFilter::default()
    };
    let mut want = vec![again.clone(), user_in_a.clone()];
    want.sort_by(|x, y| y.id.cmp(&x.id));
    assert_eq!(list_all(store, &t.id, &only_a).await, want);

    // Every binding is a candidate for the end-user; the resolver decides.
    let keys = SandboxScopeKeys {
        external_user_id: Some("bob".to_owned()),
        workspace_id: Some(a.id.to_string()),
        ..bare_keys()
    };
    let got: Vec<SecretId> = candidates_of(store, &t.id, &keys)
        .await
        .into_iter()
        .map(|(s, _)| s.id)
        .collect();
    let mut want = vec![in_a.id, in_b.id, unbound.id];
    want.sort();
    assert_eq!(got, want);
}

/// Destroying a sandbox deletes its own secrets (and bumps the epoch);
/// other transitions keep them.
async fn sandbox_secrets_go_with_the_sandbox(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let sbx = new_sandbox(store, sandbox(&t.id, None)).await;
    let other = new_sandbox(store, sandbox(&t.id, None)).await;
    let own = upsert_secret(
        store,
        &secret(&t.id, SecretScope::Sandbox, Some(sbx.id.as_str()), "s", "S"),
    )
    .await;
    let kept = upsert_secret(
        store,
        &secret(
            &t.id,
            SecretScope::Sandbox,
            Some(other.id.as_str()),
            "s",
            "S",
        ),
    )
    .await;
    let paused = store
        .transition_sandbox(
            &t.id,
            &sbx.id,
            &[SandboxStatus::Running],
            SandboxStatus::Paused,
            now(),
        )
        .await
        .expect("transition");
    assert!(paused);
    assert!(
        get(store, &t.id, &own.id).await.is_some(),
        "pausing keeps them"
    );
    let before = epoch_of(store, &t.id).await;
    let destroyed = store
        .transition_sandbox(
            &t.id,
            &sbx.id,
            &SandboxStatus::ALL,
            SandboxStatus::Destroyed,
            now(),
        )
        .await
        .expect("transition");
    assert!(destroyed);
    assert_eq!(get(store, &t.id, &own.id).await, None);
    assert_eq!(versions_of(store, &own.id).await, Vec::new());
    assert!(epoch_of(store, &t.id).await > before);
    assert_eq!(get(store, &t.id, &kept.id).await, Some(kept));

    // A destroy that finds nothing to delete leaves the epoch alone.
    let bare = new_sandbox(store, sandbox(&t.id, None)).await;
    let before = epoch_of(store, &t.id).await;
    store
        .transition_sandbox(
            &t.id,
            &bare.id,
            &SandboxStatus::ALL,
            SandboxStatus::Destroyed,
            now(),
        )
        .await
        .expect("transition");
    assert_eq!(epoch_of(store, &t.id).await, before);
}

/// Latest versions sealed for the tenant alone are listed for re-sealing
/// (older versions are not); a re-seal takes them off the list.
async fn legacy_sealing(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let legacy = |n| {
        let mut s = sealed("kek-legacy", n);
        s.aad = AadVersion::Tenant;
        s
    };
    let first = NewSecretVersion {
        sealed: legacy(1),
        ..secret(&t.id, Tenant, None, "old", "OLD")
    };
    let v1 = put_secret(store, &first).await;
    let fresh = put_secret(store, &secret(&t.id, Tenant, None, "new", "NEW")).await;
    let mine = |all: Vec<(miosa_core::Secret, SealedVersion)>| -> Vec<(SecretId, u32, AadVersion)> {
        all.into_iter()
            .filter(|(s, _)| s.tenant_id == t.id)
            .map(|(s, v)| (s.id, v.version, v.sealed.aad))
            .collect()
    };
    let listed = mine(store.legacy_sealed_versions(10_000).await.expect("legacy"));
    assert_eq!(listed, vec![(v1.id.clone(), 1, AadVersion::Tenant)]);
    assert!(!listed.iter().any(|(id, ..)| *id == fresh.id));

    // A new (bound) version: the legacy one is no longer the latest.
    let second = next_version(&first, &v1);
    let v2 = put_secret(store, &second).await;
    assert_eq!(
        mine(store.legacy_sealed_versions(10_000).await.expect("legacy")),
        vec![]
    );
    // Re-sealing replaces every sealed field and the marker.
    let mut resealed = sealed("kek-new", 7);
    resealed.aad = AadVersion::Bound;
    store
        .rewrap_versions(&[SealedVersion {
            secret_id: v2.id.clone(),
            version: 1,
            sealed: resealed.clone(),
        }])
        .await
        .expect("rewrap");
    let stored = versions_of(store, &v2.id).await;
    assert_eq!(stored[0].sealed, resealed);
    assert_eq!(stored[1].sealed, second.sealed);
}

/// The key-encryption key new values must be sealed under: recorded once,
/// moved by a rotation, and checked inside every secret write. Global
/// state, so this area needs a store of its own (not in `run_all`).
pub async fn sealing_key(store: &dyn Store) {
    assert_eq!(store.sealing_kek().await.expect("sealing_kek"), None);
    // Unrecorded: any key goes (a server records its own at start).
    let (t, _) = new_tenant(store).await;
    put_secret(store, &secret(&t.id, Tenant, None, "a", "A")).await;
    assert_eq!(
        store.claim_sealing_kek("kek-test").await.expect("claim"),
        "kek-test"
    );
    assert_eq!(
        store.claim_sealing_kek("kek-other").await.expect("claim"),
        "kek-test",
        "the first claim stays"
    );
    assert_eq!(
        store.sealing_kek().await.expect("sealing_kek").as_deref(),
        Some("kek-test")
    );
    let stale = NewSecretVersion {
        sealed: sealed("kek-old", 1),
        ..secret(&t.id, Tenant, None, "b", "B")
    };
    let before = epoch_of(store, &t.id).await;
    match store.put_secret(&stale).await {
        Err(StoreError::StaleSealingKey { current }) => assert_eq!(current, "kek-test"),
        other => panic!("expected StaleSealingKey, got {other:?}"),
    }
    assert_eq!(get(store, &t.id, &stale.id).await, None);
    assert_eq!(epoch_of(store, &t.id).await, before, "nothing written");
    put_secret(store, &secret(&t.id, Tenant, None, "b", "B")).await;
    // A rotation moves it; writes under the previous key are refused.
    store.set_sealing_kek("kek-new").await.expect("set");
    assert_eq!(
        store.sealing_kek().await.expect("sealing_kek").as_deref(),
        Some("kek-new")
    );
    let c = secret(&t.id, Tenant, None, "c", "C");
    assert!(matches!(
        store.put_secret(&c).await,
        Err(StoreError::StaleSealingKey { .. })
    ));
    let c = NewSecretVersion {
        sealed: sealed("kek-new", 1),
        ..c
    };
    put_secret(store, &c).await;
}

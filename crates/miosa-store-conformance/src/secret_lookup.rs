//! What the egress proxy and the vault read: the candidates a sandbox can
//! resolve, the secrets epoch, and re-wrapping after a key rotation.
//!
//! `sealed_versions_not_under` and `kek_ids_in_use` see every tenant; the
//! rotation re-wraps everything, which is what a rotation does on a shared
//! store too, and then looks at its own secrets.

use miosa_core::secret::resolve;
use miosa_core::time_util::now;
use miosa_core::{
    NewSecretVersion, SandboxScopeKeys, SealedValue, SealedVersion, SecretId, SecretScope,
    TenantId, TenantSettings,
};
use miosa_store::{SecretFilter, SettingsPatch, Store};

use crate::fixtures::{
    new_sandbox, new_tenant, new_workspace, sandbox, sealed, secret, try_upsert, unique,
    upsert_secret,
};
use crate::secrets::{bare_keys, candidates_of, epoch_of, list_all, set_enabled};

use SecretScope::{ExternalUser, ExternalWorkspace, Tenant, User, Workspace};

/// The whole lookup story.
pub async fn secret_lookup(store: &dyn Store) {
    candidates(store).await;
    epoch(store).await;
    rotation(store).await;
}

/// Candidates: the tenant scope always, every other scope only by an exact,
/// case-sensitive match of the sandbox's label (an empty or missing label
/// matches nothing), enabled only, each with its latest value.
async fn candidates(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let ws = new_workspace(store, &t.id).await;
    let other_ws = new_workspace(store, &t.id).await;
    let sbx = new_sandbox(store, sandbox(&t.id, Some(&ws.id))).await;
    let other_sbx = new_sandbox(store, sandbox(&t.id, Some(&ws.id))).await;
    let keys = SandboxScopeKeys {
        sandbox_id: sbx.id.to_string(),
        owner_user_id: Some("owner-1".to_owned()),
        external_user_id: Some("Dr.Smith".to_owned()),
        external_workspace_id: Some("clinic-1".to_owned()),
        workspace_id: Some(ws.id.to_string()),
        created_by_workspace_key: false,
    };

    let mut n = 0u8;
    let mut put = async |scope: SecretScope, key: Option<&str>, name: &str| {
        n += 1;
        let new = NewSecretVersion {
            sealed: sealed("kek-cand", n),
            ..secret(&t.id, scope, key, name, "TOKEN")
        };
        (upsert_secret(store, &new).await, new.sealed)
    };
    // Every scope holds a TOKEN the sandbox matches; the resolver picks.
    let tenant = put(Tenant, None, "t").await;
    let bound = put(SecretScope::Sandbox, Some(sbx.id.as_str()), "s").await;
    let user = put(User, Some("owner-1"), "u").await;
    let end_user = put(ExternalUser, Some("Dr.Smith"), "eu").await;
    let end_ws = put(ExternalWorkspace, Some("clinic-1"), "ew").await;
    let workspace = put(Workspace, Some(ws.id.as_str()), "w").await;
    // Near misses.
    let other_bound = put(SecretScope::Sandbox, Some(other_sbx.id.as_str()), "s").await;
    put(User, Some("OWNER-1"), "u").await;
    put(User, Some("owner-1 "), "u2").await;
    put(ExternalUser, Some("dr.smith"), "eu").await;
    put(ExternalUser, Some(""), "eu-empty").await;
    put(User, Some(""), "u-empty").await;
    put(ExternalWorkspace, Some("clinic-"), "ew").await;
    put(ExternalWorkspace, Some("owner-1"), "ew2").await;
    put(Workspace, Some(other_ws.id.as_str()), "w").await;
    // A matching secret, disabled.
    let off = upsert_secret(
        store,
        &secret(&t.id, ExternalUser, Some("Dr.Smith"), "eu-off", "OFF"),
    )
    .await;
    set_enabled(store, &t.id, &off.id, false, now()).await;
    // Another tenant with the same labels.
    let (u, _) = new_tenant(store).await;
    upsert_secret(store, &secret(&u.id, Tenant, None, "t", "TOKEN")).await;
    upsert_secret(
        store,
        &secret(&u.id, ExternalUser, Some("Dr.Smith"), "eu", "TOKEN"),
    )
    .await;

    let want = vec![
        tenant.clone(),
        bound.clone(),
        user,
        end_user.clone(),
        end_ws,
        workspace,
    ];
    let got = candidates_of(store, &t.id, &keys).await;
    assert_eq!(got, want);
    let winner = resolve(
        &keys,
        got.iter().map(|(s, _)| s),
        &TenantSettings::default(),
    );
    assert_eq!(winner["TOKEN"].id, bound.0.id, "the sandbox binding wins");

    // A new version: the candidate carries it.
    let newer = NewSecretVersion {
        sealed: sealed("kek-cand", 200),
        ..secret(&t.id, ExternalUser, Some("Dr.Smith"), "eu", "TOKEN")
    };
    let end_user = (upsert_secret(store, &newer).await, newer.sealed.clone());
    assert_eq!(end_user.0.version, 2);
    let got = candidates_of(store, &t.id, &keys).await;
    assert_eq!(got[3], end_user);

    // Without labels, or with empty ones, only the tenant scope and the
    // sandbox's own bindings apply.
    let bare = SandboxScopeKeys {
        sandbox_id: sbx.id.to_string(),
        ..SandboxScopeKeys::default()
    };
    let empty = SandboxScopeKeys {
        sandbox_id: sbx.id.to_string(),
        owner_user_id: Some(String::new()),
        external_user_id: Some(String::new()),
        external_workspace_id: Some(String::new()),
        workspace_id: Some(String::new()),
        created_by_workspace_key: false,
    };
    for k in [&bare, &empty] {
        assert_eq!(
            candidates_of(store, &t.id, k).await,
            vec![tenant.clone(), bound.clone()],
            "{k:?}"
        );
    }
    let elsewhere = SandboxScopeKeys {
        sandbox_id: other_sbx.id.to_string(),
        ..SandboxScopeKeys::default()
    };
    assert_eq!(
        candidates_of(store, &t.id, &elsewhere).await,
        vec![tenant, other_bound]
    );
}

/// The epoch increases with every kind of change to a tenant's secrets or
/// settings, in that tenant only, and stays put otherwise.
async fn epoch(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let (u, _) = new_tenant(store).await;
    assert_eq!(
        epoch_of(store, &t.id).await,
        0,
        "a tenant that never changed"
    );
    assert_eq!(epoch_of(store, &TenantId::generate()).await, 0);

    let mut last = 0;
    let mut bumped = async |what: &str| {
        let now = epoch_of(store, &t.id).await;
        assert!(now > last, "{what} increases the epoch ({last} -> {now})");
        last = now;
    };
    let s = upsert_secret(store, &secret(&t.id, Tenant, None, "a", "A")).await;
    bumped("a new secret").await;
    upsert_secret(store, &secret(&t.id, Tenant, None, "a", "A")).await;
    bumped("a new version").await;
    set_enabled(store, &t.id, &s.id, false, now()).await;
    bumped("disabling").await;
    set_enabled(store, &t.id, &s.id, true, now()).await;
    bumped("enabling").await;
    store
        .update_settings(&t.id, &SettingsPatch::default(), now())
        .await
        .expect("update_settings");
    bumped("a settings update").await;
    let off = SettingsPatch {
        allow_end_user_credentials: Some(false),
        ..SettingsPatch::default()
    };
    store
        .update_settings(&t.id, &off, now())
        .await
        .expect("update_settings");
    bumped("a settings change").await;
    let other = upsert_secret(
        store,
        &secret(&t.id, ExternalWorkspace, Some("x"), "b", "A"),
    )
    .await;
    bumped("a secret in another scope").await;
    assert!(store.delete_secret(&t.id, &s.id).await.expect("delete"));
    bumped("deleting").await;
    let same = epoch_of(store, &t.id).await;

    // Reads and refused or empty writes change nothing.
    let clash = secret(&t.id, ExternalWorkspace, Some("x"), "c", "A");
    assert!(try_upsert(store, &clash).await.is_err());
    let forbidden = secret(&t.id, ExternalUser, Some("x"), "d", "D");
    assert!(try_upsert(store, &forbidden).await.is_err());
    assert!(!store.delete_secret(&t.id, &s.id).await.expect("delete"));
    assert_eq!(
        set_enabled(store, &t.id, &SecretId::generate(), false, now()).await,
        None
    );
    store.get_secret(&t.id, &other.id).await.expect("get");
    store.get_settings(&t.id).await.expect("get_settings");
    candidates_of(store, &t.id, &bare_keys()).await;
    list_all(store, &t.id, &SecretFilter::default()).await;
    assert_eq!(epoch_of(store, &t.id).await, same);
    assert_eq!(epoch_of(store, &u.id).await, 0, "another tenant's epoch");
}

/// Rotation: page through the versions not under the new key, re-wrap
/// them, until none is left; nonce and ciphertext are kept.
async fn rotation(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let old = unique("kek-old");
    let older = unique("kek-older");
    let target = unique("kek-new");
    let put = async |name: &str, kek: &str, n: u8| {
        let new = NewSecretVersion {
            sealed: sealed(kek, n),
            ..secret(&t.id, Tenant, None, name, name)
        };
        upsert_secret(store, &new).await
    };
    let a = put("A", &older, 1).await;
    put("A", &old, 2).await;
    let b = put("B", &old, 3).await;
    let c = put("C", &older, 4).await;
    assert!(store.delete_secret(&t.id, &c.id).await.expect("delete"));

    let in_use = store.kek_ids_in_use().await.expect("kek_ids_in_use");
    assert!(
        in_use.contains(&old) && in_use.contains(&older),
        "{in_use:?}"
    );
    assert!(!in_use.contains(&target) && !in_use.contains(&c.name));
    let mut sorted = in_use.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), in_use.len(), "each key once");

    let rewrap = |v: &SealedValue| SealedValue {
        kek_id: target.clone(),
        wrapped_key: [&b"rewrapped:"[..], &v.wrapped_key].concat(),
        nonce: v.nonce.clone(),
        ciphertext: v.ciphertext.clone(),
        aad: v.aad,
    };
    let mut seen = Vec::new();
    for round in 0.. {
        assert!(round < 100_000, "re-wrapping does not end");
        let batch = store
            .sealed_versions_not_under(&target, 2)
            .await
            .expect("sealed_versions_not_under");
        assert!(batch.len() <= 2, "at most `limit` versions");
        if batch.is_empty() {
            break;
        }
        assert!(batch.iter().all(|v| v.sealed.kek_id != target));
        let done: Vec<SealedVersion> = batch
            .iter()
            .map(|v| SealedVersion {
                sealed: rewrap(&v.sealed),
                ..v.clone()
            })
            .collect();
        store.rewrap_versions(&done).await.expect("rewrap_versions");
        seen.extend(batch);
    }
    let mut mine: Vec<(SecretId, u32, SealedValue)> = seen
        .into_iter()
        .filter(|v| v.secret_id == a.id || v.secret_id == b.id || v.secret_id == c.id)
        .map(|v| (v.secret_id, v.version, v.sealed))
        .collect();
    mine.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    assert_eq!(
        mine,
        vec![
            (a.id.clone(), 1, sealed(&older, 1)),
            (a.id.clone(), 2, sealed(&old, 2)),
            (b.id.clone(), 1, sealed(&old, 3)),
        ],
        "every stored version once, deleted ones not at all"
    );
    assert_eq!(
        store.kek_ids_in_use().await.expect("kek_ids_in_use"),
        vec![target.clone()]
    );
    let got = candidates_of(store, &t.id, &bare_keys()).await;
    let values: Vec<(SecretId, SealedValue)> = got.into_iter().map(|(s, v)| (s.id, v)).collect();
    assert_eq!(
        values,
        vec![
            (a.id.clone(), rewrap(&sealed(&old, 2))),
            (b.id.clone(), rewrap(&sealed(&old, 3))),
        ]
    );
    store.rewrap_versions(&[]).await.expect("an empty re-wrap");
}

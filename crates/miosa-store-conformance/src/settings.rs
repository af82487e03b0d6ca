//! Tenant settings: defaults until changed, patches, tenancy, the epoch.

use miosa_core::time_util::now;
use miosa_core::{TenantId, TenantSettings};
use miosa_store::{SettingsPatch, Store};

use crate::fixtures::{assert_missing, new_tenant};

async fn get(store: &dyn Store, tenant: &TenantId) -> TenantSettings {
    store.get_settings(tenant).await.expect("get_settings")
}

async fn update(store: &dyn Store, tenant: &TenantId, allow: Option<bool>) -> TenantSettings {
    let patch = SettingsPatch {
        allow_end_user_credentials: allow,
        ..SettingsPatch::default()
    };
    let after = store
        .update_settings(tenant, &patch, now())
        .await
        .expect("update_settings");
    assert_eq!(
        get(store, tenant).await,
        after,
        "update returns what get sees"
    );
    after
}

/// The whole settings story.
pub async fn settings(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let (u, _) = new_tenant(store).await;
    let default = TenantSettings::default();
    assert!(default.allow_end_user_credentials);
    assert_eq!(get(store, &t.id).await, default);
    assert_eq!(get(store, &TenantId::generate()).await, default);

    assert_eq!(update(store, &t.id, None).await, default, "an empty patch");
    let epoch = store.secrets_epoch(&t.id).await.expect("secrets_epoch");
    assert!(epoch > 0, "an update bumps the epoch");

    let off = TenantSettings {
        allow_end_user_credentials: false,
        ..TenantSettings::default()
    };
    assert_eq!(update(store, &t.id, Some(false)).await, off);
    assert_eq!(
        update(store, &t.id, None).await,
        off,
        "None keeps the value"
    );
    assert_eq!(update(store, &t.id, Some(false)).await, off);
    assert_eq!(update(store, &t.id, Some(true)).await, default);
    assert_eq!(update(store, &t.id, Some(false)).await, off);
    assert!(store.secrets_epoch(&t.id).await.expect("secrets_epoch") >= epoch + 5);

    assert_eq!(
        get(store, &u.id).await,
        default,
        "another tenant's settings"
    );
    assert_eq!(store.secrets_epoch(&u.id).await.expect("secrets_epoch"), 0);
    assert_eq!(update(store, &u.id, Some(false)).await, off);
    assert_eq!(update(store, &u.id, Some(true)).await, default);
    assert_eq!(
        get(store, &t.id).await,
        off,
        "untouched by the other tenant"
    );

    // Each setting changes alone; the others keep their values.
    let strict = SettingsPatch {
        require_allowed_hosts: Some(true),
        workspace_keys_use_unbound_secrets: Some(true),
        ..SettingsPatch::default()
    };
    let after = store
        .update_settings(&t.id, &strict, now())
        .await
        .expect("update_settings");
    assert_eq!(
        after,
        TenantSettings {
            allow_end_user_credentials: false,
            require_allowed_hosts: true,
            workspace_keys_use_unbound_secrets: true,
        }
    );
    assert_eq!(get(store, &t.id).await, after);
    let relaxed = SettingsPatch {
        require_allowed_hosts: Some(false),
        ..SettingsPatch::default()
    };
    let after = store
        .update_settings(&t.id, &relaxed, now())
        .await
        .expect("update_settings");
    assert!(!after.require_allowed_hosts && after.workspace_keys_use_unbound_secrets);
    // A first update of only the new settings starts from the defaults.
    let (v, _) = new_tenant(store).await;
    let first = store
        .update_settings(&v.id, &strict, now())
        .await
        .expect("update_settings");
    assert!(first.allow_end_user_credentials && first.require_allowed_hosts);

    let patch = SettingsPatch {
        allow_end_user_credentials: Some(false),
        ..SettingsPatch::default()
    };
    assert_missing(
        store
            .update_settings(&TenantId::generate(), &patch, now())
            .await,
        "tenant_id",
    );
}

//! Timestamps round-trip exactly, whatever their offset or era.

use miosa_core::KeyScope;
use miosa_store::{RevokeOutcome, Store};
use time::macros::datetime;

use crate::fixtures::{key, tenant, workspace};

/// Microsecond timestamps before 1970, far ahead and at other offsets come
/// back as the same instants.
pub async fn timestamps(store: &dyn Store) {
    let mut t = tenant();
    t.created_at = datetime!(1969-12-31 23:59:59.999_999 UTC);
    let mut admin = key(&t.id, KeyScope::Admin);
    admin.key.created_at = datetime!(2001-02-03 04:05:06.123_456 +05:30);
    store
        .create_tenant(&t, &admin)
        .await
        .expect("create_tenant");
    assert_eq!(store.get_tenant(&t.id).await.expect("get"), Some(t.clone()));

    let mut ws = workspace(&t.id);
    ws.created_at = datetime!(9999-12-31 23:59:59.999_999 UTC);
    store.create_workspace(&ws).await.expect("create_workspace");
    assert_eq!(
        store.get_workspace(&t.id, &ws.id).await.expect("get"),
        Some(ws.clone())
    );

    let mut wk = key(&t.id, KeyScope::Workspace(ws.id.clone()));
    wk.key.created_at = datetime!(1900-01-01 00:00:00.000_001 -08:00);
    store.create_api_key(&wk).await.expect("create_api_key");
    let at = datetime!(2030-06-15 12:00:00.000_001 UTC);
    let outcome = store
        .revoke_api_key(&t.id, &wk.key.id, at)
        .await
        .expect("revoke");
    assert_eq!(outcome, RevokeOutcome::Revoked);
    wk.key.revoked_at = Some(at);
    assert_eq!(
        store.get_api_key(&t.id, &wk.key.id).await.expect("get"),
        Some(wk.key)
    );
    assert_eq!(
        store.get_api_key(&t.id, &admin.key.id).await.expect("get"),
        Some(admin.key)
    );
}

//! Upgrading a database written before the credential hardening (migration
//! 0004): every secret and version survives, values keep their legacy
//! sealing until re-sealed, `workspace` secrets belong to their workspace,
//! and substitution falls back to headers.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use miosa_core::{AadVersion, SecretId, SecretScope, SubstituteIn, TenantId, WorkspaceId};
use miosa_store::Store;
use miosa_store_conformance::PgTestDb;
use miosa_store_postgres::PostgresStore;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

const TENANT: &str = "ten_01jdq3x5m8v2k7f4c9n6r1w0ab";
const WORKSPACE: &str = "ws_01jdq3x5m8v2k7f4c9n6r1w0ac";
const WS_SECRET: &str = "sec_01jdq3x5m8v2k7f4c9n6r1w0ad";
const EU_SECRET: &str = "sec_01jdq3x5m8v2k7f4c9n6r1w0ae";

#[tokio::test]
async fn data_from_before_0004_survives_the_upgrade() {
    let db = PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0004" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "INSERT INTO tenants (id, name, created_at) VALUES ('{TENANT}', 'old', now());
         INSERT INTO workspaces (id, tenant_id, name, created_at) VALUES ('{WORKSPACE}', '{TENANT}', 'w', now());
         INSERT INTO secrets (id, tenant_id, name, scope, scope_key, expose_as_env, allowed_hosts,
                              version, enabled, created_at, updated_at)
         VALUES ('{WS_SECRET}', '{TENANT}', 'ws', 'workspace', '{WORKSPACE}', 'WS', '[]', 1, TRUE, now(), now()),
                ('{EU_SECRET}', '{TENANT}', 'eu', 'external_user', 'u1', 'EU', '[\"api.openai.com\"]',
                 2, FALSE, now(), now());
         INSERT INTO secret_versions (secret_id, version, kek_id, wrapped_key, nonce, ciphertext, created_at)
         VALUES ('{WS_SECRET}', 1, 'kek_a', '\\x01', '\\x02', '\\x03', now()),
                ('{EU_SECRET}', 1, 'kek_a', '\\x11', '\\x12', '\\x13', now()),
                ('{EU_SECRET}', 2, 'kek_a', '\\x21', '\\x22', '\\x23', now());"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = PostgresStore::connect(&db.url)
        .await
        .expect("the upgrade runs");
    let tenant = TenantId::parse(TENANT).unwrap();
    let ws = store
        .get_secret(&tenant, &SecretId::parse(WS_SECRET).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ws.scope, SecretScope::Workspace);
    assert_eq!(
        ws.workspace_id,
        Some(WorkspaceId::parse(WORKSPACE).unwrap())
    );
    assert_eq!(ws.substitute_in, SubstituteIn::HEADERS);
    let eu = store
        .get_secret(&tenant, &SecretId::parse(EU_SECRET).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (eu.version, eu.enabled, eu.workspace_id.clone()),
        (2, false, None)
    );
    assert_eq!(eu.allowed_hosts, ["api.openai.com"]);
    let versions = store.sealed_versions_not_under("kek_b", 100).await.unwrap();
    assert_eq!(versions.len(), 3);
    assert!(versions.iter().all(|v| v.sealed.aad == AadVersion::Tenant));
    let eu2 = versions
        .iter()
        .find(|v| v.secret_id == eu.id && v.version == 2)
        .unwrap();
    assert_eq!(
        (&eu2.sealed.wrapped_key[..], &eu2.sealed.ciphertext[..]),
        (&[0x21][..], &[0x23][..])
    );
    assert_eq!(store.legacy_sealed_versions(100).await.unwrap().len(), 2);
    store.close().await;
    db.cleanup().await;
}

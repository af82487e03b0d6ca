//! `miosa admin rotate-master-key` and `miosa admin audit verify`, run as
//! the real binary against a real data dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
    sync::Arc,
};

use common::{Backend, TestEnv, TestServer};
use miosa_core::{
    audit::{action, AuditRequest},
    time_util::now,
    AadVersion, NewSecretVersion, SealedValue, SecretId, SecretScope, SubstituteIn, TenantId,
};
use miosa_store::Store;
use miosa_store_conformance::fixtures;
use miosa_vault::{KeyRing, MasterKey, KEY_FILE, NEXT_KEY_FILE};
use serde_json::json;

/// Runs `miosa <args>` with the test env's variables (and `extra`).
fn miosa(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_miosa"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env.vars)
        .envs(extra.iter().copied())
        .current_dir(env.dir.path())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn open_store(env: &TestEnv) -> Arc<dyn Store> {
    miosa::init::ensure_data_dir(&env.data_dir()).unwrap();
    miosa::storage::open(env.config().database_url.expose())
        .await
        .unwrap()
}

fn key_file(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(KEY_FILE)).unwrap()
}

/// Every stored version opens with `ring`, for the tenant it was written
/// for, to the value written; returns how many there are.
async fn assert_all_open(
    store: &dyn Store,
    ring: &KeyRing,
    written: &HashMap<(String, u32), (String, String)>,
) -> usize {
    let all = store
        .sealed_versions_not_under("kek_none", 10_000)
        .await
        .unwrap();
    assert_eq!(all.len(), written.len());
    for v in &all {
        let (tenant, value) = &written[&(v.secret_id.to_string(), v.version)];
        let tenant = TenantId::parse(tenant).unwrap();
        let secret = store
            .get_secret(&tenant, &v.secret_id)
            .await
            .unwrap()
            .unwrap();
        let aad = secret.associated_data(v.version, v.sealed.aad);
        let plain = ring.open(&v.sealed, &aad).unwrap();
        assert_eq!(plain.expose_str(), Some(value.as_str()));
    }
    all.len()
}

/// The `kek_…` word of the rotation's output line.
fn rotated_to(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("rewrapped "))
        .unwrap_or_else(|| panic!("no summary line: {stdout}"));
    line.split_whitespace()
        .find(|w| w.starts_with("kek_"))
        .unwrap()
        .to_owned()
}

/// Sets a tenant-scope secret through the API: its (id, version).
async fn set_secret(client: &miosa_client::Client, name: &str, value: &str) -> (String, u32) {
    let s = client
        .set_secret(&json!({
            "name": name,
            "value": value,
            "scope": "tenant",
            "expose_as_env": name.to_uppercase(),
        }))
        .await
        .unwrap();
    (s.id, s.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_key_rewraps_what_the_server_stored() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (other, other_tenant) = server.new_tenant("rotating").await;
    let default_tenant = server.admin.me().await.unwrap().tenant_id.unwrap();
    let data_dir = server.env.data_dir();
    let old_file = key_file(&data_dir);

    // Secrets of two tenants, one of them with two versions.
    let mut written = HashMap::new();
    for (client, tenant, name, value) in [
        (
            &server.admin,
            &default_tenant,
            "openai",
            "sk-openai-v1-0123456789",
        ),
        (
            &server.admin,
            &default_tenant,
            "openai",
            "sk-openai-v2-0123456789",
        ),
        (
            &server.admin,
            &default_tenant,
            "github",
            "ghp_0123456789abcdef",
        ),
        (
            &other,
            &other_tenant,
            "openai",
            "sk-other-tenant-0123456789",
        ),
    ] {
        let id = set_secret(client, name, value).await;
        written.insert(id, (tenant.clone(), value.to_owned()));
    }
    let store = open_store(&server.env).await;
    let old_id = KeyRing::load(None, &data_dir).unwrap().current_id();
    assert_eq!(store.kek_ids_in_use().await.unwrap(), vec![old_id.clone()]);

    // Rotate while the server runs.
    let (code, out, err) = miosa(&server.env, &["admin", "rotate-master-key"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rewrapped 4 secret versions under kek_"),
        "{out}"
    );
    let new_id = rotated_to(&out);
    assert_ne!(new_id, old_id);
    assert!(out.contains(&old_id), "{out}");

    let new_file = key_file(&data_dir);
    assert_ne!(new_file, old_file);
    let meta = std::fs::metadata(data_dir.join(KEY_FILE)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!data_dir.join(NEXT_KEY_FILE).exists());
    for (path, bytes) in common::files_under(server.env.dir.path()) {
        if path != data_dir.join(KEY_FILE) {
            assert!(
                !common::contains(&bytes, new_file.trim()),
                "new key leaked into {}",
                path.display()
            );
        }
    }
    for text in [&out, &err] {
        assert!(!text.contains(new_file.trim()) && !text.contains(old_file.trim()));
    }

    let ring = KeyRing::load(None, &data_dir).unwrap();
    assert_eq!(ring.current_id(), new_id);
    assert_eq!(ring.key_ids(), vec![new_id.clone()]);
    assert_eq!(assert_all_open(store.as_ref(), &ring, &written).await, 4);
    let old = KeyRing::from_key(MasterKey::from_hex(&old_file, "old").unwrap());
    for v in store
        .sealed_versions_not_under("kek_none", 100)
        .await
        .unwrap()
    {
        assert!(old.open(&v.sealed, b"any").is_err());
    }

    // The running server follows the key file: what it stores now is under
    // the new key.
    let id = set_secret(&other, "late", "sk-after-rotation-0123").await;
    written.insert(id, (other_tenant.clone(), "sk-after-rotation-0123".into()));
    assert_eq!(store.kek_ids_in_use().await.unwrap(), vec![new_id.clone()]);
    assert_eq!(assert_all_open(store.as_ref(), &ring, &written).await, 5);
    ring.check_in_use(&store.kek_ids_in_use().await.unwrap())
        .unwrap();
}

/// Secrets sealed by `ring` straight into the store, for `n` tenants, the
/// way values were sealed before they were bound to their secret (for the
/// tenant alone): a rotation re-seals them.
async fn write_secrets(
    store: &dyn Store,
    ring: &KeyRing,
    n: usize,
) -> HashMap<(String, u32), (String, String)> {
    let mut written = HashMap::new();
    for i in 0..n {
        let (tenant, _) = fixtures::new_tenant(store).await;
        let value = format!("sk-configured-{i}-0123456789");
        let aad = tenant.id.as_str().as_bytes();
        let s = store
            .put_secret(&NewSecretVersion {
                tenant_id: tenant.id.clone(),
                id: SecretId::generate(),
                name: "key".into(),
                scope: SecretScope::Tenant,
                scope_key: None,
                workspace_id: None,
                expose_as_env: "API_KEY".into(),
                allowed_hosts: Vec::new(),
                substitute_in: SubstituteIn::HEADERS,
                version: 1,
                sealed: SealedValue {
                    aad: AadVersion::Tenant,
                    ..ring.seal(value.as_bytes(), aad).unwrap()
                },
                at: now(),
            })
            .await
            .unwrap();
        written.insert(
            (s.id.to_string(), s.version),
            (tenant.id.to_string(), value),
        );
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_a_configured_master_key() {
    let mut env = TestEnv::new(Backend::Sqlite).await;
    let (old_hex, new_hex) = ("a1".repeat(32), "b2".repeat(32));
    env.vars.insert("MIOSA_MASTER_KEY".into(), old_hex.clone());
    let store = open_store(&env).await;
    let old = KeyRing::load(Some(&old_hex), &env.data_dir()).unwrap();
    let written = write_secrets(store.as_ref(), &old, 3).await;

    // With only the configured key, a rotation moves everything to it: the
    // legacy values are re-sealed bound to their secret, and the key is
    // recorded as the one to seal under. A second run has nothing to do.
    let (code, out, err) = miosa(&env, &["admin", "rotate-master-key"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("re-sealed 3 values"), "{out}");
    assert_eq!(store.sealing_kek().await.unwrap(), Some(old.current_id()));
    assert!(store.legacy_sealed_versions(10).await.unwrap().is_empty());
    assert_all_open(store.as_ref(), &old, &written).await;
    let (code, _, err) = miosa(&env, &["admin", "rotate-master-key"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("already under the configured master key")
            && err.contains("MIOSA_PREVIOUS_MASTER_KEYS"),
        "{err}"
    );
    let (code, _, err) = miosa(
        &env,
        &["admin", "rotate-master-key"],
        &[("MIOSA_NEW_MASTER_KEY", "not-hex")],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("MIOSA_NEW_MASTER_KEY") && !err.contains("not-hex"),
        "{err}"
    );

    let (code, out, err) = miosa(
        &env,
        &["admin", "rotate-master-key"],
        &[("MIOSA_NEW_MASTER_KEY", &new_hex)],
    );
    assert_eq!(code, 0, "{out}{err}");
    let new = KeyRing::load(Some(&new_hex), &env.data_dir()).unwrap();
    assert_eq!(rotated_to(&out), new.current_id());
    assert!(out.contains("rewrapped 3 secret versions"), "{out}");
    assert!(
        out.contains("set MIOSA_MASTER_KEY to the value of MIOSA_NEW_MASTER_KEY on every replica"),
        "{out}"
    );
    assert_eq!(store.sealing_kek().await.unwrap(), Some(new.current_id()));
    assert!(!out.contains(&new_hex) && !err.contains(&new_hex));
    assert!(!env.data_dir().join(KEY_FILE).exists(), "no key file made");
    assert_all_open(store.as_ref(), &new, &written).await;
    assert_eq!(
        store.kek_ids_in_use().await.unwrap(),
        vec![new.current_id()]
    );
    let e = old
        .check_in_use(&store.kek_ids_in_use().await.unwrap())
        .unwrap_err();
    assert!(e.to_string().contains(&new.current_id()), "{e}");
}

/// A server on `first`'s PostgreSQL database with a data dir of its own and
/// these variables (the pepper is shared, as replicas must).
async fn replica(
    first: &TestEnv,
    vars: &[(&str, &str)],
) -> (anyhow::Result<miosa::server::Server>, TestEnv) {
    let mut env = TestEnv::new(Backend::Sqlite).await; // a fresh data dir only
    env.vars.insert(
        "MIOSA_DATABASE_URL".into(),
        first.pg.as_ref().unwrap().url.clone(),
    );
    let pepper = std::fs::read_to_string(first.data_dir().join("api-key-pepper")).unwrap();
    env.vars.insert("MIOSA_API_KEY_PEPPER".into(), pepper);
    env.vars.insert("MIOSA_SANDBOXES".into(), "false".into());
    for (k, v) in vars {
        env.vars.insert((*k).into(), (*v).into());
    }
    let server = miosa::server::start(&env.config()).await;
    (server, env)
}

/// The rolling rotation of a configured master key across replicas: every
/// replica first gets the new key with the old one as previous, then one
/// rotation moves everything; no value is ever sealed under a key that
/// goes away, and replicas keep starting at every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_a_configured_master_key_across_replicas() {
    let (old_hex, new_hex) = ("c3".repeat(32), "d4".repeat(32));
    let old_id = KeyRing::load(Some(&old_hex), Path::new("/nonexistent"))
        .unwrap()
        .current_id();
    let new_ring = KeyRing::load(Some(&new_hex), Path::new("/nonexistent")).unwrap();
    let new_id = new_ring.current_id();
    let mut env = TestEnv::new(Backend::Postgres).await;
    env.vars.insert("MIOSA_MASTER_KEY".into(), old_hex.clone());
    env.vars.insert("MIOSA_SANDBOXES".into(), "false".into());
    let mut a = TestServer::start_in(env).await;
    let store = open_store(&a.env).await;
    let tenant = a.admin.me().await.unwrap().tenant_id.unwrap();
    let mut written = HashMap::new();
    let id = set_secret(&a.admin, "first", "sk-first-0123456789").await;
    written.insert(id, (tenant.clone(), "sk-first-0123456789".to_owned()));

    // Step 1: a replica with the new key and the old one as previous starts
    // and still seals under the old key, which every replica holds.
    let new_with_old = [
        ("MIOSA_MASTER_KEY", new_hex.as_str()),
        ("MIOSA_PREVIOUS_MASTER_KEYS", old_hex.as_str()),
    ];
    let (b, b_env) = replica(&a.env, &new_with_old).await;
    let b = b.expect("a replica with the new key and the old one starts");
    let on_b = miosa_client::Client::new(b.url(), Some(a.admin_key.clone()));
    let id = set_secret(&on_b, "second", "sk-second-0123456789").await;
    written.insert(id, (tenant.clone(), "sk-second-0123456789".to_owned()));
    assert_eq!(store.kek_ids_in_use().await.unwrap(), vec![old_id.clone()]);
    assert_eq!(store.sealing_kek().await.unwrap(), Some(old_id.clone()));
    // The new key alone cannot read what is stored: that replica refuses.
    let (c, _c_env) = replica(&a.env, &[("MIOSA_MASTER_KEY", &new_hex)]).await;
    let e = c
        .err()
        .expect("a replica without the old key refuses to start");
    assert!(e.to_string().contains(&old_id), "{e}");

    // Step 2: one rotation, run with the replica's configuration.
    let (code, out, err) = miosa(&b_env, &["admin", "rotate-master-key"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("rewrapped 2 secret versions under {new_id}")),
        "{out}"
    );
    assert!(
        out.contains("MIOSA_PREVIOUS_MASTER_KEYS can be dropped"),
        "{out}"
    );
    for text in [&out, &err] {
        assert!(!text.contains(&new_hex) && !text.contains(&old_hex));
    }
    assert_eq!(store.kek_ids_in_use().await.unwrap(), vec![new_id.clone()]);
    assert_eq!(store.sealing_kek().await.unwrap(), Some(new_id.clone()));

    // A replica still on the old key alone seals nothing any more: it
    // answers 503 rather than store a value under a key about to go away.
    let e = a
        .admin
        .set_secret(
            &serde_json::json!({"name": "late", "value": "sk-late-0123456789",
                                         "scope": "tenant", "expose_as_env": "LATE"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    assert!(e.to_string().contains("master_key_unavailable"), "{e}");
    assert_eq!(store.kek_ids_in_use().await.unwrap(), vec![new_id.clone()]);
    let id = set_secret(&on_b, "third", "sk-third-0123456789").await;
    written.insert(id, (tenant.clone(), "sk-third-0123456789".to_owned()));

    // Step 3: replicas restart with the new key only, and keep starting;
    // one with only the old key cannot.
    a.stop().await;
    let (a2, _a2_env) = replica(&a.env, &[("MIOSA_MASTER_KEY", &new_hex)]).await;
    let a2 = a2.expect("the new key alone now opens everything");
    let on_a2 = miosa_client::Client::new(a2.url(), Some(a.admin_key.clone()));
    let id = set_secret(&on_a2, "fourth", "sk-fourth-0123456789").await;
    written.insert(id, (tenant.clone(), "sk-fourth-0123456789".to_owned()));
    let (stale, _stale_env) = replica(&a.env, &[("MIOSA_MASTER_KEY", &old_hex)]).await;
    assert!(stale.is_err(), "the old key alone cannot start any more");
    assert_eq!(
        assert_all_open(store.as_ref(), &new_ring, &written).await,
        4
    );
    a2.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `n` proxied-request rows for `tenant`, statuses 401, 402, ….
async fn append_requests(store: &dyn Store, tenant: &TenantId, n: u16) {
    let entries: Vec<_> = (0..n)
        .map(|i| {
            let mut e = fixtures::audit_entry(tenant, action::EGRESS_REQUEST);
            e.external_user_id = Some("dr_smith@clinic1.example".into());
            e.request = Some(AuditRequest {
                method: "GET".into(),
                host: "api.openai.com".into(),
                path: "/v1/models".into(),
                status: Some(401 + i),
                bytes_out: 0,
                bytes_in: 10,
                duration_ms: 3,
            });
            e
        })
        .collect();
    store.append_audit(&entries).await.unwrap();
}

fn sqlite3(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 command-line tool (Debian package `sqlite3`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_a_tampered_row() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let store = open_store(&env).await;
    let (a, _) = fixtures::new_tenant(store.as_ref()).await;
    let (b, _) = fixtures::new_tenant(store.as_ref()).await;
    let (empty, _) = fixtures::new_tenant(store.as_ref()).await;
    append_requests(store.as_ref(), &a.id, 2).await;
    append_requests(store.as_ref(), &b.id, 2).await;
    append_requests(store.as_ref(), &a.id, 3).await;

    let (code, out, err) = miosa(&env, &["admin", "audit", "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut expected = vec![
        format!("{} ok: 5 rows, 0 checkpoints, head signed at seq 5", a.id),
        format!("{} ok: 2 rows, 0 checkpoints, head signed at seq 2", b.id),
        format!("{} ok: 0 rows, 0 checkpoints", empty.id),
    ];
    expected.sort();
    assert_eq!(lines, expected);

    let (code, out, _) = miosa(
        &env,
        &["admin", "audit", "verify", "--tenant", b.id.as_str()],
        &[],
    );
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("{} ok: 2 rows, 1 checkpoint, head signed at seq 2", b.id).as_str()
        )
    );

    // Someone with write access to the database file changes a status.
    let chain = store.audit_chain(&a.id, 0, 100).await.unwrap();
    let victim = &chain[1];
    assert_eq!(victim.seq, 2);
    let db = env.data_dir().join("miosa.db");
    assert!(db.exists(), "the default database path");
    sqlite3(
        &db,
        &format!(
            "UPDATE audit_events SET request_status = 200 WHERE tenant_id = '{}' AND seq = 2",
            a.id
        ),
    );

    let (code, out, err) = miosa(&env, &["admin", "audit", "verify"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let broken = out.lines().find(|l| l.starts_with(a.id.as_str())).unwrap();
    assert_eq!(
        broken,
        format!(
            "{} BROKEN at seq 2 ({}): hash does not match the row's content (the row was changed)",
            a.id, victim.entry.id
        )
    );
    assert!(out.contains(&format!("{} ok: 2 rows", b.id)), "{out}");

    // Rewriting every hash after the change, and the head, makes the
    // chain link again — but not match the checkpoint signed before, and
    // the signing key is not in the database to sign a new one.
    let tampered = store.audit_chain(&a.id, 0, 100).await.unwrap();
    let mut prev = (tampered[0].seq, tampered[0].hash.clone());
    let mut sql = String::new();
    for ev in &tampered[1..] {
        let relinked = ev.entry.clone().link(Some((prev.0, prev.1.as_str())));
        sql.push_str(&format!(
            "UPDATE audit_events SET prev_hash = '{}', hash = '{}' WHERE id = '{}';",
            relinked.prev_hash, relinked.hash, ev.entry.id
        ));
        prev = (relinked.seq, relinked.hash);
    }
    sql.push_str(&format!(
        "UPDATE audit_heads SET hash = '{}' WHERE tenant_id = '{}';",
        prev.1, a.id
    ));
    sqlite3(&db, &sql);
    let mut links = miosa_core::audit::ChainVerifier::default();
    for ev in store.audit_chain(&a.id, 0, 100).await.unwrap() {
        links.check(&ev).unwrap();
    }
    let (code, out, _) = miosa(
        &env,
        &["admin", "audit", "verify", "--tenant", a.id.as_str()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("{} BROKEN at seq 5 (", a.id)) && out.contains("rewritten"),
        "{out}"
    );
    // A forged checkpoint (a signature changed, or made up) is refused.
    sqlite3(
        &db,
        &format!(
            "UPDATE audit_checkpoints SET hash = '{}' WHERE tenant_id = '{}'",
            prev.1, a.id
        ),
    );
    let (code, out, _) = miosa(
        &env,
        &["admin", "audit", "verify", "--tenant", a.id.as_str()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("forged checkpoint"), "{out}");

    // Removing a row (and so hiding the change) breaks the chain as well.
    sqlite3(
        &db,
        &format!(
            "DELETE FROM audit_events WHERE tenant_id = '{}' AND seq = 1",
            b.id
        ),
    );
    let (code, out, _) = miosa(
        &env,
        &["admin", "audit", "verify", "--tenant", b.id.as_str()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!("{} BROKEN at seq 2 (", b.id)) && out.contains("missing"),
        "{out}"
    );

    // Removing the newest rows leaves a chain that links, but no longer
    // reaches the head the appends recorded.
    let (empty_tail, _) = fixtures::new_tenant(store.as_ref()).await;
    append_requests(store.as_ref(), &empty_tail.id, 3).await;
    sqlite3(
        &db,
        &format!(
            "DELETE FROM audit_events WHERE tenant_id = '{}' AND seq = 3",
            empty_tail.id
        ),
    );
    let (code, out, _) = miosa(
        &env,
        &[
            "admin",
            "audit",
            "verify",
            "--tenant",
            empty_tail.id.as_str(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("{} BROKEN at seq 3 (", empty_tail.id))
            && out.contains("newest rows were removed"),
        "{out}"
    );

    let (code, _, err) = miosa(
        &env,
        &[
            "admin",
            "audit",
            "verify",
            "--tenant",
            TenantId::generate().as_str(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no tenant"), "{err}");
}

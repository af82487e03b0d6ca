//! Unit tests: the crypto, the key files, and rotation against a real
//! SQLite store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, Barrier},
};

use miosa_core::{
    time_util::now, NewSecretVersion, SealedValue, SecretId, SecretScope, SubstituteIn, TenantId,
};
use miosa_store::Store;
use miosa_store_postgres::PostgresStore;
use miosa_store_sqlite::SqliteStore;

use crate::{
    keyfile, rotate::rotate, seal::unwrap_key, KeyRing, MasterKey, RotateTarget, VaultError,
    KEY_FILE, NEXT_KEY_FILE,
};

const VALUE: &[u8] = b"sk-live-0123456789abcdef";
const TENANT_A: &[u8] = b"ten_01jdq3x5m8v2k7f4c9n6r1w0ab";
const TENANT_B: &[u8] = b"ten_01jdq3x5m8v2k7f4c9n6r1w0cd";

fn ring() -> KeyRing {
    KeyRing::from_key(MasterKey::generate().unwrap())
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn file_hex(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

// --- sealing ------------------------------------------------------------

#[test]
fn seal_open_round_trip() {
    let ring = ring();
    let sealed = ring.seal(VALUE, TENANT_A).unwrap();
    assert_eq!(sealed.kek_id, ring.current_id());
    assert_eq!(sealed.nonce.len(), crate::NONCE_LEN);
    assert_eq!(sealed.wrapped_key.len(), crate::WRAPPED_KEY_LEN);
    assert!(!sealed.ciphertext.windows(VALUE.len()).any(|w| w == VALUE));
    assert_eq!(ring.open(&sealed, TENANT_A).unwrap().expose(), VALUE);
    let empty = ring.seal(b"", TENANT_A).unwrap();
    assert_eq!(ring.open(&empty, TENANT_A).unwrap().expose(), b"");
}

#[test]
fn another_context_does_not_open() {
    let ring = ring();
    let sealed = ring.seal(VALUE, TENANT_A).unwrap();
    assert!(matches!(
        ring.open(&sealed, TENANT_B),
        Err(VaultError::Decrypt)
    ));
    assert!(matches!(ring.open(&sealed, b""), Err(VaultError::Decrypt)));
}

#[test]
fn tampering_with_any_field_is_detected() {
    let ring = ring();
    let sealed = ring.seal(VALUE, TENANT_A).unwrap();
    let flip = |f: &dyn Fn(&mut SealedValue)| {
        let mut s = sealed.clone();
        f(&mut s);
        ring.open(&s, TENANT_A)
    };
    for i in 0..sealed.ciphertext.len() {
        assert!(matches!(
            flip(&|s| s.ciphertext[i] ^= 1),
            Err(VaultError::Decrypt)
        ));
    }
    for i in 0..sealed.nonce.len() {
        assert!(matches!(
            flip(&|s| s.nonce[i] ^= 0x80),
            Err(VaultError::Decrypt)
        ));
    }
    for i in 0..sealed.wrapped_key.len() {
        assert!(matches!(
            flip(&|s| s.wrapped_key[i] ^= 1),
            Err(VaultError::Unwrap { .. })
        ));
    }
    assert!(matches!(
        flip(&|s| {
            s.ciphertext.pop();
        }),
        Err(VaultError::Decrypt)
    ));
    assert!(matches!(
        flip(&|s| s.nonce.push(0)),
        Err(VaultError::Malformed(_))
    ));
    assert!(matches!(
        flip(&|s| {
            s.wrapped_key.pop();
        }),
        Err(VaultError::Malformed(_))
    ));
    // Swapping in another value's wrapped key (same KEK) fails too.
    let other = ring.seal(VALUE, TENANT_A).unwrap();
    assert!(matches!(
        flip(&|s| s.wrapped_key = other.wrapped_key.clone()),
        Err(VaultError::Decrypt)
    ));
}

#[test]
fn another_master_key_does_not_open() {
    let a = ring();
    let b = ring();
    let sealed = a.seal(VALUE, TENANT_A).unwrap();
    match b.open(&sealed, TENANT_A) {
        Err(e @ VaultError::UnknownKek { .. }) => {
            assert!(e.to_string().contains(&a.current_id()), "{e}");
            assert!(e.to_string().contains(&b.current_id()), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Relabelled as b's: the wrapped key does not unwrap under b.
    let relabelled = SealedValue {
        kek_id: b.current_id(),
        ..sealed
    };
    assert!(matches!(
        b.open(&relabelled, TENANT_A),
        Err(VaultError::Unwrap { .. })
    ));
}

#[test]
fn every_seal_has_a_fresh_data_key_and_nonces() {
    let key = MasterKey::generate().unwrap();
    let ring = KeyRing::from_key(MasterKey::from_hex(&key.to_hex(), "test").unwrap());
    let x = ring.seal(VALUE, TENANT_A).unwrap();
    let y = ring.seal(VALUE, TENANT_A).unwrap();
    assert_ne!(x.nonce, y.nonce);
    assert_ne!(x.ciphertext, y.ciphertext);
    assert_ne!(x.wrapped_key[..12], y.wrapped_key[..12], "wrap nonces");
    let (kx, ky) = (unwrap_key(&key, &x).unwrap(), unwrap_key(&key, &y).unwrap());
    assert_ne!(*kx, *ky, "data keys");
}

#[test]
fn rewrap_keeps_the_value_and_changes_only_the_wrapping() {
    let old = ring();
    let new_key = MasterKey::generate().unwrap();
    let new_hex = new_key.to_hex();
    let sealed = old.seal(VALUE, TENANT_A).unwrap();
    let moved = old.rewrap(&sealed, &new_key).unwrap();
    assert_eq!(moved.kek_id, new_key.id());
    assert_eq!(
        (&moved.nonce, &moved.ciphertext),
        (&sealed.nonce, &sealed.ciphertext)
    );
    let new = KeyRing::from_key(MasterKey::from_hex(&new_hex, "test").unwrap());
    assert_eq!(new.open(&moved, TENANT_A).unwrap().expose(), VALUE);
    assert!(old.open(&moved, TENANT_A).is_err());
}

// --- keys ---------------------------------------------------------------

#[test]
fn master_key_parsing_and_fingerprint() {
    let hex = "ab".repeat(32);
    let k = MasterKey::from_hex(&format!("{hex}\n"), "test").unwrap();
    assert_eq!(
        MasterKey::from_hex(&hex.to_uppercase(), "test")
            .unwrap()
            .id(),
        k.id()
    );
    assert!(k.id().starts_with("kek_"));
    assert_eq!(k.id().len(), 4 + 16);
    assert!(k.id()[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!hex.contains(&k.id()[4..]), "not a prefix of the key");
    assert_ne!(k.id(), MasterKey::generate().unwrap().id());
    for bad in [
        "",
        "ab",
        &"ab".repeat(31),
        &"ab".repeat(33),
        &"zz".repeat(32),
    ] {
        let e = MasterKey::from_hex(bad, "MIOSA_MASTER_KEY").unwrap_err();
        assert!(e.to_string().contains("MIOSA_MASTER_KEY"));
        assert!(bad.is_empty() || !e.to_string().contains(bad));
    }
}

#[test]
fn debug_output_has_no_key_material_or_plaintext() {
    let hex = "5c".repeat(32);
    let ring = KeyRing::from_key(MasterKey::from_hex(&hex, "test").unwrap());
    let key = MasterKey::from_hex(&hex, "test").unwrap();
    let sealed = ring.seal(VALUE, TENANT_A).unwrap();
    let opened = ring.open(&sealed, TENANT_A).unwrap();
    let data_key = unwrap_key(&key, &sealed).unwrap();
    let printed = format!(
        "{key:?} {ring:?} {sealed:?} {opened:?} {:?} {:?}",
        RotateTarget::Key(MasterKey::from_hex(&hex, "test").unwrap()),
        MasterKey::from_hex("nope", "test").unwrap_err()
    );
    assert!(printed.contains(key.id()), "{printed}");
    for needle in [
        hex.clone(),
        "5c, 5c".into(),
        "92, 92".into(),
        hex::encode(*data_key),
        String::from_utf8_lossy(VALUE).into_owned(),
        hex::encode(VALUE),
    ] {
        assert!(!printed.contains(&needle), "{needle} in {printed}");
    }
}

#[test]
fn key_file_is_created_0600_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load(None, dir.path()).unwrap();
    let path = dir.path().join(KEY_FILE);
    assert_eq!(mode(&path), 0o600);
    let text = file_hex(dir.path(), KEY_FILE);
    assert_eq!(text.len(), 65);
    assert!(text.ends_with('\n'));
    assert!(text[..64].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        MasterKey::from_hex(&text, "file").unwrap().id(),
        ring.current_id()
    );
    assert_eq!(ring.key_dir(), Some(dir.path()));
    let sealed = ring.seal(VALUE, TENANT_A).unwrap();

    let again = KeyRing::load(None, dir.path()).unwrap();
    assert_eq!(again.current_id(), ring.current_id());
    assert_eq!(again.open(&sealed, TENANT_A).unwrap().expose(), VALUE);
    assert_eq!(file_hex(dir.path(), KEY_FILE), text);
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_configured_key_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let hex = "0f".repeat(32);
    let ring = KeyRing::load(Some(&hex), dir.path()).unwrap();
    assert_eq!(
        ring.current_id(),
        MasterKey::from_hex(&hex, "t").unwrap().id()
    );
    assert_eq!(ring.key_dir(), None);
    assert!(!dir.path().join(KEY_FILE).exists());
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    KeyRing::load(None, dir.path()).unwrap();
    let path = dir.path().join(KEY_FILE);
    for bad in [0o644, 0o640, 0o604, 0o660] {
        fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
        let e = KeyRing::load(None, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("chmod 600 {}", path.display()))
                && e.contains(&format!("{bad:04o}")),
            "{e}"
        );
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    KeyRing::load(None, dir.path()).unwrap();
}

#[test]
fn a_malformed_key_file_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE);
    for bad in ["", "not-a-key-at-all\n", &format!("{}\n", "ab".repeat(31))] {
        fs::write(&path, bad).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = KeyRing::load(None, dir.path()).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("does not hold a master key"), "{e}");
        assert!(bad.trim().is_empty() || !e.contains(bad.trim()), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), bad, "left alone");
    }
    let next = dir.path().join(NEXT_KEY_FILE);
    fs::write(dir.path().join(KEY_FILE), format!("{}\n", "ab".repeat(32))).unwrap();
    fs::write(&next, "garbage").unwrap();
    fs::set_permissions(&next, fs::Permissions::from_mode(0o600)).unwrap();
    let e = KeyRing::load(None, dir.path()).unwrap_err().to_string();
    assert!(e.contains(NEXT_KEY_FILE), "{e}");
}

#[test]
fn concurrent_first_loads_agree_on_one_key() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (dir, barrier) = (dir.path().to_owned(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    KeyRing::load(None, &dir).unwrap().current_id()
                })
            })
            .collect();
        let ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let on_disk = MasterKey::from_hex(&file_hex(dir.path(), KEY_FILE), "f").unwrap();
        assert_eq!(on_disk.id(), ids[0]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no leftovers");
    }
}

#[test]
fn check_in_use_names_the_missing_key() {
    let ring = ring();
    let other = ring.current_id();
    ring.check_in_use(&[]).unwrap();
    ring.check_in_use(std::slice::from_ref(&other)).unwrap();
    let e = ring
        .check_in_use(&[other.clone(), "kek_00000000deadbeef".into()])
        .unwrap_err();
    assert!(matches!(e, VaultError::KekNotConfigured { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("kek_00000000deadbeef")
            && msg.contains("not the configured master key")
            && msg.contains(&other),
        "{msg}"
    );
}

#[test]
fn a_file_ring_follows_a_rotation_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let server = KeyRing::load(None, dir.path()).unwrap();
    let early = KeyRing::load(None, dir.path()).unwrap();
    let old_id = server.current_id();
    // Another process starts a rotation: the next key appears.
    let (next, created) = keyfile::load_or_create(dir.path(), NEXT_KEY_FILE).unwrap();
    assert!(created);
    assert_eq!(mode(&dir.path().join(NEXT_KEY_FILE)), 0o600);
    // New values go under the next key at once.
    let sealed = server.seal(VALUE, TENANT_A).unwrap();
    assert_eq!(sealed.kek_id, next.id());
    server
        .check_in_use(&[old_id.clone(), next.id().into()])
        .unwrap();
    // A ring loaded before the rotation opens a value under a key it never
    // saw by re-reading the files; a configured key cannot.
    assert_eq!(early.key_ids(), vec![old_id.clone()]);
    assert_eq!(early.open(&sealed, TENANT_A).unwrap().expose(), VALUE);
    let configured =
        KeyRing::from_key(MasterKey::from_hex(&file_hex(dir.path(), KEY_FILE), "f").unwrap());
    assert!(matches!(
        configured.open(&sealed, TENANT_A),
        Err(VaultError::UnknownKek { .. })
    ));
    let restarted = KeyRing::load(None, dir.path()).unwrap();
    assert_eq!(restarted.current_id(), next.id());

    keyfile::promote_next(dir.path(), &next).unwrap();
    assert!(!dir.path().join(NEXT_KEY_FILE).exists());
    let fresh = KeyRing::load(None, dir.path()).unwrap();
    assert_eq!(fresh.current_id(), next.id());
    assert_eq!(fresh.open(&sealed, TENANT_A).unwrap().expose(), VALUE);
    assert_eq!(server.seal(VALUE, TENANT_A).unwrap().kek_id, next.id());
    assert_eq!(early.seal(VALUE, TENANT_A).unwrap().kek_id, next.id());
    // Promoting again (a concurrent run did it) is not an error.
    keyfile::promote_next(dir.path(), &next).unwrap();
}

// --- rotation against a real store ---------------------------------------

struct Fixture {
    // Dropped in this order: the store's connections before its database.
    store: Box<dyn Store>,
    _pg: Option<miosa_store_conformance::PgTestDb>,
    _dir: tempfile::TempDir,
    /// (secret, version) → (tenant, value).
    written: HashMap<(SecretId, u32), (TenantId, Vec<u8>)>,
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, pg): (Box<dyn Store>, _) = match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("miosa.db").display());
                (Box::new(SqliteStore::connect(&url).await.unwrap()), None)
            }
            Backend::Postgres => {
                let db = miosa_store_conformance::PgTestDb::create().await;
                let store = PostgresStore::connect(&db.url).await.unwrap();
                (Box::new(store), Some(db))
            }
        };
        Self {
            store,
            _pg: pg,
            _dir: dir,
            written: HashMap::new(),
        }
    }

    /// `secrets` secrets with `versions` versions each in each of two
    /// tenants, sealed by `ring`.
    async fn write(&mut self, ring: &KeyRing, secrets: usize, versions: u32) {
        for _ in 0..2 {
            let (tenant, _) =
                miosa_store_conformance::fixtures::new_tenant(self.store.as_ref()).await;
            for s in 0..secrets {
                let id = SecretId::generate();
                for v in 1..=versions {
                    let value = format!("sk-value-{}-{s}-{v}", tenant.id).into_bytes();
                    let new = NewSecretVersion {
                        tenant_id: tenant.id.clone(),
                        id: id.clone(),
                        name: format!("secret-{s}"),
                        scope: SecretScope::Tenant,
                        scope_key: None,
                        workspace_id: None,
                        expose_as_env: format!("SECRET_{s}"),
                        allowed_hosts: Vec::new(),
                        substitute_in: SubstituteIn::HEADERS,
                        version: v,
                        sealed: ring.seal(&value, tenant.id.as_str().as_bytes()).unwrap(),
                        at: now(),
                    };
                    let stored = self.store.put_secret(&new).await.unwrap();
                    assert_eq!(stored.version, v);
                    self.written
                        .insert((stored.id, v), (tenant.id.clone(), value));
                }
            }
        }
    }

    /// Every stored version, with what was written.
    async fn stored(&self) -> Vec<(SealedValue, TenantId, Vec<u8>)> {
        let all = self
            .store
            .sealed_versions_not_under("kek_none", 10_000)
            .await
            .unwrap();
        assert_eq!(all.len(), self.written.len());
        all.into_iter()
            .map(|v| {
                let (t, value) = self.written[&(v.secret_id, v.version)].clone();
                (v.sealed, t, value)
            })
            .collect()
    }

    async fn assert_all_open(&self, ring: &KeyRing) {
        for (sealed, tenant, value) in self.stored().await {
            assert_eq!(
                ring.open(&sealed, tenant.as_str().as_bytes())
                    .unwrap()
                    .expose(),
                value
            );
        }
    }

    async fn assert_none_open(&self, ring: &KeyRing) {
        for (sealed, tenant, _) in self.stored().await {
            assert!(ring.open(&sealed, tenant.as_str().as_bytes()).is_err());
        }
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

// Each store-backed story runs on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_on_sqlite() {
    rotation_rewraps_every_version_under_a_new_key_file(Backend::Sqlite).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_on_postgres() {
    rotation_rewraps_every_version_under_a_new_key_file(Backend::Postgres).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_rotation_on_sqlite() {
    a_rotation_interrupted_mid_way_is_finished_by_a_rerun(Backend::Sqlite).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_rotation_on_postgres() {
    a_rotation_interrupted_mid_way_is_finished_by_a_rerun(Backend::Postgres).await
}

async fn rotation_rewraps_every_version_under_a_new_key_file(backend: Backend) {
    let mut fx = Fixture::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load(None, dir.path()).unwrap();
    fx.write(&ring, 3, 2).await;
    let old_hex = file_hex(dir.path(), KEY_FILE);
    let old_id = ring.current_id();
    assert_eq!(
        fx.store.kek_ids_in_use().await.unwrap(),
        vec![old_id.clone()]
    );

    let report = rotate(fx.store.as_ref(), &ring, RotateTarget::NewKeyFile, 5, None)
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 12);
    assert!(!report.resumed);
    assert_eq!(report.key_file, Some(dir.path().join(KEY_FILE)));
    assert_ne!(report.new_kek_id, old_id);

    let new_hex = file_hex(dir.path(), KEY_FILE);
    assert_ne!(new_hex, old_hex);
    assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
    assert!(!dir.path().join(NEXT_KEY_FILE).exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_eq!(
        fx.store.kek_ids_in_use().await.unwrap(),
        vec![report.new_kek_id.clone()]
    );

    let fresh = KeyRing::load(None, dir.path()).unwrap();
    assert_eq!(fresh.current_id(), report.new_kek_id);
    assert_eq!(fresh.key_ids(), vec![report.new_kek_id.clone()]);
    fx.assert_all_open(&fresh).await;
    // The ring that rotated keeps working, and seals under the new key.
    fx.assert_all_open(&ring).await;
    assert_eq!(
        ring.seal(VALUE, TENANT_A).unwrap().kek_id,
        report.new_kek_id
    );
    // The old key alone opens nothing, even with the new ID put back.
    let old = KeyRing::from_key(MasterKey::from_hex(&old_hex, "old").unwrap());
    fx.assert_none_open(&old).await;
    let e = old
        .check_in_use(&fx.store.kek_ids_in_use().await.unwrap())
        .unwrap_err();
    assert!(e.to_string().contains(&report.new_kek_id), "{e}");
    fresh
        .check_in_use(&fx.store.kek_ids_in_use().await.unwrap())
        .unwrap();

    // A second rotation moves on to yet another key.
    let again = crate::rotate_master_key(fx.store.as_ref(), &fresh, RotateTarget::NewKeyFile)
        .await
        .unwrap();
    assert_eq!(again.rewrapped, 12);
    assert_ne!(again.new_kek_id, report.new_kek_id);
    fx.assert_all_open(&KeyRing::load(None, dir.path()).unwrap())
        .await;
}

async fn a_rotation_interrupted_mid_way_is_finished_by_a_rerun(backend: Backend) {
    let mut fx = Fixture::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load(None, dir.path()).unwrap();
    fx.write(&ring, 4, 1).await;
    let old_id = ring.current_id();
    let old_hex = file_hex(dir.path(), KEY_FILE);

    // The first run dies after one batch of 3.
    let partial = rotate(
        fx.store.as_ref(),
        &ring,
        RotateTarget::NewKeyFile,
        3,
        Some(1),
    )
    .await
    .unwrap();
    assert_eq!(partial.rewrapped, 3);
    let new_id = partial.new_kek_id.clone();
    assert_eq!(file_hex(dir.path(), KEY_FILE), old_hex, "not yet replaced");
    assert_eq!(mode(&dir.path().join(NEXT_KEY_FILE)), 0o600);
    let mut in_use = fx.store.kek_ids_in_use().await.unwrap();
    in_use.sort();
    let mut both = vec![old_id.clone(), new_id.clone()];
    both.sort();
    assert_eq!(in_use, both);

    // Meanwhile a restarted server opens everything and seals under the
    // next key.
    let restarted = KeyRing::load(None, dir.path()).unwrap();
    restarted.check_in_use(&in_use).unwrap();
    fx.assert_all_open(&restarted).await;
    assert_eq!(restarted.current_id(), new_id);
    fx.write(&restarted, 1, 1).await;

    // The rerun (a new process) picks up master-key.next and finishes.
    let rerun_ring = KeyRing::load(None, dir.path()).unwrap();
    let report = crate::rotate_master_key(fx.store.as_ref(), &rerun_ring, RotateTarget::NewKeyFile)
        .await
        .unwrap();
    assert!(report.resumed);
    assert_eq!(report.new_kek_id, new_id);
    assert_eq!(report.rewrapped, 10 - 3 - 2);
    assert!(!dir.path().join(NEXT_KEY_FILE).exists());
    assert_eq!(
        fx.store.kek_ids_in_use().await.unwrap(),
        vec![new_id.clone()]
    );
    let fresh = KeyRing::load(None, dir.path()).unwrap();
    assert_eq!(fresh.key_ids(), vec![new_id]);
    fx.assert_all_open(&fresh).await;
    fx.assert_none_open(&KeyRing::from_key(
        MasterKey::from_hex(&old_hex, "old").unwrap(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_of_a_configured_key() {
    let mut fx = Fixture::new(Backend::Sqlite).await;
    let (old_hex, new_hex) = ("11".repeat(32), "22".repeat(32));
    let ring = KeyRing::from_key(MasterKey::from_hex(&old_hex, "old").unwrap());
    fx.write(&ring, 2, 2).await;

    let wrong = rotate(fx.store.as_ref(), &ring, RotateTarget::NewKeyFile, 3, None).await;
    assert!(
        wrong
            .unwrap_err()
            .to_string()
            .contains("MIOSA_NEW_MASTER_KEY"),
        "a configured key needs the new one"
    );
    let same = RotateTarget::Key(MasterKey::from_hex(&old_hex, "new").unwrap());
    assert!(rotate(fx.store.as_ref(), &ring, same, 3, None)
        .await
        .is_err());

    // Interrupted, then rerun with both keys.
    let target = || RotateTarget::Key(MasterKey::from_hex(&new_hex, "new").unwrap());
    rotate(fx.store.as_ref(), &ring, target(), 3, Some(1))
        .await
        .unwrap();
    let both = KeyRing::from_key(MasterKey::from_hex(&old_hex, "old").unwrap());
    let report = crate::rotate_master_key(fx.store.as_ref(), &both, target())
        .await
        .unwrap();
    assert_eq!(report.rewrapped, 8 - 3);
    assert_eq!(report.key_file, None);
    let new = KeyRing::load(Some(&new_hex), Path::new("/nonexistent")).unwrap();
    assert_eq!(
        fx.store.kek_ids_in_use().await.unwrap(),
        vec![new.current_id()]
    );
    fx.assert_all_open(&new).await;
    fx.assert_none_open(&KeyRing::from_key(
        MasterKey::from_hex(&old_hex, "old").unwrap(),
    ))
    .await;

    // A file-backed ring cannot be given a key.
    let dir = tempfile::tempdir().unwrap();
    let files = KeyRing::load(None, dir.path()).unwrap();
    let e = rotate(fx.store.as_ref(), &files, target(), 3, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("only used with MIOSA_MASTER_KEY"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_stops_at_a_value_no_key_opens() {
    let mut fx = Fixture::new(Backend::Sqlite).await;
    let lost = ring();
    fx.write(&lost, 1, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load(None, dir.path()).unwrap();
    let e = rotate(fx.store.as_ref(), &ring, RotateTarget::NewKeyFile, 3, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&lost.current_id()), "{e}");
    assert!(dir.path().join(NEXT_KEY_FILE).exists(), "left for a rerun");
    assert!(!file_hex(dir.path(), KEY_FILE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_at_once_agree_on_the_new_key() {
    let mut fx = Fixture::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::load(None, dir.path()).unwrap();
    fx.write(&ring, 5, 1).await;
    let (a, b) = (
        KeyRing::load(None, dir.path()).unwrap(),
        KeyRing::load(None, dir.path()).unwrap(),
    );
    let (ra, rb) = tokio::join!(
        rotate(fx.store.as_ref(), &a, RotateTarget::NewKeyFile, 2, None),
        rotate(fx.store.as_ref(), &b, RotateTarget::NewKeyFile, 2, None),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.new_kek_id, rb.new_kek_id);
    let fresh = KeyRing::load(None, dir.path()).unwrap();
    assert_eq!(fresh.current_id(), ra.new_kek_id);
    assert_eq!(
        fx.store.kek_ids_in_use().await.unwrap(),
        vec![ra.new_kek_id.clone()]
    );
    fx.assert_all_open(&fresh).await;
}

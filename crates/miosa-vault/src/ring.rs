//! The key-encryption keys a process knows: the one it seals with, and any
//! others it can open with while a rotation is under way.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard},
};

use miosa_core::SealedValue;

use crate::{
    error::{VaultError, VaultResult},
    key::MasterKey,
    keyfile::{self, KEY_FILE, NEXT_KEY_FILE},
    seal::{self, Plaintext},
};

/// The current master key plus others known for opening.
///
/// A ring loaded from the data dir follows its key files: sealing re-reads
/// them first, so a process never seals under a key that a rotation in
/// another process has moved away from; opening a value under an unknown
/// key re-reads them once before failing.
pub struct KeyRing {
    /// The data dir holding the key files; `None` for a configured key.
    dir: Option<PathBuf>,
    keys: RwLock<Keys>,
}

struct Keys {
    current: Arc<MasterKey>,
    /// Every known key, `current` included.
    all: Vec<Arc<MasterKey>>,
}

impl Keys {
    /// Adds `key` unless a key with its ID is known; returns the known one.
    fn add(&mut self, key: MasterKey) -> Arc<MasterKey> {
        if let Some(k) = self.all.iter().find(|k| k.id() == key.id()) {
            return k.clone();
        }
        let key = Arc::new(key);
        self.all.push(key.clone());
        key
    }
}

impl KeyRing {
    /// The configured master key (`MIOSA_MASTER_KEY`, 64 hex characters) if
    /// given; otherwise the key file `<data_dir>/master-key`, created at
    /// first start, plus `master-key.next` if a rotation is under way.
    pub fn load(configured_hex: Option<&str>, data_dir: &Path) -> VaultResult<Self> {
        match configured_hex {
            Some(hex) => Ok(Self::from_key(MasterKey::from_hex(
                hex,
                "MIOSA_MASTER_KEY",
            )?)),
            None => Self::load_files(data_dir),
        }
    }

    /// The key files of `data_dir` (see [`KeyRing::load`]).
    pub fn load_files(data_dir: &Path) -> VaultResult<Self> {
        let (key, created) = keyfile::load_or_create(data_dir, KEY_FILE)?;
        if created {
            tracing::info!(
                path = %data_dir.join(KEY_FILE).display(),
                kek_id = key.id(),
                "generated a new master key; back it up: without it no secret can be read"
            );
        }
        let ring = Self::from_key(key);
        let ring = Self {
            dir: Some(data_dir.to_owned()),
            ..ring
        };
        ring.refresh()?;
        Ok(ring)
    }

    /// A ring of one key that is not backed by files.
    pub fn from_key(key: MasterKey) -> Self {
        let current = Arc::new(key);
        Self {
            dir: None,
            keys: RwLock::new(Keys {
                all: vec![current.clone()],
                current,
            }),
        }
    }

    /// Adds a key for opening (sealing still uses the current key).
    pub fn with_key(self, key: MasterKey) -> Self {
        self.write().add(key);
        self
    }

    /// Adds earlier master keys (`MIOSA_PREVIOUS_MASTER_KEYS`, 64 hex
    /// characters each) for opening, and for sealing while the database
    /// still names one of them as its sealing key.
    pub fn with_previous(self, hexes: &[String], origin: &str) -> VaultResult<Self> {
        let mut ring = self;
        for hex in hexes {
            ring = ring.with_key(MasterKey::from_hex(hex, origin)?);
        }
        Ok(ring)
    }

    /// Whether this ring holds the key `kek_id` (re-reading the key files
    /// once if it does not).
    pub fn holds(&self, kek_id: &str) -> bool {
        self.key(kek_id).is_ok()
    }

    /// The ID of the key new values are sealed under.
    pub fn current_id(&self) -> String {
        self.read().current.id().to_owned()
    }

    /// The IDs of every key this ring can open with.
    pub fn key_ids(&self) -> Vec<String> {
        self.read().all.iter().map(|k| k.id().to_owned()).collect()
    }

    /// The data dir whose key files this ring follows, if any.
    pub fn key_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Seals `plaintext` for the context `aad` (the tenant ID) under a fresh
    /// data key wrapped by the current key.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> VaultResult<SealedValue> {
        self.refresh()?;
        let current = self.read().current.clone();
        seal::seal(&current, plaintext, aad)
    }

    /// Seals under the key `kek_id` (the database's recorded sealing key),
    /// which this ring must hold: `UnknownKek` otherwise.
    pub fn seal_under(
        &self,
        kek_id: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> VaultResult<SealedValue> {
        seal::seal(&*self.key(kek_id)?, plaintext, aad)
    }

    /// Opens a value sealed for the context `aad`.
    pub fn open(&self, sealed: &SealedValue, aad: &[u8]) -> VaultResult<Plaintext> {
        seal::open(&*self.key(&sealed.kek_id)?, sealed, aad)
    }

    /// The value with its data key re-wrapped under `to` (nonce and
    /// ciphertext unchanged).
    pub fn rewrap(&self, sealed: &SealedValue, to: &MasterKey) -> VaultResult<SealedValue> {
        seal::rewrap(&*self.key(&sealed.kek_id)?, to, sealed)
    }

    /// Fails unless every key-encryption key in `ids` (those of stored
    /// values, `Store::kek_ids_in_use`) is in this ring, so a server with
    /// the wrong key refuses to start instead of failing every request.
    pub fn check_in_use(&self, ids: &[String]) -> VaultResult<()> {
        for id in ids {
            match self.key(id) {
                Ok(_) => {}
                Err(VaultError::UnknownKek { kek_id, .. }) => {
                    return Err(VaultError::KekNotConfigured {
                        kek_id,
                        current: self.current_id(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The key with this ID; a file-backed ring re-reads its files once if
    /// the ID is unknown (another process may have rotated).
    pub(crate) fn key(&self, id: &str) -> VaultResult<Arc<MasterKey>> {
        let find = || self.read().all.iter().find(|k| k.id() == id).cloned();
        if let Some(k) = find() {
            return Ok(k);
        }
        if self.dir.is_some() {
            self.refresh()?;
            if let Some(k) = find() {
                return Ok(k);
            }
        }
        Err(VaultError::UnknownKek {
            kek_id: id.to_owned(),
            known: self.key_ids().join(", "),
        })
    }

    /// Adds a key for opening and returns the ring's copy of it.
    pub(crate) fn add(&self, key: MasterKey) -> Arc<MasterKey> {
        self.write().add(key)
    }

    /// Re-reads the key files (no-op for a configured key): both become
    /// known, and `master-key.next`, if present, is the key to seal with —
    /// it is on disk before the rotation re-wraps anything under it and only
    /// ever becomes `master-key`, so a value sealed under it stays readable
    /// whether or not the rotation has finished.
    fn refresh(&self) -> VaultResult<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(KEY_FILE);
        let key = keyfile::read(&path)?.ok_or_else(|| VaultError::KeyFile {
            path,
            reason: "was removed while in use; restore it from a backup".into(),
        })?;
        let next = keyfile::read(&dir.join(NEXT_KEY_FILE))?;
        let mut keys = self.write();
        let mut current = keys.add(key);
        if let Some(next) = next {
            current = keys.add(next);
        }
        keys.current = current;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Keys> {
        // The lock guards plain replacements that cannot be left half-done.
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current_id())
            .field("keys", &self.key_ids())
            .field("key_dir", &self.dir)
            .finish()
    }
}

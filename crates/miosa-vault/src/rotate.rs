//! Moving every stored value to a new master key.
//!
//! Only the wrapped data keys change; values are never decrypted. With key
//! files the new key is written to `master-key.next` before anything is
//! re-wrapped under it and replaces `master-key` only when nothing is left
//! under another key, so a run that dies at any point leaves every value
//! readable from the files, and a rerun picks up `master-key.next` and
//! finishes the job.

use std::{collections::HashSet, path::PathBuf};

use miosa_core::{AadVersion, SealedVersion, SecretId};
use miosa_store::Store;

use crate::{
    error::{VaultError, VaultResult},
    key::MasterKey,
    keyfile::{self, NEXT_KEY_FILE},
    ring::KeyRing,
};

/// Versions re-wrapped per store transaction.
pub const REWRAP_BATCH: u32 = 500;

/// The key to rotate to.
#[derive(Debug)]
pub enum RotateTarget {
    /// For a ring backed by key files: a new key generated into
    /// `master-key.next` (or the one already there from an interrupted run).
    NewKeyFile,
    /// For a configured key: this one (`MIOSA_NEW_MASTER_KEY`).
    Key(MasterKey),
    /// The ring's current key (the configured `MIOSA_MASTER_KEY`, the
    /// previous ones given as `MIOSA_PREVIOUS_MASTER_KEYS`): every replica
    /// already holds it, so none is left unable to seal or open.
    Current,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// The key every stored value is now wrapped under.
    pub new_kek_id: String,
    /// Versions re-wrapped by this run.
    pub rewrapped: u64,
    /// Latest versions re-sealed from the legacy associated data (the
    /// tenant alone) to the secret's full context by this run.
    pub resealed: u64,
    /// Audit checkpoints re-signed with the new key's signing key.
    pub resigned: u64,
    /// True if this run finished one that was interrupted.
    pub resumed: bool,
    /// The key file now holding the new key (file-backed rings only).
    pub key_file: Option<PathBuf>,
}

/// Re-wraps every stored version under the new key and makes it current.
///
/// `ring` must be able to open every stored version. Values sealed by other
/// processes while this runs are picked up: file-backed rings seal under
/// `master-key.next` as soon as it exists, and the store is swept once more
/// after the rename, while the old key is still in memory.
pub async fn rotate_master_key(
    store: &dyn Store,
    ring: &KeyRing,
    target: RotateTarget,
) -> VaultResult<RotateReport> {
    rotate(store, ring, target, REWRAP_BATCH, None).await
}

/// [`rotate_master_key`] in batches of `batch`, stopping after
/// `max_batches` batches when given (what a crash mid-way leaves behind,
/// for tests).
pub(crate) async fn rotate(
    store: &dyn Store,
    ring: &KeyRing,
    target: RotateTarget,
    batch: u32,
    max_batches: Option<usize>,
) -> VaultResult<RotateReport> {
    match (target, ring.key_dir()) {
        (RotateTarget::NewKeyFile, Some(dir)) => {
            let (next, created) = keyfile::load_or_create(dir, NEXT_KEY_FILE)?;
            let next = ring.add(next);
            if !created {
                tracing::info!(kek_id = next.id(), "resuming an interrupted rotation");
            }
            // Sealing now uses `master-key.next`, on every process.
            store.set_sealing_kek(next.id()).await?;
            let resealed = reseal_legacy(store, ring, next.id(), batch).await?;
            let mut rewrapped = rewrap_all(store, ring, &next, batch, max_batches).await?;
            if max_batches.is_some() {
                return Ok(RotateReport {
                    new_kek_id: next.id().to_owned(),
                    rewrapped,
                    resealed,
                    resigned: 0,
                    resumed: !created,
                    key_file: None,
                });
            }
            let resigned = resign_checkpoints(store, ring, &next, batch).await?;
            let key_file = keyfile::promote_next(dir, &next)?;
            // A process that sealed just before `master-key.next` appeared
            // may have committed after the last batch.
            rewrapped += rewrap_all(store, ring, &next, batch, None).await?;
            Ok(RotateReport {
                new_kek_id: next.id().to_owned(),
                rewrapped,
                resealed,
                resigned,
                resumed: !created,
                key_file: Some(key_file),
            })
        }
        (RotateTarget::Key(new), None) => {
            if new.id() == ring.current_id() {
                return Err(VaultError::Rotation(
                    "the new master key is the current one; generate a new key with \
                     `openssl rand -hex 32`"
                        .into(),
                ));
            }
            let new = ring.add(new);
            to_key(store, ring, &new, batch, max_batches).await
        }
        (RotateTarget::Current, None) => {
            let current = ring.key(&ring.current_id())?;
            if store.sealing_kek().await?.as_deref() == Some(current.id())
                && store
                    .kek_ids_in_use()
                    .await?
                    .iter()
                    .all(|k| k == current.id())
                && store.legacy_sealed_versions(1).await?.is_empty()
            {
                return Err(VaultError::Rotation(format!(
                    "everything is already under the configured master key {}; to rotate, \
                     give every replica a new MIOSA_MASTER_KEY with the current one in \
                     MIOSA_PREVIOUS_MASTER_KEYS, then run this again",
                    current.id()
                )));
            }
            to_key(store, ring, &current, batch, max_batches).await
        }
        (RotateTarget::Current, Some(_)) => Err(VaultError::Rotation(
            "with the key file, the rotation generates the new key itself".into(),
        )),
        (RotateTarget::NewKeyFile, None) => Err(VaultError::Rotation(
            "the master key is configured (MIOSA_MASTER_KEY), so the new key must be given \
             too: set MIOSA_NEW_MASTER_KEY to 64 new hex characters (`openssl rand -hex 32`)"
                .into(),
        )),
        (RotateTarget::Key(_), Some(_)) => Err(VaultError::Rotation(
            "MIOSA_NEW_MASTER_KEY is only used with MIOSA_MASTER_KEY; with the key file, the \
             rotation generates the new key itself"
                .into(),
        )),
    }
}

/// Records `new` as the sealing key (every replica then seals under it, or
/// refuses to seal if it lacks it), re-seals legacy values under it and
/// re-wraps everything else.
async fn to_key(
    store: &dyn Store,
    ring: &KeyRing,
    new: &MasterKey,
    batch: u32,
    max_batches: Option<usize>,
) -> VaultResult<RotateReport> {
    store.set_sealing_kek(new.id()).await?;
    let resealed = reseal_legacy(store, ring, new.id(), batch).await?;
    let rewrapped = rewrap_all(store, ring, new, batch, max_batches).await?;
    let resigned = match max_batches {
        Some(_) => 0,
        None => resign_checkpoints(store, ring, new, batch).await?,
    };
    Ok(RotateReport {
        new_kek_id: new.id().to_owned(),
        rewrapped,
        resealed,
        resigned,
        resumed: false,
        key_file: None,
    })
}

/// Re-seals every secret's latest version still sealed for its tenant
/// alone (stored before values were bound to their secret) for the secret's
/// full context, under `kek_id`; returns how many. Older versions are never
/// opened again and keep their legacy sealing.
async fn reseal_legacy(
    store: &dyn Store,
    ring: &KeyRing,
    kek_id: &str,
    batch_size: u32,
) -> VaultResult<u64> {
    let mut done: HashSet<(SecretId, u32)> = HashSet::new();
    loop {
        let batch = store.legacy_sealed_versions(batch_size).await?;
        if batch.is_empty() {
            return Ok(done.len() as u64);
        }
        let mut rows = Vec::with_capacity(batch.len());
        for (secret, v) in batch {
            if !done.insert((v.secret_id.clone(), v.version)) {
                return Err(VaultError::Rotation(format!(
                    "version {} of {} is still sealed the legacy way after being re-sealed",
                    v.version, v.secret_id
                )));
            }
            let old_aad = secret.associated_data(v.version, AadVersion::Tenant);
            let plain = ring.open(&v.sealed, &old_aad)?;
            let new_aad = secret.associated_data(v.version, AadVersion::Bound);
            rows.push(SealedVersion {
                sealed: ring.seal_under(kek_id, plain.expose(), &new_aad)?,
                ..v
            });
        }
        store.rewrap_versions(&rows).await?;
        tracing::info!(
            resealed = done.len(),
            "re-sealed legacy secret values bound to their secrets"
        );
    }
}

/// Re-signs every audit checkpoint not under `new` with its signing key,
/// after checking the old signature (a forged checkpoint is never
/// laundered: the rotation stops and says which). Returns how many.
async fn resign_checkpoints(
    store: &dyn Store,
    ring: &KeyRing,
    new: &MasterKey,
    batch_size: u32,
) -> VaultResult<u64> {
    let signer = ring.audit_signer(new.id())?;
    let mut done = 0u64;
    loop {
        let batch = store
            .audit_checkpoints_not_under(new.id(), batch_size)
            .await?;
        if batch.is_empty() {
            return Ok(done);
        }
        let mut rows = Vec::with_capacity(batch.len());
        for mut cp in batch {
            if !ring.verify_checkpoint(&cp)? {
                return Err(VaultError::Rotation(format!(
                    "the audit checkpoint of {} at seq {} does not verify; run `miosa admin audit \
                     verify` and investigate before rotating",
                    cp.tenant_id, cp.seq
                )));
            }
            signer.sign(&mut cp);
            rows.push(cp);
        }
        store.resign_audit_checkpoints(&rows).await?;
        done += rows.len() as u64;
    }
}

/// Re-wraps batches of versions not under `new` until none remain (or
/// `max_batches` are done); returns how many were re-wrapped.
async fn rewrap_all(
    store: &dyn Store,
    ring: &KeyRing,
    new: &MasterKey,
    batch_size: u32,
    max_batches: Option<usize>,
) -> VaultResult<u64> {
    let mut done: HashSet<(SecretId, u32)> = HashSet::new();
    let mut batches = 0;
    while max_batches.is_none_or(|max| batches < max) {
        let batch = store
            .sealed_versions_not_under(new.id(), batch_size)
            .await?;
        if batch.is_empty() {
            break;
        }
        let mut rows = Vec::with_capacity(batch.len());
        for v in batch {
            if !done.insert((v.secret_id.clone(), v.version)) {
                // Guards against looping forever on a store that does not
                // record re-wraps.
                return Err(VaultError::Rotation(format!(
                    "version {} of {} is still not under {} after being re-wrapped",
                    v.version,
                    v.secret_id,
                    new.id()
                )));
            }
            rows.push(SealedVersion {
                sealed: ring.rewrap(&v.sealed, new)?,
                ..v
            });
        }
        store.rewrap_versions(&rows).await?;
        batches += 1;
        tracing::info!(
            rewrapped = done.len(),
            kek_id = new.id(),
            "re-wrapped a batch of secret versions"
        );
    }
    Ok(done.len() as u64)
}

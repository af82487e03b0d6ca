//! Signing audit checkpoints with a key that is not in the database: an
//! Ed25519 key pair derived from a master key. Whoever can write the
//! database but lacks the master key cannot forge a checkpoint; whoever has
//! the public key (`GET /v1/audit/checkpoints` shows it) can check one.

use miosa_core::AuditCheckpoint;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use crate::{error::VaultResult, key::MasterKey, ring::KeyRing, VaultError};

/// Derivation context of the signing key's seed.
const CONTEXT: &[u8] = b"miosa audit checkpoint signing key v1";

/// The checkpoint signing key of one master key.
pub struct AuditSigner {
    kek_id: String,
    pair: Ed25519KeyPair,
}

impl AuditSigner {
    fn of(key: &MasterKey) -> VaultResult<Self> {
        let seed = key.derive(CONTEXT);
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_slice())
            .map_err(|_| VaultError::Malformed("cannot derive the audit signing key"))?;
        Ok(Self {
            kek_id: key.id().to_owned(),
            pair,
        })
    }

    /// The master key it derives from.
    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs a checkpoint's message, setting its `kek_id` and `signature`.
    pub fn sign(&self, cp: &mut AuditCheckpoint) {
        cp.kek_id = self.kek_id.clone();
        cp.signature = self.pair.sign(&cp.signed_message()).as_ref().to_vec();
    }
}

impl KeyRing {
    /// The signer of master key `kek_id` (which this ring must hold).
    pub fn audit_signer(&self, kek_id: &str) -> VaultResult<AuditSigner> {
        AuditSigner::of(&*self.key(kek_id)?)
    }

    /// Whether `cp` carries a valid signature by its `kek_id`'s key.
    /// `UnknownKek` when this ring lacks that key (it cannot tell).
    pub fn verify_checkpoint(&self, cp: &AuditCheckpoint) -> VaultResult<bool> {
        let public = self.audit_signer(&cp.kek_id)?.public_key();
        Ok(UnparsedPublicKey::new(&ED25519, public)
            .verify(&cp.signed_message(), &cp.signature)
            .is_ok())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use miosa_core::TenantId;

    fn checkpoint() -> AuditCheckpoint {
        AuditCheckpoint {
            tenant_id: TenantId::generate(),
            seq: 42,
            hash: "ab".repeat(32),
            time: miosa_core::time_util::now(),
            kek_id: String::new(),
            signature: Vec::new(),
        }
    }

    #[test]
    fn signed_checkpoints_verify_and_changes_do_not() {
        let ring = KeyRing::from_key(MasterKey::generate().unwrap());
        let signer = ring.audit_signer(&ring.current_id()).unwrap();
        let mut cp = checkpoint();
        signer.sign(&mut cp);
        assert_eq!(cp.kek_id, ring.current_id());
        assert_eq!(cp.signature.len(), 64);
        assert!(ring.verify_checkpoint(&cp).unwrap());
        // Anyone can check it with the public key alone.
        let public = UnparsedPublicKey::new(&ED25519, signer.public_key());
        assert!(public.verify(&cp.signed_message(), &cp.signature).is_ok());
        for change in [
            |c: &mut AuditCheckpoint| c.seq += 1,
            |c: &mut AuditCheckpoint| c.hash = "cd".repeat(32),
            |c: &mut AuditCheckpoint| c.tenant_id = TenantId::generate(),
            |c: &mut AuditCheckpoint| c.time += time::Duration::seconds(1),
            |c: &mut AuditCheckpoint| c.signature[0] ^= 1,
        ] {
            let mut t = cp.clone();
            change(&mut t);
            assert!(!ring.verify_checkpoint(&t).unwrap());
        }
        // Another master key derives another signer; an unknown one is an error.
        let other = KeyRing::from_key(MasterKey::generate().unwrap());
        assert!(matches!(
            other.verify_checkpoint(&cp),
            Err(VaultError::UnknownKek { .. })
        ));
        let same = ring.audit_signer(&ring.current_id()).unwrap();
        assert_eq!(same.public_key(), signer.public_key(), "deterministic");
    }
}

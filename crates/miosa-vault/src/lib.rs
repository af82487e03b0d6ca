//! Envelope encryption of secret values.
//!
//! Each value is encrypted with AES-256-GCM under a fresh random data key;
//! the data key is encrypted ("wrapped") with AES-256-GCM under the
//! key-encryption key, the *master key*. The master key comes from
//! `MIOSA_MASTER_KEY` or the data dir's `master-key` file ([`KeyRing::load`])
//! and can be rotated by re-wrapping only the data keys
//! ([`rotate_master_key`]). Keys and plaintext are zeroed on drop and never
//! appear in `Debug` output.
#![forbid(unsafe_code)]

mod audit_sign;
mod error;
mod key;
mod keyfile;
mod ring;
mod rotate;
mod seal;

pub use audit_sign::AuditSigner;
pub use error::{VaultError, VaultResult};
pub use key::{MasterKey, KEY_LEN};
pub use keyfile::{KEY_FILE, NEXT_KEY_FILE};
pub use ring::KeyRing;
pub use rotate::{rotate_master_key, RotateReport, RotateTarget, REWRAP_BATCH};
pub use seal::{Plaintext, NONCE_LEN, WRAPPED_KEY_LEN};

#[cfg(test)]
mod tests;

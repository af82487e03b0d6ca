//! The key-encryption key (master key) and its public fingerprint.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{VaultError, VaultResult};

/// Bytes in every AES-256 key: master keys and data keys alike.
pub const KEY_LEN: usize = 32;

/// Hashed in front of the key so the fingerprint cannot be confused with
/// any other hash of the same bytes.
const FINGERPRINT_CONTEXT: &[u8] = b"miosa-vault key-encryption-key fingerprint v1\0";

/// A 32-byte key-encryption key. Zeroed on drop; `Debug` shows only its ID.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl MasterKey {
    /// Parses 64 hex characters (surrounding whitespace, such as a file's
    /// final newline, is ignored). `origin` names where the text came from
    /// in the error; the text itself is never echoed.
    pub fn from_hex(text: &str, origin: &str) -> VaultResult<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text.trim(), bytes.as_mut_slice()).map_err(|_| {
            VaultError::BadKey {
                origin: origin.to_owned(),
            }
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// A fresh key from the operating system's RNG.
    pub fn generate() -> VaultResult<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut_slice())?;
        Ok(Self::from_bytes(bytes))
    }

    fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_CONTEXT);
        h.update(bytes.as_slice());
        let id = format!("kek_{}", hex::encode(&h.finalize()[..8]));
        Self { bytes, id }
    }

    /// The key's fingerprint, `kek_` + 16 hex characters: safe to store,
    /// log and show; it does not reveal the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A 32-byte key derived from this one for `context` (HMAC-SHA256): a
    /// key for another purpose that still exists only where this one does.
    pub(crate) fn derive(&self, context: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        use hmac::{Hmac, Mac};
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(context);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The key as 64 lower-case hex characters (for the key file).
    pub(crate) fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.bytes.as_slice()))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn fill_random(buf: &mut [u8]) -> VaultResult<()> {
    getrandom::fill(buf).map_err(|e| VaultError::Random(e.to_string()))
}

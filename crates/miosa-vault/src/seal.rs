//! Envelope encryption of one value: a fresh data key encrypts the value,
//! the master key encrypts ("wraps") the data key.
//!
//! Both layers are AES-256-GCM with random 96-bit nonces. The value's AAD is
//! the caller's context (a secret's ID, version, scope and where it may go;
//! the tenant ID for values stored before that), so a sealed value copied
//! to another row does not open; the wrapped key's AAD is the master key's ID.

use aes_gcm::{
    aead::{Aead, AeadInPlace, KeyInit, Payload},
    Aes256Gcm, Key, Nonce,
};
use miosa_core::{AadVersion, SealedValue};
use zeroize::Zeroizing;

use crate::{
    error::{VaultError, VaultResult},
    key::{fill_random, MasterKey, KEY_LEN},
};

/// Bytes of every nonce (96 bits, what GCM is designed for).
pub const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of `SealedValue::wrapped_key`: nonce ‖ encrypted data key ‖ tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// A decrypted value. Zeroed on drop; `Debug` shows only its length.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// The value itself. Call sites are easy to grep for.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, if it is UTF-8 (secret values always are).
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext([redacted; {} bytes])", self.0.len())
    }
}

type DataKey = Zeroizing<[u8; KEY_LEN]>;

fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key))
}

/// Encrypts under a random nonce: (nonce, ciphertext ‖ tag).
fn encrypt(key: &[u8; KEY_LEN], msg: &[u8], aad: &[u8]) -> VaultResult<([u8; NONCE_LEN], Vec<u8>)> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let ct = cipher(key)
        .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad })
        // Only possible for messages beyond GCM's 64 GiB limit.
        .map_err(|_| VaultError::Malformed("value too large to encrypt"))?;
    Ok((nonce, ct))
}

/// Decrypts into a buffer that is zeroed on drop; `None` if the tag does
/// not verify.
fn decrypt(key: &[u8; KEY_LEN], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let mut buf = Zeroizing::new(ct.to_vec());
    cipher(key)
        .decrypt_in_place(Nonce::from_slice(nonce), aad, &mut *buf)
        .ok()?;
    Some(buf)
}

fn wrap(kek: &MasterKey, data_key: &DataKey) -> VaultResult<Vec<u8>> {
    let (nonce, ct) = encrypt(kek.bytes(), data_key.as_slice(), kek.id().as_bytes())?;
    let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

pub(crate) fn unwrap_key(kek: &MasterKey, sealed: &SealedValue) -> VaultResult<DataKey> {
    if sealed.wrapped_key.len() != WRAPPED_KEY_LEN {
        return Err(VaultError::Malformed("wrapped key has the wrong length"));
    }
    let (nonce, ct) = sealed.wrapped_key.split_at(NONCE_LEN);
    let unwrap_err = || VaultError::Unwrap {
        kek_id: sealed.kek_id.clone(),
    };
    let plain = decrypt(kek.bytes(), nonce, ct, kek.id().as_bytes()).ok_or_else(unwrap_err)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(unwrap_err());
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

/// Seals `plaintext` for the context `aad` under a fresh data key wrapped by
/// `kek`. New values are always sealed for a secret's full context
/// (`Secret::seal_context`), so the result says [`AadVersion::Bound`].
pub(crate) fn seal(kek: &MasterKey, plaintext: &[u8], aad: &[u8]) -> VaultResult<SealedValue> {
    let mut data_key: DataKey = Zeroizing::new([0u8; KEY_LEN]);
    fill_random(data_key.as_mut_slice())?;
    let (nonce, ciphertext) = encrypt(&data_key, plaintext, aad)?;
    Ok(SealedValue {
        kek_id: kek.id().to_owned(),
        wrapped_key: wrap(kek, &data_key)?,
        nonce: nonce.to_vec(),
        ciphertext,
        aad: AadVersion::Bound,
    })
}

/// Opens a value sealed under `kek` for the context `aad`.
pub(crate) fn open(kek: &MasterKey, sealed: &SealedValue, aad: &[u8]) -> VaultResult<Plaintext> {
    if sealed.nonce.len() != NONCE_LEN {
        return Err(VaultError::Malformed("nonce has the wrong length"));
    }
    let data_key = unwrap_key(kek, sealed)?;
    decrypt(&data_key, &sealed.nonce, &sealed.ciphertext, aad)
        .map(Plaintext)
        .ok_or(VaultError::Decrypt)
}

/// Re-wraps the data key of a value sealed under `from` with `to`; the
/// value's nonce and ciphertext are unchanged.
pub(crate) fn rewrap(
    from: &MasterKey,
    to: &MasterKey,
    sealed: &SealedValue,
) -> VaultResult<SealedValue> {
    let data_key = unwrap_key(from, sealed)?;
    Ok(SealedValue {
        kek_id: to.id().to_owned(),
        wrapped_key: wrap(to, &data_key)?,
        nonce: sealed.nonce.clone(),
        ciphertext: sealed.ciphertext.clone(),
        aad: sealed.aad,
    })
}

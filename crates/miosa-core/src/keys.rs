//! API keys: generation, recognition and keyed hashing.
//!
//! Keys are 256 random bits, so a fast keyed hash is enough to make a stolen
//! database useless: `HMAC-SHA256(pepper, key)`. The pepper lives outside the
//! database (config or a 0600 file in the data dir).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{base32, error::random_bytes, CoreError, Redacted};

/// Which kind of key a string is, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyKind {
    /// `msk_root_…`: the operator's key for `/v1/admin/*`.
    Root,
    /// `msk_live_…`: a tenant admin key.
    TenantAdmin,
    /// `msk_w_…`: a workspace-scoped key.
    Workspace,
}

impl ApiKeyKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            ApiKeyKind::Root => "msk_root_",
            ApiKeyKind::TenantAdmin => "msk_live_",
            ApiKeyKind::Workspace => "msk_w_",
        }
    }

    /// Recognises a presented key by prefix; `None` for anything else.
    pub fn of(key: &str) -> Option<Self> {
        [Self::Root, Self::TenantAdmin, Self::Workspace]
            .into_iter()
            .find(|k| key.starts_with(k.prefix()))
    }
}

/// Minimum length of what follows `msk_root_` in an operator-chosen root key.
pub const MIN_ROOT_KEY_BODY: usize = 20;

/// A freshly generated key in plain text. Shown once, then dropped.
#[derive(Clone)]
pub struct PlainApiKey(Redacted<String>);

impl std::fmt::Debug for PlainApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainApiKey([redacted])")
    }
}

impl PlainApiKey {
    /// A new random key of the given kind: prefix + 52 base32 characters.
    pub fn generate(kind: ApiKeyKind) -> Result<Self, CoreError> {
        let mut bytes = [0u8; 32];
        random_bytes(&mut bytes)?;
        Ok(Self(Redacted::new(format!(
            "{}{}",
            kind.prefix(),
            base32::encode(&bytes)
        ))))
    }

    /// The key text. Only for showing it once to its owner.
    pub fn reveal(&self) -> &str {
        self.0.expose()
    }

    /// The last four characters, stored so people can tell keys apart.
    pub fn hint(&self) -> String {
        let s = self.reveal();
        s[s.len().saturating_sub(4)..].to_owned()
    }
}

/// Validates an operator-supplied root key (`MIOSA_ROOT_KEY`).
pub fn check_root_key(key: &str) -> Result<(), String> {
    let body = key
        .strip_prefix(ApiKeyKind::Root.prefix())
        .ok_or_else(|| "must start with `msk_root_`".to_owned())?;
    if body.len() < MIN_ROOT_KEY_BODY {
        return Err(format!(
            "must have at least {MIN_ROOT_KEY_BODY} characters after `msk_root_`"
        ));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may only contain letters, digits, `_` and `-`".to_owned());
    }
    Ok(())
}

/// The server-side secret mixed into every key hash.
#[derive(Clone)]
pub struct Pepper(Redacted<Vec<u8>>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper([redacted])")
    }
}

/// Minimum pepper length in bytes.
pub const MIN_PEPPER_BYTES: usize = 32;

impl Pepper {
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < MIN_PEPPER_BYTES {
            return Err(format!("must be at least {MIN_PEPPER_BYTES} bytes"));
        }
        Ok(Self(Redacted::new(bytes)))
    }

    /// A fresh random pepper.
    pub fn generate() -> Result<Self, CoreError> {
        let mut bytes = vec![0u8; MIN_PEPPER_BYTES];
        random_bytes(&mut bytes)?;
        Ok(Self(Redacted::new(bytes)))
    }

    /// Parses the hex form used in config and in the pepper file.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|_| "must be hex".to_owned())?;
        Self::new(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.expose())
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        #[allow(clippy::expect_used)]
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.0.expose()).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The stored form of a key.
    pub fn hash_key(&self, key: &str) -> KeyHash {
        KeyHash(self.mac(key.as_bytes()))
    }

    /// A value stored in the database at bootstrap so that a server started
    /// with a different pepper notices at once instead of rejecting every key.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.mac(b"miosa pepper fingerprint v1"))
    }
}

/// `HMAC-SHA256(pepper, key)`: what the stores keep instead of a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({})", &self.to_hex()[..8])
    }
}

impl KeyHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_their_prefix_and_are_unique() {
        let a = PlainApiKey::generate(ApiKeyKind::TenantAdmin).unwrap();
        let b = PlainApiKey::generate(ApiKeyKind::TenantAdmin).unwrap();
        assert!(a.reveal().starts_with("msk_live_"));
        assert_eq!(a.reveal().len(), "msk_live_".len() + 52);
        assert_ne!(a.reveal(), b.reveal());
        assert_eq!(ApiKeyKind::of(a.reveal()), Some(ApiKeyKind::TenantAdmin));
        let w = PlainApiKey::generate(ApiKeyKind::Workspace).unwrap();
        assert_eq!(ApiKeyKind::of(w.reveal()), Some(ApiKeyKind::Workspace));
        assert_eq!(ApiKeyKind::of("sk_live_x"), None);
        assert!(!format!("{a:?}").contains(a.reveal()));
    }

    #[test]
    fn hash_depends_on_pepper_and_key() {
        let p1 = Pepper::generate().unwrap();
        let p2 = Pepper::generate().unwrap();
        let k = "msk_live_abc";
        assert!(p1.hash_key(k).ct_eq(&p1.hash_key(k)));
        assert!(!p1.hash_key(k).ct_eq(&p2.hash_key(k)));
        assert!(!p1.hash_key(k).ct_eq(&p1.hash_key("msk_live_abd")));
        assert_ne!(p1.fingerprint(), p2.fingerprint());
        let h = p1.hash_key(k);
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
    }

    #[test]
    fn pepper_round_trips_and_rejects_short_values() {
        let p = Pepper::generate().unwrap();
        assert_eq!(Pepper::from_hex(&p.to_hex()).unwrap().to_hex(), p.to_hex());
        assert!(Pepper::from_hex("abcd").is_err());
        assert!(Pepper::from_hex("zz").is_err());
        assert!(!format!("{p:?}").contains(&p.to_hex()));
    }

    #[test]
    fn root_key_rules() {
        assert!(check_root_key("msk_root_0123456789abcdefghij").is_ok());
        assert!(check_root_key("msk_live_0123456789abcdefghij").is_err());
        assert!(check_root_key("msk_root_short").is_err());
        assert!(check_root_key("msk_root_0123456789abcdefghi j").is_err());
    }
}

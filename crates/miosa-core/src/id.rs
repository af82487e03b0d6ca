//! Typed, prefixed, time-ordered IDs: `ten_01jd…`, `ws_…`, `key_…`.
//!
//! The body is 16 bytes — 48-bit Unix milliseconds then 80 random bits —
//! encoded as 26 characters of lower-case Crockford base32, so string order is
//! creation order (to the millisecond) and cursors can compare IDs directly.

use std::fmt;

use crate::base32;

/// Length of the encoded body after the prefix and underscore.
pub const BODY_LEN: usize = 26;

/// The last (milliseconds, random tail) handed out by this process, so IDs
/// made in the same millisecond still sort in creation order.
static LAST: std::sync::Mutex<(u64, [u8; 10])> = std::sync::Mutex::new((0, [0; 10]));

/// Generates a new ID body (26 characters), strictly increasing within this
/// process: in the same millisecond (or if the clock steps back) the random
/// tail of the previous ID is incremented instead of drawn afresh.
pub fn new_body() -> String {
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (millis, tail) = if now > last.0 {
        let mut tail = [0u8; 10];
        // A host without a working RNG cannot run Miosa safely at all.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut tail).expect("operating system RNG unavailable");
        // Keep headroom so increments within one millisecond do not overflow.
        tail[0] &= 0x7f;
        (now, tail)
    } else {
        let mut tail = last.1;
        for byte in tail.iter_mut().rev() {
            let (v, carry) = byte.overflowing_add(1);
            *byte = v;
            if !carry {
                break;
            }
        }
        (last.0, tail)
    };
    *last = (millis, tail);
    drop(last);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&tail);
    base32::encode(&bytes)
}

/// Why an ID string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be an ID starting with `{prefix}_`")]
pub struct InvalidId {
    pub prefix: &'static str,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix before the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered ID.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, new_body()))
            }

            /// Parses an ID, checking its prefix and body.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                let body = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or(InvalidId { prefix: $prefix })?;
                if body.len() != BODY_LEN || !base32::is_valid(body) {
                    return Err(InvalidId { prefix: $prefix });
                }
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "_[0-9a-hjkmnp-tv-z]{26}$")))
                    .examples([concat!($prefix, "_01jdq3x5m8v2k7f4c9n6r1w0ab")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

typed_id!(
    /// A tenant: one SaaS builder using Miosa.
    TenantId,
    "ten"
);
typed_id!(
    /// A workspace inside a tenant.
    WorkspaceId,
    "ws"
);
typed_id!(
    /// An API key (the record, not the secret).
    ApiKeyId,
    "key"
);
typed_id!(
    /// A sandbox.
    SandboxId,
    "sbx"
);
typed_id!(
    /// A secret (its metadata; values are never addressable).
    SecretId,
    "sec"
);
typed_id!(
    /// One row of the audit log.
    AuditId,
    "aud"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_are_ordered() {
        let a = TenantId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = TenantId::generate();
        assert!(a < b, "{a} < {b}");
        assert_eq!(TenantId::parse(a.as_str()), Ok(a.clone()));
        assert!(a.as_str().starts_with("ten_"));
        assert_eq!(a.as_str().len(), 4 + BODY_LEN);
    }

    #[test]
    fn ids_made_in_a_burst_keep_creation_order() {
        let ids: Vec<WorkspaceId> = (0..10_000).map(|_| WorkspaceId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn wrong_prefix_or_body_is_rejected() {
        let ws = WorkspaceId::generate();
        assert!(TenantId::parse(ws.as_str()).is_err());
        assert!(TenantId::parse("ten_").is_err());
        assert!(TenantId::parse("ten_01JDQ3X5M8V2K7F4C9N6R1W0AB").is_err());
        assert!(TenantId::parse("ten_01jdq3x5m8v2k7f4c9n6r1w0a").is_err());
        assert!(TenantId::parse("ten_01jdq3x5m8v2k7f4c9n6r1w0ai").is_err());
        assert!(TenantId::parse("ten_01jdq3x5m8v2k7f4c9n6r1w0ab").is_ok());
    }

    #[test]
    fn serde_validates() {
        let id: Result<WorkspaceId, _> = serde_json::from_str("\"ten_01jdq3x5m8v2k7f4c9n6r1w0ab\"");
        assert!(id.is_err());
    }
}

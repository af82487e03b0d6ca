//! Secrets as the domain sees them: scopes and their precedence, the
//! credential resolver, placeholders, and validation of secret input.
//!
//! A value never appears here in plaintext: the store holds a
//! [`SealedValue`] (see `miosa-vault`), and only the egress proxy opens it.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::{base32, FieldError, Labels, Sandbox, SandboxId, SecretId, TenantId, WorkspaceId};

/// Where a secret applies. The order of [`SecretScope::PRECEDENCE`] is the
/// resolution order: first match wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretScope {
    /// Bound directly to one sandbox (`sandbox_id`).
    Sandbox,
    /// A Miosa-native user (`owner_user_id`).
    User,
    /// The tenant's end-user (`external_user_id`).
    ExternalUser,
    /// The tenant's end-user workspace (`external_workspace_id`).
    ExternalWorkspace,
    /// A Miosa workspace (`workspace_id`).
    Workspace,
    /// Every sandbox of the tenant.
    Tenant,
}

impl SecretScope {
    /// All scopes, highest precedence first.
    pub const PRECEDENCE: [SecretScope; 6] = [
        Self::Sandbox,
        Self::User,
        Self::ExternalUser,
        Self::ExternalWorkspace,
        Self::Workspace,
        Self::Tenant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::User => "user",
            Self::ExternalUser => "external_user",
            Self::ExternalWorkspace => "external_workspace",
            Self::Workspace => "workspace",
            Self::Tenant => "tenant",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::PRECEDENCE.into_iter().find(|v| v.as_str() == s)
    }

    /// The request field naming this scope's key (`None` for `tenant`).
    pub fn key_field(self) -> Option<&'static str> {
        match self {
            Self::Sandbox => Some("sandbox_id"),
            Self::User => Some("owner_user_id"),
            Self::ExternalUser => Some("external_user_id"),
            Self::ExternalWorkspace => Some("external_workspace_id"),
            Self::Workspace => Some("workspace_id"),
            Self::Tenant => None,
        }
    }

    /// 0 for the highest precedence.
    pub fn rank(self) -> usize {
        Self::PRECEDENCE
            .iter()
            .position(|s| *s == self)
            .unwrap_or(usize::MAX)
    }
}

/// A secret's metadata — everything about it except its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub id: SecretId,
    pub tenant_id: TenantId,
    pub name: String,
    pub scope: SecretScope,
    /// The scope's key (a sandbox ID, user ID, …); `None` for `tenant`.
    pub scope_key: Option<String>,
    /// The environment variable that holds the placeholder in sandboxes.
    pub expose_as_env: String,
    /// Host patterns the value may be sent to; empty means any host.
    pub allowed_hosts: Vec<String>,
    /// 1 for the first value; each upsert adds one.
    pub version: u32,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Secret {
    /// Whether the value may be sent to `host` (already lower-case).
    pub fn allows_host(&self, host: &str) -> bool {
        self.allowed_hosts.is_empty() || self.allowed_hosts.iter().any(|p| host_matches(p, host))
    }
}

/// An encrypted secret value: AES-256-GCM ciphertext under a fresh data key,
/// the data key wrapped by the key-encryption key `kek_id`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue {
    /// Fingerprint of the key-encryption key that wrapped `wrapped_key`.
    pub kek_id: String,
    /// Nonce ‖ AES-256-GCM(KEK, data key).
    pub wrapped_key: Vec<u8>,
    /// Nonce for `ciphertext`.
    pub nonce: Vec<u8>,
    /// AES-256-GCM(data key, value).
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedValue")
            .field("kek_id", &self.kek_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// A new secret, or a new version of an existing one (same tenant, scope,
/// scope key and name).
#[derive(Debug, Clone)]
pub struct NewSecretVersion {
    pub tenant_id: TenantId,
    /// Used only when the secret does not exist yet.
    pub id: SecretId,
    pub name: String,
    pub scope: SecretScope,
    pub scope_key: Option<String>,
    pub expose_as_env: String,
    pub allowed_hosts: Vec<String>,
    pub sealed: SealedValue,
    pub at: OffsetDateTime,
}

/// One stored version's sealed value, addressed for re-wrapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedVersion {
    pub secret_id: SecretId,
    pub version: u32,
    pub sealed: SealedValue,
}

/// A tenant's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSettings {
    /// When false, `external_user` secrets cannot be created and do not
    /// resolve.
    pub allow_end_user_credentials: bool,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            allow_end_user_credentials: true,
        }
    }
}

/// The keys a sandbox offers to each scope; a missing label means that
/// level is skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxScopeKeys {
    pub sandbox_id: String,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub workspace_id: Option<String>,
}

impl SandboxScopeKeys {
    pub fn of(sandbox: &Sandbox) -> Self {
        Self::new(&sandbox.id, sandbox.workspace_id.as_ref(), &sandbox.labels)
    }

    pub fn new(sandbox: &SandboxId, workspace: Option<&WorkspaceId>, labels: &Labels) -> Self {
        Self {
            sandbox_id: sandbox.as_str().to_owned(),
            owner_user_id: labels.owner_user_id.clone(),
            external_user_id: labels.external_user_id.clone(),
            external_workspace_id: labels.external_workspace_id.clone(),
            workspace_id: workspace.map(|w| w.as_str().to_owned()),
        }
    }

    /// The key this sandbox offers to `scope`: `Some("")` for `tenant`,
    /// `None` when the sandbox lacks that label.
    pub fn key_for(&self, scope: SecretScope) -> Option<&str> {
        match scope {
            SecretScope::Sandbox => Some(self.sandbox_id.as_str()),
            SecretScope::User => self.owner_user_id.as_deref(),
            SecretScope::ExternalUser => self.external_user_id.as_deref(),
            SecretScope::ExternalWorkspace => self.external_workspace_id.as_deref(),
            SecretScope::Workspace => self.workspace_id.as_deref(),
            SecretScope::Tenant => Some(""),
        }
    }

    /// Whether a secret of `scope` with `key` applies to this sandbox.
    pub fn matches(&self, scope: SecretScope, key: Option<&str>) -> bool {
        match (self.key_for(scope), scope) {
            (Some(_), SecretScope::Tenant) => key.is_none(),
            (Some(mine), _) => !mine.is_empty() && key == Some(mine),
            (None, _) => false,
        }
    }
}

/// Which secret fills each exposed environment variable of a sandbox:
/// enabled secrets whose scope key matches, first scope in precedence order
/// wins (ties, which the store's uniqueness rules prevent, go to the lower
/// ID). `external_user` secrets are skipped unless `allow_end_user`.
pub fn resolve<'a>(
    keys: &SandboxScopeKeys,
    candidates: impl IntoIterator<Item = &'a Secret>,
    allow_end_user: bool,
) -> BTreeMap<String, &'a Secret> {
    let mut out: BTreeMap<String, &'a Secret> = BTreeMap::new();
    for secret in candidates {
        if !secret.enabled
            || (secret.scope == SecretScope::ExternalUser && !allow_end_user)
            || !keys.matches(secret.scope, secret.scope_key.as_deref())
        {
            continue;
        }
        let better = match out.get(&secret.expose_as_env) {
            None => true,
            Some(current) => {
                (secret.scope.rank(), &secret.id) < (current.scope.rank(), &current.id)
            }
        };
        if better {
            out.insert(secret.expose_as_env.clone(), secret);
        }
    }
    out
}

/// The prefix of every placeholder.
pub const PLACEHOLDER_PREFIX: &str = "miosa_ph_";

/// The placeholder a sandbox sees instead of a secret's value: unique per
/// (sandbox, secret), stable across restarts for the same `key`.
pub fn placeholder(key: &[u8], sandbox: &SandboxId, secret: &SecretId) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(sandbox.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(secret.as_str().as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{PLACEHOLDER_PREFIX}{}", base32::encode(&tag[..20]))
}

// --- validation -------------------------------------------------------------

pub const MAX_SECRET_NAME_CHARS: usize = 128;
pub const MIN_SECRET_VALUE_BYTES: usize = 8;
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;
pub const MAX_ALLOWED_HOSTS: usize = 50;

/// Variables Miosa itself sets in every sandbox; a secret cannot take them.
pub const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "HOSTNAME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    "NODE_OPTIONS",
];

/// A secret name: 1–128 of `A-Z a-z 0-9 _ . -`.
pub fn secret_name(field: &str, value: &str) -> Result<String, FieldError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_SECRET_NAME_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_SECRET_NAME_CHARS} of A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(value.to_owned())
}

/// An environment variable name a secret may be exposed as.
pub fn expose_as_env(field: &str, value: &str) -> Result<String, FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.as_bytes()[0].is_ascii_digit()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(FieldError::new(
            field,
            "must be 1 to 128 letters, digits and `_`, not starting with a digit",
        ));
    }
    if RESERVED_ENV.contains(&value.to_ascii_uppercase().as_str()) || value.starts_with("MIOSA_") {
        return Err(FieldError::new(
            field,
            "is set by Miosa in every sandbox and cannot hold a secret",
        ));
    }
    Ok(value.to_owned())
}

/// A secret value: 8 bytes to 64 KiB, no NUL, no line breaks (it must fit in
/// a header), and not a placeholder.
pub fn secret_value(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() < MIN_SECRET_VALUE_BYTES || value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "must be {MIN_SECRET_VALUE_BYTES} bytes to {} KiB (shorter values cannot be told apart from ordinary text)",
                MAX_SECRET_VALUE_BYTES / 1024
            ),
        ));
    }
    if value.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(FieldError::new(
            field,
            "must not contain NUL or line breaks",
        ));
    }
    if value.contains(PLACEHOLDER_PREFIX) {
        return Err(FieldError::new(field, "must not contain a placeholder"));
    }
    Ok(())
}

/// Host patterns: `api.openai.com` or `*.github.com` (a wildcard only as the
/// whole leftmost label), lower-cased, at most 50.
pub fn allowed_hosts(field: &str, hosts: &[String]) -> Result<Vec<String>, FieldError> {
    if hosts.len() > MAX_ALLOWED_HOSTS {
        return Err(FieldError::new(
            field,
            format!("must have at most {MAX_ALLOWED_HOSTS} entries"),
        ));
    }
    let mut out = Vec::with_capacity(hosts.len());
    for (i, raw) in hosts.iter().enumerate() {
        let host = raw.trim().to_ascii_lowercase();
        let rest = host.strip_prefix("*.").unwrap_or(&host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.len() > 253 || rest.is_empty() || !rest.split('.').all(label_ok) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                "must be a hostname like `api.openai.com` or `*.github.com`",
            ));
        }
        if !out.contains(&host) {
            out.push(host);
        }
    }
    Ok(out)
}

/// Whether `host` matches `pattern`: exactly, or for `*.example.com` any
/// name below `example.com` (not `example.com` itself). Case-insensitive.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(scope: SecretScope, key: Option<&str>, env: &str) -> Secret {
        Secret {
            id: SecretId::generate(),
            tenant_id: TenantId::parse("ten_01jdq3x5m8v2k7f4c9n6r1w0ab").unwrap(),
            name: format!("{}-{env}", scope.as_str()),
            scope,
            scope_key: key.map(str::to_owned),
            expose_as_env: env.to_owned(),
            allowed_hosts: Vec::new(),
            version: 1,
            enabled: true,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn full_keys() -> SandboxScopeKeys {
        SandboxScopeKeys {
            sandbox_id: "sbx_1".into(),
            owner_user_id: Some("u1".into()),
            external_user_id: Some("eu1".into()),
            external_workspace_id: Some("ew1".into()),
            workspace_id: Some("ws_1".into()),
        }
    }

    fn key_of(keys: &SandboxScopeKeys, scope: SecretScope) -> Option<String> {
        match scope {
            SecretScope::Tenant => None,
            s => keys.key_for(s).map(str::to_owned),
        }
    }

    proptest! {
        /// For every subset of scopes holding a secret for the same variable
        /// and every subset of labels the sandbox has, the winner is the
        /// first scope in precedence order that both holds a secret and is
        /// offered by the sandbox; a missing label never matches.
        #[test]
        fn precedence_table(present in proptest::collection::vec(any::<bool>(), 6),
                            labels in proptest::collection::vec(any::<bool>(), 4),
                            end_user in any::<bool>()) {
            let full = full_keys();
            let keys = SandboxScopeKeys {
                sandbox_id: full.sandbox_id.clone(),
                owner_user_id: full.owner_user_id.clone().filter(|_| labels[0]),
                external_user_id: full.external_user_id.clone().filter(|_| labels[1]),
                external_workspace_id: full.external_workspace_id.clone().filter(|_| labels[2]),
                workspace_id: full.workspace_id.clone().filter(|_| labels[3]),
            };
            // Secrets are keyed with the full label set, so a sandbox that
            // lacks a label must skip that level.
            let secrets: Vec<Secret> = SecretScope::PRECEDENCE
                .iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(s, _)| secret(*s, key_of(&full, *s).as_deref(), "TOKEN"))
                .collect();
            // Decoys: same variable, other keys, and an empty key.
            let mut all = secrets.clone();
            for s in [SecretScope::User, SecretScope::ExternalUser, SecretScope::ExternalWorkspace, SecretScope::Workspace] {
                all.push(secret(s, Some("someone-else"), "TOKEN"));
                all.push(secret(s, Some(""), "TOKEN"));
            }
            let offered = |s: SecretScope| match s {
                SecretScope::Sandbox | SecretScope::Tenant => true,
                SecretScope::User => labels[0],
                SecretScope::ExternalUser => labels[1] && end_user,
                SecretScope::ExternalWorkspace => labels[2],
                SecretScope::Workspace => labels[3],
            };
            let expected = secrets.iter().find(|s| offered(s.scope)).map(|s| s.id.clone());
            let got = resolve(&keys, &all, end_user);
            prop_assert_eq!(got.get("TOKEN").map(|s| s.id.clone()), expected);
        }
    }

    #[test]
    fn disabled_secrets_fall_through_and_variables_are_independent() {
        let keys = full_keys();
        let mut user = secret(SecretScope::ExternalUser, Some("eu1"), "OPENAI_API_KEY");
        let tenant = secret(SecretScope::Tenant, None, "OPENAI_API_KEY");
        let ehr = secret(SecretScope::ExternalWorkspace, Some("ew1"), "EHR_API_KEY");
        let all = vec![user.clone(), tenant.clone(), ehr.clone()];
        let got = resolve(&keys, &all, true);
        assert_eq!(got["OPENAI_API_KEY"].id, user.id);
        assert_eq!(got["EHR_API_KEY"].id, ehr.id);
        user.enabled = false;
        let all = vec![user, tenant.clone(), ehr];
        assert_eq!(resolve(&keys, &all, true)["OPENAI_API_KEY"].id, tenant.id);
    }

    #[test]
    fn tenant_secrets_need_no_key() {
        let keys = SandboxScopeKeys {
            sandbox_id: "sbx_1".into(),
            ..Default::default()
        };
        let bad = secret(SecretScope::Tenant, Some("x"), "A");
        assert!(resolve(&keys, [&bad], true).is_empty());
        let good = secret(SecretScope::Tenant, None, "A");
        assert_eq!(resolve(&keys, [&good], true).len(), 1);
    }

    #[test]
    fn placeholders_are_unique_and_stable() {
        let s1 = SandboxId::generate();
        let s2 = SandboxId::generate();
        let k = SecretId::generate();
        let a = placeholder(b"key", &s1, &k);
        assert_eq!(a, placeholder(b"key", &s1, &k));
        assert_ne!(a, placeholder(b"key", &s2, &k));
        assert_ne!(a, placeholder(b"other", &s1, &k));
        assert!(a.starts_with(PLACEHOLDER_PREFIX));
        assert_eq!(a.len(), PLACEHOLDER_PREFIX.len() + 32);
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("api.openai.com", "API.openai.com"));
        assert!(!host_matches(
            "api.openai.com",
            "api.openai.com.evil.example"
        ));
        assert!(host_matches("*.github.com", "api.github.com"));
        assert!(host_matches("*.github.com", "a.b.github.com"));
        assert!(!host_matches("*.github.com", "github.com"));
        assert!(!host_matches("*.github.com", "evilgithub.com"));
        assert_eq!(
            allowed_hosts("allowed_hosts", &["API.OpenAI.com".into()]).unwrap(),
            vec!["api.openai.com"]
        );
        for bad in [
            "",
            "*",
            "a.*.com",
            "http://x.com",
            "x .com",
            "-a.com",
            "*.",
            "a..b",
        ] {
            let err = allowed_hosts("allowed_hosts", &[bad.into()]).unwrap_err();
            assert_eq!(err.field, "allowed_hosts[0]", "{bad}");
        }
    }

    #[test]
    fn input_rules() {
        assert!(secret_name("name", "openai-key_1.v2").is_ok());
        assert!(secret_name("name", "a b").is_err());
        assert!(expose_as_env("expose_as_env", "OPENAI_API_KEY").is_ok());
        for bad in [
            "1A",
            "A-B",
            "",
            "HTTPS_PROXY",
            "https_proxy",
            "PATH",
            "MIOSA_X",
        ] {
            assert!(expose_as_env("expose_as_env", bad).is_err(), "{bad}");
        }
        assert!(secret_value("value", "sk-live-0123456789").is_ok());
        for bad in [
            "short",
            "has\nnewline-1234",
            "x\0yyyyyyyyy",
            "miosa_ph_0123456789",
        ] {
            assert!(secret_value("value", bad).is_err(), "{bad:?}");
        }
        assert!(secret_value("value", &"v".repeat(64 * 1024 + 1)).is_err());
    }

    #[test]
    fn scope_round_trip() {
        for s in SecretScope::PRECEDENCE {
            assert_eq!(SecretScope::parse(s.as_str()), Some(s));
        }
        assert_eq!(SecretScope::Sandbox.rank(), 0);
        assert_eq!(SecretScope::Tenant.rank(), 5);
    }
}

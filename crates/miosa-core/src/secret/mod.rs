//! Secrets as the domain sees them: scopes and their precedence, the
//! credential resolver, placeholders, and validation of secret input.
//!
//! A value never appears here in plaintext: the store holds a
//! [`SealedValue`] (see `miosa-vault`), and only the egress proxy opens it.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::{base32, Labels, Sandbox, SandboxId, SecretId, TenantId, WorkspaceId};

pub mod hosts;
mod rules;

pub use hosts::{allowed_hosts, host_matches, HostPattern, MAX_ALLOWED_HOSTS};
pub use rules::{
    expose_as_env, secret_name, secret_value, substitute_in, MAX_SECRET_NAME_CHARS,
    MAX_SECRET_VALUE_BYTES, MIN_SECRET_VALUE_BYTES, RESERVED_ENV,
};

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

    /// `user`, `external_user` and `external_workspace`: the end-user
    /// credentials a workspace binding restricts.
    pub fn is_end_user(self) -> bool {
        matches!(
            self,
            Self::User | Self::ExternalUser | Self::ExternalWorkspace
        )
    }

    /// 0 for the highest precedence.
    pub fn rank(self) -> usize {
        Self::PRECEDENCE
            .iter()
            .position(|s| *s == self)
            .unwrap_or(usize::MAX)
    }
}

/// Where in a request the proxy may replace a secret's placeholder with its
/// value. Headers (including inside `Basic` credentials) by default; the
/// request target (`query`: path and query string) and the body only when
/// the secret opts in, because a host that transforms or stores what it
/// receives there can hand the value back to the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubstituteIn {
    pub headers: bool,
    pub query: bool,
    pub body: bool,
}

impl SubstituteIn {
    pub const NONE: Self = Self {
        headers: false,
        query: false,
        body: false,
    };
    /// The default.
    pub const HEADERS: Self = Self {
        headers: true,
        ..Self::NONE
    };
    pub const ALL: Self = Self {
        headers: true,
        query: true,
        body: true,
    };

    /// The locations as the API names them, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (self.headers, "headers"),
            (self.query, "query"),
            (self.body, "body"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// Parses stored names; unknown names are ignored (never widened).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Self::NONE;
        for n in names {
            match n {
                "headers" => out.headers = true,
                "query" => out.query = true,
                "body" => out.body = true,
                _ => {}
            }
        }
        out
    }
}

impl Default for SubstituteIn {
    fn default() -> Self {
        Self::HEADERS
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
    /// The Miosa workspace the secret belongs to. For `workspace` scope it
    /// is the scope key, for `sandbox` scope the sandbox's workspace; an
    /// end-user secret (`user`, `external_user`, `external_workspace`)
    /// bound to a workspace resolves only in that workspace's sandboxes.
    /// `None`: tenant-level (unbound).
    pub workspace_id: Option<WorkspaceId>,
    /// The environment variable that holds the placeholder in sandboxes.
    pub expose_as_env: String,
    /// Host patterns (`host` or `host:port`, see [`hosts`]) the value may
    /// be sent to; empty means any host.
    pub allowed_hosts: Vec<String>,
    /// Where in a request the value may be substituted.
    pub substitute_in: SubstituteIn,
    /// 1 for the first value; each upsert adds one.
    pub version: u32,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Secret {
    /// Whether the value may be sent to `host` (already lower-case) on
    /// `port`: any host when `allowed_hosts` is empty.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        self.allowed_hosts.is_empty()
            || self
                .allowed_hosts
                .iter()
                .any(|p| HostPattern::parse(p).matches(host, port))
    }

    /// The associated data a value of version `version` of this secret is
    /// sealed for ([`AadVersion::Bound`]): the tenant, the secret and the
    /// version, its scope and key, its workspace, where it may go and how.
    /// A database writer without the master key can then neither move a
    /// ciphertext onto another secret or version nor widen where it goes.
    pub fn seal_context(&self, version: u32) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Context<'a> {
            v: u8,
            tenant_id: &'a str,
            secret_id: &'a str,
            version: u32,
            scope: &'a str,
            scope_key: Option<&'a str>,
            workspace_id: Option<&'a str>,
            allowed_hosts: &'a [String],
            substitute_in: Vec<&'static str>,
        }
        let ctx = Context {
            v: 2,
            tenant_id: self.tenant_id.as_str(),
            secret_id: self.id.as_str(),
            version,
            scope: self.scope.as_str(),
            scope_key: self.scope_key.as_deref(),
            workspace_id: self.workspace_id.as_ref().map(WorkspaceId::as_str),
            allowed_hosts: &self.allowed_hosts,
            substitute_in: self.substitute_in.names(),
        };
        // Strings, integers and lists of them always serialise.
        let mut out = b"miosa-secret\0".to_vec();
        out.extend(serde_json::to_vec(&ctx).unwrap_or_default());
        out
    }

    /// The associated data of version `version`'s value as sealed under
    /// `aad`: what opening it must present.
    pub fn associated_data(&self, version: u32, aad: AadVersion) -> Vec<u8> {
        match aad {
            AadVersion::Tenant => self.tenant_id.as_str().as_bytes().to_vec(),
            AadVersion::Bound => self.seal_context(version),
        }
    }

    /// Whether this is an end-user credential (`user`, `external_user`,
    /// `external_workspace`), the kind a workspace binding restricts.
    pub fn is_end_user(&self) -> bool {
        self.scope.is_end_user()
    }
}

/// What a sealed value's associated data covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AadVersion {
    /// The tenant ID only (values stored before the binding existed; they
    /// stay readable and are re-sealed bound by the next master-key
    /// rotation or the next value).
    Tenant,
    /// [`Secret::seal_context`].
    Bound,
}

impl AadVersion {
    pub fn as_i16(self) -> i16 {
        match self {
            Self::Tenant => 1,
            Self::Bound => 2,
        }
    }

    pub fn from_i16(v: i16) -> Option<Self> {
        match v {
            1 => Some(Self::Tenant),
            2 => Some(Self::Bound),
            _ => None,
        }
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
    /// What the ciphertext's associated data is.
    pub aad: AadVersion,
}

impl std::fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedValue")
            .field("kek_id", &self.kek_id)
            .field("aad", &self.aad)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// A new secret, or a new version of an existing one (same tenant, scope,
/// scope key, workspace and name).
#[derive(Debug, Clone)]
pub struct NewSecretVersion {
    pub tenant_id: TenantId,
    /// The secret's ID: a fresh one for a new secret, the existing one for
    /// a new version.
    pub id: SecretId,
    pub name: String,
    pub scope: SecretScope,
    pub scope_key: Option<String>,
    pub workspace_id: Option<WorkspaceId>,
    pub expose_as_env: String,
    pub allowed_hosts: Vec<String>,
    pub substitute_in: SubstituteIn,
    /// The version this write creates: 1 for a new secret, the current
    /// version + 1 for an existing one. The value is sealed for it, so the
    /// store refuses the write when it no longer fits (a concurrent write
    /// got there first) and the caller seals again.
    pub version: u32,
    pub sealed: SealedValue,
    pub at: OffsetDateTime,
}

impl NewSecretVersion {
    /// The write that leaves the secret as `meta` (its `version`, metadata
    /// and `updated_at`), with `sealed` as that version's value.
    pub fn of(meta: Secret, sealed: SealedValue) -> Self {
        Self {
            tenant_id: meta.tenant_id,
            id: meta.id,
            name: meta.name,
            scope: meta.scope,
            scope_key: meta.scope_key,
            workspace_id: meta.workspace_id,
            expose_as_env: meta.expose_as_env,
            allowed_hosts: meta.allowed_hosts,
            substitute_in: meta.substitute_in,
            version: meta.version,
            sealed,
            at: meta.updated_at,
        }
    }
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
    /// When true, a secret without `allowed_hosts` (one that may go to any
    /// host) is refused.
    pub require_allowed_hosts: bool,
    /// When true, end-user secrets without a workspace binding also resolve
    /// in sandboxes created through a workspace key.
    pub workspace_keys_use_unbound_secrets: bool,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            allow_end_user_credentials: true,
            require_allowed_hosts: false,
            workspace_keys_use_unbound_secrets: false,
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
    /// The sandbox was created through a workspace key: unbound end-user
    /// secrets resolve only if the tenant allows it.
    pub created_by_workspace_key: bool,
}

impl SandboxScopeKeys {
    pub fn of(sandbox: &Sandbox) -> Self {
        Self::new(
            &sandbox.id,
            sandbox.workspace_id.as_ref(),
            &sandbox.labels,
            sandbox.created_by_workspace_key,
        )
    }

    pub fn new(
        sandbox: &SandboxId,
        workspace: Option<&WorkspaceId>,
        labels: &Labels,
        created_by_workspace_key: bool,
    ) -> Self {
        Self {
            sandbox_id: sandbox.as_str().to_owned(),
            owner_user_id: labels.owner_user_id.clone(),
            external_user_id: labels.external_user_id.clone(),
            external_workspace_id: labels.external_workspace_id.clone(),
            workspace_id: workspace.map(|w| w.as_str().to_owned()),
            created_by_workspace_key,
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

    /// Whether `secret`'s workspace binding lets it resolve here: an
    /// end-user secret bound to a workspace only in that workspace's
    /// sandboxes; an unbound one everywhere except in sandboxes a workspace
    /// key created, unless the tenant allows that.
    fn binding_allows(&self, secret: &Secret, settings: &TenantSettings) -> bool {
        if !secret.is_end_user() {
            return true;
        }
        match &secret.workspace_id {
            Some(ws) => self.workspace_id.as_deref() == Some(ws.as_str()),
            None => !self.created_by_workspace_key || settings.workspace_keys_use_unbound_secrets,
        }
    }
}

/// Which secret fills each exposed environment variable of a sandbox:
/// enabled secrets whose scope key and workspace binding match, first scope
/// in precedence order wins; within a scope a workspace-bound secret beats
/// an unbound one (ties, which the store's uniqueness rules prevent, go to
/// the lower ID). `external_user` secrets are skipped unless the tenant
/// allows end-user credentials.
pub fn resolve<'a>(
    keys: &SandboxScopeKeys,
    candidates: impl IntoIterator<Item = &'a Secret>,
    settings: &TenantSettings,
) -> BTreeMap<String, &'a Secret> {
    let rank = |s: &'a Secret| (s.scope.rank(), s.workspace_id.is_none(), &s.id);
    let mut out: BTreeMap<String, &'a Secret> = BTreeMap::new();
    for secret in candidates {
        if !secret.enabled
            || (secret.scope == SecretScope::ExternalUser && !settings.allow_end_user_credentials)
            || !keys.matches(secret.scope, secret.scope_key.as_deref())
            || !keys.binding_allows(secret, settings)
        {
            continue;
        }
        let better = match out.get(&secret.expose_as_env) {
            None => true,
            Some(current) => rank(secret) < rank(current),
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
            workspace_id: None,
            expose_as_env: env.to_owned(),
            allowed_hosts: Vec::new(),
            substitute_in: SubstituteIn::HEADERS,
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
            created_by_workspace_key: false,
        }
    }

    fn end_user(allow: bool) -> TenantSettings {
        TenantSettings {
            allow_end_user_credentials: allow,
            ..TenantSettings::default()
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
                            allow in any::<bool>()) {
            let full = full_keys();
            let keys = SandboxScopeKeys {
                sandbox_id: full.sandbox_id.clone(),
                owner_user_id: full.owner_user_id.clone().filter(|_| labels[0]),
                external_user_id: full.external_user_id.clone().filter(|_| labels[1]),
                external_workspace_id: full.external_workspace_id.clone().filter(|_| labels[2]),
                workspace_id: full.workspace_id.clone().filter(|_| labels[3]),
                created_by_workspace_key: false,
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
                SecretScope::ExternalUser => labels[1] && allow,
                SecretScope::ExternalWorkspace => labels[2],
                SecretScope::Workspace => labels[3],
            };
            let expected = secrets.iter().find(|s| offered(s.scope)).map(|s| s.id.clone());
            let got = resolve(&keys, &all, &end_user(allow));
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
        let got = resolve(&keys, &all, &end_user(true));
        assert_eq!(got["OPENAI_API_KEY"].id, user.id);
        assert_eq!(got["EHR_API_KEY"].id, ehr.id);
        user.enabled = false;
        let all = vec![user, tenant.clone(), ehr];
        assert_eq!(
            resolve(&keys, &all, &end_user(true))["OPENAI_API_KEY"].id,
            tenant.id
        );
    }

    proptest! {
        /// An end-user secret bound to a workspace resolves only in that
        /// workspace's sandboxes; an unbound one resolves unless a workspace
        /// key created the sandbox and the tenant does not allow it; within
        /// a scope, bound beats unbound.
        #[test]
        fn workspace_bindings(scope in prop_oneof![
                                  Just(SecretScope::User),
                                  Just(SecretScope::ExternalUser),
                                  Just(SecretScope::ExternalWorkspace)],
                              binding in 0u8..3,
                              with_unbound in any::<bool>(),
                              by_workspace_key in any::<bool>(),
                              allow_unbound in any::<bool>()) {
            let mine = WorkspaceId::generate();
            let other = WorkspaceId::generate();
            let mut keys = full_keys();
            keys.workspace_id = Some(mine.as_str().to_owned());
            keys.created_by_workspace_key = by_workspace_key;
            let settings = TenantSettings {
                workspace_keys_use_unbound_secrets: allow_unbound,
                ..TenantSettings::default()
            };
            let mut bound = secret(scope, key_of(&keys, scope).as_deref(), "TOKEN");
            bound.workspace_id = match binding {
                0 => Some(mine.clone()),
                1 => Some(other.clone()),
                _ => None,
            };
            let unbound = secret(scope, key_of(&keys, scope).as_deref(), "TOKEN");
            let mut all = vec![bound.clone()];
            if with_unbound {
                all.push(unbound.clone());
            }
            let unbound_ok = !by_workspace_key || allow_unbound;
            let expected = if binding == 0 {
                Some(&bound.id)
            } else if binding == 2 && unbound_ok {
                // Two unbound secrets: the lower ID.
                Some(all.iter().map(|s| &s.id).min().unwrap())
            } else if with_unbound && unbound_ok {
                Some(&unbound.id)
            } else {
                None
            };
            let got = resolve(&keys, &all, &settings);
            prop_assert_eq!(got.get("TOKEN").map(|s| &s.id), expected);
        }
    }

    #[test]
    fn bindings_do_not_restrict_other_scopes() {
        let mut keys = full_keys();
        keys.created_by_workspace_key = true;
        for scope in [
            SecretScope::Sandbox,
            SecretScope::Workspace,
            SecretScope::Tenant,
        ] {
            let s = secret(scope, key_of(&keys, scope).as_deref(), "A");
            assert_eq!(resolve(&keys, [&s], &end_user(true)).len(), 1, "{scope:?}");
        }
    }

    #[test]
    fn seal_contexts_differ_by_everything_that_matters() {
        let base = secret(SecretScope::ExternalUser, Some("eu1"), "A");
        let ctx = base.seal_context(1);
        assert_eq!(ctx, base.clone().seal_context(1));
        assert_ne!(ctx, base.seal_context(2));
        let changes: [fn(&mut Secret); 7] = [
            |s| s.id = SecretId::generate(),
            |s| s.tenant_id = TenantId::generate(),
            |s| s.scope = SecretScope::ExternalWorkspace,
            |s| s.scope_key = Some("eu2".into()),
            |s| s.workspace_id = Some(WorkspaceId::generate()),
            |s| s.allowed_hosts = vec!["evil.example".into()],
            |s| s.substitute_in = SubstituteIn::ALL,
        ];
        for change in changes {
            let mut s = base.clone();
            change(&mut s);
            assert_ne!(s.seal_context(1), ctx, "{s:?}");
        }
        // What does not decide where the value goes is not bound.
        let mut s = base.clone();
        s.enabled = false;
        s.expose_as_env = "B".into();
        assert_eq!(s.seal_context(1), ctx);
    }

    #[test]
    fn allowed_hosts_carry_ports() {
        let mut s = secret(SecretScope::Tenant, None, "A");
        assert!(s.allows_host("anything.example", 25), "empty: any host");
        s.allowed_hosts = vec!["api.example.com".into(), "*.example.org:8443".into()];
        assert!(s.allows_host("api.example.com", 443));
        assert!(!s.allows_host("api.example.com", 8443));
        assert!(s.allows_host("x.example.org", 8443));
        assert!(!s.allows_host("x.example.org", 443));
    }

    #[test]
    fn tenant_secrets_need_no_key() {
        let keys = SandboxScopeKeys {
            sandbox_id: "sbx_1".into(),
            ..Default::default()
        };
        let bad = secret(SecretScope::Tenant, Some("x"), "A");
        assert!(resolve(&keys, [&bad], &end_user(true)).is_empty());
        let good = secret(SecretScope::Tenant, None, "A");
        assert_eq!(resolve(&keys, [&good], &end_user(true)).len(), 1);
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
    fn scope_round_trip() {
        for s in SecretScope::PRECEDENCE {
            assert_eq!(SecretScope::parse(s.as_str()), Some(s));
        }
        assert_eq!(SecretScope::Sandbox.rank(), 0);
        assert_eq!(SecretScope::Tenant.rank(), 5);
    }
}

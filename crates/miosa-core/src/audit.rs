//! The audit log's rows and their hash chain.
//!
//! Each tenant's rows form one chain ordered by `seq`: a row's `hash` is
//! SHA-256 over its predecessor's hash and the row's canonical form, so a
//! changed, removed or reordered row breaks every link after it. The store
//! assigns `seq` and the hashes inside the append transaction.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    ApiKeyId, AuditId, Labels, SandboxId, Secret, SecretId, SecretScope, TenantId, WorkspaceId,
};

/// `prev_hash` of a tenant's first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Proxied requests are `egress.request`.
pub mod action {
    pub const EGRESS_REQUEST: &str = "egress.request";
    pub const SANDBOX_CREATED: &str = "sandbox.created";
    pub const SANDBOX_DESTROYED: &str = "sandbox.destroyed";
    pub const SECRET_SET: &str = "secret.set";
    pub const SECRET_DISABLED: &str = "secret.disabled";
    pub const SECRET_ENABLED: &str = "secret.enabled";
    pub const SECRET_DELETED: &str = "secret.deleted";
    pub const SETTINGS_UPDATED: &str = "settings.updated";
    pub const API_KEY_CREATED: &str = "api_key.created";
    pub const API_KEY_REVOKED: &str = "api_key.revoked";

    pub const ALL: &[&str] = &[
        EGRESS_REQUEST,
        SANDBOX_CREATED,
        SANDBOX_DESTROYED,
        SECRET_SET,
        SECRET_DISABLED,
        SECRET_ENABLED,
        SECRET_DELETED,
        SETTINGS_UPDATED,
        API_KEY_CREATED,
        API_KEY_REVOKED,
    ];
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done (for a proxied request: forwarded, whatever the upstream said).
    Success,
    /// Refused by policy (e.g. a private destination).
    Denied,
    /// Failed (e.g. the upstream could not be reached or its TLS failed).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Success, Self::Denied, Self::Error]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// A proxied request, as far as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRequest {
    pub method: String,
    pub host: String,
    /// Path only; the query string is not recorded (it may carry secrets).
    pub path: String,
    /// The status the sandbox received; `None` if no response was sent.
    pub status: Option<u16>,
    /// Request body bytes sent upstream.
    pub bytes_out: u64,
    /// Response body bytes returned to the sandbox.
    pub bytes_in: u64,
    pub duration_ms: u64,
}

/// The secret that resolved (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCredential {
    pub secret_id: SecretId,
    pub name: String,
    #[serde(serialize_with = "scope_str")]
    pub scope: SecretScope,
}

impl From<&Secret> for AuditCredential {
    fn from(s: &Secret) -> Self {
        Self {
            secret_id: s.id.clone(),
            name: s.name.clone(),
            scope: s.scope,
        }
    }
}

fn scope_str<S: serde::Serializer>(s: &SecretScope, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// A row before it joins the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: AuditId,
    pub tenant_id: TenantId,
    /// Microsecond precision (what both stores keep).
    pub time: OffsetDateTime,
    pub action: String,
    /// The API key ID, `system` for Miosa's own workers, `None` for traffic
    /// from a sandbox.
    pub actor: Option<String>,
    /// The resource acted on when it is not the sandbox (`sec_…`, `key_…`).
    pub target: Option<String>,
    pub sandbox_id: Option<SandboxId>,
    pub workspace_id: Option<WorkspaceId>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    pub request: Option<AuditRequest>,
    pub credential: Option<AuditCredential>,
    pub outcome: Outcome,
    /// The API key that created the sandbox the row is about.
    pub created_by_key_id: Option<ApiKeyId>,
    /// Appended before the request it records was sent (a request carrying
    /// a secret is forwarded only once its row is durable): the status,
    /// byte counts, duration and outcome come later ([`AuditCompletion`])
    /// and are not covered by the hash; everything else is.
    pub deferred: bool,
}

/// A row in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub entry: AuditEntry,
    /// 1 for a tenant's first row, then +1 per row.
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    /// A deferred row whose completion has not arrived (yet, or ever: the
    /// server stopped before the request finished).
    pub pending: bool,
}

/// What completes a deferred row once its request is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCompletion {
    pub tenant_id: TenantId,
    pub id: AuditId,
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
    pub outcome: Outcome,
}

/// What the hash covers of a proxied request: all of it for an inline row,
/// what was known before sending for a deferred one.
#[derive(Serialize)]
#[serde(untagged)]
enum CanonicalRequest<'a> {
    Full(&'a AuditRequest),
    Intent {
        method: &'a str,
        host: &'a str,
        path: &'a str,
    },
}

#[derive(Serialize)]
struct Canonical<'a> {
    /// 1: every field; 2: a deferred row (no completion fields).
    v: u8,
    id: &'a str,
    tenant_id: &'a str,
    seq: i64,
    time_us: i128,
    action: &'a str,
    actor: Option<&'a str>,
    target: Option<&'a str>,
    sandbox_id: Option<&'a str>,
    workspace_id: Option<&'a str>,
    owner_user_id: Option<&'a str>,
    external_user_id: Option<&'a str>,
    external_workspace_id: Option<&'a str>,
    external_project_id: Option<&'a str>,
    request: Option<CanonicalRequest<'a>>,
    credential: Option<&'a AuditCredential>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    prev_hash: &'a str,
    /// Left out when absent, so rows written before it existed keep their
    /// hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by_key_id: Option<&'a str>,
}

impl AuditEntry {
    /// A fresh row (new ID, now) of `action` in `tenant`, with nothing else
    /// set; fill in the rest with the builders below or the fields.
    pub fn new(tenant: &TenantId, action: &str, outcome: Outcome) -> Self {
        Self {
            id: AuditId::generate(),
            tenant_id: tenant.clone(),
            time: crate::time_util::now(),
            action: action.to_owned(),
            actor: None,
            target: None,
            sandbox_id: None,
            workspace_id: None,
            owner_user_id: None,
            external_user_id: None,
            external_workspace_id: None,
            external_project_id: None,
            request: None,
            credential: None,
            outcome,
            created_by_key_id: None,
            deferred: false,
        }
    }

    /// Sets the sandbox and its identity chain (workspace and labels).
    pub fn for_sandbox(
        mut self,
        sandbox: &SandboxId,
        workspace: Option<&WorkspaceId>,
        labels: &Labels,
    ) -> Self {
        self.sandbox_id = Some(sandbox.clone());
        self.workspace_id = workspace.cloned();
        self.owner_user_id.clone_from(&labels.owner_user_id);
        self.external_user_id.clone_from(&labels.external_user_id);
        self.external_workspace_id
            .clone_from(&labels.external_workspace_id);
        self.external_project_id
            .clone_from(&labels.external_project_id);
        self
    }

    /// Names the key that created the row's sandbox.
    pub fn created_by(mut self, key: Option<&ApiKeyId>) -> Self {
        self.created_by_key_id = key.cloned();
        self
    }

    /// The hash this entry gets at position `seq` after `prev_hash`:
    /// hex SHA-256 of `prev_hash ‖ "\n" ‖ canonical JSON` (fixed field
    /// order, time as integer microseconds).
    pub fn chain_hash(&self, seq: i64, prev_hash: &str) -> String {
        let request = self.request.as_ref().map(|r| match self.deferred {
            false => CanonicalRequest::Full(r),
            true => CanonicalRequest::Intent {
                method: &r.method,
                host: &r.host,
                path: &r.path,
            },
        });
        let canonical = Canonical {
            v: if self.deferred { 2 } else { 1 },
            id: self.id.as_str(),
            tenant_id: self.tenant_id.as_str(),
            seq,
            time_us: self.time.unix_timestamp_nanos() / 1_000,
            action: &self.action,
            actor: self.actor.as_deref(),
            target: self.target.as_deref(),
            sandbox_id: self.sandbox_id.as_ref().map(SandboxId::as_str),
            workspace_id: self.workspace_id.as_ref().map(WorkspaceId::as_str),
            owner_user_id: self.owner_user_id.as_deref(),
            external_user_id: self.external_user_id.as_deref(),
            external_workspace_id: self.external_workspace_id.as_deref(),
            external_project_id: self.external_project_id.as_deref(),
            request,
            credential: self.credential.as_ref(),
            outcome: (!self.deferred).then(|| self.outcome.as_str()),
            prev_hash,
            created_by_key_id: self.created_by_key_id.as_ref().map(ApiKeyId::as_str),
        };
        // Serialising plain strings and integers cannot fail.
        let json = serde_json::to_vec(&canonical).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
        h.update(&json);
        hex::encode(h.finalize())
    }

    /// Joins the chain after `prev` (or starts it).
    pub fn link(self, prev: Option<(i64, &str)>) -> AuditEvent {
        let (seq, prev_hash) = match prev {
            Some((s, h)) => (s + 1, h.to_owned()),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = self.chain_hash(seq, &prev_hash);
        AuditEvent {
            pending: self.deferred,
            entry: self,
            seq,
            prev_hash,
            hash,
        }
    }
}

/// A tenant's chain head signed with a key the database does not hold (an
/// Ed25519 key derived from the master key `kek_id`): the CloudTrail digest
/// idea. Anyone with the public key can check an archived checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub tenant_id: TenantId,
    pub seq: i64,
    pub hash: String,
    /// Microsecond precision.
    pub time: OffsetDateTime,
    pub kek_id: String,
    /// Ed25519 over [`AuditCheckpoint::message`].
    pub signature: Vec<u8>,
}

impl AuditCheckpoint {
    /// The bytes signed: a fixed prefix, then tenant, seq, hash and time
    /// (microseconds), newline-separated.
    pub fn message(tenant: &TenantId, seq: i64, hash: &str, time: OffsetDateTime) -> Vec<u8> {
        format!(
            "miosa-audit-checkpoint-v1\n{}\n{seq}\n{hash}\n{}",
            tenant.as_str(),
            time.unix_timestamp_nanos() / 1_000
        )
        .into_bytes()
    }

    /// This checkpoint's signed bytes.
    pub fn signed_message(&self) -> Vec<u8> {
        Self::message(&self.tenant_id, self.seq, &self.hash, self.time)
    }
}

/// Where a chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    /// The offending row; for a removed tail, the last row still there.
    pub id: Option<AuditId>,
    pub reason: String,
}

/// Walks a tenant's rows in `seq` order, carrying the state between pages.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    last_id: Option<AuditId>,
    pub checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            last_id: None,
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next row; the first error is the first broken link.
    pub fn check(&mut self, ev: &AuditEvent) -> Result<(), BrokenLink> {
        let broken = |reason: String| BrokenLink {
            seq: ev.seq,
            id: Some(ev.entry.id.clone()),
            reason,
        };
        if ev.seq != self.expected_seq {
            return Err(broken(format!(
                "expected seq {} but found {} (a row is missing or was inserted)",
                self.expected_seq, ev.seq
            )));
        }
        if ev.prev_hash != self.prev_hash {
            return Err(broken(
                "prev_hash does not match the previous row's hash".into(),
            ));
        }
        let recomputed = ev.entry.chain_hash(ev.seq, &ev.prev_hash);
        if recomputed != ev.hash {
            return Err(broken(
                "hash does not match the row's content (the row was changed)".into(),
            ));
        }
        self.expected_seq += 1;
        self.prev_hash = ev.hash.clone();
        self.checked += 1;
        self.last_id = Some(ev.entry.id.clone());
        Ok(())
    }

    /// After the last row: the stored chain head (`seq`, `hash`) must be the
    /// last row checked, or rows at the end were removed.
    pub fn check_head(&self, head: Option<(i64, &str)>) -> Result<(), BrokenLink> {
        let last_seq = self.expected_seq - 1;
        let (seq, hash) = head.unwrap_or((0, GENESIS_HASH));
        if seq == last_seq && hash == self.prev_hash {
            return Ok(());
        }
        Err(BrokenLink {
            seq: last_seq + 1,
            id: self.last_id.clone(),
            reason: format!(
                "the chain ends at seq {last_seq} but its head records seq {seq}: the newest rows were removed or changed"
            ),
        })
    }
}

/// Parses a time filter: a look-back (`7d`, `24h`, `30m`, `90s`, counted
/// back from `now`) or an RFC 3339 timestamp.
pub fn parse_time_filter(
    field: &str,
    value: &str,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, crate::FieldError> {
    let bad = || {
        crate::FieldError::new(
            field,
            "must be a duration like `7d`, `24h`, `30m`, `90s` or an RFC 3339 time",
        )
    };
    if let Some(unit) = value.chars().last().filter(|c| "dhms".contains(*c)) {
        let digits = &value[..value.len() - 1];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = digits.parse().map_err(|_| bad())?;
            let secs = match unit {
                'd' => n.checked_mul(86_400),
                'h' => n.checked_mul(3_600),
                'm' => n.checked_mul(60),
                _ => Some(n),
            }
            .filter(|s| *s <= 100 * 365 * 86_400)
            .ok_or_else(bad)?;
            return Ok(now - time::Duration::seconds(secs));
        }
    }
    OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_filters() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let p = |v| parse_time_filter("since", v, now);
        assert_eq!(p("7d").unwrap(), now - time::Duration::days(7));
        assert_eq!(p("24h").unwrap(), now - time::Duration::hours(24));
        assert_eq!(p("90s").unwrap(), now - time::Duration::seconds(90));
        assert_eq!(
            p("2023-11-14T22:13:20Z").unwrap(),
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
        );
        for bad in ["", "d", "7", "7w", "-7d", "yesterday", "99999999999d"] {
            assert_eq!(p(bad).unwrap_err().field, "since", "{bad}");
        }
    }

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            id: AuditId::generate(),
            tenant_id: TenantId::parse("ten_01jdq3x5m8v2k7f4c9n6r1w0ab").unwrap(),
            time: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            action: action.into(),
            actor: None,
            target: None,
            sandbox_id: None,
            workspace_id: None,
            owner_user_id: None,
            external_user_id: Some("dr_smith@clinic1.example".into()),
            external_workspace_id: None,
            external_project_id: None,
            request: Some(AuditRequest {
                method: "GET".into(),
                host: "api.openai.com".into(),
                path: "/v1/models".into(),
                status: Some(401),
                bytes_out: 0,
                bytes_in: 10,
                duration_ms: 3,
            }),
            credential: None,
            outcome: Outcome::Success,
            created_by_key_id: None,
            deferred: false,
        }
    }

    /// A row hashed before `created_by_key_id` and `deferred` existed keeps
    /// its hash (the canonical form written out by hand, as v1 had it).
    #[test]
    fn old_rows_keep_their_hash() {
        let e = entry(action::EGRESS_REQUEST);
        let v1 = format!(
            r#"{{"v":1,"id":"{}","tenant_id":"ten_01jdq3x5m8v2k7f4c9n6r1w0ab","seq":7,"time_us":1700000000000000,"action":"egress.request","actor":null,"target":null,"sandbox_id":null,"workspace_id":null,"owner_user_id":null,"external_user_id":"dr_smith@clinic1.example","external_workspace_id":null,"external_project_id":null,"request":{{"method":"GET","host":"api.openai.com","path":"/v1/models","status":401,"bytes_out":0,"bytes_in":10,"duration_ms":3}},"credential":null,"outcome":"success","prev_hash":"{GENESIS_HASH}"}}"#,
            e.id
        );
        let mut h = Sha256::new();
        h.update(GENESIS_HASH.as_bytes());
        h.update(b"\n");
        h.update(v1.as_bytes());
        assert_eq!(e.chain_hash(7, GENESIS_HASH), hex::encode(h.finalize()));
    }

    /// A deferred row's hash covers what was known before sending, not the
    /// completion: completing it leaves the chain intact; changing the
    /// request, the secret or the deferral itself breaks it.
    #[test]
    fn deferred_rows_hash_the_intent() {
        let mut e = entry(action::EGRESS_REQUEST);
        e.deferred = true;
        e.created_by_key_id = Some(ApiKeyId::generate());
        let linked = e.clone().link(None);
        assert!(linked.pending);
        let mut completed = linked.clone();
        let r = completed.entry.request.as_mut().unwrap();
        r.status = Some(200);
        r.bytes_in = 99;
        r.duration_ms = 42;
        completed.entry.outcome = Outcome::Error;
        ChainVerifier::default().check(&completed).unwrap();
        for change in [
            |e: &mut AuditEntry| e.request.as_mut().unwrap().host = "evil.example".into(),
            |e: &mut AuditEntry| e.deferred = false,
            |e: &mut AuditEntry| e.created_by_key_id = None,
            |e: &mut AuditEntry| e.external_user_id = Some("someone-else".into()),
        ] {
            let mut t = linked.clone();
            change(&mut t.entry);
            assert!(ChainVerifier::default().check(&t).is_err());
        }
    }

    #[test]
    fn a_chain_verifies_and_any_change_breaks_it() {
        let a = entry(action::EGRESS_REQUEST).link(None);
        let b = entry(action::EGRESS_REQUEST).link(Some((a.seq, &a.hash)));
        let c = entry(action::SECRET_SET).link(Some((b.seq, &b.hash)));
        let mut v = ChainVerifier::default();
        for ev in [&a, &b, &c] {
            v.check(ev).unwrap();
        }
        assert_eq!(v.checked, 3);

        let mut tampered = b.clone();
        tampered.entry.request.as_mut().unwrap().status = Some(200);
        let mut v = ChainVerifier::default();
        v.check(&a).unwrap();
        let err = v.check(&tampered).unwrap_err();
        assert_eq!(err.seq, 2);
        assert!(err.reason.contains("changed"), "{err:?}");

        let mut v = ChainVerifier::default();
        v.check(&a).unwrap();
        assert!(v.check(&c).unwrap_err().reason.contains("missing"));

        // A removed tail: the rows left verify, the head does not match.
        let mut v = ChainVerifier::default();
        v.check(&a).unwrap();
        v.check(&b).unwrap();
        assert!(v.check_head(Some((2, &b.hash))).is_ok());
        let err = v.check_head(Some((3, &c.hash))).unwrap_err();
        assert!(err.reason.contains("removed"), "{err:?}");
        assert!(ChainVerifier::default().check_head(None).is_ok());
    }

    #[test]
    fn outcome_round_trip() {
        for o in [Outcome::Success, Outcome::Denied, Outcome::Error] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}

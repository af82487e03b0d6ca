//! What the proxy knows about a sandbox and its secrets, and the two seams
//! through which it learns and reports: [`CredentialSource`] and
//! [`AuditSink`].

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use miosa_core::{
    ApiKeyId, AuditCompletion, AuditEntry, Labels, SandboxId, Secret, TenantId, WorkspaceId,
};
use zeroize::Zeroizing;

/// Who a connection belongs to: fixed by the socket it arrived on, never by
/// anything the sandbox says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxIdentity {
    /// The tenant that owns the sandbox.
    pub tenant_id: TenantId,
    /// The sandbox.
    pub sandbox_id: SandboxId,
    /// Its Miosa workspace, if any.
    pub workspace_id: Option<WorkspaceId>,
    /// The tenant's attribution labels, copied into every audit row.
    pub labels: Labels,
    /// The API key that created the sandbox (in every audit row).
    pub created_by_key_id: Option<ApiKeyId>,
    /// Whether a workspace key created the sandbox (it then resolves only
    /// end-user secrets bound to its workspace, unless the tenant allows
    /// unbound ones).
    pub created_by_workspace_key: bool,
}

/// A secret value in the proxy's memory: wiped on drop, `[redacted]` when
/// formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps a plaintext value.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value itself. Call sites are easy to grep for.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One secret a sandbox may use: its metadata, the placeholder the sandbox
/// sees, and the value the proxy substitutes.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The secret's metadata (name, scope, allowed hosts).
    pub secret: Secret,
    /// What the sandbox sees instead of the value; must start with
    /// [`miosa_core::secret::PLACEHOLDER_PREFIX`] (others are never matched).
    pub placeholder: String,
    /// The real value.
    pub value: SecretValue,
}

/// Where the proxy gets a sandbox's credentials.
#[async_trait]
pub trait CredentialSource: Send + Sync + 'static {
    /// The credentials currently in force for `sandbox`. Called for every
    /// request that carries a placeholder (the implementation caches; a
    /// disabled secret must stop resolving on the very next request). An
    /// error fails that request with 502; it is never shown to the sandbox.
    async fn credentials(&self, sandbox: &SandboxIdentity) -> Result<Arc<Vec<Credential>>, String>;
}

/// The audit log could not take a row: the request is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditUnavailable;

/// A boxed future, for the object-safe sink.
pub type SinkFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), AuditUnavailable>> + Send + 'a>>;

/// Where the proxy sends its audit rows.
pub trait AuditSink: Send + Sync + 'static {
    /// Takes one finished row. Must not block: the implementation batches.
    fn record(&self, entry: AuditEntry);

    /// Writes a deferred row (`entry.deferred`) and resolves once it is
    /// durable: a request carrying a secret is forwarded only after that.
    /// An error fails the request closed (503 `audit_unavailable`).
    fn record_durable(&self, entry: AuditEntry) -> SinkFuture<'_>;

    /// Completes a row written by [`AuditSink::record_durable`]. Must not
    /// block.
    fn complete(&self, completion: AuditCompletion);

    /// Resolves when the sink can take the row of a request about to
    /// start: a writer that falls behind slows traffic down; one that
    /// cannot write refuses it rather than lose rows.
    fn admit(&self) -> SinkFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}

//! The `Store` trait: every piece of Miosa state that lives in the database,
//! behind domain-level methods. Backends: `miosa-store-sqlite` and
//! `miosa-store-postgres`; `miosa-store-conformance` holds the story both
//! must pass.
//!
//! Every method on tenant-owned data takes the `TenantId` first and filters
//! by it, so a caller cannot forget tenancy.
#![forbid(unsafe_code)]

mod error;

use async_trait::async_trait;
use std::collections::BTreeMap;

use miosa_core::{
    ApiKey, ApiKeyId, KeyHash, NewApiKey, Page, PageRequest, Sandbox, SandboxId, SandboxStatus,
    Tenant, TenantId, Workspace, WorkspaceId,
};
use time::OffsetDateTime;

pub use error::{StoreError, StoreResult};

/// What the database remembers about its own initialisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemInfo {
    /// `Pepper::fingerprint()` of the pepper the database was created with;
    /// `None` until bootstrap.
    pub pepper_fingerprint: Option<String>,
    /// Hash of the root key generated at first start (none if the operator
    /// configured `MIOSA_ROOT_KEY` at that time).
    pub root_key_hash: Option<KeyHash>,
}

/// Everything written on the very first start, in one transaction.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub pepper_fingerprint: String,
    pub root_key_hash: Option<KeyHash>,
    pub tenant: Tenant,
    pub admin_key: NewApiKey,
}

/// Filters for listing workspaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceFilter {
    /// Only this workspace (what a workspace-scoped key may see).
    pub only: Option<WorkspaceId>,
}

/// Filters for listing sandboxes; all given filters must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    pub workspace_id: Option<WorkspaceId>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    /// `None` means every status except `destroyed`.
    pub status: Option<SandboxStatus>,
    /// Each `(key, value)` must be present in the sandbox's metadata.
    pub metadata: Vec<(String, String)>,
}

/// Changes to a sandbox; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxPatch {
    /// `Some(None)` clears the name.
    pub name: Option<Option<String>>,
    /// Replaces the whole map.
    pub metadata: Option<BTreeMap<String, String>>,
    pub timeout_seconds: Option<u32>,
    pub expires_at: Option<OffsetDateTime>,
}

/// Result of revoking a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    /// It was revoked before; nothing changed.
    AlreadyRevoked,
    /// No such key in this tenant.
    NotFound,
    /// Refused: it is the tenant's last active admin key.
    LastAdminKey,
}

/// Domain-level persistence. Implementations must be safe to share between
/// tasks and between processes using the same database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;

    // --- system -----------------------------------------------------------

    async fn system_info(&self) -> StoreResult<SystemInfo>;

    /// Initialises an empty database atomically. Returns `false` (and writes
    /// nothing) when it was already initialised, even by a concurrent caller.
    async fn bootstrap(&self, b: &Bootstrap) -> StoreResult<bool>;

    // --- tenants ----------------------------------------------------------

    /// Creates a tenant and its first admin key together.
    /// `Conflict { field: "name" }` when the name is taken.
    async fn create_tenant(&self, tenant: &Tenant, first_key: &NewApiKey) -> StoreResult<()>;
    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self, page: &PageRequest) -> StoreResult<Page<Tenant>>;

    // --- workspaces -------------------------------------------------------

    /// `Conflict { field: "name" }` when the tenant already has that name.
    async fn create_workspace(&self, ws: &Workspace) -> StoreResult<()>;
    async fn get_workspace(
        &self,
        tenant: &TenantId,
        id: &WorkspaceId,
    ) -> StoreResult<Option<Workspace>>;
    async fn list_workspaces(
        &self,
        tenant: &TenantId,
        filter: &WorkspaceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Workspace>>;

    // --- API keys ---------------------------------------------------------

    /// `MissingReference { field: "workspace_id" }` when a workspace-scoped
    /// key names a workspace that is not the tenant's.
    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<()>;
    async fn get_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> StoreResult<Option<ApiKey>>;
    /// All keys of the tenant, revoked ones included, newest first.
    async fn list_api_keys(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKey>>;
    /// Revokes at once; refuses to revoke the last active admin key.
    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &ApiKeyId,
        at: OffsetDateTime,
    ) -> StoreResult<RevokeOutcome>;
    /// The active (not revoked) key with this hash, in any tenant.
    async fn find_active_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKey>>;

    // --- sandboxes --------------------------------------------------------

    /// `Conflict { entity: "sandbox", field: "name" }` when a live (not
    /// destroyed) sandbox of the same tenant and workspace has that name.
    /// `MissingReference { field: "workspace_id" }` for a workspace that is
    /// not the tenant's.
    async fn create_sandbox(&self, sandbox: &Sandbox) -> StoreResult<()>;
    /// Any status, `destroyed` included.
    async fn get_sandbox(&self, tenant: &TenantId, id: &SandboxId) -> StoreResult<Option<Sandbox>>;
    /// The live (not destroyed) sandbox with this name in this workspace
    /// (`None` = the tenant-level sandboxes without a workspace).
    async fn get_sandbox_by_name(
        &self,
        tenant: &TenantId,
        workspace: Option<&WorkspaceId>,
        name: &str,
    ) -> StoreResult<Option<Sandbox>>;
    /// Newest first.
    async fn list_sandboxes(
        &self,
        tenant: &TenantId,
        filter: &SandboxFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Sandbox>>;
    /// Applies the patch to a live sandbox and returns it; `None` if there
    /// is no such live sandbox. Name conflicts as in `create_sandbox`.
    async fn update_sandbox(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        patch: &SandboxPatch,
    ) -> StoreResult<Option<Sandbox>>;
    /// Moves a sandbox to `to` if its current status is one of `from`
    /// (compare-and-set); returns whether it changed. Moving to `destroyed`
    /// also sets `destroyed_at = at`.
    async fn transition_sandbox(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        from: &[SandboxStatus],
        to: SandboxStatus,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Every sandbox on node `node`, of every tenant, whose status is one
    /// of `statuses` (for that node's reconciler). Oldest first.
    async fn sandboxes_in_status(
        &self,
        node: &str,
        statuses: &[SandboxStatus],
    ) -> StoreResult<Vec<Sandbox>>;
    /// Running or paused sandboxes on node `node`, of every tenant, whose
    /// `expires_at` is before `now` (for that node's reaper). Oldest
    /// deadline first, at most `limit`.
    async fn expired_sandboxes(
        &self,
        node: &str,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<Sandbox>>;
}

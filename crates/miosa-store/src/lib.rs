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
use miosa_core::{
    ApiKey, ApiKeyId, KeyHash, NewApiKey, Page, PageRequest, Tenant, TenantId, Workspace,
    WorkspaceId,
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
}

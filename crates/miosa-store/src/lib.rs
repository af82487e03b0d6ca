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
    ApiKey, ApiKeyId, AuditCheckpoint, AuditCompletion, AuditEntry, AuditEvent, KeyHash, NewApiKey,
    NewSecretVersion, Page, PageRequest, Sandbox, SandboxId, SandboxScopeKeys, SandboxStatus,
    SealedValue, SealedVersion, Secret, SecretId, SecretScope, Tenant, TenantId, TenantSettings,
    Workspace, WorkspaceId,
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

/// Filters for listing secrets; all given filters must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretFilter {
    pub scope: Option<SecretScope>,
    /// Exact scope key (sandbox ID, user ID, …); meaningful with `scope`,
    /// but also matches across scopes when given alone.
    pub scope_key: Option<String>,
    pub name: Option<String>,
    /// Only secrets belonging to this workspace (what a workspace key sees).
    pub workspace_id: Option<WorkspaceId>,
}

/// What identifies a secret besides its ID: upserts go by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    pub scope: SecretScope,
    pub scope_key: Option<String>,
    /// `None`: unbound.
    pub workspace_id: Option<WorkspaceId>,
    pub name: String,
}

/// Changes to a tenant's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsPatch {
    pub allow_end_user_credentials: Option<bool>,
    pub require_allowed_hosts: Option<bool>,
    pub workspace_keys_use_unbound_secrets: Option<bool>,
}

/// Filters for listing audit rows; all given filters must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Inclusive.
    pub since: Option<OffsetDateTime>,
    /// Exclusive.
    pub until: Option<OffsetDateTime>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    pub sandbox_id: Option<SandboxId>,
    pub action: Option<String>,
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

    /// The key-encryption key new secret values must be sealed under (the
    /// one every replica agrees on); `None` before any server recorded one.
    async fn sealing_kek(&self) -> StoreResult<Option<String>>;
    /// Records `kek_id` as the sealing key unless one is recorded already;
    /// returns the recorded one (first start, or an upgrade).
    async fn claim_sealing_kek(&self, kek_id: &str) -> StoreResult<String>;
    /// Makes `kek_id` the sealing key (a rotation's first step). Waits for
    /// secret writes that checked the previous one to commit, so none
    /// sealed under the old key can commit after this returns.
    async fn set_sealing_kek(&self, kek_id: &str) -> StoreResult<()>;

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
    /// also sets `destroyed_at = at` and, in the same transaction, deletes
    /// the sandbox-scoped secrets bound to it (bumping the secrets epoch
    /// if there were any).
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

    // --- secrets ----------------------------------------------------------

    /// Writes a secret's next version, or creates it: `new.version == 1`
    /// creates the secret (tenant, scope, scope key, workspace, name) with
    /// ID `new.id`; `new.version == n > 1` adds version n to the existing
    /// secret `new.id` whose current version is n − 1, replacing its
    /// `expose_as_env`, `allowed_hosts` and `substitute_in` (its `enabled`
    /// flag is kept). Returns the metadata after the write.
    ///
    /// Everything is checked inside the write transaction, which also bumps
    /// the secrets epoch; a refused put writes nothing:
    /// - `Conflict { entity: "secret", field: "version" }` when the secret
    ///   is not in the state `new.version` expects (a concurrent write got
    ///   there first: read it again, seal again, retry);
    /// - `Conflict { entity: "secret", field: "expose_as_env" }` when
    ///   another secret with the same scope, key and workspace exposes that
    ///   variable;
    /// - `SettingForbids { setting: "allow_end_user_credentials" }` for an
    ///   `external_user` secret while the tenant disallows them, and
    ///   `{ setting: "require_allowed_hosts" }` for empty `allowed_hosts`
    ///   while the tenant requires them;
    /// - `StaleSealingKey { current }` when the value is sealed under
    ///   another key-encryption key than the recorded sealing key;
    /// - `MissingReference { field: "sandbox_id" | "workspace_id" }` when a
    ///   `sandbox` or `workspace` scope key, or the workspace binding, is
    ///   not the tenant's (a destroyed sandbox counts as missing);
    ///   `{ field: "tenant_id" }` for an unknown tenant.
    ///
    /// A scope key of "" is stored as none: neither ever matches a
    /// sandbox's label.
    async fn put_secret(&self, new: &NewSecretVersion) -> StoreResult<Secret>;
    async fn get_secret(&self, tenant: &TenantId, id: &SecretId) -> StoreResult<Option<Secret>>;
    /// The secret a write with this scope, key, workspace and name would
    /// add a version to, if it exists.
    async fn find_secret(&self, tenant: &TenantId, key: &SecretKey) -> StoreResult<Option<Secret>>;
    /// Newest first (by ID).
    async fn list_secrets(
        &self,
        tenant: &TenantId,
        filter: &SecretFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Secret>>;
    /// Sets `enabled` (and `updated_at`) and bumps the secrets epoch; `None`
    /// (and no bump) if there is no such secret.
    async fn set_secret_enabled(
        &self,
        tenant: &TenantId,
        id: &SecretId,
        enabled: bool,
        at: OffsetDateTime,
    ) -> StoreResult<Option<Secret>>;
    /// Deletes the secret and every stored version and bumps the secrets
    /// epoch; `false` (and no bump) if there is no such secret.
    async fn delete_secret(&self, tenant: &TenantId, id: &SecretId) -> StoreResult<bool>;
    /// The tenant's enabled secrets that could apply to a sandbox with these
    /// keys (scope key equal to the sandbox's label for that scope, or
    /// tenant scope; an empty label matches nothing), each with its latest
    /// version's sealed value, ordered by ID. Precedence is applied by the
    /// caller (`miosa_core::secret::resolve`).
    async fn candidate_secrets(
        &self,
        tenant: &TenantId,
        keys: &SandboxScopeKeys,
    ) -> StoreResult<Vec<(Secret, SealedValue)>>;
    /// A number that changes (increases) whenever any secret or setting of
    /// the tenant changes, so caches of resolved credentials can be checked
    /// with one cheap read per request. 0 for a tenant that never changed.
    /// It is bumped in the transaction of the change, so a cache should read
    /// the epoch *before* `candidate_secrets` and file the result under it:
    /// then a change that lands in between is caught on the next request.
    async fn secrets_epoch(&self, tenant: &TenantId) -> StoreResult<i64>;
    /// Up to `limit` stored versions (any tenant) whose data key is NOT
    /// wrapped by `kek_id`, for re-wrapping.
    async fn sealed_versions_not_under(
        &self,
        kek_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SealedVersion>>;
    /// Replaces the sealed value of each given version (a re-wrap changes
    /// `kek_id` and `wrapped_key`, a re-seal everything), in one
    /// transaction. A version deleted meanwhile is skipped.
    async fn rewrap_versions(&self, rows: &[SealedVersion]) -> StoreResult<()>;
    /// Up to `limit` secrets (any tenant) whose latest version is still
    /// sealed for the tenant alone (`AadVersion::Tenant`), each with that
    /// version, for re-sealing bound to the secret.
    async fn legacy_sealed_versions(&self, limit: u32)
        -> StoreResult<Vec<(Secret, SealedVersion)>>;
    /// The distinct `kek_id`s of all stored versions.
    async fn kek_ids_in_use(&self) -> StoreResult<Vec<String>>;

    // --- settings ---------------------------------------------------------

    /// The tenant's settings (defaults when never set).
    async fn get_settings(&self, tenant: &TenantId) -> StoreResult<TenantSettings>;
    /// Applies the patch, bumps the tenant's secrets epoch, and returns the
    /// settings after it. `MissingReference { field: "tenant_id" }` for an
    /// unknown tenant.
    async fn update_settings(
        &self,
        tenant: &TenantId,
        patch: &SettingsPatch,
        at: OffsetDateTime,
    ) -> StoreResult<TenantSettings>;

    // --- audit ------------------------------------------------------------

    /// Appends the entries (of any tenants), in the given order, to their
    /// tenants' chains in one transaction: each gets the next `seq` after
    /// its tenant's head, `prev_hash` = the head's hash, and
    /// `hash = entry.chain_hash(seq, prev_hash)`. Safe against concurrent
    /// appends from other processes (the per-tenant head is locked).
    /// `time` is first truncated to whole microseconds (what both stores
    /// keep), so the hash recomputes after a round trip; the returned events
    /// carry the truncated time. All or nothing: `MissingReference { field:
    /// "tenant_id" }` for an unknown tenant and `Conflict { entity:
    /// "audit_event", field: "id" }` for an ID already stored (or twice in
    /// the batch) refuse the whole batch, and retrying it fails the same way.
    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<Vec<AuditEvent>>;
    /// Newest first (by ID); cursor = last ID of the previous page.
    async fn list_audit(
        &self,
        tenant: &TenantId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;
    /// The tenant's rows with `seq > after_seq` in ascending `seq` order, at
    /// most `limit` (for verification).
    async fn audit_chain(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>>;
    /// Completes deferred rows (status, byte counts, duration, outcome; no
    /// longer pending), in one transaction. A row that is not a pending
    /// deferred row of that tenant is left alone.
    async fn complete_audit(&self, completions: &[AuditCompletion]) -> StoreResult<()>;
    /// [`Store::append_audit`] and [`Store::complete_audit`] in one
    /// transaction (one commit for the audit writer's whole batch): both
    /// happen or, with the errors `append_audit` names, neither. The
    /// completions are for rows stored before this call.
    async fn write_audit(
        &self,
        entries: &[AuditEntry],
        completions: &[AuditCompletion],
    ) -> StoreResult<Vec<AuditEvent>>;
    /// Stores a checkpoint; one already stored for the same (tenant, seq)
    /// is kept (replicas may sign the same head).
    async fn put_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> StoreResult<()>;
    /// The tenant's checkpoints, newest first; cursor = the last `seq`.
    async fn list_audit_checkpoints(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditCheckpoint>>;
    /// The tenant's checkpoints with `seq > after_seq`, oldest first, at
    /// most `limit` (for verification).
    async fn audit_checkpoints_after(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditCheckpoint>>;
    /// Up to `limit` chain heads (tenant, seq, hash) beyond their tenant's
    /// newest checkpoint: what a checkpoint round signs.
    async fn audit_heads_to_checkpoint(
        &self,
        limit: u32,
    ) -> StoreResult<Vec<(TenantId, i64, String)>>;
    /// Up to `limit` checkpoints (any tenant) not signed under `kek_id`.
    async fn audit_checkpoints_not_under(
        &self,
        kek_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditCheckpoint>>;
    /// Replaces `kek_id` and `signature` of each checkpoint, in one
    /// transaction (re-signing after a rotation).
    async fn resign_audit_checkpoints(&self, checkpoints: &[AuditCheckpoint]) -> StoreResult<()>;
    /// The tenant's chain head as the appends left it: the last `seq` and
    /// `hash`; `None` before the first row. `audit verify` compares it with
    /// the last row, so removing the newest rows is detected too.
    async fn audit_head(&self, tenant: &TenantId) -> StoreResult<Option<(i64, String)>>;
}

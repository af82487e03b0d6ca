//! The PostgreSQL backend of [`miosa_store::Store`], for several API replicas
//! sharing one database. Schema in `migrations/`, applied at
//! [`PostgresStore::connect`] under sqlx's advisory lock, so replicas that
//! start together migrate once.
//!
//! Read-then-write sequences lock a row first (the tenant's, when revoking a
//! key; the tenant's `tenant_settings` row, which every secret write bumps
//! first; each touched tenant's `audit_heads` row, in tenant order, when
//! appending audit rows) or claim a unique key (bootstrap), so they are safe
//! under concurrent callers at the default READ COMMITTED isolation.
#![forbid(unsafe_code)]

mod api_keys;
mod audit;
mod checkpoints;
mod error;
mod rows;
mod sandboxes;
mod secrets;
mod settings;
mod system;
mod tenants;
mod workspaces;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use miosa_core::{
    ApiKey, ApiKeyId, AuditCheckpoint, AuditCompletion, AuditEntry, AuditEvent, KeyHash, NewApiKey,
    NewSecretVersion, Page, PageRequest, Sandbox, SandboxId, SandboxScopeKeys, SandboxStatus,
    SealedValue, SealedVersion, Secret, SecretId, Tenant, TenantId, TenantSettings, Workspace,
    WorkspaceId,
};
use miosa_store::{
    AuditFilter, Bootstrap, RevokeOutcome, SandboxFilter, SandboxPatch, SecretFilter, SecretKey,
    SettingsPatch, Store, StoreError, StoreResult, SystemInfo, WorkspaceFilter,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::error::db;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Pool size of [`PostgresStore::connect`]: modest, since every replica has
/// its own pool and the server's `max_connections` is shared.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// A [`Store`] on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Where this process last left each audit chain's head.
    audit_heads: Arc<audit::HeadCache>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) with
    /// [`DEFAULT_MAX_CONNECTIONS`] and applies pending migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`PostgresStore::connect`] with a pool of at most
    /// `max_connections`.
    pub async fn connect_with(url: &str, max_connections: u32) -> StoreResult<Self> {
        // Plans made for each execution: a statement cached with a generic
        // plan made while a table was empty (a fresh install) keeps
        // scanning it whole as it grows, until an ANALYZE replans it; the
        // audit writer's statements slowed down 2x within 20,000 rows that
        // way. Planning these statements costs far less than that.
        let options = PgConnectOptions::from_str(url)
            .map_err(db)?
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self {
            pool,
            audit_heads: Arc::default(),
        })
    }

    /// Closes every connection; waits for ones in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn system_info(&self) -> StoreResult<SystemInfo> {
        system::info(&self.pool).await
    }

    async fn bootstrap(&self, b: &Bootstrap) -> StoreResult<bool> {
        system::bootstrap(&self.pool, b).await
    }

    async fn sealing_kek(&self) -> StoreResult<Option<String>> {
        system::sealing_kek(&self.pool).await
    }

    async fn claim_sealing_kek(&self, kek_id: &str) -> StoreResult<String> {
        system::claim_sealing_kek(&self.pool, kek_id).await
    }

    async fn set_sealing_kek(&self, kek_id: &str) -> StoreResult<()> {
        system::set_sealing_kek(&self.pool, kek_id).await
    }

    async fn create_tenant(&self, tenant: &Tenant, first_key: &NewApiKey) -> StoreResult<()> {
        tenants::create(&self.pool, tenant, first_key).await
    }

    async fn get_tenant(&self, id: &TenantId) -> StoreResult<Option<Tenant>> {
        tenants::get(&self.pool, id).await
    }

    async fn list_tenants(&self, page: &PageRequest) -> StoreResult<Page<Tenant>> {
        tenants::list(&self.pool, page).await
    }

    async fn create_workspace(&self, ws: &Workspace) -> StoreResult<()> {
        workspaces::create(&self.pool, ws).await
    }

    async fn get_workspace(
        &self,
        tenant: &TenantId,
        id: &WorkspaceId,
    ) -> StoreResult<Option<Workspace>> {
        workspaces::get(&self.pool, tenant, id).await
    }

    async fn list_workspaces(
        &self,
        tenant: &TenantId,
        filter: &WorkspaceFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Workspace>> {
        workspaces::list(&self.pool, tenant, filter, page).await
    }

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        api_keys::create(&self.pool, key).await
    }

    async fn get_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> StoreResult<Option<ApiKey>> {
        api_keys::get(&self.pool, tenant, id).await
    }

    async fn list_api_keys(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKey>> {
        api_keys::list(&self.pool, tenant, page).await
    }

    async fn revoke_api_key(
        &self,
        tenant: &TenantId,
        id: &ApiKeyId,
        at: OffsetDateTime,
    ) -> StoreResult<RevokeOutcome> {
        api_keys::revoke(&self.pool, tenant, id, at).await
    }

    async fn find_active_api_key(&self, hash: &KeyHash) -> StoreResult<Option<ApiKey>> {
        api_keys::find_active(&self.pool, hash).await
    }

    async fn create_sandbox(&self, sandbox: &Sandbox) -> StoreResult<()> {
        sandboxes::create(&self.pool, sandbox).await
    }

    async fn get_sandbox(&self, tenant: &TenantId, id: &SandboxId) -> StoreResult<Option<Sandbox>> {
        sandboxes::get(&self.pool, tenant, id).await
    }

    async fn get_sandbox_by_name(
        &self,
        tenant: &TenantId,
        workspace: Option<&WorkspaceId>,
        name: &str,
    ) -> StoreResult<Option<Sandbox>> {
        sandboxes::get_by_name(&self.pool, tenant, workspace, name).await
    }

    async fn list_sandboxes(
        &self,
        tenant: &TenantId,
        filter: &SandboxFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Sandbox>> {
        sandboxes::list(&self.pool, tenant, filter, page).await
    }

    async fn update_sandbox(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        patch: &SandboxPatch,
    ) -> StoreResult<Option<Sandbox>> {
        sandboxes::update(&self.pool, tenant, id, patch).await
    }

    async fn transition_sandbox(
        &self,
        tenant: &TenantId,
        id: &SandboxId,
        from: &[SandboxStatus],
        to: SandboxStatus,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        sandboxes::transition(&self.pool, tenant, id, from, to, at).await
    }

    async fn sandboxes_in_status(
        &self,
        node: &str,
        statuses: &[SandboxStatus],
    ) -> StoreResult<Vec<Sandbox>> {
        sandboxes::in_status(&self.pool, node, statuses).await
    }

    async fn expired_sandboxes(
        &self,
        node: &str,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<Sandbox>> {
        sandboxes::expired(&self.pool, node, now, limit).await
    }

    async fn put_secret(&self, new: &NewSecretVersion) -> StoreResult<Secret> {
        secrets::put(&self.pool, new).await
    }

    async fn get_secret(&self, tenant: &TenantId, id: &SecretId) -> StoreResult<Option<Secret>> {
        secrets::get(&self.pool, tenant, id).await
    }

    async fn find_secret(&self, tenant: &TenantId, key: &SecretKey) -> StoreResult<Option<Secret>> {
        secrets::find(&self.pool, tenant, key).await
    }

    async fn list_secrets(
        &self,
        tenant: &TenantId,
        filter: &SecretFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Secret>> {
        secrets::list(&self.pool, tenant, filter, page).await
    }

    async fn set_secret_enabled(
        &self,
        tenant: &TenantId,
        id: &SecretId,
        enabled: bool,
        at: OffsetDateTime,
    ) -> StoreResult<Option<Secret>> {
        secrets::set_enabled(&self.pool, tenant, id, enabled, at).await
    }

    async fn delete_secret(&self, tenant: &TenantId, id: &SecretId) -> StoreResult<bool> {
        secrets::delete(&self.pool, tenant, id).await
    }

    async fn candidate_secrets(
        &self,
        tenant: &TenantId,
        keys: &SandboxScopeKeys,
    ) -> StoreResult<Vec<(Secret, SealedValue)>> {
        secrets::candidates(&self.pool, tenant, keys).await
    }

    async fn secrets_epoch(&self, tenant: &TenantId) -> StoreResult<i64> {
        settings::epoch(&self.pool, tenant).await
    }

    async fn sealed_versions_not_under(
        &self,
        kek_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<SealedVersion>> {
        secrets::sealed_not_under(&self.pool, kek_id, limit).await
    }

    async fn rewrap_versions(&self, rows: &[SealedVersion]) -> StoreResult<()> {
        secrets::rewrap(&self.pool, rows).await
    }

    async fn kek_ids_in_use(&self) -> StoreResult<Vec<String>> {
        secrets::kek_ids_in_use(&self.pool).await
    }

    async fn legacy_sealed_versions(
        &self,
        limit: u32,
    ) -> StoreResult<Vec<(Secret, SealedVersion)>> {
        secrets::legacy_latest(&self.pool, limit).await
    }

    async fn get_settings(&self, tenant: &TenantId) -> StoreResult<TenantSettings> {
        settings::get(&self.pool, tenant).await
    }

    async fn update_settings(
        &self,
        tenant: &TenantId,
        patch: &SettingsPatch,
        at: OffsetDateTime,
    ) -> StoreResult<TenantSettings> {
        settings::update(&self.pool, tenant, patch, at).await
    }

    async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<Vec<AuditEvent>> {
        audit::append(&self.pool, &self.audit_heads, entries).await
    }

    async fn list_audit(
        &self,
        tenant: &TenantId,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        audit::list(&self.pool, tenant, filter, page).await
    }

    async fn audit_chain(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEvent>> {
        audit::chain(&self.pool, tenant, after_seq, limit).await
    }

    async fn audit_head(&self, tenant: &TenantId) -> StoreResult<Option<(i64, String)>> {
        audit::head(&self.pool, tenant).await
    }

    async fn complete_audit(&self, completions: &[AuditCompletion]) -> StoreResult<()> {
        audit::complete(&self.pool, completions).await
    }

    async fn write_audit(
        &self,
        entries: &[AuditEntry],
        completions: &[AuditCompletion],
    ) -> StoreResult<Vec<AuditEvent>> {
        audit::write(&self.pool, &self.audit_heads, entries, completions).await
    }

    async fn put_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> StoreResult<()> {
        checkpoints::put(&self.pool, checkpoint).await
    }

    async fn list_audit_checkpoints(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditCheckpoint>> {
        checkpoints::list(&self.pool, tenant, page).await
    }

    async fn audit_checkpoints_after(
        &self,
        tenant: &TenantId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditCheckpoint>> {
        checkpoints::after(&self.pool, tenant, after_seq, limit).await
    }

    async fn audit_heads_to_checkpoint(
        &self,
        limit: u32,
    ) -> StoreResult<Vec<(TenantId, i64, String)>> {
        checkpoints::heads_to_sign(&self.pool, limit).await
    }

    async fn audit_checkpoints_not_under(
        &self,
        kek_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<AuditCheckpoint>> {
        checkpoints::not_under(&self.pool, kek_id, limit).await
    }

    async fn resign_audit_checkpoints(&self, checkpoints: &[AuditCheckpoint]) -> StoreResult<()> {
        checkpoints::resign(&self.pool, checkpoints).await
    }
}

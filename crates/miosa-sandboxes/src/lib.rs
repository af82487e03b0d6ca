//! Sandbox orchestration. The database row is the source of truth for what
//! a tenant owns; the runtime is the source of truth for what runs on this
//! host. Every operation here moves both together, and `reconcile` makes
//! them agree again after a crash.
#![forbid(unsafe_code)]

mod egress;
mod error;
pub mod input;
pub mod lifecycle;
mod reaper;
mod reconcile;

use std::sync::Arc;

use miosa_agent::AgentClient;
use miosa_audit::AuditLog;
use miosa_core::{Page, PageRequest, Sandbox, SandboxId, SandboxStatus, TenantId, WorkspaceId};
use miosa_egress::EgressProxy;
use miosa_runtime::Runtime;
use miosa_store::{SandboxFilter, Store};

pub use error::{Result, SandboxError};
pub use input::{CreateRequest, Limits};
pub use lifecycle::UpdateRequest;
pub use reconcile::ReconcileReport;

/// Who is asking: a tenant, possibly confined to one workspace.
#[derive(Debug, Clone)]
pub struct Access {
    pub tenant: TenantId,
    /// `Some` for workspace-scoped keys: only this workspace is visible.
    pub workspace: Option<WorkspaceId>,
    /// Recorded in the audit log: the API key ID.
    pub actor: String,
}

/// Called with the ID of each destroyed sandbox.
pub type OnDestroyed = Arc<dyn Fn(&SandboxId) + Send + Sync>;

/// Sandbox operations for the API and the background workers.
pub struct Sandboxes {
    store: Arc<dyn Store>,
    runtime: Arc<Runtime>,
    limits: Limits,
    /// This server's node: sandboxes it creates are stamped with it, and it
    /// reconciles and reaps only those.
    node_id: String,
    /// The egress proxy; `None` leaves sandboxes without any network.
    egress: Option<Arc<EgressProxy>>,
    audit: Option<AuditLog>,
    /// Told when a sandbox is gone, to drop what it cached for it.
    on_destroyed: Option<OnDestroyed>,
}

impl Sandboxes {
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        limits: Limits,
        node_id: String,
    ) -> Self {
        Self {
            store,
            runtime,
            limits,
            node_id,
            egress: None,
            audit: None,
            on_destroyed: None,
        }
    }

    /// Gives every sandbox a way out through this proxy.
    pub fn with_egress(mut self, egress: Arc<EgressProxy>) -> Self {
        self.egress = Some(egress);
        self
    }

    /// Records creates and destroys in this audit log.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Calls `f` after a sandbox is destroyed (e.g. to drop caches).
    pub fn on_destroyed(mut self, f: OnDestroyed) -> Self {
        self.on_destroyed = Some(f);
        self
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Closes every egress connection (sandboxes keep running; a restarted
    /// server re-binds them). For shutdown, before the audit log's last
    /// flush, so the rows of the connections it closes are written too.
    pub async fn close_egress(&self) {
        if let Some(proxy) = &self.egress {
            proxy.detach_all().await;
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Finds a live sandbox by ID or by name. Names are looked up in the
    /// caller's workspace (a workspace key), else in `workspace_hint`, else
    /// among the tenant-level sandboxes.
    pub async fn get(
        &self,
        access: &Access,
        id_or_name: &str,
        workspace_hint: Option<&WorkspaceId>,
    ) -> Result<Sandbox> {
        let found = match SandboxId::parse(id_or_name) {
            Ok(id) => self.store.get_sandbox(&access.tenant, &id).await?,
            Err(_) => {
                let ws = access.workspace.as_ref().or(workspace_hint);
                self.store
                    .get_sandbox_by_name(&access.tenant, ws, id_or_name)
                    .await?
            }
        };
        match found {
            Some(s) if s.status != SandboxStatus::Destroyed && visible(access, &s) => Ok(s),
            _ => Err(SandboxError::NotFound),
        }
    }

    /// Lists sandboxes visible to the caller.
    pub async fn list(
        &self,
        access: &Access,
        mut filter: SandboxFilter,
        page: &PageRequest,
    ) -> Result<Page<Sandbox>> {
        if let Some(own) = &access.workspace {
            match &filter.workspace_id {
                Some(asked) if asked != own => {
                    return Ok(Page {
                        items: Vec::new(),
                        next_cursor: None,
                    })
                }
                _ => filter.workspace_id = Some(own.clone()),
            }
        }
        Ok(self
            .store
            .list_sandboxes(&access.tenant, &filter, page)
            .await?)
    }

    /// The agent of a running sandbox, for exec, files and processes.
    pub async fn agent(
        &self,
        access: &Access,
        id_or_name: &str,
        workspace_hint: Option<&WorkspaceId>,
    ) -> Result<(Sandbox, AgentClient)> {
        let s = self.get(access, id_or_name, workspace_hint).await?;
        if s.node_id != self.node_id {
            return Err(SandboxError::OtherNode(s.node_id));
        }
        match s.status {
            SandboxStatus::Running => {
                let client = AgentClient::new(self.runtime.agent_socket(s.id.as_str()));
                Ok((s, client))
            }
            SandboxStatus::Paused => Err(SandboxError::Paused),
            other => Err(SandboxError::NotRunning(other.as_str())),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

fn visible(access: &Access, s: &Sandbox) -> bool {
    match &access.workspace {
        None => true,
        Some(own) => s.workspace_id.as_ref() == Some(own),
    }
}

//! Create, change, pause, resume and destroy, keeping row and host in step.

use miosa_core::{time_util, ApiKeyId, FieldError, Sandbox, SandboxStatus, WorkspaceId};
use miosa_runtime::SandboxSpec;
use miosa_store::SandboxPatch;

use crate::{input, Access, CreateRequest, Result, SandboxError, Sandboxes};

use SandboxStatus::{Creating, Error, Paused, Running};

/// Changes a caller may make after create.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    /// `Some(None)` clears the name.
    pub name: Option<Option<String>>,
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    pub timeout_seconds: Option<i64>,
}

impl Sandboxes {
    /// Creates a sandbox and returns it once it can exec. Bad input and name
    /// conflicts are refused before anything touches the host; a start
    /// failure leaves neither a live row nor host residue.
    pub async fn create(&self, access: &Access, mut req: CreateRequest) -> Result<Sandbox> {
        req.workspace_id = self
            .resolve_workspace(access, req.workspace_id.take())
            .await?;
        let valid = req.validate(&access.tenant, &self.node_id, &self.limits)?;
        let mut sandbox = valid.sandbox;
        sandbox.created_by_key_id = ApiKeyId::parse(&access.actor).ok();
        sandbox.created_by_workspace_key = access.workspace.is_some();
        self.store.create_sandbox(&sandbox).await?;

        let retire = |sandbox: &Sandbox| {
            let (tenant, id) = (sandbox.tenant_id.clone(), sandbox.id.clone());
            async move {
                self.store
                    .transition_sandbox(
                        &tenant,
                        &id,
                        &[Creating],
                        SandboxStatus::Destroyed,
                        time_util::now(),
                    )
                    .await
            }
        };
        let ca = match self.new_egress_ca(&sandbox) {
            Ok(ca) => ca,
            Err(e) => {
                retire(&sandbox).await?;
                return Err(e);
            }
        };
        let spec = SandboxSpec {
            id: sandbox.id.to_string(),
            hostname: sandbox
                .name
                .clone()
                .unwrap_or_else(|| sandbox.id.to_string().replace('_', "-")),
            env: valid.env.into_iter().collect(),
            cpu: sandbox.cpu,
            memory_mb: u64::from(sandbox.memory_mb),
            disk_mb: u64::from(sandbox.disk_mb.unwrap_or(self.limits.default_disk_mb)),
            egress_ca_pem: ca.as_ref().map(|c| c.cert_pem().to_owned()),
        };
        if let Err(e) = self.runtime.create(&spec).await {
            tracing::error!(sandbox = %sandbox.id, error = %e, "sandbox failed to start");
            // `Runtime::create` removes what it made on failure (and must not
            // be followed by a destroy: on `AlreadyExists` that would remove
            // the other sandbox). Retire the row so the name is free.
            retire(&sandbox).await?;
            return Err(SandboxError::StartFailed(e.to_string()));
        }
        if let Err(e) = self.attach_egress(&sandbox, ca).await {
            tracing::error!(sandbox = %sandbox.id, error = %e, "egress proxy failed to attach");
            self.detach_egress(&sandbox).await;
            self.runtime.destroy(sandbox.id.as_str()).await?;
            retire(&sandbox).await?;
            return Err(e);
        }
        let moved = self
            .store
            .transition_sandbox(
                &sandbox.tenant_id,
                &sandbox.id,
                &[Creating],
                Running,
                time_util::now(),
            )
            .await?;
        if !moved {
            // Deleted while starting: make sure nothing is left running.
            self.detach_egress(&sandbox).await;
            self.runtime.destroy(sandbox.id.as_str()).await?;
            return Err(SandboxError::NotFound);
        }
        sandbox.status = Running;
        tracing::info!(sandbox = %sandbox.id, tenant = %sandbox.tenant_id, "sandbox created");
        self.audit_lifecycle(&sandbox, crate::egress::SANDBOX_CREATED, &access.actor)
            .await;
        Ok(sandbox)
    }

    fn ensure_local(&self, s: &Sandbox) -> Result<()> {
        if s.node_id == self.node_id {
            Ok(())
        } else {
            Err(SandboxError::OtherNode(s.node_id.clone()))
        }
    }

    /// A workspace key implies its workspace; an admin key may name one of
    /// the tenant's workspaces or none.
    async fn resolve_workspace(
        &self,
        access: &Access,
        asked: Option<WorkspaceId>,
    ) -> Result<Option<WorkspaceId>> {
        const NOT_YOURS: &str = "does not name a workspace this key can use";
        match (&access.workspace, asked) {
            (Some(own), None) => Ok(Some(own.clone())),
            (Some(own), Some(asked)) if &asked == own => Ok(Some(asked)),
            (Some(_), Some(_)) => Err(FieldError::new("workspace_id", NOT_YOURS).into()),
            (None, None) => Ok(None),
            (None, Some(asked)) => match self.store.get_workspace(&access.tenant, &asked).await? {
                Some(_) => Ok(Some(asked)),
                None => Err(FieldError::new("workspace_id", NOT_YOURS).into()),
            },
        }
    }

    /// Renames, replaces metadata or changes the timeout (which also resets
    /// the deadline from now).
    pub async fn update(
        &self,
        access: &Access,
        id_or_name: &str,
        workspace_hint: Option<&WorkspaceId>,
        req: UpdateRequest,
    ) -> Result<Sandbox> {
        let current = self.get(access, id_or_name, workspace_hint).await?;
        let mut patch = SandboxPatch::default();
        if let Some(name) = req.name {
            patch.name = Some(
                name.map(|n| miosa_core::sandbox::sandbox_name("name", &n))
                    .transpose()?,
            );
        }
        if let Some(m) = req.metadata {
            patch.metadata = Some(miosa_core::sandbox::metadata("metadata", &m)?);
        }
        if let Some(t) = req.timeout_seconds {
            let t = input::timeout_seconds(&self.limits, t)?;
            patch.timeout_seconds = Some(t);
            patch.expires_at = Some(time_util::now() + time::Duration::seconds(i64::from(t)));
        }
        self.store
            .update_sandbox(&access.tenant, &current.id, &patch)
            .await?
            .ok_or(SandboxError::NotFound)
    }

    /// Resets the deadline to `timeout_seconds` from now.
    pub async fn set_timeout(
        &self,
        access: &Access,
        id_or_name: &str,
        workspace_hint: Option<&WorkspaceId>,
        timeout_seconds: i64,
    ) -> Result<Sandbox> {
        let req = UpdateRequest {
            timeout_seconds: Some(timeout_seconds),
            ..Default::default()
        };
        self.update(access, id_or_name, workspace_hint, req).await
    }

    /// Removes every trace from the host, then retires the row.
    pub async fn destroy(
        &self,
        access: &Access,
        id_or_name: &str,
        workspace_hint: Option<&WorkspaceId>,
    ) -> Result<()> {
        let s = self.get(access, id_or_name, workspace_hint).await?;
        self.destroy_sandbox(&s, &access.actor).await
    }

    /// `actor` is recorded in the audit log (`system` for the reaper).
    pub(crate) async fn destroy_sandbox(&self, s: &Sandbox, actor: &str) -> Result<()> {
        self.ensure_local(s)?;
        self.detach_egress(s).await;
        self.runtime.destroy(s.id.as_str()).await?;
        self.store
            .transition_sandbox(
                &s.tenant_id,
                &s.id,
                &[Creating, Running, Paused, Error],
                SandboxStatus::Destroyed,
                time_util::now(),
            )
            .await?;
        tracing::info!(sandbox = %s.id, tenant = %s.tenant_id, "sandbox destroyed");
        self.audit_lifecycle(s, crate::egress::SANDBOX_DESTROYED, actor)
            .await;
        Ok(())
    }

    /// Freezes every process of a running sandbox.
    pub async fn pause(
        &self,
        access: &Access,
        id_or_name: &str,
        workspace_hint: Option<&WorkspaceId>,
    ) -> Result<Sandbox> {
        let s = self.get(access, id_or_name, workspace_hint).await?;
        self.pause_sandbox(s).await
    }

    pub(crate) async fn pause_sandbox(&self, mut s: Sandbox) -> Result<Sandbox> {
        self.ensure_local(&s)?;
        match s.status {
            Running => {}
            Paused => return Ok(s),
            other => return Err(SandboxError::NotRunning(other.as_str())),
        }
        self.runtime.pause(s.id.as_str()).await?;
        self.store
            .transition_sandbox(&s.tenant_id, &s.id, &[Running], Paused, time_util::now())
            .await?;
        s.status = Paused;
        Ok(s)
    }

    /// Thaws a paused sandbox and restarts its deadline.
    pub async fn resume(
        &self,
        access: &Access,
        id_or_name: &str,
        workspace_hint: Option<&WorkspaceId>,
    ) -> Result<Sandbox> {
        let s = self.get(access, id_or_name, workspace_hint).await?;
        self.ensure_local(&s)?;
        match s.status {
            Paused => {}
            Running => return Ok(s),
            other => return Err(SandboxError::NotRunning(other.as_str())),
        }
        self.runtime.resume(s.id.as_str()).await?;
        self.store
            .transition_sandbox(&s.tenant_id, &s.id, &[Paused], Running, time_util::now())
            .await?;
        let patch = SandboxPatch {
            expires_at: Some(
                time_util::now() + time::Duration::seconds(i64::from(s.timeout_seconds)),
            ),
            ..Default::default()
        };
        self.store
            .update_sandbox(&s.tenant_id, &s.id, &patch)
            .await?
            .ok_or(SandboxError::NotFound)
    }
}

//! The sandbox side of the egress proxy and the audit rows of lifecycle
//! events: a fresh CA per sandbox (and per adoption after a restart), the
//! proxy bound to the sandbox's own socket, and detaching on teardown.

use miosa_core::{audit::action, AuditEntry, Outcome, Sandbox};
use miosa_egress::{SandboxCa, SandboxIdentity, SocketPaths};

use crate::{Result, SandboxError, Sandboxes};

fn identity(s: &Sandbox) -> SandboxIdentity {
    SandboxIdentity {
        tenant_id: s.tenant_id.clone(),
        sandbox_id: s.id.clone(),
        workspace_id: s.workspace_id.clone(),
        labels: s.labels.clone(),
        created_by_key_id: s.created_by_key_id.clone(),
        created_by_workspace_key: s.created_by_workspace_key,
    }
}

impl Sandboxes {
    /// A new CA for the sandbox, when egress is on.
    pub(crate) fn new_egress_ca(&self, s: &Sandbox) -> Result<Option<SandboxCa>> {
        match &self.egress {
            None => Ok(None),
            Some(proxy) => proxy
                .new_ca(&s.id)
                .map(Some)
                .map_err(|e| SandboxError::StartFailed(format!("egress CA: {e}"))),
        }
    }

    /// Binds the proxy to the sandbox's socket.
    pub(crate) async fn attach_egress(&self, s: &Sandbox, ca: Option<SandboxCa>) -> Result<()> {
        let (Some(proxy), Some(ca)) = (&self.egress, ca) else {
            return Ok(());
        };
        let socket = SocketPaths {
            path: self.runtime.egress_socket(s.id.as_str()),
            staging: self.runtime.egress_socket_staging(s.id.as_str()),
            owner: self.runtime.root_ids(s.id.as_str()),
        };
        proxy
            .attach(identity(s), ca, &socket)
            .await
            .map_err(|e| SandboxError::StartFailed(format!("egress proxy: {e}")))
    }

    /// After a restart: a fresh CA (the old key died with the process),
    /// written into the running sandbox in place, and the proxy re-bound.
    pub(crate) async fn readopt_egress(&self, s: &Sandbox) -> Result<()> {
        let Some(ca) = self.new_egress_ca(s)? else {
            return Ok(());
        };
        self.runtime
            .replace_egress_ca(s.id.as_str(), ca.cert_pem())
            .await?;
        self.attach_egress(s, Some(ca)).await
    }

    pub(crate) async fn detach_egress(&self, s: &Sandbox) {
        if let Some(proxy) = &self.egress {
            proxy.detach(&s.id).await;
        }
        if let Some(f) = &self.on_destroyed {
            f(&s.id);
        }
    }

    /// Writes the audit row of a lifecycle event (`actor`: API key or `system`).
    pub(crate) async fn audit_lifecycle(&self, s: &Sandbox, act: &str, actor: &str) {
        let Some(log) = &self.audit else { return };
        let mut row = AuditEntry::new(&s.tenant_id, act, Outcome::Success)
            .for_sandbox(&s.id, s.workspace_id.as_ref(), &s.labels)
            .created_by(s.created_by_key_id.as_ref());
        row.actor = Some(actor.to_owned());
        log.append_logged(row).await;
    }
}

pub(crate) use action::{SANDBOX_CREATED, SANDBOX_DESTROYED};

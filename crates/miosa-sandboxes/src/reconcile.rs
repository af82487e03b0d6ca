//! After a crash or restart: make the database and this host agree.
//! - a live row whose container is gone or dead → the residue is removed and
//!   the row marked `error` (it can still be deleted);
//! - a row stuck in `creating` → same (the create never finished);
//! - a container or sandbox dir with no live row → removed.

use std::collections::{HashMap, HashSet};

use miosa_core::{time_util, SandboxStatus};
use miosa_runtime::ContainerState;

use crate::{Result, Sandboxes};

use SandboxStatus::{Creating, Error, Paused, Running};

/// What reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Rows whose container was still there and healthy.
    pub kept: usize,
    /// Rows marked `error` because their container was missing or dead.
    pub marked_error: Vec<String>,
    /// Containers or dirs removed because no live row claims them.
    pub orphans_removed: Vec<String>,
}

impl Sandboxes {
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let on_host: HashMap<String, ContainerState> =
            self.runtime.list().await?.into_iter().collect();
        let rows = self
            .store
            .sandboxes_in_status(&self.node_id, &[Creating, Running, Paused])
            .await?;
        let mut claimed = HashSet::new();
        for s in rows {
            let id = s.id.to_string();
            let healthy = match (s.status, on_host.get(&id)) {
                (Running, Some(ContainerState::Running)) => true,
                (Paused, Some(ContainerState::Paused)) => true,
                (Running, Some(ContainerState::Paused)) => {
                    // Paused behind our back (or a crash mid-resume): thaw it.
                    self.runtime.resume(&id).await.is_ok()
                }
                (Paused, Some(ContainerState::Running)) => self.runtime.pause(&id).await.is_ok(),
                _ => false,
            };
            if healthy {
                if let Err(e) = self.readopt_egress(&s).await {
                    tracing::warn!(sandbox = %id, error = %e, "could not re-attach the egress proxy");
                }
                claimed.insert(id);
                report.kept += 1;
                continue;
            }
            if let Err(e) = self.runtime.destroy(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "could not clean up a dead sandbox");
            }
            self.store
                .transition_sandbox(&s.tenant_id, &s.id, &[s.status], Error, time_util::now())
                .await?;
            tracing::warn!(sandbox = %id, was = s.status.as_str(), "sandbox lost; marked error");
            report.marked_error.push(id);
        }
        for id in on_host.keys() {
            if !claimed.contains(id) {
                match self.runtime.destroy(id).await {
                    Ok(()) => report.orphans_removed.push(id.clone()),
                    Err(e) => {
                        tracing::warn!(sandbox = %id, error = %e, "could not remove an orphan")
                    }
                }
            }
        }
        report.marked_error.sort();
        report.orphans_removed.sort();
        Ok(report)
    }
}

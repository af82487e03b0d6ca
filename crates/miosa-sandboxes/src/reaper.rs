//! The background reaper: sandboxes whose deadline passed are destroyed, or
//! paused (and then kept for `Limits::paused_retention` before destruction).

use std::{sync::Arc, time::Duration};

use miosa_core::{time_util, OnTimeout, SandboxStatus};
use miosa_store::SandboxPatch;

use crate::{Result, Sandboxes};

/// How many expired sandboxes one sweep handles.
const BATCH: u32 = 100;

impl Sandboxes {
    /// One sweep; returns how many sandboxes it acted on.
    pub async fn reap_expired(&self) -> Result<usize> {
        let now = time_util::now();
        let expired = self
            .store
            .expired_sandboxes(&self.node_id, now, BATCH)
            .await?;
        let mut acted = 0;
        for s in expired {
            let outcome = match (s.on_timeout, s.status) {
                (OnTimeout::Pause, SandboxStatus::Running) => {
                    let id = s.id.clone();
                    let tenant = s.tenant_id.clone();
                    let paused = self.pause_sandbox(s).await;
                    if paused.is_ok() {
                        let patch = SandboxPatch {
                            expires_at: Some(now + self.limits.paused_retention),
                            ..Default::default()
                        };
                        let _ = self.store.update_sandbox(&tenant, &id, &patch).await;
                        tracing::info!(sandbox = %id, "sandbox paused by its timeout");
                    }
                    paused.map(|_| ())
                }
                _ => {
                    tracing::info!(sandbox = %s.id, "sandbox destroyed by its timeout");
                    self.destroy_sandbox(&s, "system").await
                }
            };
            match outcome {
                Ok(()) => acted += 1,
                Err(e) => tracing::warn!(error = %e, "reaper could not act on a sandbox"),
            }
        }
        Ok(acted)
    }

    /// Runs `reap_expired` every `every` until the handle is aborted.
    pub fn spawn_reaper(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.reap_expired().await {
                    tracing::warn!(error = %e, "reaper sweep failed");
                }
            }
        })
    }
}

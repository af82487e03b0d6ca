//! Signed checkpoints of each tenant's chain head, with an Ed25519 key
//! derived from the master key the database records for sealing (never
//! stored in the database). Several replicas may sign the same head: the
//! store keeps one.

use std::sync::Arc;
use std::time::Duration;

use miosa_core::{AuditCheckpoint, TenantId};
use miosa_store::Store;
use miosa_vault::{AuditSigner, KeyRing};

use crate::AuditError;

type Result<T> = std::result::Result<T, AuditError>;

/// Heads signed per round, at most.
const PER_ROUND: u32 = 1000;

/// Signs chain heads.
#[derive(Clone)]
pub struct Checkpointer {
    store: Arc<dyn Store>,
    ring: Arc<KeyRing>,
}

impl Checkpointer {
    pub fn new(store: Arc<dyn Store>, ring: Arc<KeyRing>) -> Self {
        Self { store, ring }
    }

    /// The signer of the master key the database seals under (this
    /// server's current key before any is recorded).
    async fn signer(&self) -> Result<AuditSigner> {
        let kek = match self.store.sealing_kek().await? {
            Some(k) => k,
            None => self.ring.current_id(),
        };
        Ok(self.ring.audit_signer(&kek)?)
    }

    /// Signs `(tenant, seq, hash)` as of now and stores it.
    pub async fn sign(&self, tenant: &TenantId, seq: i64, hash: &str) -> Result<AuditCheckpoint> {
        let signer = self.signer().await?;
        let mut cp = AuditCheckpoint {
            tenant_id: tenant.clone(),
            seq,
            hash: hash.to_owned(),
            time: miosa_core::time_util::now(),
            kek_id: String::new(),
            signature: Vec::new(),
        };
        signer.sign(&mut cp);
        self.store.put_audit_checkpoint(&cp).await?;
        Ok(cp)
    }

    /// Signs every head that moved since its tenant's last checkpoint;
    /// returns how many.
    pub async fn round(&self) -> Result<usize> {
        let mut signed = 0;
        loop {
            let heads = self.store.audit_heads_to_checkpoint(PER_ROUND).await?;
            if heads.is_empty() {
                return Ok(signed);
            }
            let n = heads.len();
            for (tenant, seq, hash) in heads {
                self.sign(&tenant, seq, &hash).await?;
            }
            signed += n;
            if n < PER_ROUND as usize {
                return Ok(signed);
            }
        }
    }

    /// Runs a round every `every` until the task is aborted.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.round().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(heads = n, "signed audit checkpoints"),
                    Err(e) => tracing::warn!(error = %e, "audit checkpoint round failed"),
                }
            }
        })
    }
}

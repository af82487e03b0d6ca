//! What every handler can reach.

use std::sync::Arc;

use miosa_audit::AuditLog;
use miosa_core::{KeyHash, Pepper};
use miosa_sandboxes::Sandboxes;
use miosa_secrets::Secrets;
use miosa_store::Store;

use crate::ApiError;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyConfig>,
    /// `None` when the sandbox runtime is switched off in config.
    pub sandboxes: Option<Arc<Sandboxes>>,
    pub secrets: Arc<Secrets>,
    pub audit: AuditLog,
    /// The master keys: for the public keys of audit checkpoints.
    pub vault: Arc<miosa_vault::KeyRing>,
}

impl AppState {
    /// The sandbox service, or 503 when this server runs without it.
    pub fn sandboxes(&self) -> Result<&Arc<Sandboxes>, ApiError> {
        self.sandboxes.as_ref().ok_or(ApiError::Unavailable(
            "sandboxes are disabled on this server",
        ))
    }
}

/// How presented keys are checked.
pub struct KeyConfig {
    /// Mixed into every key hash.
    pub pepper: Pepper,
    /// Hash of the operator's root key; `None` disables `/v1/admin/*`.
    pub root_key_hash: Option<KeyHash>,
}

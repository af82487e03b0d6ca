//! What every handler can reach.

use std::sync::Arc;

use miosa_core::{KeyHash, Pepper};
use miosa_store::Store;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<KeyConfig>,
}

/// How presented keys are checked.
pub struct KeyConfig {
    /// Mixed into every key hash.
    pub pepper: Pepper,
    /// Hash of the operator's root key; `None` disables `/v1/admin/*`.
    pub root_key_hash: Option<KeyHash>,
}

//! Miosa's domain vocabulary: typed prefixed IDs, API keys and their hashing,
//! tenancy types, input validation and pagination. Pure: no I/O.
#![forbid(unsafe_code)]

pub mod audit;
pub mod base32;
pub mod error;
pub mod id;
pub mod keys;
pub mod page;
pub mod redacted;
pub mod sandbox;
pub mod secret;
pub mod tenancy;
pub mod time_util;
pub mod validate;

pub use audit::{
    AuditCheckpoint, AuditCompletion, AuditCredential, AuditEntry, AuditEvent, AuditRequest,
    Outcome,
};
pub use error::{CoreError, FieldError};
pub use id::{ApiKeyId, AuditId, SandboxId, SecretId, TenantId, WorkspaceId};
pub use keys::{ApiKeyKind, KeyHash, Pepper, PlainApiKey};
pub use page::{Page, PageRequest};
pub use redacted::Redacted;
pub use sandbox::{Labels, OnTimeout, Sandbox, SandboxStatus};
pub use secret::{
    AadVersion, NewSecretVersion, SandboxScopeKeys, SealedValue, SealedVersion, Secret,
    SecretScope, SubstituteIn, TenantSettings,
};
pub use tenancy::{issue_key, ApiKey, KeyScope, NewApiKey, Tenant, Workspace};

//! Wire types of the API, as a client sees them.

use serde::{Deserialize, Serialize};

/// A page of results.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `limit` and `cursor` for list calls.
#[derive(Debug, Clone, Default)]
pub struct PageParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl PageParams {
    /// `?limit=…&cursor=…`, or the empty string.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if let Some(c) = &self.cursor {
            parts.push(format!("cursor={c}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Me {
    pub tenant_id: Option<String>,
    pub key_id: Option<String>,
    pub scope: String,
    pub workspace_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub api_key: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreateApiKey {
    pub name: String,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub workspace_id: Option<String>,
    pub hint: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub record: ApiKey,
    pub key: String,
}

/// A sandbox as the API returns it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Sandbox {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub template: String,
    pub workspace_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub cpu: f64,
    pub memory_mb: u32,
    /// Disk size in MiB (`None` for sandboxes made before disks were limited).
    #[serde(default)]
    pub disk_mb: Option<u32>,
    pub timeout_seconds: u32,
    pub on_timeout: String,
    pub created_at: String,
    pub expires_at: String,
    /// The API key that created the sandbox.
    #[serde(default)]
    pub created_by_key_id: Option<String>,
}

/// The result of a finished command.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub timed_out: bool,
    pub truncated: bool,
}

/// A directory entry inside a sandbox.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub mode: String,
    pub modified_at: String,
}

/// A secret's metadata (values are never returned).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Secret {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub sandbox_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    /// The workspace the secret belongs to (a `workspace` secret's key, or
    /// an end-user secret's binding).
    pub workspace_id: Option<String>,
    pub expose_as_env: String,
    pub allowed_hosts: Vec<String>,
    /// `headers`, `query`, `body`.
    pub substitute_in: Vec<String>,
    pub version: u32,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
    /// Only in the answer to setting a secret: what the caller should know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A tenant's settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Settings {
    pub allow_end_user_credentials: bool,
    pub require_allowed_hosts: bool,
    pub workspace_keys_use_unbound_secrets: bool,
}

impl Secret {
    /// The scope's key (`None` for tenant scope).
    pub fn scope_key(&self) -> Option<&str> {
        match self.scope.as_str() {
            "sandbox" => self.sandbox_id.as_deref(),
            "user" => self.owner_user_id.as_deref(),
            "external_user" => self.external_user_id.as_deref(),
            "external_workspace" => self.external_workspace_id.as_deref(),
            "workspace" => self.workspace_id.as_deref(),
            _ => None,
        }
    }
}

/// A proxied request in an audit row.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct AuditRequest {
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
}

/// The secret that resolved for an audit row.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct AuditCredential {
    pub secret_id: String,
    pub name: String,
    pub scope: String,
}

/// One audit row.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    pub time: String,
    pub action: String,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub sandbox_id: Option<String>,
    pub workspace_id: Option<String>,
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    pub request: Option<AuditRequest>,
    pub credential: Option<AuditCredential>,
    /// `success`, `denied`, `error`, or `pending`.
    pub outcome: String,
    /// The API key that created the row's sandbox.
    #[serde(default)]
    pub created_by_key_id: Option<String>,
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// A signed audit chain head.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub seq: i64,
    pub hash: String,
    pub time: String,
    pub kek_id: String,
    /// Base64 Ed25519 signature.
    pub signature: String,
    /// Base64 Ed25519 public key.
    pub public_key: Option<String>,
}

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

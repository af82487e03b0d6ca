//! A typed client for the Miosa HTTP API, used by the `miosa` CLI and the
//! integration tests. It speaks only the public wire format.
#![forbid(unsafe_code)]

mod types;

use reqwest::{Method, StatusCode};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

pub use types::*;

/// Errors from the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with the error contract.
    #[error("{status} {code}: {message} (request {request_id})")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: String,
        field: Option<String>,
    },
    /// The request did not complete or the answer was not what we expect.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("unexpected response {status}: {body}")]
    Unexpected { status: u16, body: String },
}

impl ClientError {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            ClientError::Transport(e) => e.status().map(|s| s.as_u16()),
        }
    }

    /// The error `code`, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The offending field, for `invalid_field` errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            ClientError::Api { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A raw response, for callers that want status and headers.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl RawResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A client bound to one base URL and one key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `base` like `http://127.0.0.1:8080`; `key` is sent as a bearer token.
    pub fn new(base: impl Into<String>, key: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_owned(),
            key,
        }
    }

    /// The same server with another key.
    pub fn with_key(&self, key: impl Into<String>) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            key: Some(key.into()),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends any request; `body` is sent as-is when it is a string, as JSON otherwise.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<RawBody>,
    ) -> Result<RawResponse> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        req = match body {
            Some(RawBody::Json(v)) => req.json(&v),
            Some(RawBody::Text(t)) => req.body(t),
            None => req,
        };
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if status.is_success() {
            let text = if status == StatusCode::NO_CONTENT {
                "null"
            } else {
                &text
            };
            return serde_json::from_str(text).map_err(|_| ClientError::Unexpected {
                status: status.as_u16(),
                body: text.to_owned(),
            });
        }
        Err(api_error(status.as_u16(), &text))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    // --- endpoints --------------------------------------------------------

    pub async fn health(&self) -> Result<Value> {
        self.get("/healthz").await
    }

    pub async fn ready(&self) -> Result<Value> {
        self.get("/readyz").await
    }

    pub async fn me(&self) -> Result<Me> {
        self.get("/v1/me").await
    }

    pub async fn create_tenant(&self, name: &str) -> Result<CreatedTenant> {
        self.call(
            Method::POST,
            "/v1/admin/tenants",
            Some(&serde_json::json!({ "name": name })),
        )
        .await
    }

    pub async fn list_tenants(&self, page: &PageParams) -> Result<List<Tenant>> {
        self.get(&format!("/v1/admin/tenants{}", page.query()))
            .await
    }

    pub async fn create_workspace(&self, name: &str) -> Result<Workspace> {
        self.call(
            Method::POST,
            "/v1/workspaces",
            Some(&serde_json::json!({ "name": name })),
        )
        .await
    }

    pub async fn list_workspaces(&self, page: &PageParams) -> Result<List<Workspace>> {
        self.get(&format!("/v1/workspaces{}", page.query())).await
    }

    pub async fn get_workspace(&self, id: &str) -> Result<Workspace> {
        self.get(&format!("/v1/workspaces/{id}")).await
    }

    pub async fn create_api_key(&self, input: &CreateApiKey) -> Result<CreatedApiKey> {
        self.call(Method::POST, "/v1/api-keys", Some(input)).await
    }

    pub async fn list_api_keys(&self, page: &PageParams) -> Result<List<ApiKey>> {
        self.get(&format!("/v1/api-keys{}", page.query())).await
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<()> {
        self.call::<Option<Value>>(Method::DELETE, &format!("/v1/api-keys/{id}"), None::<&()>)
            .await
            .map(|_| ())
    }

    // --- secrets, settings, audit ------------------------------------------

    /// `body` is the JSON of `POST /v1/secrets`. Returns metadata only.
    pub async fn set_secret(&self, body: &Value) -> Result<Secret> {
        self.call(Method::POST, "/v1/secrets", Some(body)).await
    }

    pub async fn settings(&self) -> Result<Settings> {
        self.get("/v1/settings").await
    }

    pub async fn update_settings(&self, body: &Value) -> Result<Settings> {
        self.call(Method::PATCH, "/v1/settings", Some(body)).await
    }

    /// `query` is the raw query string without `?`.
    pub async fn list_secrets(&self, query: &str) -> Result<List<Secret>> {
        self.get(&with_query("/v1/secrets", query)).await
    }

    pub async fn get_secret(&self, id: &str) -> Result<Secret> {
        self.get(&format!("/v1/secrets/{id}")).await
    }

    /// `action` is `disable` or `enable`.
    pub async fn secret_action(&self, id: &str, action: &str) -> Result<Secret> {
        self.call(
            Method::POST,
            &format!("/v1/secrets/{id}/{action}"),
            None::<&()>,
        )
        .await
    }

    pub async fn delete_secret(&self, id: &str) -> Result<()> {
        self.call::<Option<Value>>(Method::DELETE, &format!("/v1/secrets/{id}"), None::<&()>)
            .await
            .map(|_| ())
    }

    pub async fn sandbox_credentials(&self, id: &str) -> Result<List<Value>> {
        self.get(&format!("/v1/sandboxes/{id}/credentials")).await
    }

    /// `query` is the raw query string without `?` (limit, cursor).
    pub async fn list_audit_checkpoints(&self, query: &str) -> Result<List<AuditCheckpoint>> {
        self.get(&with_query("/v1/audit/checkpoints", query)).await
    }

    /// `query` is the raw query string without `?` (filters, limit, cursor).
    pub async fn list_audit(&self, query: &str) -> Result<List<AuditEvent>> {
        self.get(&with_query("/v1/audit", query)).await
    }

    // --- sandboxes --------------------------------------------------------

    /// `body` is the JSON of `POST /v1/sandboxes` (every field optional).
    pub async fn create_sandbox(&self, body: &Value) -> Result<Sandbox> {
        self.call(Method::POST, "/v1/sandboxes", Some(body)).await
    }

    /// `query` is the raw query string without `?` (filters, limit, cursor).
    pub async fn list_sandboxes(&self, query: &str) -> Result<List<Sandbox>> {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        self.get(&format!("/v1/sandboxes{q}")).await
    }

    pub async fn get_sandbox(&self, id: &str) -> Result<Sandbox> {
        self.get(&format!("/v1/sandboxes/{id}")).await
    }

    pub async fn update_sandbox(&self, id: &str, body: &Value) -> Result<Sandbox> {
        self.call(Method::PATCH, &format!("/v1/sandboxes/{id}"), Some(body))
            .await
    }

    pub async fn delete_sandbox(&self, id: &str) -> Result<()> {
        self.call::<Option<Value>>(Method::DELETE, &format!("/v1/sandboxes/{id}"), None::<&()>)
            .await
            .map(|_| ())
    }

    /// `action` is `pause` or `resume`.
    pub async fn sandbox_action(&self, id: &str, action: &str) -> Result<Sandbox> {
        self.call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/{action}"),
            None::<&()>,
        )
        .await
    }

    pub async fn set_sandbox_timeout(&self, id: &str, seconds: i64) -> Result<Sandbox> {
        let body = serde_json::json!({ "timeout_seconds": seconds });
        self.call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/timeout"),
            Some(&body),
        )
        .await
    }

    /// `body` is the JSON of `POST …/exec`.
    pub async fn exec(&self, id: &str, body: &Value) -> Result<ExecResult> {
        self.call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/exec"),
            Some(body),
        )
        .await
    }

    /// Runs `sh -c command` and returns its result.
    pub async fn run(&self, id: &str, command: &str) -> Result<ExecResult> {
        self.exec(id, &serde_json::json!({ "command": command }))
            .await
    }

    /// The WebSocket URL of a sandbox's terminal, `ws://…/v1/sandboxes/{id}/pty`
    /// (`wss://` for an `https` base), with `query` (already encoded, e.g.
    /// `cols=120&rows=40`) unless empty. Connect with the key as
    /// `Authorization: Bearer`.
    pub fn pty_url(&self, id: &str, query: &str) -> String {
        let base = match self.base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => format!("ws://{}", self.base),
        };
        let mut url = format!("{base}/v1/sandboxes/{}/pty", encode(id));
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    pub async fn list_files(&self, id: &str, path: &str) -> Result<List<FileEntry>> {
        self.get(&format!("/v1/sandboxes/{id}/files?path={}", encode(path)))
            .await
    }

    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        let url = format!(
            "{}/v1/sandboxes/{id}/files/content?path={}",
            self.base,
            encode(path)
        );
        let mut req = self.http.get(url);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(api_error(status.as_u16(), &String::from_utf8_lossy(&bytes)))
        }
    }

    pub async fn write_file(&self, id: &str, path: &str, bytes: Vec<u8>) -> Result<()> {
        let url = format!(
            "{}/v1/sandboxes/{id}/files/content?path={}",
            self.base,
            encode(path)
        );
        let mut req = self.http.put(url).body(bytes);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        Err(api_error(status.as_u16(), &resp.text().await?))
    }
}

/// Percent-encodes a query value.
fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// Percent-encodes a query or path component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A body for `Client::raw`.
pub enum RawBody {
    Json(Value),
    Text(String),
}

fn api_error(status: u16, text: &str) -> ClientError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let e = &v["error"];
    match e["code"].as_str() {
        Some(code) => ClientError::Api {
            status,
            code: code.to_owned(),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
            request_id: e["request_id"].as_str().unwrap_or_default().to_owned(),
            field: e["field"].as_str().map(str::to_owned),
        },
        None => ClientError::Unexpected {
            status,
            body: text.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_url_switches_the_scheme() {
        let c = Client::new("http://127.0.0.1:8080/", None);
        assert_eq!(
            c.pty_url("sbx_1", "cols=100&rows=30"),
            "ws://127.0.0.1:8080/v1/sandboxes/sbx_1/pty?cols=100&rows=30"
        );
        let c = Client::new("https://api.example/", None);
        assert_eq!(
            c.pty_url("my box", ""),
            "wss://api.example/v1/sandboxes/my%20box/pty"
        );
    }
}

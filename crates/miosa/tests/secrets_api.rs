//! The secrets, settings and audit API as a client sees it: validation that
//! names the field and writes nothing, upserts and conflicts, lists and
//! their filters, the end-user switch, the audit log's filters, chain and
//! export, the credentials view in real sandboxes, tenancy — and no response
//! ever carrying a value. (`egress.rs` tells the proxy story end to end.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::{Backend, TestServer};
use miosa_client::{encode, Client, RawBody, RawResponse};
use miosa_core::audit::{parse_time_filter, GENESIS_HASH};
use reqwest::Method;
use serde_json::{json, Value};

const VALUE: &str = "sk-live-Xq7-3b9f1c2e8d4a6071";
const SECOND_VALUE: &str = "sk-live-Yr8-0a1b2c3d4e5f6a7b";

/// A client that keeps every response it gets (status, headers, body), so a
/// test can show that none of them carried a value.
#[derive(Clone)]
struct Api {
    c: Client,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Api {
    fn new(c: &Client) -> Self {
        Self {
            c: c.clone(),
            seen: Arc::default(),
        }
    }

    /// Another key, the same record of responses.
    fn with(&self, c: &Client) -> Self {
        Self {
            c: c.clone(),
            seen: self.seen.clone(),
        }
    }

    async fn raw(&self, m: Method, path: &str, body: Option<RawBody>) -> RawResponse {
        let r = self.c.raw(m.clone(), path, body).await.unwrap();
        let mut text = format!("{m} {path} -> {}\n", r.status);
        for (k, v) in &r.headers {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        text.push_str(&r.body);
        self.seen.lock().unwrap().push(text);
        r
    }

    async fn req(&self, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.raw(m, path, body.map(RawBody::Json)).await;
        (r.status, r.json())
    }

    /// A GET that must succeed.
    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.req(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// `POST /v1/secrets` that must succeed: (status, secret).
    async fn set(&self, body: Value) -> (u16, Value) {
        let (status, v) = self.req(Method::POST, "/v1/secrets", Some(body)).await;
        assert!(status == 201 || status == 200, "set: {status} {v}");
        (status, v)
    }

    async fn secrets(&self, query: &str) -> Vec<Value> {
        let v = self.get(&format!("/v1/secrets?{query}")).await;
        v["data"].as_array().unwrap().clone()
    }

    async fn action(&self, id: &str, action: &str) -> (u16, Value) {
        self.req(Method::POST, &format!("/v1/secrets/{id}/{action}"), None)
            .await
    }

    /// A request that must fail: (status, code, field).
    async fn fails(
        &self,
        m: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String, Option<String>) {
        let (status, v) = self.req(m.clone(), path, body).await;
        assert!(status >= 400, "{m} {path} should fail: {v}");
        let e = &v["error"];
        (
            status,
            e["code"].as_str().unwrap_or_default().to_owned(),
            e["field"].as_str().map(str::to_owned),
        )
    }

    /// Every audit row matching `query`, following cursors, newest first.
    async fn audit(&self, query: &str) -> Vec<Value> {
        self.pages("/v1/audit", query, 500).await
    }

    /// Every row of a list endpoint, `limit` at a time.
    async fn pages(&self, path: &str, query: &str, limit: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("limit={limit}");
            if !query.is_empty() {
                q = format!("{query}&{q}");
            }
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&format!("{path}?{q}")).await;
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= limit as usize);
            out.extend(data.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => {
                    assert!(!data.is_empty(), "a cursor after an empty page");
                    cursor = Some(c.to_owned());
                }
                None => return out,
            }
        }
    }

    fn assert_never_saw(&self, values: &[&str]) {
        let seen = self.seen.lock().unwrap();
        assert!(seen.len() > 5, "the test made requests");
        for value in values {
            for text in seen.iter() {
                assert!(!text.contains(value), "a response carried a value:\n{text}");
            }
        }
    }
}

/// A valid tenant-scoped secret, with `changes` merged in and `remove`d keys.
fn secret_body(changes: Value, remove: &[&str]) -> Value {
    let mut b = json!({
        "name": "openai", "value": VALUE, "scope": "tenant", "expose_as_env": "OPENAI_API_KEY"
    });
    let obj = b.as_object_mut().unwrap();
    for (k, v) in changes.as_object().unwrap() {
        obj.insert(k.clone(), v.clone());
    }
    for k in remove {
        obj.remove(*k);
    }
    b
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn actions(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["action"].as_str().unwrap()).collect()
}

async fn bad_input_names_the_field_and_writes_nothing(backend: Backend) {
    let t = TestServer::start(backend).await;
    let api = Api::new(&t.admin);
    let ws = t.admin.create_workspace("mine").await.unwrap();
    let gone = t.admin.create_sandbox(&json!({})).await.unwrap();
    t.admin.delete_sandbox(&gone.id).await.unwrap();
    let (b, _) = t.new_tenant("other").await;
    let their_ws = b.create_workspace("theirs").await.unwrap();
    let theirs = b.create_sandbox(&json!({})).await.unwrap();
    let made_up_sbx = "sbx_01jdq3x5m8v2k7f4c9n6r1w0ab";
    let hosts = |n: usize| -> Vec<String> { (0..n).map(|i| format!("h{i}.example")).collect() };

    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing scope", secret_body(json!({}), &["scope"]), "scope"),
        (
            "unknown scope",
            secret_body(json!({"scope": "global"}), &[]),
            "scope",
        ),
        (
            "external_user without its key",
            secret_body(json!({"scope": "external_user"}), &[]),
            "external_user_id",
        ),
        (
            "sandbox without its key",
            secret_body(json!({"scope": "sandbox"}), &[]),
            "sandbox_id",
        ),
        (
            "workspace without its key",
            secret_body(json!({"scope": "workspace"}), &[]),
            "workspace_id",
        ),
        (
            "a key for another scope",
            secret_body(json!({"external_user_id": "u1"}), &[]),
            "external_user_id",
        ),
        (
            "a second key",
            secret_body(
                json!({"scope": "external_user", "external_user_id": "u1", "owner_user_id": "u2"}),
                &[],
            ),
            "owner_user_id",
        ),
        (
            "a binding that is no workspace ID",
            secret_body(
                json!({"scope": "external_user", "external_user_id": "u1", "workspace_id": made_up_sbx}),
                &[],
            ),
            "workspace_id",
        ),
        (
            "a binding to another tenant's workspace",
            secret_body(
                json!({"scope": "external_user", "external_user_id": "u1", "workspace_id": their_ws.id}),
                &[],
            ),
            "workspace_id",
        ),
        (
            "a binding for a tenant-wide secret",
            secret_body(json!({"scope": "tenant", "workspace_id": ws.id}), &[]),
            "workspace_id",
        ),
        (
            "an empty label",
            secret_body(
                json!({"scope": "external_user", "external_user_id": ""}),
                &[],
            ),
            "external_user_id",
        ),
        (
            "not a sandbox ID",
            secret_body(json!({"scope": "sandbox", "sandbox_id": "nope"}), &[]),
            "sandbox_id",
        ),
        (
            "a workspace ID as sandbox_id",
            secret_body(json!({"scope": "sandbox", "sandbox_id": ws.id}), &[]),
            "sandbox_id",
        ),
        (
            "a sandbox ID as workspace_id",
            secret_body(
                json!({"scope": "workspace", "workspace_id": made_up_sbx}),
                &[],
            ),
            "workspace_id",
        ),
        (
            "another tenant's sandbox",
            secret_body(json!({"scope": "sandbox", "sandbox_id": theirs.id}), &[]),
            "sandbox_id",
        ),
        (
            "a destroyed sandbox",
            secret_body(json!({"scope": "sandbox", "sandbox_id": gone.id}), &[]),
            "sandbox_id",
        ),
        (
            "another tenant's workspace",
            secret_body(
                json!({"scope": "workspace", "workspace_id": their_ws.id}),
                &[],
            ),
            "workspace_id",
        ),
        (
            "a short value",
            secret_body(json!({"value": "1234567"}), &[]),
            "value",
        ),
        (
            "a value with a newline",
            secret_body(json!({"value": format!("{VALUE}\nX-Extra: 1")}), &[]),
            "value",
        ),
        (
            "a value with a CR",
            secret_body(json!({"value": format!("{VALUE}\r")}), &[]),
            "value",
        ),
        (
            "a value with NUL",
            secret_body(json!({"value": format!("{VALUE}\u{0}")}), &[]),
            "value",
        ),
        (
            "a value over 64 KiB",
            secret_body(json!({"value": "v".repeat(64 * 1024 + 1)}), &[]),
            "value",
        ),
        (
            "a placeholder as value",
            secret_body(json!({"value": "miosa_ph_abcdefghijklmnop"}), &[]),
            "value",
        ),
        (
            "a null value",
            secret_body(json!({"value": null}), &[]),
            "value",
        ),
        ("no value", secret_body(json!({}), &["value"]), "value"),
        (
            "a bad name",
            secret_body(json!({"name": "open ai"}), &[]),
            "name",
        ),
        (
            "an empty name",
            secret_body(json!({"name": ""}), &[]),
            "name",
        ),
        (
            "a long name",
            secret_body(json!({"name": "n".repeat(129)}), &[]),
            "name",
        ),
        (
            "HTTPS_PROXY",
            secret_body(json!({"expose_as_env": "HTTPS_PROXY"}), &[]),
            "expose_as_env",
        ),
        (
            "PATH",
            secret_body(json!({"expose_as_env": "PATH"}), &[]),
            "expose_as_env",
        ),
        (
            "https_proxy",
            secret_body(json!({"expose_as_env": "https_proxy"}), &[]),
            "expose_as_env",
        ),
        (
            "MIOSA_*",
            secret_body(json!({"expose_as_env": "MIOSA_TOKEN"}), &[]),
            "expose_as_env",
        ),
        (
            "not a variable name",
            secret_body(json!({"expose_as_env": "OPENAI-KEY"}), &[]),
            "expose_as_env",
        ),
        (
            "a bad second host",
            secret_body(
                json!({"allowed_hosts": ["api.openai.com", "https://api.openai.com"]}),
                &[],
            ),
            "allowed_hosts[1]",
        ),
        (
            "51 hosts",
            secret_body(json!({"allowed_hosts": hosts(51)}), &[]),
            "allowed_hosts",
        ),
        (
            "hosts not a list",
            secret_body(json!({"allowed_hosts": "api.openai.com"}), &[]),
            "allowed_hosts",
        ),
        (
            "a port of 0",
            secret_body(json!({"allowed_hosts": ["api.openai.com:0"]}), &[]),
            "allowed_hosts[0]",
        ),
        (
            "a port out of range",
            secret_body(json!({"allowed_hosts": ["api.openai.com:70000"]}), &[]),
            "allowed_hosts[0]",
        ),
        (
            "no substitution location",
            secret_body(json!({"substitute_in": []}), &[]),
            "substitute_in",
        ),
        (
            "an unknown substitution location",
            secret_body(json!({"substitute_in": ["headers", "path"]}), &[]),
            "substitute_in[1]",
        ),
        (
            "substitution locations not a list",
            secret_body(json!({"substitute_in": "body"}), &[]),
            "substitute_in",
        ),
        (
            "an unknown field",
            secret_body(json!({"expose_as": "OPENAI_API_KEY"}), &[]),
            "expose_as",
        ),
    ];
    for (what, body, field) in cases {
        let (status, code, got) = api.fails(Method::POST, "/v1/secrets", Some(body)).await;
        assert_eq!(
            (status, code.as_str(), got.as_deref()),
            (422, "invalid_field", Some(field)),
            "{what}"
        );
        assert!(api.secrets("").await.is_empty(), "{what} wrote a secret");
    }
    // Another tenant's sandbox reads exactly like one that never existed.
    let message = |id: &str| {
        let api = api.clone();
        let body = secret_body(json!({"scope": "sandbox", "sandbox_id": id}), &[]);
        async move {
            api.req(Method::POST, "/v1/secrets", Some(body)).await.1["error"]["message"].clone()
        }
    };
    assert_eq!(message(&theirs.id).await, message(made_up_sbx).await);

    // Not JSON at all: 400.
    for text in [
        format!("{{\"name\":\"openai\",\"value\":\"{VALUE}\","),
        String::new(),
        format!("value={VALUE}"),
    ] {
        let r = api
            .raw(Method::POST, "/v1/secrets", Some(RawBody::Text(text)))
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (400, Some("malformed_json")),
            "{}",
            r.body
        );
    }
    assert!(api.secrets("").await.is_empty());
    assert!(api
        .audit("")
        .await
        .iter()
        .all(|r| !r["action"].as_str().unwrap().starts_with("secret.")));
    // The other tenant's sandbox and workspace got nothing either.
    assert!(b.list_secrets("").await.unwrap().data.is_empty());

    // The same body without the mistake is fine, at the limits too.
    let edge = "Zq8#pL2w";
    let (status, s) = api
        .set(secret_body(
            json!({"value": edge, "allowed_hosts": hosts(50), "name": "n".repeat(128)}),
            &[],
        ))
        .await;
    assert_eq!(
        (status, s["allowed_hosts"].as_array().unwrap().len()),
        (201, 50)
    );
    assert_eq!(api.secrets("").await.len(), 1);
    api.assert_never_saw(&[VALUE, edge]);
    b.delete_sandbox(&theirs.id).await.unwrap();
}

async fn upsert_conflicts_and_lifecycle(backend: Backend) {
    let t = TestServer::start(backend).await;
    let api = Api::new(&t.admin);
    let me = t.admin.me().await.unwrap().key_id.unwrap();

    let (status, v1) = api
        .set(secret_body(
            json!({"allowed_hosts": ["api.openai.com"]}),
            &[],
        ))
        .await;
    assert_eq!((status, v1["version"].as_u64()), (201, Some(1)));
    assert_eq!(
        (v1["scope"].as_str(), v1["enabled"].as_bool()),
        (Some("tenant"), Some(true))
    );
    assert!(v1.get("value").is_none(), "{v1}");
    let id = v1["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sec_"));

    // Same scope, key and name: a new version of the same secret, with the
    // new hosts.
    let (status, v2) = api
        .set(secret_body(
            json!({"value": SECOND_VALUE, "allowed_hosts": ["*.openai.com", "API.OpenAI.com"]}),
            &[],
        ))
        .await;
    assert_eq!((status, v2["version"].as_u64()), (200, Some(2)));
    assert_eq!(v2["id"], id.as_str());
    assert_eq!(v2["created_at"], v1["created_at"]);
    assert_eq!(
        v2["allowed_hosts"],
        json!(["*.openai.com", "api.openai.com"])
    );
    assert_eq!(api.secrets("").await.len(), 1);

    // A new value without `allowed_hosts` keeps the list (rotating a value
    // never widens where it may go); an explicit `[]` means any host.
    let (_, v3) = api.set(secret_body(json!({"value": VALUE}), &[])).await;
    assert_eq!(v3["version"].as_u64(), Some(3));
    assert_eq!(v3["allowed_hosts"], v2["allowed_hosts"]);
    let (_, v4) = api
        .set(secret_body(
            json!({"value": SECOND_VALUE, "allowed_hosts": []}),
            &[],
        ))
        .await;
    assert_eq!(v4["allowed_hosts"], json!([]));
    let version = 4;

    // Another name for the same variable in the same scope and key: 409.
    let (status, code, _) = api
        .fails(
            Method::POST,
            "/v1/secrets",
            Some(secret_body(json!({"name": "openai-2"}), &[])),
        )
        .await;
    assert_eq!((status, code.as_str()), (409, "conflict"));
    // An upsert that would move onto a taken variable: 409, and the secret
    // keeps its version and variable.
    api.set(secret_body(
        json!({"name": "github", "expose_as_env": "GITHUB_TOKEN"}),
        &[],
    ))
    .await;
    let (status, code, _) = api
        .fails(
            Method::POST,
            "/v1/secrets",
            Some(secret_body(json!({"expose_as_env": "GITHUB_TOKEN"}), &[])),
        )
        .await;
    assert_eq!((status, code.as_str()), (409, "conflict"));
    let now = api.get(&format!("/v1/secrets/{id}")).await;
    assert_eq!(
        (now["version"].as_u64(), now["expose_as_env"].as_str()),
        (Some(version), Some("OPENAI_API_KEY"))
    );

    // Other keys of the same scope do not conflict; the same key does.
    let user = |u: &str, name: &str| {
        secret_body(
            json!({"scope": "external_user", "external_user_id": u, "name": name}),
            &[],
        )
    };
    let (s1, smith) = api.set(user("dr_smith", "openai")).await;
    let (s2, _) = api.set(user("dr_jones", "openai")).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(smith["external_user_id"], "dr_smith");
    assert_eq!(smith["workspace_id"], Value::Null);
    let (status, _, _) = api
        .fails(Method::POST, "/v1/secrets", Some(user("dr_smith", "other")))
        .await;
    assert_eq!(status, 409);
    let ws = t.admin.create_workspace("w").await.unwrap();
    let (status, in_ws) = api
        .set(secret_body(
            json!({"scope": "workspace", "workspace_id": ws.id}),
            &[],
        ))
        .await;
    assert_eq!(
        (status, in_ws["workspace_id"].as_str()),
        (201, Some(ws.id.as_str()))
    );
    assert_eq!(api.secrets("").await.len(), 5);

    // Disable, upsert (stays disabled), enable, delete.
    let (status, off) = api.action(&id, "disable").await;
    assert_eq!((status, off["enabled"].as_bool()), (200, Some(false)));
    assert_eq!(
        api.get(&format!("/v1/secrets/{id}")).await["enabled"],
        false
    );
    let (status, v3) = api.set(secret_body(json!({}), &[])).await;
    assert_eq!(
        (status, v3["version"].as_u64(), v3["enabled"].as_bool()),
        (200, Some(version + 1), Some(false)),
        "a new value does not re-enable"
    );
    let (status, on) = api.action(&id, "enable").await;
    assert_eq!((status, on["enabled"].as_bool()), (200, Some(true)));
    let (status, _) = api
        .req(Method::DELETE, &format!("/v1/secrets/{id}"), None)
        .await;
    assert_eq!(status, 204);
    for (m, path) in [
        (Method::GET, format!("/v1/secrets/{id}")),
        (Method::DELETE, format!("/v1/secrets/{id}")),
        (Method::POST, format!("/v1/secrets/{id}/disable")),
        (Method::POST, format!("/v1/secrets/{id}/enable")),
        (Method::GET, "/v1/secrets/nope".to_owned()),
        (
            Method::POST,
            "/v1/secrets/key_01jdq3x5m8v2k7f4c9n6r1w0ab/disable".into(),
        ),
    ] {
        let (status, code, _) = api.fails(m.clone(), &path, None).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{m} {path}");
    }
    assert_eq!(api.secrets("").await.len(), 4);
    // The name and variable are free again.
    let (status, again) = api.set(secret_body(json!({}), &[])).await;
    assert_eq!((status, again["version"].as_u64()), (201, Some(1)));
    assert_ne!(again["id"], id.as_str());

    // Each write is an audit row by this key, naming the secret.
    let rows = api.audit("").await;
    let mine: Vec<&Value> = rows.iter().filter(|r| r["target"] == id.as_str()).collect();
    assert_eq!(
        actions(&mine.iter().map(|r| (*r).clone()).collect::<Vec<_>>()),
        [
            "secret.deleted",
            "secret.enabled",
            "secret.set",
            "secret.disabled",
            "secret.set",
            "secret.set",
            "secret.set",
            "secret.set"
        ]
    );
    for r in &mine {
        assert_eq!(r["actor"], me.as_str());
        assert_eq!(r["credential"]["secret_id"], id.as_str());
        assert_eq!(r["credential"]["scope"], "tenant");
        assert_eq!(r["outcome"], "success");
    }
    let smith_rows = api
        .audit("external_user_id=dr_smith&action=secret.set")
        .await;
    assert_eq!(ids(&smith_rows).len(), 1);
    assert_eq!(smith_rows[0]["target"], smith["id"]);
    // Everything readable, errors included, and the export: no value.
    api.get(&format!("/v1/secrets/{}", smith["id"].as_str().unwrap()))
        .await;
    api.raw(Method::GET, "/v1/audit/export", None).await;
    api.assert_never_saw(&[VALUE, SECOND_VALUE]);
}

/// Every property name a schema can produce, following `$ref`s.
fn property_names(doc: &Value, schema: &Value, out: &mut Vec<String>, depth: usize) {
    assert!(depth < 32, "schema nesting too deep");
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "dangling {r}");
        return property_names(doc, target, out, depth + 1);
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            out.push(k.clone());
            property_names(doc, v, out, depth + 1);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            property_names(doc, &schema[key], out, depth + 1);
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for s in schema[key].as_array().into_iter().flatten() {
            property_names(doc, s, out, depth + 1);
        }
    }
}

fn content_properties(doc: &Value, content: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for media in content.as_object().into_iter().flat_map(|m| m.values()) {
        property_names(doc, &media["schema"], &mut out, 0);
    }
    out
}

/// The served OpenAPI document has `value` only in the request body of
/// `POST /v1/secrets`: no response schema anywhere describes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_has_no_value_in_any_response() {
    let t = TestServer::start(Backend::Sqlite).await;
    let doc = t
        .anon
        .raw(Method::GET, "/openapi.json", None)
        .await
        .unwrap()
        .json();
    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                let names = content_properties(&doc, &resp["content"]);
                assert!(
                    !names.iter().any(|n| n == "value"),
                    "{method} {path} {status} can return a `value`"
                );
            }
            operations += 1;
        }
    }
    assert!(operations > 20);
    let secret_ops = [
        "/v1/secrets",
        "/v1/secrets/{id}",
        "/v1/sandboxes/{id}/credentials",
    ];
    for p in secret_ops {
        assert!(doc["paths"][p].is_object(), "{p} is documented");
    }
    let set = content_properties(
        &doc,
        &doc["paths"]["/v1/secrets"]["post"]["requestBody"]["content"],
    );
    assert!(
        set.iter().any(|n| n == "value"),
        "the walk sees request fields: {set:?}"
    );
    // The secret's view documents its metadata (the walk reaches it).
    let view = content_properties(
        &doc,
        &doc["paths"]["/v1/secrets"]["post"]["responses"]["201"]["content"],
    );
    assert!(view.iter().any(|n| n == "expose_as_env"), "{view:?}");
}

async fn other_tenants_and_workspace_keys(backend: Backend) {
    let t = TestServer::start(backend).await;
    let api = Api::new(&t.admin);
    let (_, s) = api.set(secret_body(json!({}), &[])).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let before = api.get(&format!("/v1/secrets/{id}")).await;
    let (b, _) = t.new_tenant("intruder").await;
    let theirs = api.with(&b);

    // Another tenant's secret: 404 for every action, and untouched.
    for (m, path) in [
        (Method::GET, format!("/v1/secrets/{id}")),
        (Method::POST, format!("/v1/secrets/{id}/disable")),
        (Method::POST, format!("/v1/secrets/{id}/enable")),
        (Method::DELETE, format!("/v1/secrets/{id}")),
    ] {
        let (status, code, _) = theirs.fails(m.clone(), &path, None).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{m} {path}");
    }
    assert_eq!(api.get(&format!("/v1/secrets/{id}")).await, before);
    for q in [
        "",
        "scope=tenant",
        "name=openai",
        format!("cursor={id}").as_str(),
    ] {
        assert!(theirs.secrets(q).await.is_empty(), "{q}");
    }
    // The same name and variable in their tenant are theirs alone.
    let (status, own) = theirs.set(secret_body(json!({}), &[])).await;
    assert_eq!((status, own["version"].as_u64()), (201, Some(1)));
    assert_eq!(api.get(&format!("/v1/secrets/{id}")).await, before);
    assert!(theirs
        .audit("")
        .await
        .iter()
        .all(|r| r["target"] != id.as_str()));
    assert!(api.audit("").await.iter().all(|r| r["target"] != own["id"]));

    // A workspace key: tenant-wide secrets and the settings are not its
    // own (403), another workspace is not either, and the tenant's secrets
    // do not exist for it (404). Nothing is written.
    let ws1 = t.admin.create_workspace("one").await.unwrap();
    let ws2 = t.admin.create_workspace("two").await.unwrap();
    let (wk1, _) = t.workspace_key(&t.admin, &ws1.id).await;
    let (wk2, _) = t.workspace_key(&t.admin, &ws2.id).await;
    let ws_api = api.with(&wk1);
    for (m, path, body, want) in [
        (
            Method::POST,
            "/v1/secrets".to_owned(),
            Some(secret_body(json!({"name": "wide"}), &[])),
            (403, "workspace_key_forbidden"),
        ),
        (
            Method::POST,
            "/v1/secrets".to_owned(),
            Some(secret_body(
                json!({"name": "ws", "scope": "workspace", "workspace_id": ws2.id}),
                &[],
            )),
            (403, "workspace_key_forbidden"),
        ),
        (
            Method::POST,
            "/v1/secrets".to_owned(),
            Some(secret_body(
                json!({"name": "eu", "scope": "external_user", "external_user_id": "u1",
                       "workspace_id": ws2.id}),
                &[],
            )),
            (403, "workspace_key_forbidden"),
        ),
        (
            Method::PATCH,
            "/v1/settings".into(),
            Some(json!({"allow_end_user_credentials": false})),
            (403, "forbidden"),
        ),
        (
            Method::GET,
            format!("/v1/secrets/{id}"),
            None,
            (404, "not_found"),
        ),
        (
            Method::POST,
            format!("/v1/secrets/{id}/disable"),
            None,
            (404, "not_found"),
        ),
        (
            Method::DELETE,
            format!("/v1/secrets/{id}"),
            None,
            (404, "not_found"),
        ),
    ] {
        let (status, code, _) = ws_api.fails(m.clone(), &path, body).await;
        assert_eq!((status, code.as_str()), want, "{m} {path}");
    }
    assert_eq!(api.secrets("").await.len(), 1);
    assert_eq!(api.get(&format!("/v1/secrets/{id}")).await, before);
    assert_eq!(
        api.get("/v1/settings").await["allow_end_user_credentials"],
        true
    );
    assert!(
        ws_api.secrets("").await.is_empty(),
        "the tenant's are not its"
    );
    // Its own workspace's secrets it manages, and they are bound there.
    let (status, mine) = ws_api
        .set(secret_body(
            json!({"name": "eu", "scope": "external_user", "external_user_id": "u1"}),
            &[],
        ))
        .await;
    assert_eq!(
        (status, mine["workspace_id"].as_str()),
        (201, Some(ws1.id.as_str()))
    );
    let mine_id = mine["id"].as_str().unwrap();
    assert_eq!(ids(&ws_api.secrets("").await), [mine_id]);
    assert!(api.with(&wk2).secrets("").await.is_empty());
    let (status, code, _) = api
        .with(&wk2)
        .fails(Method::DELETE, &format!("/v1/secrets/{mine_id}"), None)
        .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert_eq!(ws_api.action(mine_id, "disable").await.0, 200);
    assert_eq!(ws_api.action(mine_id, "enable").await.0, 200);
    let (status, _) = ws_api
        .req(Method::DELETE, &format!("/v1/secrets/{mine_id}"), None)
        .await;
    assert_eq!(status, 204);

    // The credentials view: any key that can see the sandbox, nobody else.
    let in_ws1 = t
        .admin
        .create_sandbox(&json!({"workspace_id": ws1.id, "name": "box"}))
        .await
        .unwrap();
    let no_ws = t.admin.create_sandbox(&json!({})).await.unwrap();
    let creds = |s: &str| format!("/v1/sandboxes/{s}/credentials");
    let view = ws_api.get(&creds(&in_ws1.id)).await;
    assert_eq!(view["data"][0]["secret_id"], id.as_str());
    assert_eq!(ws_api.get(&creds("box")).await, view, "by name");
    assert_eq!(
        api.get(&creds(&in_ws1.id)).await,
        view,
        "the admin sees the same"
    );
    for (who, client, sandbox) in [
        ("another workspace's key", &wk2, in_ws1.id.as_str()),
        (
            "a workspace key, sandbox outside it",
            &wk1,
            no_ws.id.as_str(),
        ),
        ("another tenant", &b, in_ws1.id.as_str()),
        ("another tenant, by name", &b, "box"),
    ] {
        let (status, code, _) = api
            .with(client)
            .fails(Method::GET, &creds(sandbox), None)
            .await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{who}");
    }
    let (status, code, field) = ws_api
        .fails(
            Method::GET,
            &format!("{}?verbose=1", creds(&in_ws1.id)),
            None,
        )
        .await;
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (422, "invalid_field", Some("verbose"))
    );
    for s in [&in_ws1, &no_ws] {
        t.admin.delete_sandbox(&s.id).await.unwrap();
    }
    let (status, _, _) = api.fails(Method::GET, &creds(&no_ws.id), None).await;
    assert_eq!(status, 404, "a destroyed sandbox has no credentials");
    api.assert_never_saw(&[VALUE]);
}

async fn lists_filter_and_paginate(backend: Backend) {
    let t = TestServer::start(backend).await;
    let api = Api::new(&t.admin);
    let ws = t.admin.create_workspace("w").await.unwrap();
    let sbx = t.admin.create_sandbox(&json!({})).await.unwrap();
    let mut made = Vec::new();
    for (name, env, key) in [
        ("t1", "T1", json!({})),
        ("t2", "T2", json!({})),
        (
            "x",
            "X",
            json!({"scope": "external_user", "external_user_id": "u1"}),
        ),
        (
            "x",
            "X",
            json!({"scope": "external_user", "external_user_id": "u2"}),
        ),
        (
            "x",
            "X",
            json!({"scope": "external_workspace", "external_workspace_id": "ew1"}),
        ),
        (
            "x",
            "X",
            json!({"scope": "workspace", "workspace_id": ws.id}),
        ),
        ("x", "X", json!({"scope": "user", "owner_user_id": "o1"})),
        ("x", "X", json!({"scope": "sandbox", "sandbox_id": sbx.id})),
    ] {
        let mut body = secret_body(key, &[]);
        body["name"] = json!(name);
        body["expose_as_env"] = json!(env);
        made.push(api.set(body).await.1);
    }
    let all = api.secrets("").await;
    let mut newest_first = ids(&made);
    newest_first.reverse();
    assert_eq!(ids(&all), newest_first);

    let scope_of = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["scope"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        scope_of(&api.secrets("scope=tenant").await),
        ["tenant", "tenant"]
    );
    assert_eq!(api.secrets("scope=external_user").await.len(), 2);
    for (q, scope) in [
        ("external_user_id=u1", "external_user"),
        ("external_workspace_id=ew1", "external_workspace"),
        (format!("workspace_id={}", ws.id).as_str(), "workspace"),
        ("owner_user_id=o1", "user"),
        (format!("sandbox_id={}", sbx.id).as_str(), "sandbox"),
        ("scope=external_user&external_user_id=u2", "external_user"),
        ("scope=user", "user"),
    ] {
        let rows = api.secrets(q).await;
        assert_eq!(scope_of(&rows), [scope], "{q}");
    }
    assert_eq!(
        api.secrets("external_user_id=u1").await[0]["id"],
        made[2]["id"]
    );
    assert!(api.secrets("external_user_id=u3").await.is_empty());
    assert!(
        api.secrets("external_user_id=U1").await.is_empty(),
        "exact match"
    );
    assert_eq!(api.secrets("name=x").await.len(), 6);
    assert_eq!(api.secrets("name=x&scope=external_user").await.len(), 2);
    assert_eq!(api.secrets("name=t1").await[0]["id"], made[0]["id"]);

    for (q, field) in [
        ("scope=tenant&external_user_id=u1", "external_user_id"),
        (
            "scope=workspace&sandbox_id=sbx_01jdq3x5m8v2k7f4c9n6r1w0ab",
            "sandbox_id",
        ),
        (
            "external_user_id=u1&external_workspace_id=ew1",
            "external_workspace_id",
        ),
        ("scope=global", "scope"),
        ("sandbox_id=nope", "sandbox_id"),
        ("workspace_id=nope", "workspace_id"),
        ("name=a%20b", "name"),
        ("external_user_id=", "external_user_id"),
        ("scope=tenant&scope=user", "scope"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=NOT-A-CURSOR", "cursor"),
        ("filter=x", "filter"),
        ("value=x", "value"),
    ] {
        let (status, code, got) = api
            .fails(Method::GET, &format!("/v1/secrets?{q}"), None)
            .await;
        assert_eq!(
            (status, code.as_str(), got.as_deref()),
            (422, "invalid_field", Some(field)),
            "{q}"
        );
    }

    // Cursor pagination: 3 + 3 + 2, newest first, no repeats; filtered too.
    let paged = api.pages("/v1/secrets", "", 3).await;
    assert_eq!(ids(&paged), newest_first);
    let first = api.get("/v1/secrets?limit=3").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 3);
    assert!(first["next_cursor"].is_string());
    let filtered = api.pages("/v1/secrets", "name=x", 2).await;
    assert_eq!(ids(&filtered), ids(&api.secrets("name=x").await));
    let last = api.get("/v1/secrets?limit=8").await;
    assert_eq!(
        last["next_cursor"],
        Value::Null,
        "no cursor after the last row"
    );
    t.admin.delete_sandbox(&sbx.id).await.unwrap();
    api.assert_never_saw(&[VALUE]);
}

async fn settings_switch_end_user_credentials(backend: Backend) {
    let t = TestServer::start(backend).await;
    let api = Api::new(&t.admin);
    let me = t.admin.me().await.unwrap().key_id.unwrap();
    assert_eq!(
        api.get("/v1/settings").await,
        json!({
            "allow_end_user_credentials": true,
            "require_allowed_hosts": false,
            "workspace_keys_use_unbound_secrets": false,
        })
    );
    let user = |name: &str, u: &str| {
        secret_body(
            json!({"name": name, "scope": "external_user", "external_user_id": u}),
            &[],
        )
    };
    let (_, smith) = api.set(user("openai", "dr_smith")).await;

    let (status, v) = api
        .req(
            Method::PATCH,
            "/v1/settings",
            Some(json!({"allow_end_user_credentials": false})),
        )
        .await;
    assert_eq!(
        (status, v["allow_end_user_credentials"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(
        api.get("/v1/settings").await["allow_end_user_credentials"],
        false
    );
    // An empty patch changes nothing.
    let (status, v) = api
        .req(Method::PATCH, "/v1/settings", Some(json!({})))
        .await;
    assert_eq!(
        (status, v["allow_end_user_credentials"].as_bool()),
        (200, Some(false))
    );

    // New end-user secrets, and new versions of old ones: 403, nothing written.
    for body in [user("openai", "dr_jones"), user("openai", "dr_smith")] {
        let (status, code, _) = api.fails(Method::POST, "/v1/secrets", Some(body)).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "end_user_credentials_disabled")
        );
    }
    let listed = api.secrets("scope=external_user").await;
    assert_eq!(ids(&listed), ids(std::slice::from_ref(&smith)));
    assert_eq!(listed[0]["version"], 1);
    // Other scopes still work; the existing secret can still be managed.
    for body in [
        secret_body(json!({}), &[]),
        secret_body(
            json!({"scope": "external_workspace", "external_workspace_id": "clinic1"}),
            &[],
        ),
    ] {
        assert_eq!(api.set(body).await.0, 201);
    }
    let smith_id = smith["id"].as_str().unwrap();
    assert_eq!(api.action(smith_id, "disable").await.0, 200);
    assert_eq!(api.action(smith_id, "enable").await.0, 200);
    // The setting is the tenant's own.
    let (b, _) = t.new_tenant("other").await;
    assert!(b.settings().await.unwrap().allow_end_user_credentials);
    assert_eq!(
        api.with(&b).set(user("openai", "dr_smith")).await.0,
        201,
        "another tenant's switch is not this one's"
    );

    // Bad patches name the field and change nothing.
    for (body, field) in [
        (
            json!({"allow_end_user_credential": true}),
            "allow_end_user_credential",
        ),
        (
            json!({"allow_end_user_credentials": "yes"}),
            "allow_end_user_credentials",
        ),
    ] {
        let (status, code, got) = api.fails(Method::PATCH, "/v1/settings", Some(body)).await;
        assert_eq!(
            (status, code.as_str(), got.as_deref()),
            (422, "invalid_field", Some(field))
        );
    }
    let r = api
        .raw(
            Method::PATCH,
            "/v1/settings",
            Some(RawBody::Text("{\"allow_end_user_credentials\": tru".into())),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        api.get("/v1/settings").await["allow_end_user_credentials"],
        false
    );

    // Back on: end-user secrets can be created again.
    api.req(
        Method::PATCH,
        "/v1/settings",
        Some(json!({"allow_end_user_credentials": true})),
    )
    .await;
    assert_eq!(api.set(user("openai", "dr_jones")).await.0, 201);

    // Every patch that changes something is audited with the key that made
    // it and what it set (the empty `{}` patch is not).
    let rows = api.audit("action=settings.updated").await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert_eq!(r["actor"], me.as_str());
        assert_eq!(r["outcome"], "success");
    }
    assert_eq!(rows[0]["target"], "allow_end_user_credentials=true");
    assert_eq!(rows[1]["target"], "allow_end_user_credentials=false");

    // A secret that may go to any host says so; with
    // `require_allowed_hosts` it is refused, field named, nothing written.
    let (_, anywhere) = api
        .set(secret_body(
            json!({"name": "anywhere", "expose_as_env": "ANYWHERE"}),
            &[],
        ))
        .await;
    let warnings = anywhere["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{anywhere}");
    assert!(warnings[0].as_str().unwrap().contains("any host"));
    let (_, limited) = api
        .set(secret_body(
            json!({"name": "limited", "expose_as_env": "LIMITED",
                   "allowed_hosts": ["api.openai.com:8443"]}),
            &[],
        ))
        .await;
    assert_eq!(limited["warnings"], json!([]));
    assert_eq!(limited["allowed_hosts"], json!(["api.openai.com:8443"]));
    let (_, opted) = api
        .set(secret_body(
            json!({"name": "opted", "expose_as_env": "OPTED", "allowed_hosts": ["api.openai.com"],
                   "substitute_in": ["body", "headers"]}),
            &[],
        ))
        .await;
    assert_eq!(opted["substitute_in"], json!(["headers", "body"]));
    assert!(opted["warnings"][0]
        .as_str()
        .unwrap()
        .contains("trusted with the value"));
    let (status, v) = api
        .req(
            Method::PATCH,
            "/v1/settings",
            Some(json!({"require_allowed_hosts": true})),
        )
        .await;
    assert_eq!(
        (status, v["require_allowed_hosts"].as_bool()),
        (200, Some(true))
    );
    let before = api.secrets("").await;
    for body in [
        secret_body(json!({"name": "fresh", "expose_as_env": "FRESH"}), &[]),
        // A new version that keeps the current (empty) list.
        secret_body(
            json!({"name": "anywhere", "expose_as_env": "ANYWHERE"}),
            &[],
        ),
        secret_body(
            json!({"name": "limited", "expose_as_env": "LIMITED", "allowed_hosts": []}),
            &[],
        ),
    ] {
        let (status, code, field) = api.fails(Method::POST, "/v1/secrets", Some(body)).await;
        assert_eq!(
            (status, code.as_str(), field.as_deref()),
            (422, "invalid_field", Some("allowed_hosts"))
        );
    }
    assert_eq!(api.secrets("").await, before);
    let (status, _) = api
        .set(secret_body(
            json!({"name": "limited", "expose_as_env": "LIMITED"}),
            &[],
        ))
        .await;
    assert_eq!(status, 200, "a new version keeping its hosts is fine");
    api.assert_never_saw(&[VALUE]);
}

async fn audit_filters_chain_and_export(backend: Backend) {
    let t = TestServer::start(backend).await;
    let api = Api::new(&t.admin);
    let me = t.admin.me().await.unwrap().key_id.unwrap();

    // API keys: created and revoked.
    let key = t
        .admin
        .create_api_key(&miosa_client::CreateApiKey {
            name: "temp".into(),
            scope: "admin".into(),
            workspace_id: None,
        })
        .await
        .unwrap();
    t.admin.revoke_api_key(&key.record.id).await.unwrap();
    // Sandboxes with labels: one created and destroyed, one left running.
    let ws = t.admin.create_workspace("clinic").await.unwrap();
    let s1 = t
        .admin
        .create_sandbox(&json!({
            "workspace_id": ws.id, "external_user_id": "dr_smith",
            "external_workspace_id": "clinic1", "external_project_id": "notes"
        }))
        .await
        .unwrap();
    let s2 = t
        .admin
        .create_sandbox(&json!({
            "external_user_id": "dr_jones", "external_workspace_id": "clinic2",
            "external_project_id": "billing"
        }))
        .await
        .unwrap();
    t.admin.delete_sandbox(&s1.id).await.unwrap();
    api.set(secret_body(json!({}), &[])).await;

    let all = api.audit("").await;
    let by = |action: &str, target: Option<&str>, sandbox: Option<&str>| -> Value {
        all.iter()
            .find(|r| {
                r["action"] == action
                    && target.is_none_or(|t| r["target"] == t)
                    && sandbox.is_none_or(|s| r["sandbox_id"] == s)
            })
            .unwrap_or_else(|| panic!("no {action} row: {all:#?}"))
            .clone()
    };
    for action in ["api_key.created", "api_key.revoked"] {
        let r = by(action, Some(key.record.id.as_str()), None);
        assert_eq!(
            (r["actor"].as_str(), r["outcome"].as_str()),
            (Some(me.as_str()), Some("success"))
        );
    }
    for action in ["sandbox.created", "sandbox.destroyed"] {
        let r = by(action, None, Some(s1.id.as_str()));
        assert_eq!(r["actor"], me.as_str(), "{action}");
        assert_eq!(
            (
                r["workspace_id"].as_str(),
                r["external_user_id"].as_str(),
                r["external_workspace_id"].as_str(),
                r["external_project_id"].as_str(),
            ),
            (
                Some(ws.id.as_str()),
                Some("dr_smith"),
                Some("clinic1"),
                Some("notes")
            ),
            "{action}"
        );
    }
    assert_eq!(
        by("sandbox.created", None, Some(s2.id.as_str()))["external_user_id"],
        "dr_jones"
    );

    // Filters; all must match.
    let sandbox_rows = api.audit(&format!("sandbox_id={}", s1.id)).await;
    assert_eq!(
        actions(&sandbox_rows),
        ["sandbox.destroyed", "sandbox.created"]
    );
    assert_eq!(
        actions(&api.audit("external_workspace_id=clinic2").await),
        ["sandbox.created"]
    );
    assert_eq!(api.audit("external_project_id=notes").await.len(), 2);
    assert_eq!(api.audit("external_user_id=dr_smith").await.len(), 2);
    assert_eq!(
        actions(
            &api.audit("external_project_id=notes&action=sandbox.destroyed")
                .await
        ),
        ["sandbox.destroyed"]
    );
    assert!(api
        .audit("external_project_id=notes&external_user_id=dr_jones")
        .await
        .is_empty());
    assert_eq!(api.audit("action=sandbox.created").await.len(), 2);
    assert!(
        api.audit("external_user_id=DR_SMITH").await.is_empty(),
        "exact match"
    );

    // Time filters: look-backs, RFC 3339 (inclusive since, exclusive until).
    for q in [
        "since=7d",
        "since=24h",
        "since=30m",
        "since=3600s",
        "until=2999-01-01T00:00:00Z",
    ] {
        assert_eq!(ids(&api.audit(q).await), ids(&all), "{q}");
    }
    for q in [
        "since=2999-01-01T00:00:00Z",
        "until=2000-01-01T00:00:00Z",
        "until=7d",
        // 01:00 in UTC+02:00 is 23:00 the day before: still long ago.
        format!("until={}", encode("2000-01-01T01:00:00+02:00")).as_str(),
    ] {
        assert!(api.audit(q).await.is_empty(), "{q}");
    }
    let now = miosa_core::time_util::now();
    let at = |r: &Value| parse_time_filter("t", r["time"].as_str().unwrap(), now).unwrap();
    let pivot = &all[all.len() / 2];
    let since = api
        .audit(&format!(
            "since={}",
            encode(pivot["time"].as_str().unwrap())
        ))
        .await;
    let until = api
        .audit(&format!(
            "until={}",
            encode(pivot["time"].as_str().unwrap())
        ))
        .await;
    let expect_since: Vec<Value> = all.iter().filter(|r| at(r) >= at(pivot)).cloned().collect();
    let expect_until: Vec<Value> = all.iter().filter(|r| at(r) < at(pivot)).cloned().collect();
    assert_eq!(ids(&since), ids(&expect_since));
    assert_eq!(ids(&until), ids(&expect_until));
    assert!(ids(&since).contains(&pivot["id"].as_str().unwrap().to_owned()));
    assert_eq!(since.len() + until.len(), all.len());

    for (q, field) in [
        ("since=7w", "since"),
        ("since=yesterday", "since"),
        ("since=-7d", "since"),
        ("since=7", "since"),
        ("since=2026-13-01T00:00:00Z", "since"),
        ("since=7d&since=1d", "since"),
        ("until=soon", "until"),
        ("action=secret.viewed", "action"),
        ("action=", "action"),
        ("sandbox_id=nope", "sandbox_id"),
        (format!("sandbox_id={}", ws.id).as_str(), "sandbox_id"),
        ("external_user_id=", "external_user_id"),
        ("tenant_id=x", "tenant_id"),
        ("limit=0", "limit"),
    ] {
        for path in ["/v1/audit", "/v1/audit/export"] {
            if path.ends_with("export") && q.starts_with("limit") {
                continue;
            }
            let (status, code, got) = api.fails(Method::GET, &format!("{path}?{q}"), None).await;
            assert_eq!(
                (status, code.as_str(), got.as_deref()),
                (422, "invalid_field", Some(field)),
                "{path}?{q}"
            );
        }
    }

    // Cursor pagination: small pages give the same rows, newest first.
    assert_eq!(api.pages("/v1/audit", "", 2).await, all);
    assert_eq!(
        api.pages("/v1/audit", &format!("sandbox_id={}", s1.id), 1)
            .await,
        sandbox_rows
    );

    // The chain: the tenant's rows are seq 1..n, each linked to the one before.
    assert_chain(&all);

    // Another tenant: its own chain from 1, none of these rows.
    let (b, _) = t.new_tenant("other").await;
    let theirs = api.with(&b);
    theirs.set(secret_body(json!({}), &[])).await;
    let their_rows = theirs.audit("").await;
    assert!(!their_rows.is_empty());
    assert_chain(&their_rows);
    let mine = ids(&all);
    assert!(ids(&their_rows).iter().all(|id| !mine.contains(id)));
    for q in [
        format!("sandbox_id={}", s1.id),
        "external_user_id=dr_smith".to_owned(),
        "action=sandbox.created".to_owned(),
    ] {
        assert!(theirs.audit(&q).await.is_empty(), "{q}");
    }
    let export = theirs.raw(Method::GET, "/v1/audit/export", None).await;
    assert!(mine.iter().all(|id| !export.body.contains(id.as_str())));
    assert_eq!(api.audit("").await, all, "their activity is not in ours");

    // Export: NDJSON, the same rows as the list.
    let ndjson = |r: &RawResponse| -> Vec<Value> {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert!(r.body.is_empty() || r.body.ends_with('\n'));
        r.body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(
        ndjson(&api.raw(Method::GET, "/v1/audit/export", None).await),
        all
    );
    let q = format!("sandbox_id={}&since=7d", s1.id);
    assert_eq!(
        ndjson(
            &api.raw(Method::GET, &format!("/v1/audit/export?{q}"), None)
                .await
        ),
        api.audit(&q).await
    );
    assert!(ndjson(
        &api.raw(Method::GET, "/v1/audit/export?action=secret.deleted", None)
            .await
    )
    .is_empty());

    // More rows than one export page (500): the stream carries on.
    for i in 0..(501 - all.len().min(500)) {
        let (status, _) = api
            .req(
                Method::PATCH,
                "/v1/settings",
                Some(json!({"allow_end_user_credentials": i % 2 == 1})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let many = api.audit("").await;
    assert!(many.len() > 500, "{}", many.len());
    assert_chain(&many);
    assert_eq!(
        ndjson(&api.raw(Method::GET, "/v1/audit/export", None).await),
        many
    );
    t.admin.delete_sandbox(&s2.id).await.unwrap();
    api.assert_never_saw(&[VALUE]);
}

/// One tenant's complete log, newest first: seq n..1, each row's
/// `prev_hash` the previous row's `hash`, the first after the genesis hash.
fn assert_chain(newest_first: &[Value]) {
    let seqs: Vec<i64> = newest_first
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=newest_first.len() as i64).rev().collect();
    assert_eq!(seqs, expected, "seq order");
    let mut prev = GENESIS_HASH.to_owned();
    for r in newest_first.iter().rev() {
        assert_eq!(r["prev_hash"], prev.as_str(), "seq {}", r["seq"]);
        let hash = r["hash"].as_str().unwrap();
        assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(hash, prev);
        prev = hash.to_owned();
    }
}

/// The winner for `env` in a sandbox's credentials view: (secret_id, scope,
/// placeholder), or `None`.
async fn winner(api: &Api, sandbox: &str, env: &str) -> Option<(String, String, String)> {
    let view = api
        .get(&format!("/v1/sandboxes/{sandbox}/credentials"))
        .await;
    let rows = view["data"].as_array().unwrap();
    let envs: Vec<&str> = rows.iter().map(|r| r["env"].as_str().unwrap()).collect();
    let mut sorted = envs.clone();
    sorted.sort_unstable();
    assert_eq!(envs, sorted, "sorted by variable");
    rows.iter().find(|r| r["env"] == env).map(|r| {
        let s = |k: &str| r[k].as_str().unwrap().to_owned();
        (s("secret_id"), s("scope"), s("placeholder"))
    })
}

async fn sh(api: &Api, sandbox: &str, body: Value) -> String {
    let (status, r) = api
        .req(
            Method::POST,
            &format!("/v1/sandboxes/{sandbox}/exec"),
            Some(body),
        )
        .await;
    assert_eq!((status, r["exit_code"].as_i64()), (200, Some(0)), "{r}");
    r["stdout"].as_str().unwrap().trim().to_owned()
}

async fn credentials_follow_precedence(backend: Backend) {
    let t = TestServer::start(backend).await;
    let api = Api::new(&t.admin);
    let ws = t.admin.create_workspace("clinic").await.unwrap();
    let ws2 = t.admin.create_workspace("elsewhere").await.unwrap();
    let full = t
        .admin
        .create_sandbox(&json!({
            "workspace_id": ws.id, "external_user_id": "dr_smith",
            "external_workspace_id": "clinic1", "external_project_id": "notes"
        }))
        .await
        .unwrap();
    // No external_user_id and no workspace.
    let bare = t
        .admin
        .create_sandbox(&json!({"external_workspace_id": "clinic1"}))
        .await
        .unwrap();
    let values: Vec<String> = (0..8)
        .map(|i| format!("tok-{i}-9f8e7d6c5b4a3921"))
        .collect();
    let set = |i: usize, key: Value| {
        let mut body = secret_body(key, &[]);
        body["name"] = json!("token");
        body["value"] = json!(values[i]);
        body["expose_as_env"] = json!("TOKEN");
        let api = api.clone();
        async move { api.set(body).await.1["id"].as_str().unwrap().to_owned() }
    };
    let in_sandbox = set(0, json!({"scope": "sandbox", "sandbox_id": full.id})).await;
    let end_user = set(
        1,
        json!({"scope": "external_user", "external_user_id": "dr_smith"}),
    )
    .await;
    let end_ws = set(
        2,
        json!({"scope": "external_workspace", "external_workspace_id": "clinic1"}),
    )
    .await;
    let in_ws = set(3, json!({"scope": "workspace", "workspace_id": ws.id})).await;
    let tenant = set(4, json!({})).await;
    // Decoys for the same variable: someone else's, another workspace's.
    set(
        5,
        json!({"scope": "external_user", "external_user_id": "dr_jones"}),
    )
    .await;
    set(6, json!({"scope": "workspace", "workspace_id": ws2.id})).await;
    let mut other = secret_body(json!({"value": values[7]}), &[]);
    other["name"] = json!("other");
    other["expose_as_env"] = json!("OTHER_TOKEN");
    let other = api.set(other).await.1["id"].as_str().unwrap().to_owned();

    let scope_for = |api: Api, sandbox: String| async move {
        winner(&api, &sandbox, "TOKEN")
            .await
            .map(|(id, scope, _)| (id, scope))
    };
    let expect = |id: &str, scope: &str| Some((id.to_owned(), scope.to_owned()));
    let check = |full_wins: Option<(String, String)>, bare_wins: Option<(String, String)>| {
        let api = api.clone();
        let (full, bare) = (full.id.clone(), bare.id.clone());
        async move {
            assert_eq!(
                scope_for(api.clone(), full).await,
                full_wins,
                "the labelled sandbox"
            );
            assert_eq!(scope_for(api, bare).await, bare_wins, "the bare sandbox");
        }
    };
    check(
        expect(&in_sandbox, "sandbox"),
        expect(&end_ws, "external_workspace"),
    )
    .await;
    // Inside: the placeholder the view lists, never a value; the request's
    // own variable wins over it.
    let (_, _, placeholder) = winner(&api, &full.id, "TOKEN").await.unwrap();
    assert!(placeholder.starts_with("miosa_ph_"));
    assert_eq!(
        sh(&api, &full.id, json!({"command": "echo $TOKEN"})).await,
        placeholder
    );
    assert_eq!(
        sh(
            &api,
            &full.id,
            json!({"command": "echo $TOKEN", "env": {"TOKEN": "mine"}})
        )
        .await,
        "mine"
    );
    let (_, _, other_ph) = winner(&api, &full.id, "OTHER_TOKEN").await.unwrap();
    assert_eq!(
        sh(&api, &full.id, json!({"command": "echo $OTHER_TOKEN"})).await,
        other_ph
    );
    assert_eq!(
        winner(&api, &bare.id, "OTHER_TOKEN").await.unwrap().0,
        other
    );
    sh(&api, &full.id, json!({"command": "env"})).await;

    api.action(&in_sandbox, "disable").await;
    check(
        expect(&end_user, "external_user"),
        expect(&end_ws, "external_workspace"),
    )
    .await;
    api.req(Method::DELETE, &format!("/v1/secrets/{end_user}"), None)
        .await;
    check(
        expect(&end_ws, "external_workspace"),
        expect(&end_ws, "external_workspace"),
    )
    .await;
    api.action(&end_ws, "disable").await;
    check(expect(&in_ws, "workspace"), expect(&tenant, "tenant")).await;
    let (_, _, ws_ph) = winner(&api, &full.id, "TOKEN").await.unwrap();
    assert_ne!(ws_ph, placeholder, "another secret, another placeholder");
    assert_eq!(
        sh(&api, &full.id, json!({"command": "echo $TOKEN"})).await,
        ws_ph
    );
    api.req(Method::DELETE, &format!("/v1/secrets/{in_ws}"), None)
        .await;
    check(expect(&tenant, "tenant"), expect(&tenant, "tenant")).await;
    let (_, _, full_ph) = winner(&api, &full.id, "TOKEN").await.unwrap();
    let (_, _, bare_ph) = winner(&api, &bare.id, "TOKEN").await.unwrap();
    assert_ne!(full_ph, bare_ph, "one placeholder per sandbox and secret");
    api.action(&tenant, "disable").await;
    check(None, None).await;
    assert_eq!(
        sh(
            &api,
            &full.id,
            json!({"command": "echo \"[${TOKEN-unset}]\""})
        )
        .await,
        "[unset]"
    );
    assert!(
        winner(&api, &full.id, "OTHER_TOKEN").await.is_some(),
        "independent"
    );
    api.action(&in_sandbox, "enable").await;
    check(expect(&in_sandbox, "sandbox"), None).await;
    assert_eq!(
        winner(&api, &full.id, "TOKEN").await.unwrap().2,
        placeholder,
        "stable for the same sandbox and secret"
    );
    api.action(&end_ws, "enable").await;
    check(
        expect(&in_sandbox, "sandbox"),
        expect(&end_ws, "external_workspace"),
    )
    .await;

    for s in [&full, &bare] {
        t.admin.delete_sandbox(&s.id).await.unwrap();
    }
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    api.assert_never_saw(&refs);
}

both_backends!(
    bad_input_names_the_field_and_writes_nothing,
    upsert_conflicts_and_lifecycle,
    other_tenants_and_workspace_keys,
    lists_filter_and_paginate,
    settings_switch_end_user_credentials,
    audit_filters_chain_and_export,
    credentials_follow_precedence,
);

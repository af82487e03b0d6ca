//! The HTTP API end to end, on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestServer};
use miosa_client::{CreateApiKey, PageParams, RawBody};
use reqwest::Method;
use serde_json::json;

async fn health_and_readiness(backend: Backend) {
    let t = TestServer::start(backend).await;
    assert_eq!(t.anon.health().await.unwrap(), json!({"status": "ok"}));
    let ready = t.anon.ready().await.unwrap();
    assert_eq!(ready["status"], "ok");
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready["database"], expected);
}

async fn me_describes_each_kind_of_key(backend: Backend) {
    let t = TestServer::start(backend).await;
    let me = t.admin.me().await.unwrap();
    assert_eq!(me.scope, "admin");
    assert!(me.tenant_id.unwrap().starts_with("ten_"));
    assert!(me.key_id.unwrap().starts_with("key_"));
    assert_eq!(me.workspace_id, None);

    let root = t.root.me().await.unwrap();
    assert_eq!(root.scope, "root");
    assert_eq!(root.tenant_id, None);

    let ws = t.admin.create_workspace("prod").await.unwrap();
    let (wk, _) = t.workspace_key(&t.admin, &ws.id).await;
    let me = wk.me().await.unwrap();
    assert_eq!(me.scope, "workspace");
    assert_eq!(me.workspace_id.as_deref(), Some(ws.id.as_str()));
}

async fn workspaces_create_get_list_and_paginate(backend: Backend) {
    let t = TestServer::start(backend).await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(t.admin.create_workspace(&format!("ws-{i}")).await.unwrap());
    }
    assert!(created[0].id.starts_with("ws_"));
    assert_eq!(
        t.admin.get_workspace(&created[3].id).await.unwrap(),
        created[3]
    );

    // Newest first, three at a time, no repeats, no gaps.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = t
            .admin
            .list_workspaces(&PageParams {
                limit: Some(3),
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.data.into_iter().map(|w| w.name));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..7).rev().map(|i| format!("ws-{i}")).collect();
    assert_eq!(seen, expected);

    // Duplicate names conflict; the same name in another tenant is fine.
    let err = t.admin.create_workspace("ws-1").await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("conflict")));
    let (other, _) = t.new_tenant("other").await;
    other.create_workspace("ws-1").await.unwrap();
}

async fn api_keys_issue_list_and_revoke(backend: Backend) {
    let t = TestServer::start(backend).await;
    let created = t
        .admin
        .create_api_key(&CreateApiKey {
            name: "ci".into(),
            scope: "admin".into(),
            workspace_id: None,
        })
        .await
        .unwrap();
    assert!(created.key.starts_with("msk_live_"));
    assert!(created.key.ends_with(&created.record.hint));
    let ci = t.client(&created.key);
    assert_eq!(
        ci.me().await.unwrap().key_id.as_deref(),
        Some(created.record.id.as_str())
    );

    // Listing never shows a key.
    let list = t.admin.list_api_keys(&PageParams::default()).await.unwrap();
    assert_eq!(list.data.len(), 2);
    let raw = t
        .admin
        .raw(Method::GET, "/v1/api-keys", None)
        .await
        .unwrap();
    assert!(!raw.body.contains(&created.key) && !raw.body.contains(&t.admin_key));
    assert!(!raw.body.contains("msk_live_"));

    // Revocation is immediate and idempotent.
    t.admin.revoke_api_key(&created.record.id).await.unwrap();
    let err = ci.me().await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), Some("unauthorized"))
    );
    t.admin.revoke_api_key(&created.record.id).await.unwrap();
    let list = t.admin.list_api_keys(&PageParams::default()).await.unwrap();
    let revoked = list
        .data
        .iter()
        .find(|k| k.id == created.record.id)
        .unwrap();
    assert!(revoked.revoked_at.is_some());

    // The last active admin key cannot be revoked (the tenant would be locked out).
    let me = t.admin.me().await.unwrap();
    let err = t
        .admin
        .revoke_api_key(&me.key_id.unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some("last_admin_key"))
    );
    assert!(t.admin.me().await.is_ok());

    // A workspace key is prefixed msk_w_ and names its workspace.
    let ws = t.admin.create_workspace("w").await.unwrap();
    let wk = t
        .admin
        .create_api_key(&CreateApiKey {
            name: "w".into(),
            scope: "workspace".into(),
            workspace_id: Some(ws.id.clone()),
        })
        .await
        .unwrap();
    assert!(wk.key.starts_with("msk_w_"));
    assert_eq!(wk.record.workspace_id.as_deref(), Some(ws.id.as_str()));
}

async fn invalid_input_names_the_field_and_writes_nothing(backend: Backend) {
    let t = TestServer::start(backend).await;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/v1/workspaces", json!({}), "name"),
        ("/v1/workspaces", json!({"name": ""}), "name"),
        ("/v1/workspaces", json!({"name": "x".repeat(129)}), "name"),
        ("/v1/workspaces", json!({"name": 5}), "name"),
        (
            "/v1/workspaces",
            json!({"name": "a", "color": "red"}),
            "color",
        ),
        ("/v1/api-keys", json!({"name": "k"}), "scope"),
        (
            "/v1/api-keys",
            json!({"name": "k", "scope": "god"}),
            "scope",
        ),
        (
            "/v1/api-keys",
            json!({"name": "k", "scope": "workspace"}),
            "workspace_id",
        ),
        (
            "/v1/api-keys",
            json!({"name": "k", "scope": "workspace", "workspace_id": "nope"}),
            "workspace_id",
        ),
        (
            "/v1/api-keys",
            json!({"name": "k", "scope": "workspace", "workspace_id": "ws_01jdq3x5m8v2k7f4c9n6r1w0ab"}),
            "workspace_id",
        ),
        (
            "/v1/api-keys",
            json!({"name": "k", "scope": "admin", "workspace_id": "ws_01jdq3x5m8v2k7f4c9n6r1w0ab"}),
            "workspace_id",
        ),
    ];
    for (path, body, field) in cases {
        let r = t
            .admin
            .raw(Method::POST, path, Some(RawBody::Json(body.clone())))
            .await
            .unwrap();
        assert_eq!(r.status, 422, "{path} {body}: {}", r.body);
        let e = r.json();
        assert_eq!(e["error"]["code"], "invalid_field", "{body}");
        assert_eq!(e["error"]["field"], field, "{body}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{}",
            r.body
        );
        assert!(e["error"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_"));
    }
    let ws = t
        .admin
        .list_workspaces(&PageParams::default())
        .await
        .unwrap();
    assert!(ws.data.is_empty(), "no workspace was half-created");
    assert_eq!(
        t.admin
            .list_api_keys(&PageParams::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );

    for bad in ["{", "not json", "", "{\"name\": \"a\",}"] {
        let r = t
            .admin
            .raw(
                Method::POST,
                "/v1/workspaces",
                Some(RawBody::Text(bad.into())),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "malformed_json");
    }

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("cursor=%27or", "cursor"),
        ("limt=5", "limt"),
    ] {
        let r = t
            .admin
            .raw(Method::GET, &format!("/v1/workspaces?{query}"), None)
            .await
            .unwrap();
        assert_eq!(r.status, 422, "{query}");
        assert_eq!(r.json()["error"]["field"], field, "{query}");
    }
    let r = t
        .root
        .raw(
            Method::POST,
            "/v1/admin/tenants",
            Some(RawBody::Json(json!({"name": "  "}))),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (422, Some("name"))
    );
    let r = t
        .root
        .raw(
            Method::POST,
            "/v1/admin/tenants",
            Some(RawBody::Json(json!({"name": "default"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
}

async fn error_contract_for_auth_routes_and_methods(backend: Backend) {
    let t = TestServer::start(backend).await;
    for (client, status, code) in [
        (t.anon.clone(), 401, "unauthorized"),
        (t.client("msk_live_nope"), 401, "unauthorized"),
        (t.client("Bearer"), 401, "unauthorized"),
        (t.client("sk_test_123"), 401, "unauthorized"),
        (
            t.client("msk_root_0123456789abcdefghijkl"),
            401,
            "unauthorized",
        ),
    ] {
        let r = client
            .raw(Method::GET, "/v1/workspaces", None)
            .await
            .unwrap();
        assert_eq!(r.status, status);
        assert_eq!(r.json()["error"]["code"], code);
    }
    let r = t
        .admin
        .raw(Method::GET, "/v1/nothing-here", None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = t
        .admin
        .raw(Method::PUT, "/v1/workspaces", None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let r = t
        .admin
        .raw(
            Method::GET,
            "/v1/workspaces/ws_01jdq3x5m8v2k7f4c9n6r1w0ab",
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = t
        .admin
        .raw(Method::GET, "/v1/workspaces/garbage", None)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = t
        .admin
        .raw(
            Method::DELETE,
            "/v1/api-keys/key_01jdq3x5m8v2k7f4c9n6r1w0ab",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

async fn request_ids_on_every_response(backend: Backend) {
    let t = TestServer::start(backend).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/healthz", t.url)).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.starts_with("req_"));
    let r = http
        .get(format!("{}/v1/me", t.url))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc-123");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["request_id"], "trace-abc-123");
    // A hostile request id is replaced, not echoed.
    let r = http
        .get(format!("{}/healthz", t.url))
        .header("x-request-id", "bad id\twith tabs")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));
}

async fn tenants_are_listed_for_the_operator(backend: Backend) {
    let t = TestServer::start(backend).await;
    for name in ["a", "b", "c"] {
        let c = t.root.create_tenant(name).await.unwrap();
        assert!(c.api_key.starts_with("msk_live_"));
        assert!(c.tenant.id.starts_with("ten_"));
        let me = t.client(&c.api_key).me().await.unwrap();
        assert_eq!(me.tenant_id.as_deref(), Some(c.tenant.id.as_str()));
    }
    let page = t
        .root
        .list_tenants(&PageParams {
            limit: Some(2),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(
        page.data
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["c", "b"]
    );
    let page = t
        .root
        .list_tenants(&PageParams {
            limit: Some(2),
            cursor: page.next_cursor,
        })
        .await
        .unwrap();
    assert_eq!(
        page.data
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "default"]
    );
    assert_eq!(page.next_cursor, None);
}

both_backends!(
    health_and_readiness,
    me_describes_each_kind_of_key,
    workspaces_create_get_list_and_paginate,
    api_keys_issue_list_and_revoke,
    invalid_input_names_the_field_and_writes_nothing,
    error_contract_for_auth_routes_and_methods,
    request_ids_on_every_response,
    tenants_are_listed_for_the_operator,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_the_database_is_gone() {
    let mut t = TestServer::start(Backend::Postgres).await;
    assert_eq!(t.anon.ready().await.unwrap()["status"], "ok");
    t.env.pg.take().unwrap().cleanup().await; // DROP DATABASE … WITH (FORCE)
    let r = t.anon.raw(Method::GET, "/readyz", None).await.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    // Liveness does not depend on the database.
    assert_eq!(t.anon.health().await.unwrap()["status"], "ok");
}

//! Tries to break tenancy: other tenants' IDs, workspace keys on admin
//! endpoints, admin keys on operator endpoints, revoked keys, key material
//! on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{contains, files_under, Backend, TestServer};
use miosa_client::{Client, CreateApiKey, PageParams, RawBody};
use reqwest::Method;
use serde_json::json;

/// Every tenant-facing endpoint, with the IDs it takes filled in.
fn tenant_endpoints(ws: &str, key: &str) -> Vec<(Method, String, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/v1/me".into(), None),
        (
            Method::POST,
            "/v1/workspaces".into(),
            Some(json!({"name": "probe"})),
        ),
        (Method::GET, "/v1/workspaces".into(), None),
        (Method::GET, format!("/v1/workspaces/{ws}"), None),
        (
            Method::POST,
            "/v1/api-keys".into(),
            Some(json!({"name": "probe", "scope": "workspace", "workspace_id": ws})),
        ),
        (Method::GET, "/v1/api-keys".into(), None),
        (Method::DELETE, format!("/v1/api-keys/{key}"), None),
        (
            Method::POST,
            "/v1/secrets".into(),
            Some(
                json!({"name": "probe", "value": "probe-value-123", "scope": "workspace",
                        "workspace_id": ws, "expose_as_env": "PROBE"}),
            ),
        ),
        (Method::GET, "/v1/secrets".into(), None),
        (Method::GET, format!("/v1/secrets/{PROBE_SECRET}"), None),
        (Method::DELETE, format!("/v1/secrets/{PROBE_SECRET}"), None),
        (
            Method::POST,
            format!("/v1/secrets/{PROBE_SECRET}/disable"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/secrets/{PROBE_SECRET}/enable"),
            None,
        ),
        (Method::GET, "/v1/settings".into(), None),
        (
            Method::PATCH,
            "/v1/settings".into(),
            Some(json!({"allow_end_user_credentials": false})),
        ),
        (Method::GET, "/v1/audit".into(), None),
        (Method::GET, "/v1/audit/export".into(), None),
    ]
}

/// A well-formed secret ID for the secret routes above, of no secret.
const PROBE_SECRET: &str = "sec_01jdq3x5m8v2k7f4c9n6r1w0ab";

async fn call(
    c: &Client,
    (m, p, b): &(Method, String, Option<serde_json::Value>),
) -> (u16, serde_json::Value) {
    let r = c
        .raw(m.clone(), p, b.clone().map(RawBody::Json))
        .await
        .unwrap();
    (r.status, r.json())
}

async fn another_tenants_resources_are_not_found(backend: Backend) {
    let t = TestServer::start(backend).await;
    // Tenant A: a workspace and an extra key.
    let ws_a = t.admin.create_workspace("a-ws").await.unwrap();
    let key_a = t
        .admin
        .create_api_key(&CreateApiKey {
            name: "a".into(),
            scope: "admin".into(),
            workspace_id: None,
        })
        .await
        .unwrap();
    let (b, _) = t.new_tenant("tenant-b").await;

    // By ID: 404 (and for a body reference, the same answer as a made-up ID).
    let r = b
        .raw(Method::GET, &format!("/v1/workspaces/{}", ws_a.id), None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = b
        .raw(
            Method::DELETE,
            &format!("/v1/api-keys/{}", key_a.record.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    t.client(&key_a.key)
        .me()
        .await
        .expect("A's key still works");
    let probe = |ws: &str| json!({"name": "x", "scope": "workspace", "workspace_id": ws});
    let theirs = b
        .raw(
            Method::POST,
            "/v1/api-keys",
            Some(RawBody::Json(probe(&ws_a.id))),
        )
        .await
        .unwrap();
    let made_up = b
        .raw(
            Method::POST,
            "/v1/api-keys",
            Some(RawBody::Json(probe("ws_01jdq3x5m8v2k7f4c9n6r1w0ab"))),
        )
        .await
        .unwrap();
    assert_eq!(theirs.status, 422);
    assert_eq!(
        theirs.json()["error"]["message"],
        made_up.json()["error"]["message"]
    );

    // In lists: absent.
    let ws = b.list_workspaces(&PageParams::default()).await.unwrap();
    assert!(ws.data.iter().all(|w| w.id != ws_a.id));
    let keys = b.list_api_keys(&PageParams::default()).await.unwrap();
    assert!(keys.data.iter().all(|k| k.id != key_a.record.id));
    assert_eq!(keys.data.len(), 1);

    // Cursors do not leak either: A's IDs as cursors only page B's own rows.
    let page = b
        .list_workspaces(&PageParams {
            limit: None,
            cursor: Some("ws_zzzzzzzzzzzzzzzzzzzzzzzzzz".into()),
        })
        .await
        .unwrap();
    assert!(page.data.iter().all(|w| w.id != ws_a.id));
}

async fn workspace_keys_stay_in_their_workspace(backend: Backend) {
    let t = TestServer::start(backend).await;
    let ws1 = t.admin.create_workspace("one").await.unwrap();
    let ws2 = t.admin.create_workspace("two").await.unwrap();
    let (wk, wk_id) = t.workspace_key(&t.admin, &ws1.id).await;

    assert_eq!(wk.get_workspace(&ws1.id).await.unwrap().id, ws1.id);
    let err = wk.get_workspace(&ws2.id).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    let list = wk.list_workspaces(&PageParams::default()).await.unwrap();
    assert_eq!(
        list.data.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        [ws1.id.as_str()]
    );

    // Everything that manages keys, workspaces, tenants or settings: 403.
    // Its own workspace's secrets it may manage (an unknown one is a 404).
    for ep in tenant_endpoints(&ws1.id, &wk_id) {
        let (status, body) = call(&wk, &ep).await;
        let allowed = matches!(
            (ep.0.as_str(), ep.1.as_str()),
            ("GET", "/v1/me") | ("GET", "/v1/workspaces") | ("GET", "/v1/secrets")
        ) || ep.1 == format!("/v1/workspaces/{}", ws1.id);
        if ep.1.starts_with("/v1/secrets/") {
            assert_eq!(status, 404, "{} {}", ep.0, ep.1);
        } else if (ep.0.as_str(), ep.1.as_str()) == ("POST", "/v1/secrets") {
            assert_eq!(status, 201, "{} {}: {body}", ep.0, ep.1);
        } else if allowed {
            assert_eq!(status, 200, "{} {}", ep.0, ep.1);
        } else {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("forbidden")),
                "{} {}",
                ep.0,
                ep.1
            );
        }
    }
    for m in [Method::GET, Method::POST] {
        let r = wk
            .raw(
                m,
                "/v1/admin/tenants",
                Some(RawBody::Json(json!({"name": "x"}))),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 403);
    }
}

async fn operator_and_tenant_keys_do_not_cross(backend: Backend) {
    let t = TestServer::start(backend).await;
    // An admin key cannot use operator endpoints.
    for m in [Method::GET, Method::POST] {
        let r = t
            .admin
            .raw(
                m,
                "/v1/admin/tenants",
                Some(RawBody::Json(json!({"name": "x"}))),
            )
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (403, Some("forbidden"))
        );
    }
    // The root key cannot act as a tenant.
    let ws = t.admin.create_workspace("w").await.unwrap();
    for ep in tenant_endpoints(&ws.id, "key_01jdq3x5m8v2k7f4c9n6r1w0ab") {
        if ep.1 == "/v1/me" {
            continue;
        }
        let (status, _) = call(&t.root, &ep).await;
        assert_eq!(status, 403, "root on {} {}", ep.0, ep.1);
    }
}

async fn revoked_keys_are_refused_everywhere(backend: Backend) {
    let t = TestServer::start(backend).await;
    let ws = t.admin.create_workspace("w").await.unwrap();
    let extra = t
        .admin
        .create_api_key(&CreateApiKey {
            name: "tmp".into(),
            scope: "admin".into(),
            workspace_id: None,
        })
        .await
        .unwrap();
    let (wk, wk_id) = t.workspace_key(&t.admin, &ws.id).await;
    t.admin.revoke_api_key(&extra.record.id).await.unwrap();
    t.admin.revoke_api_key(&wk_id).await.unwrap();
    for client in [t.client(&extra.key), wk] {
        for ep in tenant_endpoints(&ws.id, &extra.record.id) {
            let (status, body) = call(&client, &ep).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{} {}",
                ep.0,
                ep.1
            );
        }
    }
}

async fn keys_never_reach_the_data_dir(backend: Backend) {
    let mut t = TestServer::start(backend).await;
    let ws = t.admin.create_workspace("w").await.unwrap();
    let (_, _) = t.workspace_key(&t.admin, &ws.id).await;
    let extra = t
        .admin
        .create_api_key(&CreateApiKey {
            name: "k".into(),
            scope: "admin".into(),
            workspace_id: None,
        })
        .await
        .unwrap();
    let tenant = t.root.create_tenant("other").await.unwrap();
    t.stop().await; // flush SQLite's WAL into the main file too
    let secrets = [
        t.root_key.as_str(),
        t.admin_key.as_str(),
        extra.key.as_str(),
        tenant.api_key.as_str(),
    ];
    let files = files_under(&t.env.data_dir());
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        for s in secrets {
            assert!(!contains(bytes, s), "{} holds a key", path.display());
            // Not even the random part without its prefix.
            assert!(
                !contains(bytes, &s[s.len() - 40..]),
                "{} holds a key body",
                path.display()
            );
        }
    }
    if backend == Backend::Postgres {
        // The database itself: dump every row of the key table as text.
        let url = &t.env.pg.as_ref().unwrap().url;
        let out = std::process::Command::new("pg_dump")
            .args(["--data-only", url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = String::from_utf8(out.stdout).unwrap();
        assert!(
            dump.contains(&extra.record.id),
            "the dump covers the key rows"
        );
        for s in secrets {
            assert!(!dump.contains(&s[s.len() - 40..]), "postgres holds a key");
        }
    }
    // The pepper file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.env.data_dir().join("api-key-pepper"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Sandboxes' roots (unprivileged host ids) pass through the data dir to
    // their own root file systems; nothing in it is theirs to read.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t.env.data_dir()), 0o711);
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(t.env.data_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let m = mode(&entry.path());
        match name.as_str() {
            "sandboxes" => assert_eq!(m, 0o711, "{name}"),
            "node-id" => {} // a public name
            _ => assert_eq!(m & 0o077, 0, "{name} is open to others: {m:o}"),
        }
        seen.push(name);
    }
    for expected in ["api-key-pepper", "master-key", "sandboxes", "disks", "runc"] {
        assert!(seen.iter().any(|n| n == expected), "{expected} in {seen:?}");
    }
}

both_backends!(
    another_tenants_resources_are_not_found,
    workspace_keys_stay_in_their_workspace,
    operator_and_tenant_keys_do_not_cross,
    revoked_keys_are_refused_everywhere,
    keys_never_reach_the_data_dir,
);

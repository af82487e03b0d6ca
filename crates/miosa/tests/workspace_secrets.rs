//! A leaked workspace key must not unlock the credentials of end-users in
//! other workspaces. With real sandboxes and the real proxy: an end-user
//! secret resolves in a sandbox a workspace key created only when it is
//! bound to that key's workspace (or the tenant allows unbound ones); a
//! bound secret resolves only in its workspace; every sandbox records the
//! key that created it; sandbox-scoped secrets go with their sandbox; the
//! `user` scope works end to end through `owner_user_id`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{upstream::Upstream, Backend, TestEnv, TestServer};
use miosa_client::Client;
use serde_json::{json, Value};

const DR_SMITH: &str = "dr_smith@clinic1.example";
const SMITH_KEY: &str = "sk-live-Smith-unbound-0a1b2c3d4e5f";
const BOUND_KEY: &str = "sk-live-Smith-ws1-9f8e7d6c5b4a";
const OWNER_KEY: &str = "sk-live-owner-u1-1122334455";
const BOX_KEY: &str = "sk-live-box-only-6677889900";

/// The variables a sandbox resolves: env → secret ID.
async fn resolved(c: &Client, sandbox: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = c
        .sandbox_credentials(sandbox)
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|e| {
            (
                e["env"].as_str().unwrap().to_owned(),
                e["secret_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// What the upstream received as the bearer for a curl from `sandbox`.
async fn bearer_sent(c: &Client, up: &Upstream, sandbox: &str) -> String {
    let r = c
        .run(
            sandbox,
            "curl -sS -o /dev/null -w '%{http_code}' https://api.openai.com/v1/models \
             -H \"Authorization: Bearer $OPENAI_API_KEY\"",
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{}{}", r.stdout, r.stderr);
    up.seen()
        .last()
        .and_then(|s| s.authorization.clone())
        .unwrap_or_default()
}

async fn set(c: &Client, body: Value) -> String {
    c.set_secret(&body).await.unwrap().id
}

async fn workspace_keys_and_bindings(backend: Backend) {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(
        updir.path(),
        &["api.openai.com"],
        &[SMITH_KEY, BOUND_KEY, OWNER_KEY, BOX_KEY],
    )
    .await;
    let mut env = TestEnv::new(backend).await;
    env.route_to(&up, &["api.openai.com"]);
    let t = TestServer::start_in(env).await;
    let admin = &t.admin;
    let ws1 = admin.create_workspace("clinic-one").await.unwrap();
    let ws2 = admin.create_workspace("clinic-two").await.unwrap();
    let (wk1, wk1_id) = t.workspace_key(admin, &ws1.id).await;
    let (wk2, wk2_id) = t.workspace_key(admin, &ws2.id).await;

    // The tenant stores Dr. Smith's key without a binding.
    let unbound = set(
        admin,
        json!({"name": "openai", "value": SMITH_KEY, "scope": "external_user",
               "external_user_id": DR_SMITH, "expose_as_env": "OPENAI_API_KEY",
               "allowed_hosts": ["api.openai.com"]}),
    )
    .await;

    // A leaked key of workspace two labels a sandbox with her ID: nothing
    // resolves, and her key never leaves the host.
    let stolen = wk2
        .create_sandbox(&json!({"external_user_id": DR_SMITH}))
        .await
        .unwrap();
    assert_eq!(stolen.created_by_key_id.as_deref(), Some(wk2_id.as_str()));
    assert_eq!(resolved(&wk2, &stolen.id).await, vec![]);
    let sent = bearer_sent(&wk2, &up, &stolen.id).await;
    assert!(!sent.contains(SMITH_KEY), "{sent}");

    // The same label in a sandbox an admin key created resolves it.
    let by_admin = admin
        .create_sandbox(&json!({"external_user_id": DR_SMITH, "workspace_id": ws2.id}))
        .await
        .unwrap();
    let me = admin.me().await.unwrap().key_id.unwrap();
    assert_eq!(by_admin.created_by_key_id.as_deref(), Some(me.as_str()));
    assert_eq!(
        resolved(admin, &by_admin.id).await,
        vec![("OPENAI_API_KEY".to_owned(), unbound.clone())]
    );
    assert_eq!(
        bearer_sent(admin, &up, &by_admin.id).await,
        format!("Bearer {SMITH_KEY}")
    );

    // The tenant may let workspace keys use unbound secrets: at once.
    admin
        .update_settings(&json!({"workspace_keys_use_unbound_secrets": true}))
        .await
        .unwrap();
    assert_eq!(
        bearer_sent(&wk2, &up, &stolen.id).await,
        format!("Bearer {SMITH_KEY}")
    );
    admin
        .update_settings(&json!({"workspace_keys_use_unbound_secrets": false}))
        .await
        .unwrap();
    assert!(!bearer_sent(&wk2, &up, &stolen.id).await.contains(SMITH_KEY));

    // Workspace one's key stores her key for its workspace: it is bound
    // there, wins over the unbound one in workspace one, and resolves in no
    // other workspace, whoever created the sandbox.
    let bound = wk1
        .set_secret(
            &json!({"name": "openai", "value": BOUND_KEY, "scope": "external_user",
                            "external_user_id": DR_SMITH, "expose_as_env": "OPENAI_API_KEY",
                            "allowed_hosts": ["api.openai.com"]}),
        )
        .await
        .unwrap();
    assert_eq!(bound.workspace_id.as_deref(), Some(ws1.id.as_str()));
    assert_ne!(bound.id, unbound);
    let in_ws1 = wk1
        .create_sandbox(&json!({"external_user_id": DR_SMITH}))
        .await
        .unwrap();
    assert_eq!(in_ws1.created_by_key_id.as_deref(), Some(wk1_id.as_str()));
    assert_eq!(
        bearer_sent(&wk1, &up, &in_ws1.id).await,
        format!("Bearer {BOUND_KEY}")
    );
    let admin_in_ws1 = admin
        .create_sandbox(&json!({"external_user_id": DR_SMITH, "workspace_id": ws1.id}))
        .await
        .unwrap();
    assert_eq!(
        resolved(admin, &admin_in_ws1.id).await,
        vec![("OPENAI_API_KEY".to_owned(), bound.id.clone())],
        "bound beats unbound"
    );
    assert_eq!(
        resolved(admin, &by_admin.id).await,
        vec![("OPENAI_API_KEY".to_owned(), unbound.clone())],
        "workspace one's binding stays out of workspace two"
    );
    let untethered = admin
        .create_sandbox(&json!({"external_user_id": DR_SMITH}))
        .await
        .unwrap();
    assert_eq!(
        resolved(admin, &untethered.id).await,
        vec![("OPENAI_API_KEY".to_owned(), unbound.clone())]
    );
    // Workspace two's key sees none of workspace one's secrets.
    assert!(wk2.list_secrets("").await.unwrap().data.is_empty());
    let listed = wk1.list_secrets("").await.unwrap().data;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [bound.id.as_str()]
    );

    // `owner_user_id` selects `user` secrets, above the end-user ones.
    let owner = set(
        admin,
        json!({"name": "openai-owner", "value": OWNER_KEY, "scope": "user",
               "owner_user_id": "u1", "expose_as_env": "OPENAI_API_KEY",
               "allowed_hosts": ["api.openai.com"]}),
    )
    .await;
    let owned = admin
        .create_sandbox(&json!({"owner_user_id": "u1", "external_user_id": DR_SMITH}))
        .await
        .unwrap();
    assert_eq!(owned.owner_user_id.as_deref(), Some("u1"));
    assert_eq!(
        resolved(admin, &owned.id).await,
        vec![("OPENAI_API_KEY".to_owned(), owner)]
    );
    assert_eq!(
        bearer_sent(admin, &up, &owned.id).await,
        format!("Bearer {OWNER_KEY}")
    );

    // A sandbox's own secret goes with it.
    let boxed = set(
        &wk1,
        json!({"name": "box", "value": BOX_KEY, "scope": "sandbox", "sandbox_id": in_ws1.id,
               "expose_as_env": "BOX_KEY", "allowed_hosts": ["api.openai.com"]}),
    )
    .await;
    assert_eq!(
        wk1.get_secret(&boxed)
            .await
            .unwrap()
            .workspace_id
            .as_deref(),
        Some(ws1.id.as_str())
    );
    wk1.delete_sandbox(&in_ws1.id).await.unwrap();
    let gone = admin.get_secret(&boxed).await.unwrap_err();
    assert_eq!(gone.status(), Some(404));

    for s in [&stolen, &by_admin, &admin_in_ws1, &untethered, &owned] {
        admin.delete_sandbox(&s.id).await.unwrap();
    }
}

both_backends!(workspace_keys_and_bindings);

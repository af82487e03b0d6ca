//! Two replicas on one PostgreSQL database: a secret disabled through one
//! is refused on the very next request proxied by the other, while the
//! sandbox keeps the proxy busy (so epoch reads are being shared).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    pepper_of, replica_of, start_background, upstream::Upstream, Backend, TestEnv, TestServer,
};
use miosa_client::Client;
use serde_json::json;

const KEY: &str = "sk-replica-test-8c1f0e2d9b7a";

/// The status of one call to the fake OpenAI with the placeholder.
async fn call(c: &Client, sandbox: &str) -> String {
    let r = c
        .run(
            sandbox,
            "curl -sS -m 20 -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $OPENAI_API_KEY\" https://api.openai.com/v1/models",
        )
        .await
        .unwrap();
    r.stdout.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disable_on_one_replica_holds_on_the_next_request_through_another() {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(updir.path(), &["api.openai.com"], &[KEY]).await;
    let mut env = TestEnv::new(Backend::Postgres).await;
    env.route_to(&up, &["api.openai.com"]);
    let t = TestServer::start_in(env).await;
    let (b, _b_env) = replica_of(&t.env, Some(pepper_of(&t.env))).await.unwrap();
    let on_b = Client::new(b.url(), Some(t.admin_key.clone()));

    let secret = t
        .admin
        .set_secret(&json!({
            "name": "openai", "value": KEY, "scope": "tenant",
            "expose_as_env": "OPENAI_API_KEY", "allowed_hosts": ["api.openai.com"]
        }))
        .await
        .unwrap();
    let sbx = t
        .admin
        .create_sandbox(&json!({"timeout_seconds": 600}))
        .await
        .unwrap();
    assert_eq!(call(&t.admin, &sbx.id).await, "200");

    // Background traffic from the same sandbox through replica A's proxy.
    start_background(
        &t.admin,
        &sbx.id,
        "for i in 1 2 3 4; do (while [ ! -e /tmp/stop ]; do curl -s -o /dev/null -H \"Authorization: Bearer $OPENAI_API_KEY\" https://api.openai.com/v1/models; done) & done; wait",
    )
    .await;

    for round in 0..8 {
        on_b.secret_action(&secret.id, "disable").await.unwrap();
        assert_eq!(
            call(&t.admin, &sbx.id).await,
            "401",
            "round {round}: disabled on B"
        );
        on_b.secret_action(&secret.id, "enable").await.unwrap();
        assert_eq!(
            call(&t.admin, &sbx.id).await,
            "200",
            "round {round}: enabled on B"
        );
    }
    let _ = t.admin.run(&sbx.id, "touch /tmp/stop").await;
    t.admin.delete_sandbox(&sbx.id).await.unwrap();
    b.shutdown().await.unwrap();
}

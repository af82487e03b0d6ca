//! A database writer without the master key cannot widen where a value
//! goes or move a ciphertext onto another secret: each value is sealed for
//! its secret's ID, version, scope, key, workspace, hosts and substitution
//! locations, and a row changed behind the vault's back no longer opens,
//! so its placeholder goes out unchanged. With real sandboxes and proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{upstream::Upstream, Backend, TestEnv, TestServer};
use miosa_client::Client;
use serde_json::json;

const OPENAI_KEY: &str = "sk-live-bound-0123456789abcdef";
const OTHER_KEY: &str = "sk-live-other-fedcba9876543210";

/// The bearer the upstream received for a curl with `$var` from `sandbox`.
async fn sent(c: &Client, up: &Upstream, sandbox: &str, var: &str) -> String {
    let r = c
        .run(
            sandbox,
            &format!(
                "curl -sS -o /dev/null https://api.openai.com/v1/models \
                 -H \"Authorization: Bearer ${var}\""
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{}{}", r.stdout, r.stderr);
    let auth = up.seen().last().unwrap().authorization.clone().unwrap();
    auth.strip_prefix("Bearer ").unwrap().to_owned()
}

async fn tampered_rows_are_refused(backend: Backend) {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(updir.path(), &["api.openai.com"], &[OPENAI_KEY, OTHER_KEY]).await;
    let mut env = TestEnv::new(backend).await;
    env.route_to(&up, &["api.openai.com"]);
    let t = TestServer::start_in(env).await;
    let c = &t.admin;
    let openai = c
        .set_secret(&json!({"name": "openai", "value": OPENAI_KEY, "scope": "tenant",
                            "expose_as_env": "OPENAI_API_KEY", "allowed_hosts": ["api.openai.com"]}))
        .await
        .unwrap();
    let other = c
        .set_secret(
            &json!({"name": "other", "value": OTHER_KEY, "scope": "tenant",
                            "expose_as_env": "OTHER_KEY", "allowed_hosts": ["api.openai.com"]}),
        )
        .await
        .unwrap();
    let sbx = c.create_sandbox(&json!({})).await.unwrap();
    let placeholder = {
        let r = c.run(&sbx.id, "echo $OPENAI_API_KEY").await.unwrap();
        r.stdout.trim().to_owned()
    };
    assert_eq!(sent(c, &up, &sbx.id, "OPENAI_API_KEY").await, OPENAI_KEY);

    // Each change is followed by an epoch bump, so the proxy re-reads.
    let bump = "UPDATE tenant_settings SET secrets_epoch = secrets_epoch + 1";
    let (a, b) = (openai.id.as_str(), other.id.as_str());
    let cases = [
        (
            "a widened host list",
            format!("UPDATE secrets SET allowed_hosts = '[\"api.openai.com\",\"evil.example\"]' WHERE id = '{a}'"),
            format!("UPDATE secrets SET allowed_hosts = '[\"api.openai.com\"]' WHERE id = '{a}'"),
        ),
        (
            "substitution opened to the body",
            format!("UPDATE secrets SET substitute_in = '[\"headers\",\"body\"]' WHERE id = '{a}'"),
            format!("UPDATE secrets SET substitute_in = '[\"headers\"]' WHERE id = '{a}'"),
        ),
        (
            "the legacy marker",
            format!("UPDATE secret_versions SET aad_version = 1 WHERE secret_id = '{a}'"),
            format!("UPDATE secret_versions SET aad_version = 2 WHERE secret_id = '{a}'"),
        ),
        (
            "another secret's ciphertext",
            format!(
                "CREATE TABLE saved AS SELECT * FROM secret_versions WHERE secret_id = '{a}';
                 UPDATE secret_versions SET
                   kek_id = (SELECT kek_id FROM secret_versions WHERE secret_id = '{b}'),
                   wrapped_key = (SELECT wrapped_key FROM secret_versions WHERE secret_id = '{b}'),
                   nonce = (SELECT nonce FROM secret_versions WHERE secret_id = '{b}'),
                   ciphertext = (SELECT ciphertext FROM secret_versions WHERE secret_id = '{b}')
                 WHERE secret_id = '{a}'"
            ),
            format!(
                "UPDATE secret_versions SET
                   wrapped_key = (SELECT wrapped_key FROM saved),
                   nonce = (SELECT nonce FROM saved),
                   ciphertext = (SELECT ciphertext FROM saved)
                 WHERE secret_id = '{a}';
                 DROP TABLE saved"
            ),
        ),
    ];
    for (what, tamper, restore) in cases {
        t.env.tamper(&format!("{tamper}; {bump}")).await;
        let got = sent(c, &up, &sbx.id, "OPENAI_API_KEY").await;
        assert_eq!(got, placeholder, "{what}: the value must not open");
        assert_ne!(got, OTHER_KEY, "{what}");
        t.env.tamper(&format!("{restore}; {bump}")).await;
        assert_eq!(
            sent(c, &up, &sbx.id, "OPENAI_API_KEY").await,
            OPENAI_KEY,
            "{what}: restored, it opens again"
        );
    }
    // The other secret was never affected.
    assert_eq!(sent(c, &up, &sbx.id, "OTHER_KEY").await, OTHER_KEY);
    c.delete_sandbox(&sbx.id).await.unwrap();
}

both_backends!(tampered_rows_are_refused);

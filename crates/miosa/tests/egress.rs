//! The credential story end to end, with real runc sandboxes, the real
//! egress proxy and a fake HTTPS "OpenAI" of the test's own (see
//! `common/upstream.rs`), reached through `MIOSA_EGRESS_RESOLVE`.
//!
//! ClinicIQ stores Dr. Smith's OpenAI key scoped to her and a clinic-wide
//! EHR key. Her sandbox sees placeholders; the upstream receives her real
//! key; a colleague's sandbox resolves only the clinic key; the audit log
//! shows her calls (a 401 too) with the secret that resolved, never a value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{upstream::Upstream, Backend, TestEnv, TestServer};
use miosa_client::{AuditEvent, Client};
use serde_json::{json, Value};

const DR_SMITH: &str = "dr_smith@clinic1.example";
const DR_JONES: &str = "dr_jones@clinic1.example";
const OPENAI_KEY: &str = "sk-live-DrSmith-7f3a9c1e5b2d4680aa";
const EHR_KEY: &str = "ehr-clinic1-Q9w8e7r6t5y4u3i2";

/// A server whose egress proxy sends the two fake hosts to `up`.
async fn start(backend: Backend, up: &Upstream) -> TestServer {
    let mut env = TestEnv::new(backend).await;
    env.route_to(up, &["api.openai.com", "ehr.clinic1.example"]);
    TestServer::start_in(env).await
}

async fn sh(c: &Client, sandbox: &str, command: &str) -> String {
    let r = c.run(sandbox, command).await.unwrap();
    assert_eq!(r.exit_code, Some(0), "{command}: {}{}", r.stdout, r.stderr);
    r.stdout.trim().to_owned()
}

fn curl(url: &str, bearer_var: &str) -> String {
    format!(
        "curl -sS -o /dev/null -w '%{{http_code}}' {url} -H \"Authorization: Bearer ${bearer_var}\""
    )
}

async fn audit(c: &Client, query: &str) -> Vec<AuditEvent> {
    c.list_audit(query).await.unwrap().data
}

/// The rows of `query` once there are at least `n`: a proxied request's row
/// is written after its response has gone out, so it may trail the caller.
async fn audit_at_least(c: &Client, query: &str, n: usize) -> Vec<AuditEvent> {
    for _ in 0..100 {
        let rows = audit(c, query).await;
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    audit(c, query).await
}

async fn clinic_story(backend: Backend) {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(
        updir.path(),
        &["api.openai.com", "ehr.clinic1.example"],
        &[OPENAI_KEY, EHR_KEY],
    )
    .await;
    let t = start(backend, &up).await;
    let c = &t.admin;
    let mut responses: Vec<String> = Vec::new();

    let openai = c
        .set_secret(&json!({
            "name": "openai", "value": OPENAI_KEY, "scope": "external_user",
            "external_user_id": DR_SMITH, "expose_as_env": "OPENAI_API_KEY",
            "allowed_hosts": ["api.openai.com"]
        }))
        .await
        .unwrap();
    responses.push(serde_json::to_string(&openai).unwrap());
    assert_eq!((openai.version, openai.enabled), (1, true));
    let ehr = c
        .set_secret(&json!({
            "name": "ehr", "value": EHR_KEY, "scope": "external_workspace",
            "external_workspace_id": "clinic1", "expose_as_env": "EHR_API_KEY"
        }))
        .await
        .unwrap();

    let smith = c
        .create_sandbox(&json!({"external_user_id": DR_SMITH, "external_workspace_id": "clinic1"}))
        .await
        .unwrap();
    let jones = c
        .create_sandbox(&json!({"external_user_id": DR_JONES, "external_workspace_id": "clinic1"}))
        .await
        .unwrap();

    // Inside: a placeholder, and the proxy settings.
    let seen_inside = sh(c, &smith.id, "echo $OPENAI_API_KEY").await;
    assert!(seen_inside.starts_with("miosa_ph_"), "{seen_inside}");
    assert_ne!(seen_inside, OPENAI_KEY);
    let proxy = sh(c, &smith.id, "echo $HTTPS_PROXY $SSL_CERT_FILE").await;
    assert!(proxy.starts_with("http://127.0.0.1:3128"), "{proxy}");

    // The troubleshooting view: which secret fills which variable.
    let creds = c.sandbox_credentials(&smith.id).await.unwrap().data;
    responses.push(serde_json::to_string(&creds).unwrap());
    let by_env = |env: &str| creds.iter().find(|v| v["env"] == env).cloned();
    assert_eq!(by_env("OPENAI_API_KEY").unwrap()["secret_id"], openai.id);
    assert_eq!(by_env("OPENAI_API_KEY").unwrap()["scope"], "external_user");
    assert_eq!(
        by_env("OPENAI_API_KEY").unwrap()["placeholder"],
        seen_inside
    );
    assert_eq!(by_env("EHR_API_KEY").unwrap()["secret_id"], ehr.id);

    // Her call: the upstream receives her real key, curl sees 200.
    let code = sh(
        c,
        &smith.id,
        &curl("https://api.openai.com/v1/models", "OPENAI_API_KEY"),
    )
    .await;
    assert_eq!(code, "200");
    let last = up.seen().last().cloned().unwrap();
    assert_eq!(last.host, "api.openai.com");
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );

    // Python's requests works unchanged (proxy and CA from the environment).
    let py = sh(
        c,
        &smith.id,
        "python3 -c \"import os,requests; r=requests.get('https://api.openai.com/v1/models', headers={'Authorization': 'Bearer '+os.environ['OPENAI_API_KEY']}); print(r.status_code)\"",
    )
    .await;
    assert_eq!(py, "200");

    // allowed_hosts: her OpenAI key is not sent to the EHR host; the
    // placeholder goes out unchanged and the call fails.
    let code = sh(
        c,
        &smith.id,
        &curl("https://ehr.clinic1.example/records", "OPENAI_API_KEY"),
    )
    .await;
    assert_eq!(code, "401");
    assert_eq!(
        up.seen().last().unwrap().authorization.as_deref(),
        Some(format!("Bearer {seen_inside}").as_str())
    );

    // The colleague: the clinic key resolves, hers does not exist for him.
    assert_eq!(
        sh(c, &jones.id, "echo \"[${OPENAI_API_KEY-unset}]\"").await,
        "[unset]"
    );
    assert_eq!(
        sh(
            c,
            &jones.id,
            &curl("https://ehr.clinic1.example/records", "EHR_API_KEY")
        )
        .await,
        "200"
    );
    assert_eq!(
        up.seen().last().unwrap().authorization.as_deref(),
        Some(format!("Bearer {EHR_KEY}").as_str())
    );
    assert_eq!(
        sh(
            c,
            &jones.id,
            &curl("https://api.openai.com/v1/models", "OPENAI_API_KEY")
        )
        .await,
        "401"
    );

    // Disable takes effect on the very next request: a 401 for her.
    c.secret_action(&openai.id, "disable").await.unwrap();
    let code = sh(
        c,
        &smith.id,
        &curl("https://api.openai.com/v1/models", "OPENAI_API_KEY"),
    )
    .await;
    assert_eq!(code, "401");
    c.secret_action(&openai.id, "enable").await.unwrap();
    assert_eq!(
        sh(
            c,
            &smith.id,
            &curl("https://api.openai.com/v1/models", "OPENAI_API_KEY")
        )
        .await,
        "200"
    );

    // Cloud metadata and loopback are refused (403 from the proxy).
    let code = sh(
        c,
        &smith.id,
        "curl -s -o /dev/null -w '%{http_code}' http://169.254.169.254/latest/meta-data/",
    )
    .await;
    assert_eq!(code, "403");
    // A private address over HTTPS: the CONNECT itself is refused, before
    // any packet leaves. (127.0.0.1 is in NO_PROXY: it is the sandbox's own.)
    let refused = c
        .run(&smith.id, "curl -sS -k https://10.0.0.1/")
        .await
        .unwrap();
    assert_ne!(refused.exit_code, Some(0), "private addresses are refused");
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);

    // Her audit feed: her calls, the 401s too, with the secret that
    // resolved and never a value.
    // Four calls to api.openai.com, one to the EHR host, two refusals.
    let mine = audit_at_least(
        c,
        &format!(
            "since=7d&external_user_id={}&action=egress.request",
            miosa_client::encode(DR_SMITH)
        ),
        7,
    )
    .await;
    responses.push(serde_json::to_string(&mine).unwrap());
    assert!(mine
        .iter()
        .all(|e| e.external_user_id.as_deref() == Some(DR_SMITH)));
    assert!(mine
        .iter()
        .all(|e| e.sandbox_id.as_deref() == Some(smith.id.as_str())));
    let to_openai: Vec<_> = mine
        .iter()
        .filter(|e| e.request.as_ref().unwrap().host == "api.openai.com")
        .collect();
    // Four calls to api.openai.com (curl, python, the disabled one, after enable).
    assert_eq!(to_openai.len(), 4, "{mine:#?}");
    let statuses: Vec<_> = to_openai
        .iter()
        .map(|e| e.request.as_ref().unwrap().status)
        .collect();
    assert_eq!(
        statuses,
        vec![Some(200), Some(401), Some(200), Some(200)],
        "newest first"
    );
    let ok = to_openai[0];
    let cred = ok.credential.as_ref().unwrap();
    assert_eq!(
        (
            cred.secret_id.as_str(),
            cred.name.as_str(),
            cred.scope.as_str()
        ),
        (openai.id.as_str(), "openai", "external_user")
    );
    assert_eq!(ok.request.as_ref().unwrap().path, "/v1/models");
    assert_eq!(ok.outcome, "success");
    assert!(
        to_openai[1].credential.is_none(),
        "disabled: nothing resolved"
    );
    let denied: Vec<_> = mine.iter().filter(|e| e.outcome == "denied").collect();
    assert_eq!(denied.len(), 2, "metadata and 10.0.0.1: {mine:#?}");
    // The colleague's calls are not in her feed.
    assert!(!mine
        .iter()
        .any(|e| e.sandbox_id.as_deref() == Some(jones.id.as_str())));

    // API actions are audited with the acting key.
    let sets = audit(c, "action=secret.set").await;
    assert_eq!(sets.len(), 2);
    assert!(sets
        .iter()
        .all(|e| e.actor.as_deref().unwrap().starts_with("key_")));
    assert_eq!(audit(c, "action=secret.disabled").await.len(), 1);
    assert_eq!(audit(c, "action=sandbox.created").await.len(), 2);

    // Export: the same rows as NDJSON.
    let export = c
        .raw(
            reqwest::Method::GET,
            &format!(
                "/v1/audit/export?external_user_id={}",
                miosa_client::encode(DR_SMITH)
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(export.status, 200);
    let text = export.body.clone();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() > mine.len(),
        "export includes sandbox.created too"
    );
    responses.push(text);

    // End-user credentials switched off: creation is refused and hers stops
    // resolving at once.
    c.update_settings(&json!({"allow_end_user_credentials": false}))
        .await
        .unwrap();
    let err = c
        .set_secret(&json!({
            "name": "other", "value": "sk-other-0123456789", "scope": "external_user",
            "external_user_id": DR_JONES, "expose_as_env": "OTHER_KEY"
        }))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.code(), Some("end_user_credentials_disabled"));
    assert_eq!(
        sh(
            c,
            &smith.id,
            &curl("https://api.openai.com/v1/models", "OPENAI_API_KEY")
        )
        .await,
        "401"
    );
    let creds = c.sandbox_credentials(&smith.id).await.unwrap().data;
    assert!(!creds.iter().any(|v| v["env"] == "OPENAI_API_KEY"));
    c.update_settings(&json!({"allow_end_user_credentials": true}))
        .await
        .unwrap();

    // The value is nowhere: not in the sandbox (files, any process's
    // environment), not in any API response, not in the data dir or the
    // database.
    for value in [OPENAI_KEY, EHR_KEY] {
        let r = c
            .exec(
                &smith.id,
                &json!({"user": "root", "command": format!(
                    "grep -rsl -- '{value}' /home /root /tmp /etc /var /run /opt /srv /mnt; \
                     cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -- '{value}'; true"
                )}),
            )
            .await
            .unwrap();
        assert_eq!(r.stdout.trim(), "0", "found in the sandbox: {}", r.stdout);
        for body in &responses {
            assert!(!body.contains(value), "an API response carried the value");
        }
    }
    let data = t.env.data_dir();
    for (path, bytes) in files_outside_mounts(&data) {
        for value in [OPENAI_KEY, EHR_KEY] {
            assert!(
                !common::contains(&bytes, value),
                "the value is in {}",
                path.display()
            );
        }
    }
    if let Some(pg) = &t.env.pg {
        let out = std::process::Command::new("pg_dump")
            .args(["--data-only", &pg.url])
            .output()
            .unwrap();
        assert!(out.status.success());
        let dump = String::from_utf8_lossy(&out.stdout);
        assert!(dump.contains(&openai.id), "the dump covers the secrets");
        assert!(!dump.contains(OPENAI_KEY) && !dump.contains(EHR_KEY));
    }
}

/// Every file under the data dir except inside the sandboxes' mounted root
/// filesystems (whose writable layers, `upper/`, are included).
fn files_outside_mounts(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                let mounted_root = p.file_name().is_some_and(|n| n == "rootfs")
                    && p.parent()
                        .and_then(|q| q.parent())
                        .is_some_and(|q| q.file_name().is_some_and(|n| n == "sandboxes"));
                if !mounted_root {
                    stack.push(p);
                }
            } else if ft.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

both_backends!(clinic_story);

//! Audit that cannot be skipped, with real sandboxes, the real proxy and a
//! database that stops taking writes: a request carrying a secret is sent
//! only once its row is durable and fails closed (503 `audit_unavailable`)
//! otherwise; other requests wait in a bounded backlog and are written once
//! the database is back. Signed checkpoints verify with the public key the
//! API gives, as a tenant archiving them would check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use common::{start_background, upstream::Upstream, Backend, TestEnv, TestServer};
use miosa_client::{AuditEvent, Client};
use serde_json::json;
use sqlx::Connection;

const OPENAI_KEY: &str = "sk-live-durable-5f4e3d2c1b0a9988";

/// A database that stops taking writes (reads go on), until `end`.
enum Outage {
    /// A connection holding SQLite's write lock.
    Sqlite(sqlx::SqliteConnection),
    /// The database (URL, name) switched to read-only, sessions restarted.
    Postgres(String, String),
}

impl Outage {
    async fn start(env: &TestEnv) -> Self {
        match &env.pg {
            None => {
                let url = format!("sqlite://{}", env.data_dir().join("miosa.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql("BEGIN EXCLUSIVE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                Outage::Sqlite(c)
            }
            Some(db) => {
                Self::pg(
                    &db.url,
                    &format!(
                        "ALTER DATABASE \"{}\" SET default_transaction_read_only = on",
                        db.name
                    ),
                )
                .await;
                Outage::Postgres(db.url.clone(), db.name.clone())
            }
        }
    }

    /// Runs `sql`, then ends every other session, so new ones start with
    /// the database's current settings.
    async fn pg(url: &str, sql: &str) {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        for statement in [
            "SET default_transaction_read_only = off",
            sql,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ] {
            sqlx::raw_sql(statement).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    }

    async fn end(self) {
        match self {
            Outage::Sqlite(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Outage::Postgres(url, name) => {
                Self::pg(
                    &url,
                    &format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = off"),
                )
                .await;
            }
        }
    }
}

/// The status curl got for a call to the fake OpenAI, with or without the
/// placeholder as bearer.
async fn call(c: &Client, sandbox: &str, with_key: bool) -> String {
    let auth = if with_key {
        "-H \"Authorization: Bearer $OPENAI_API_KEY\""
    } else {
        ""
    };
    let r = c
        .run(
            sandbox,
            &format!(
                "curl -sS -o /dev/null -w '%{{http_code}}' https://api.openai.com/v1/models {auth}"
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, Some(0), "{}{}", r.stdout, r.stderr);
    r.stdout.trim().to_owned()
}

async fn egress_rows(c: &Client) -> Vec<AuditEvent> {
    c.list_audit("action=egress.request&limit=500")
        .await
        .unwrap()
        .data
}

async fn fail_closed_and_checkpoints(backend: Backend) {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(updir.path(), &["api.openai.com"], &[OPENAI_KEY]).await;
    let mut env = TestEnv::new(backend).await;
    env.route_to(&up, &["api.openai.com"]);
    env.vars
        .insert("MIOSA_AUDIT_CHECKPOINT_INTERVAL".into(), "1".into());
    let t = TestServer::start_in(env).await;
    let c = &t.admin;
    let me = c.me().await.unwrap().key_id.unwrap();
    c.set_secret(
        &json!({"name": "openai", "value": OPENAI_KEY, "scope": "tenant",
                         "expose_as_env": "OPENAI_API_KEY", "allowed_hosts": ["api.openai.com"]}),
    )
    .await
    .unwrap();
    let sbx = c.create_sandbox(&json!({})).await.unwrap();

    // Normal operation: the durable row is completed with the result.
    assert_eq!(call(c, &sbx.id, true).await, "200");
    let rows = wait_rows(c, 1, |r| r.outcome != "pending").await;
    let r = rows[0].request.as_ref().unwrap();
    assert_eq!((r.status, rows[0].outcome.as_str()), (Some(200), "success"));
    assert!(r.bytes_in > 0);
    assert_eq!(rows[0].created_by_key_id.as_deref(), Some(me.as_str()));
    assert_eq!(rows[0].credential.as_ref().unwrap().name, "openai");

    // Checkpoints: signed by the server, checkable with the public key.
    let cps = loop {
        let cps = c.list_audit_checkpoints("").await.unwrap().data;
        if !cps.is_empty() {
            break cps;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let tenant = c.me().await.unwrap().tenant_id.unwrap();
    for cp in &cps {
        let time =
            time::OffsetDateTime::parse(&cp.time, &time::format_description::well_known::Rfc3339)
                .unwrap();
        let msg = format!(
            "miosa-audit-checkpoint-v1\n{tenant}\n{}\n{}\n{}",
            cp.seq,
            cp.hash,
            time.unix_timestamp_nanos() / 1_000
        );
        let key = BASE64.decode(cp.public_key.as_ref().unwrap()).unwrap();
        let sig = BASE64.decode(&cp.signature).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(msg.as_bytes(), &sig)
            .expect("the checkpoint verifies with its public key");
    }

    // The database stops taking writes.
    let seen = up.seen().len();
    let outage = Outage::start(&t.env).await;
    assert_eq!(
        call(c, &sbx.id, true).await,
        "503",
        "a request carrying a secret is not sent unaudited"
    );
    assert_eq!(up.seen().len(), seen, "nothing reached the upstream");
    // A request without a secret goes out; its row waits for the database.
    assert_eq!(call(c, &sbx.id, false).await, "401");
    assert_eq!(up.seen().len(), seen + 1);
    outage.end().await;

    // Back: the waiting rows are written (the refusal too), nothing was
    // lost, and requests with the secret flow again.
    let rows = wait_rows(c, 3, |_| true).await;
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.request.as_ref().unwrap().status,
                r.outcome.as_str(),
                r.credential.as_ref().map(|c| c.name.as_str()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some(401), "success", None),
            (Some(503), "error", Some("openai")),
            (Some(200), "success", Some("openai")),
        ],
        "{rows:#?}"
    );
    assert_eq!(call(c, &sbx.id, true).await, "200");
    let rows = wait_rows(c, 4, |r| r.outcome != "pending").await;
    assert_eq!(rows.len(), 4);
    c.delete_sandbox(&sbx.id).await.unwrap();
}

/// The egress rows once there are `n` and all of them pass `ready`.
async fn wait_rows(c: &Client, n: usize, ready: impl Fn(&AuditEvent) -> bool) -> Vec<AuditEvent> {
    for _ in 0..300 {
        let rows = egress_rows(c).await;
        if rows.len() >= n && rows.iter().all(&ready) {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("expected {n} settled rows, got {:#?}", egress_rows(c).await);
}

/// Stopping the server closes the proxy's connections first, so the rows
/// of requests still in flight are completed in the last flush.
async fn shutdown_completes_rows_in_flight(backend: Backend) {
    let updir = tempfile::tempdir().unwrap();
    let up = Upstream::start(updir.path(), &["api.openai.com"], &[OPENAI_KEY]).await;
    let mut env = TestEnv::new(backend).await;
    env.route_to(&up, &["api.openai.com"]);
    let mut t = TestServer::start_in(env).await;
    let c = t.admin.clone();
    c.set_secret(
        &json!({"name": "openai", "value": OPENAI_KEY, "scope": "tenant",
                         "expose_as_env": "OPENAI_API_KEY", "allowed_hosts": ["api.openai.com"]}),
    )
    .await
    .unwrap();
    let sbx = c.create_sandbox(&json!({})).await.unwrap();
    start_background(
        &c,
        &sbx.id,
        "curl -sS https://api.openai.com/slow -H \"Authorization: Bearer $OPENAI_API_KEY\"",
    )
    .await;
    let rows = loop {
        let rows = egress_rows(&c).await;
        if !rows.is_empty() {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(rows[0].outcome, "pending", "durable before it was sent");
    t.stop().await;
    let store = miosa::storage::open(t.env.config().database_url.expose())
        .await
        .unwrap();
    let me = store
        .list_tenants(&miosa_core::PageRequest::default())
        .await
        .unwrap()
        .items;
    let chain = store.audit_chain(&me[0].id, 0, 1000).await.unwrap();
    let row = chain
        .iter()
        .find(|e| e.entry.id.as_str() == rows[0].id)
        .unwrap();
    assert!(!row.pending, "completed by the shutdown's last flush");
    assert_eq!(row.entry.outcome, miosa_core::Outcome::Error);
}

both_backends!(
    fail_closed_and_checkpoints,
    shutdown_completes_rows_in_flight
);

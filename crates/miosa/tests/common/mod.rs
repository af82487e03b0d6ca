//! Test support: the real server started in-process on 127.0.0.1:0 with a
//! fresh data dir, on SQLite or on a throwaway PostgreSQL database, and
//! typed clients holding its root and default-tenant admin keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod upstream;

use std::collections::HashMap;

use miosa::{config::Config, server::Server};
use miosa_client::{Client, CreateApiKey};
use miosa_store_conformance::PgTestDb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite` and `postgres` variants of an async test function
/// taking a `Backend`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

/// Where a test server keeps its state.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgTestDb>,
    pub vars: HashMap<String, String>,
}

impl TestEnv {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = HashMap::new();
        vars.insert("MIOSA_LISTEN".into(), "127.0.0.1:0".into());
        vars.insert(
            "MIOSA_DATA_DIR".into(),
            dir.path().join("data").display().to_string(),
        );
        // The agent inside sandboxes is this very binary.
        vars.insert(
            "MIOSA_AGENT_BINARY".into(),
            env!("CARGO_BIN_EXE_miosa").into(),
        );
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = PgTestDb::create().await;
                vars.insert("MIOSA_DATABASE_URL".into(), db.url.clone());
                Some(db)
            }
        };
        Self { dir, pg, vars }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Sends the egress proxy's traffic for `hosts` to the fake upstream
    /// `up`, trusting its test CA.
    pub fn route_to(&mut self, up: &upstream::Upstream, hosts: &[&str]) {
        let resolve: Vec<String> = hosts.iter().map(|h| format!("{h}={}", up.addr)).collect();
        self.vars
            .insert("MIOSA_EGRESS_RESOLVE".into(), resolve.join(","));
        self.vars.insert(
            "MIOSA_EGRESS_UPSTREAM_CA".into(),
            up.ca_file.display().to_string(),
        );
    }

    pub fn config(&self) -> Config {
        Config::load_with(None, |k| self.vars.get(k).cloned()).unwrap()
    }
}

/// A running server and clients for it.
pub struct TestServer {
    pub server: Option<Server>,
    pub env: TestEnv,
    pub url: String,
    /// The operator (root key).
    pub root: Client,
    /// The `default` tenant's first admin key.
    pub admin: Client,
    /// No key at all.
    pub anon: Client,
    pub root_key: String,
    pub admin_key: String,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_in(TestEnv::new(backend).await).await
    }

    pub async fn start_in(env: TestEnv) -> Self {
        let server = miosa::server::start(&env.config()).await.unwrap();
        let report = server
            .bootstrap
            .as_ref()
            .expect("a fresh database bootstraps");
        let root_key = report.root_key.as_ref().unwrap().reveal().to_owned();
        let admin_key = report.admin_key.reveal().to_owned();
        let url = server.url();
        Self {
            root: Client::new(&url, Some(root_key.clone())),
            admin: Client::new(&url, Some(admin_key.clone())),
            anon: Client::new(&url, None),
            url,
            server: Some(server),
            env,
            root_key,
            admin_key,
        }
    }

    pub fn client(&self, key: &str) -> Client {
        Client::new(&self.url, Some(key.to_owned()))
    }

    /// A new tenant: its admin client and id.
    pub async fn new_tenant(&self, name: &str) -> (Client, String) {
        let t = self.root.create_tenant(name).await.unwrap();
        (self.client(&t.api_key), t.tenant.id)
    }

    /// A workspace key for `ws` issued by `admin`.
    pub async fn workspace_key(&self, admin: &Client, ws: &str) -> (Client, String) {
        let k = admin
            .create_api_key(&CreateApiKey {
                name: "ws key".into(),
                scope: "workspace".into(),
                workspace_id: Some(ws.into()),
            })
            .await
            .unwrap();
        (self.client(&k.key), k.record.id)
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

/// A second replica with its own data dir on the same PostgreSQL database
/// and the same master key (as replicas must have); the env is returned so
/// its data dir lives as long as the server. `pepper`: the first's, without
/// which a replica refuses to start.
pub async fn replica_of(
    first: &TestEnv,
    pepper: Option<String>,
) -> anyhow::Result<(Server, TestEnv)> {
    let mut env = TestEnv::new(Backend::Sqlite).await; // fresh data dir only
    env.vars.insert(
        "MIOSA_DATABASE_URL".into(),
        first.pg.as_ref().expect("a PostgreSQL env").url.clone(),
    );
    let master = std::fs::read_to_string(first.data_dir().join("master-key"))
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "5e".repeat(32));
    env.vars.insert("MIOSA_MASTER_KEY".into(), master);
    if let Some(p) = pepper {
        env.vars.insert("MIOSA_API_KEY_PEPPER".into(), p);
    }
    let server = miosa::server::start(&env.config()).await?;
    Ok((server, env))
}

/// Starts `command` in the background in a sandbox (`POST …/exec` with
/// `"background": true`), which must answer 200; returns the answer
/// (`{"pid": …}`).
pub async fn start_background(c: &Client, sandbox: &str, command: &str) -> serde_json::Value {
    let r = c
        .raw(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{sandbox}/exec"),
            Some(miosa_client::RawBody::Json(
                serde_json::json!({"command": command, "background": true}),
            )),
        )
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "starting {command:?} in the background: {}",
        r.body
    );
    r.json()
}

/// The API-key pepper a server generated into its data dir.
pub fn pepper_of(env: &TestEnv) -> String {
    std::fs::read_to_string(env.data_dir().join("api-key-pepper")).unwrap()
}

impl Drop for TestEnv {
    /// Sandboxes outlive a stopped server by design; a test's must not
    /// outlive the test. Remove whatever runc still runs under this data dir.
    fn drop(&mut self) {
        remove_all_sandboxes(&self.data_dir());
    }
}

/// Force-removes every container, overlay and disk under a data dir.
pub fn remove_all_sandboxes(data_dir: &std::path::Path) {
    let root = data_dir.join("runc");
    let Ok(entries) = std::fs::read_dir(data_dir.join("sandboxes")) else {
        return;
    };
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let _ = std::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", &id])
            .output();
        // The root file system, then the sandbox's disk (its loop device
        // detaches itself once unmounted).
        for point in [e.path().join("rootfs"), e.path()] {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(point)
                .output();
        }
        for ctrl in [
            "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices", "systemd",
        ] {
            let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{ctrl}/miosa/{id}"));
        }
    }
}

/// Every file under `dir`, recursively, with its bytes.
pub fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

impl TestEnv {
    /// Runs `sql` straight on the server's database, as someone with write
    /// access to it but not to the master key would (tampering tests).
    pub async fn tamper(&self, sql: &str) {
        use sqlx::Connection;
        match &self.pg {
            Some(db) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            None => {
                let url = format!("sqlite://{}", self.data_dir().join("miosa.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

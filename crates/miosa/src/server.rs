//! Assembles and runs the server: config → store → init → router → listener.
//! Integration tests start it in-process on `127.0.0.1:0` through `start`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use miosa_api::AppState;
use miosa_audit::AuditLog;
use miosa_secrets::Secrets;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{config::Config, init, storage};

/// How often the reaper looks for expired sandboxes.
const REAPER_EVERY: Duration = Duration::from_secs(1);

/// A running server.
pub struct Server {
    /// The bound address (useful when listening on port 0).
    pub addr: SocketAddr,
    /// Set on the first start of a new database.
    pub bootstrap: Option<init::BootstrapReport>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    reaper: Option<JoinHandle<()>>,
    /// Signs audit chain heads now and then.
    checkpointer: Option<JoinHandle<()>>,
    /// Its egress connections are closed on shutdown, before the last flush.
    sandboxes: Option<Arc<miosa_sandboxes::Sandboxes>>,
    /// The audit writer, flushed on shutdown.
    audit: Option<(AuditLog, JoinHandle<()>)>,
}

/// How long shutdown waits for the audit log to write what it holds.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

/// Opens the store, initialises, binds and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Server> {
    match init::raise_open_files_limit() {
        Ok(n) => tracing::info!(open_files = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    init::ensure_data_dir(&config.data_dir)?;
    let store = storage::open(config.database_url.expose())
        .await
        .context("cannot open the database")?;
    let (keys, bootstrap) = init::prepare(config, store.as_ref()).await?;
    let backend = store.backend();
    let vault = Arc::new(init::vault(config, store.as_ref()).await?);
    let (audit, audit_task) = AuditLog::start(store.clone());
    let checkpointer = miosa_audit::Checkpointer::new(store.clone(), vault.clone());
    let checkpointer = (!config.audit_checkpoint_interval.is_zero())
        .then(|| checkpointer.spawn(config.audit_checkpoint_interval));
    let secrets = Arc::new(Secrets::new(
        store.clone(),
        vault.clone(),
        init::placeholder_key(&keys.pepper),
        audit.clone(),
    ));
    // Bind before starting sandboxes: a taken port fails fast and leaves no
    // reaper behind.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let sandboxes = if config.sandboxes {
        Some(start_sandboxes(config, store.clone(), &secrets, &audit).await?)
    } else {
        None
    };
    let reaper = sandboxes.clone().map(|s| s.spawn_reaper(REAPER_EVERY));
    let state = AppState {
        store,
        keys: Arc::new(keys),
        sandboxes: sandboxes.clone(),
        secrets,
        audit: audit.clone(),
        vault,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let app = miosa_api::router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, database = backend, "miosa listening");
    Ok(Server {
        addr,
        bootstrap,
        shutdown: Some(tx),
        task,
        reaper,
        checkpointer,
        sandboxes,
        audit: Some((audit, audit_task)),
    })
}

/// The egress proxy's audit rows go to the batched audit log.
struct EgressAudit(AuditLog);

impl miosa_egress::AuditSink for EgressAudit {
    fn record(&self, entry: miosa_core::AuditEntry) {
        self.0.record(entry);
    }

    fn record_durable(&self, entry: miosa_core::AuditEntry) -> miosa_egress::SinkFuture<'_> {
        Box::pin(async move {
            self.0
                .append_durable(entry)
                .await
                .map_err(|_| miosa_egress::AuditUnavailable)
        })
    }

    fn complete(&self, completion: miosa_core::AuditCompletion) {
        self.0.complete(completion);
    }

    fn admit(&self) -> miosa_egress::SinkFuture<'_> {
        Box::pin(async move {
            self.0
                .admit()
                .await
                .map_err(|_| miosa_egress::AuditUnavailable)
        })
    }
}

/// Prepares the runtime and makes the database agree with this host.
async fn start_sandboxes(
    config: &Config,
    store: Arc<dyn miosa_store::Store>,
    secrets: &Arc<Secrets>,
    audit: &AuditLog,
) -> anyhow::Result<Arc<miosa_sandboxes::Sandboxes>> {
    let agent_binary = match &config.agent_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find this executable for the agent")?,
    };
    let mut runtime_config = miosa_runtime::RuntimeConfig::new(&config.data_dir, agent_binary);
    runtime_config.runc = config.runc.clone();
    let runtime = miosa_runtime::Runtime::new(runtime_config).await.context(
        "cannot start the sandbox runtime (set MIOSA_SANDBOXES=false to run without sandboxes)",
    )?;
    let node_id = init::node_id(config)?;
    let mut sandboxes = miosa_sandboxes::Sandboxes::new(
        store,
        Arc::new(runtime),
        miosa_sandboxes::Limits {
            default_disk_mb: config.sandbox_disk_mb,
            max_disk_mb: config.sandbox_max_disk_mb,
            ..miosa_sandboxes::Limits::default()
        },
        node_id,
    )
    .with_audit(audit.clone());
    if config.egress {
        let egress_config = miosa_egress::EgressConfig {
            resolve: config.egress_resolve.clone(),
            upstream_extra_ca: config.egress_upstream_ca.clone(),
            raw_tunnel_ports: config.egress_allowed_ports.clone(),
            max_connections: config.egress_max_connections,
            max_in_flight: config.egress_max_in_flight,
            ..miosa_egress::EgressConfig::default()
        };
        let proxy = miosa_egress::EgressProxy::new(
            egress_config,
            secrets.clone(),
            Arc::new(EgressAudit(audit.clone())),
        )
        .context("cannot start the egress proxy")?;
        let cache = secrets.clone();
        sandboxes = sandboxes
            .with_egress(Arc::new(proxy))
            .on_destroyed(Arc::new(move |id| cache.forget(id)));
    }
    let sandboxes = Arc::new(sandboxes);
    let report = sandboxes.reconcile().await?;
    if !report.marked_error.is_empty() || !report.orphans_removed.is_empty() {
        tracing::warn!(
            kept = report.kept,
            lost = report.marked_error.len(),
            orphans = report.orphans_removed.len(),
            "reconciled sandboxes with this host"
        );
    }
    Ok(sandboxes)
}

impl Server {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and returns.
    /// Sandboxes keep running: a restarted server reconciles and adopts them.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(reaper) = self.reaper.take() {
            reaper.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await??;
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.abort();
        }
        // Proxy connections end first, so their rows are in the last flush.
        if let Some(sandboxes) = self.sandboxes.take() {
            sandboxes.close_egress().await;
        }
        if let Some((audit, task)) = self.audit.take() {
            if tokio::time::timeout(FINAL_FLUSH, audit.flush())
                .await
                .is_err()
            {
                tracing::error!("the audit log could not write all its rows before shutdown; the database does not take them");
            }
            drop(audit);
            task.abort();
        }
        Ok(())
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

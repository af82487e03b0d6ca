//! Assembles and runs the server: config → store → init → router → listener.
//! Integration tests start it in-process on `127.0.0.1:0` through `start`.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use miosa_api::AppState;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{config::Config, init, storage};

/// A running server.
pub struct Server {
    /// The bound address (useful when listening on port 0).
    pub addr: SocketAddr,
    /// Set on the first start of a new database.
    pub bootstrap: Option<init::BootstrapReport>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Opens the store, initialises, binds and starts serving.
pub async fn start(config: &Config) -> anyhow::Result<Server> {
    init::ensure_data_dir(&config.data_dir)?;
    let store = storage::open(config.database_url.expose())
        .await
        .context("cannot open the database")?;
    let (keys, bootstrap) = init::prepare(config, store.as_ref()).await?;
    let backend = store.backend();
    let state = AppState {
        store,
        keys: Arc::new(keys),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
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
    })
}

impl Server {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await??;
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

//! The proxy as the rest of Miosa sees it: one [`EgressProxy`] per host,
//! sandboxes attached to it one Unix socket each.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use miosa_core::SandboxId;
use rustls::{crypto::CryptoProvider, ClientConfig};
use tokio::{net::UnixListener, sync::watch, task::JoinHandle};
use tracing::Instrument as _;

use crate::{
    ca::SandboxCa,
    conn,
    credential::{AuditSink, CredentialSource, SandboxIdentity},
    io::{Held, Shutdown, Tasks},
    leaf::Leaves,
    pool::Pool,
    target::Resolver,
    tls, EgressConfig, EgressError,
};

/// What every sandbox's connections share.
pub(crate) struct Shared {
    pub creds: Arc<dyn CredentialSource>,
    pub audit: Arc<dyn AuditSink>,
    pub resolver: Resolver,
    pub max_body_bytes: usize,
    pub raw_tunnel_ports: Vec<u16>,
    pub limits: Limits,
    client_tls: Arc<ClientConfig>,
    provider: Arc<CryptoProvider>,
}

/// What one sandbox may use of the proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
}

/// One attached sandbox, as its connections see it.
pub(crate) struct SandboxCtx {
    pub shared: Arc<Shared>,
    pub identity: Arc<SandboxIdentity>,
    pub leaves: Leaves,
    pub pool: Arc<Pool>,
    pub stop: Shutdown,
    /// Every task serving this sandbox's connections.
    pub tasks: Tasks,
    /// Its requests in flight.
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

struct Attached {
    stop: watch::Sender<bool>,
    socket: PathBuf,
    accept: JoinHandle<()>,
    tasks: Tasks,
}

/// How long detaching waits for a sandbox's connections to wind down.
const DRAIN: Duration = Duration::from_secs(5);

/// The credential-injecting egress proxy. Each attached sandbox has its own
/// Unix socket, CA, leaf certificates and upstream connections.
pub struct EgressProxy {
    shared: Arc<Shared>,
    attached: Mutex<HashMap<SandboxId, Attached>>,
}

impl EgressProxy {
    /// Builds the proxy: loads the upstream roots once and keeps them.
    pub fn new(
        cfg: EgressConfig,
        creds: Arc<dyn CredentialSource>,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, EgressError> {
        let provider = tls::provider();
        let client_tls = tls::client_config(&provider, cfg.upstream_extra_ca.as_deref())?;
        Ok(Self {
            shared: Arc::new(Shared {
                creds,
                audit,
                resolver: Resolver::new(&cfg.resolve),
                max_body_bytes: cfg.max_body_bytes,
                raw_tunnel_ports: cfg.raw_tunnel_ports,
                limits: Limits {
                    max_connections: cfg.max_connections.max(1),
                    max_in_flight: cfg.max_in_flight.max(1),
                    header_timeout: cfg.header_timeout,
                    body_idle_timeout: cfg.body_idle_timeout,
                },
                client_tls,
                provider,
            }),
            attached: Mutex::new(HashMap::new()),
        })
    }

    /// Makes a new CA for `sandbox` (P-256, valid for
    /// [`CA_VALIDITY`](crate::CA_VALIDITY)); put its PEM into the sandbox's
    /// trust bundle and pass it to [`attach`](Self::attach).
    pub fn new_ca(&self, sandbox: &SandboxId) -> Result<SandboxCa, EgressError> {
        SandboxCa::generate(sandbox)
    }

    /// Binds the sandbox's socket and serves it on a background task until
    /// [`detach`](Self::detach). Returns once the socket accepts
    /// connections.
    ///
    /// `socket.path` is in a directory the sandbox can write (root inside
    /// may have planted a link there). So the socket is bound at
    /// `socket.staging`, in a directory only the host reaches, given its
    /// mode there (0666: the directory it ends up in is the access
    /// control), and renamed onto `socket.path`: a rename replaces whatever
    /// is there without following it, and no host operation ever resolves
    /// a path the sandbox controls.
    pub async fn attach(
        &self,
        identity: SandboxIdentity,
        ca: SandboxCa,
        socket: &SocketPaths,
    ) -> Result<(), EgressError> {
        if ca.sandbox_id() != &identity.sandbox_id {
            return Err(EgressError::Config(format!(
                "the CA was made for {}, not {}",
                ca.sandbox_id(),
                identity.sandbox_id
            )));
        }
        let mut attached = self.lock_attached();
        if attached.contains_key(&identity.sandbox_id) {
            return Err(EgressError::AlreadyAttached(identity.sandbox_id));
        }
        let listener = bind(socket)?;
        let (switch, stop) = Shutdown::new();
        let sandbox_id = identity.sandbox_id.clone();
        let tasks = Tasks::default();
        let ctx = Arc::new(SandboxCtx {
            tasks: tasks.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                self.shared.limits.max_in_flight,
            )),
            shared: self.shared.clone(),
            identity: Arc::new(identity),
            leaves: Leaves::new(ca, self.shared.provider.clone()),
            pool: Arc::new(Pool::new(self.shared.client_tls.clone(), stop.clone())),
            stop,
        });
        let accept = tokio::spawn(accept_loop(listener, ctx));
        attached.insert(
            sandbox_id,
            Attached {
                stop: switch,
                socket: socket.path.clone(),
                accept,
                tasks,
            },
        );
        Ok(())
    }

    /// Stops accepting, closes that sandbox's connections (tunnels and
    /// upstream connections included), waits for them to end (their audit
    /// rows are then recorded) and removes the socket file. Idempotent.
    pub async fn detach(&self, sandbox: &SandboxId) {
        let Some(a) = self.lock_attached().remove(sandbox) else {
            return;
        };
        let _ = a.stop.send(true);
        if let Err(e) = a.accept.await {
            tracing::warn!(%sandbox, error = %e, "egress accept loop failed");
        }
        if tokio::time::timeout(DRAIN, a.tasks.idle()).await.is_err() {
            tracing::warn!(%sandbox, "egress connections did not end in time");
        }
        remove_socket(&a.socket);
    }

    /// Detaches every sandbox: closes all connections (their audit rows
    /// are then recorded) and removes the sockets. For shutdown, before the
    /// audit log's last flush.
    pub async fn detach_all(&self) {
        let ids: Vec<SandboxId> = self.lock_attached().keys().cloned().collect();
        for id in ids {
            self.detach(&id).await;
        }
    }

    /// Whether `sandbox` is attached.
    pub fn is_attached(&self, sandbox: &SandboxId) -> bool {
        self.lock_attached().contains_key(sandbox)
    }

    fn lock_attached(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Attached>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for EgressProxy {
    /// A dropped proxy stops serving every sandbox still attached.
    fn drop(&mut self) {
        for (_, a) in self.lock_attached().drain() {
            let _ = a.stop.send(true);
            remove_socket(&a.socket);
        }
    }
}

/// Where a sandbox's egress socket goes (see [`EgressProxy::attach`]).
#[derive(Debug, Clone)]
pub struct SocketPaths {
    /// The path the sandbox connects to.
    pub path: PathBuf,
    /// Where it is bound first: in a directory only the host can reach, on
    /// the same filesystem as `path`.
    pub staging: PathBuf,
    /// The host uid and gid of the sandbox's root, who alone may connect
    /// (mode 0600); `None`: anyone who can reach the path (mode 0666).
    pub owner: Option<(u32, u32)>,
}

fn bind(socket: &SocketPaths) -> Result<UnixListener, EgressError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source: std::io::Error| EgressError::Listen { path, source }
    };
    let staging = &socket.staging;
    // A leftover from an interrupted attach (the directory is the host's own).
    match std::fs::symlink_metadata(staging) {
        Ok(_) => std::fs::remove_file(staging).map_err(err(staging))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(staging)(e)),
    }
    let listener = UnixListener::bind(staging).map_err(err(staging))?;
    let placed = match socket.owner {
        Some((uid, gid)) => {
            std::os::unix::fs::chown(staging, Some(uid), Some(gid)).and_then(|()| {
                std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o600))
            })
        }
        None => std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o666)),
    }
    .and_then(|()| std::fs::rename(staging, &socket.path));
    if let Err(e) = placed {
        remove_socket(staging);
        return Err(err(&socket.path)(e));
    }
    Ok(listener)
}

fn remove_socket(socket: &Path) {
    if let Err(e) = std::fs::remove_file(socket) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %socket.display(), error = %e, "removing the egress socket failed");
        }
    }
}

async fn accept_loop(listener: UnixListener, ctx: Arc<SandboxCtx>) {
    let open = Arc::new(tokio::sync::Semaphore::new(
        ctx.shared.limits.max_connections,
    ));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Over the limit: closed at once, so one sandbox cannot
                    // take the host's descriptors or the proxy's memory.
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        tracing::debug!(sandbox = %ctx.identity.sandbox_id, "egress connection refused: too many open");
                        drop(stream);
                        continue;
                    };
                    let span = tracing::debug_span!("egress", sandbox = %ctx.identity.sandbox_id);
                    // The slot lives with the socket, through upgrades and
                    // tunnels, until the socket is closed.
                    let stream = Held::new(stream, slot);
                    ctx.tasks.spawn(conn::serve(stream, ctx.clone()).instrument(span));
                }
                Err(e) => {
                    // Out of descriptors, most likely: back off a little.
                    tracing::warn!(sandbox = %ctx.identity.sandbox_id, error = %e, "egress accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = ctx.stop.wait() => break,
        }
    }
}

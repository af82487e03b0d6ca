//! [`Runtime`]: create, destroy, pause and inspect sandboxes.

use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bundle::{cgroups_path, BaseSpec, HostSetup};
use crate::cgroups::{Cgroups, Usage};
use crate::config::{validate_id, RuntimeConfig, SandboxSpec, MAX_ID_LEN};
use crate::error::{io_err, Result, RuntimeError};
use crate::idmap::{self, IdRange, IdRanges};
use crate::layout::{
    Layout, SandboxPaths, AGENT_SOCKET, EGRESS_SOCKET, MAX_SOCKET_PATH, RUN_DIR_MODE,
};
use crate::runc::{ContainerState, Runc};
use crate::seed::Seed;
use crate::template::{self, Template};
use crate::{disk, egress, logs, mountinfo, overlay, ready};

/// How long teardown waits for killed processes to leave the cgroup.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of the container log an error quotes.
const LOG_TAIL_BYTES: u64 = 4096;
/// Ids must fit at least `sbx_` + a 26-character ULID in the socket path.
const MIN_ID_CAPACITY: usize = 30;

/// Manages the sandboxes of this host. Cheap to clone; clones share state.
///
/// `create` and `destroy` run to completion in a background task even if the
/// caller stops waiting, so a dropped request never leaves half a sandbox.
/// Callers serialise operations on one sandbox id.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) runc: Runc,
    pub(crate) cgroups: Cgroups,
    base: BaseSpec,
    template: Template,
    /// The skeleton every sandbox's writable layer starts from.
    seed: Seed,
    /// Each sandbox's host ids (user namespaces).
    pub(crate) ids: IdRanges,
    /// Longest id whose agent socket path fits in `sun_path`.
    max_id_len: usize,
}

/// Mode of the data dir and `sandboxes/`: a sandbox's root (an
/// unprivileged host id) must be able to pass through them to its root
/// file system; nothing in them is readable by others.
const PASSAGE_MODE: u32 = 0o711;
/// Mode of a sandbox's directory (owned by root, group the sandbox's root
/// group): its own root may pass through to `rootfs/` and `run/`, no one
/// else.
const SANDBOX_DIR_MODE: u32 = 0o710;

fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(|| format!("creating {}", path.display())))
}

impl Runtime {
    /// Checks that runc works, prepares the data dir and builds (or refreshes)
    /// the default template.
    pub async fn new(config: RuntimeConfig) -> Result<Self> {
        if config.pids_limit < 1 {
            return Err(RuntimeError::Config(format!(
                "pids_limit must be at least 1, got {}",
                config.pids_limit
            )));
        }
        create_private_dir(&config.data_dir)?;
        // Canonical paths, so overlay options and mountinfo compare equal.
        let data_dir = fs::canonicalize(&config.data_dir).map_err(io_err(|| {
            format!("resolving {}", config.data_dir.display())
        }))?;
        overlay::check_path(&data_dir)?;
        let agent_binary = fs::canonicalize(&config.agent_binary)
            .ok()
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                RuntimeError::Config(format!(
                    "agent_binary {} is not a file",
                    config.agent_binary.display()
                ))
            })?;

        let layout = Layout::new(&data_dir);
        let socket_name = AGENT_SOCKET.len().max(EGRESS_SOCKET.len());
        let fixed = layout.sandboxes().as_os_str().len() + "/".len() + "/run/".len() + socket_name;
        let max_id_len = MAX_SOCKET_PATH.saturating_sub(fixed).min(MAX_ID_LEN);
        if max_id_len < MIN_ID_CAPACITY {
            return Err(RuntimeError::Config(format!(
                "data_dir {} is too long: sandbox socket paths would exceed {MAX_SOCKET_PATH} bytes",
                data_dir.display()
            )));
        }
        for dir in [
            layout.sandboxes(),
            layout.disks(),
            layout.templates(),
            layout.runc_root(),
        ] {
            create_private_dir(dir)?;
        }
        disk::check_host()?;
        for dir in [data_dir.as_path(), layout.sandboxes()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(PASSAGE_MODE))
                .map_err(io_err(|| format!("setting the mode of {}", dir.display())))?;
        }

        let runc = Runc::new(config.runc.clone(), layout.runc_root().to_path_buf());
        let version = runc.version().await?;
        runc.list().await?;
        let cgroups = Cgroups::discover()?;

        let templates = layout.templates().to_path_buf();
        let (template, seed) = tokio::task::spawn_blocking(move || {
            let template = template::ensure_default(&templates, Path::new("/"))?;
            let seed = Seed::scan(&template.rootfs)?;
            Ok::<_, RuntimeError>((template, seed))
        })
        .await
        .map_err(|e| RuntimeError::io("building the template", std::io::Error::other(e)))??;
        let ids = IdRanges::default();
        for entry in fs::read_dir(layout.sandboxes())
            .map_err(io_err(|| {
                format!("listing {}", layout.sandboxes().display())
            }))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_id(&name).is_ok() {
                if let Some(range) = idmap::recorded(&layout.sandbox(&name).config()) {
                    ids.adopt(&name, range);
                }
            }
        }

        let base = BaseSpec::new(&HostSetup {
            agent_binary: &agent_binary,
            extra_system_dirs: &template.extra_system_dirs,
            pids_limit: config.pids_limit,
            swap_accounting: cgroups.swap_accounting(),
            sys_resource: has_capability(CAP_SYS_RESOURCE),
            nofile_hard: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, hard)| hard)
                .unwrap_or(1024),
        });
        tracing::info!(runc = %version, data_dir = %data_dir.display(), template = %template.rootfs.display(), "sandbox runtime ready");
        let inner = Arc::new(Inner {
            layout,
            runc,
            cgroups,
            base,
            template,
            seed,
            ids,
            max_id_len,
        });
        logs::spawn_trimmer(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// Starts a sandbox and returns once its agent answers `GET /health`.
    /// On failure everything it made is removed again.
    #[tracing::instrument(skip_all, fields(sandbox = %spec.id))]
    pub async fn create(&self, spec: &SandboxSpec) -> Result<()> {
        spec.validate()?;
        self.inner.check_id_fits(&spec.id)?;
        let inner = Arc::clone(&self.inner);
        let spec = spec.clone();
        run_to_completion(async move { inner.create(&spec).await }).await
    }

    /// Host path of the sandbox's agent socket.
    pub fn agent_socket(&self, id: &str) -> PathBuf {
        self.inner.layout.sandbox(id).socket()
    }

    /// Host path of the sandbox's egress socket; the agent inside bridges
    /// `127.0.0.1:3128` to it. The directory is the sandbox's run dir, which
    /// root inside can write: the proxy binds at
    /// [`Runtime::egress_socket_staging`] and renames the socket here, and
    /// the connection it accepts on its own listener, not the path, is the
    /// sandbox's identity.
    pub fn egress_socket(&self, id: &str) -> PathBuf {
        self.inner.layout.sandbox(id).egress_socket()
    }

    /// Where the egress proxy binds a sandbox's socket before renaming it
    /// onto [`Runtime::egress_socket`]: in the sandbox's own directory,
    /// which only the host can reach, on the same filesystem.
    pub fn egress_socket_staging(&self, id: &str) -> PathBuf {
        self.inner.layout.sandbox(id).dir.join("egress.sock.new")
    }

    /// The host uid and gid of root inside the sandbox (`None` for a
    /// sandbox made before user namespaces, whose root is the host's).
    pub fn root_ids(&self, id: &str) -> Option<(u32, u32)> {
        self.inner.ids.of(id).map(|r| (r.host(0), r.host(0)))
    }

    /// Replaces the egress CA of a running sandbox created with one (when
    /// `miosa serve` restarts and adopts it with a fresh CA): both CA files
    /// are rewritten in place, so processes inside see the new CA at the
    /// same paths from their next read.
    #[tracing::instrument(skip_all, fields(sandbox = %id))]
    pub async fn replace_egress_ca(&self, id: &str, pem: &str) -> Result<()> {
        validate_id(id)?;
        egress::validate_pem(pem)?;
        let paths = self.inner.layout.sandbox(id);
        let (id, pem) = (id.to_string(), pem.to_string());
        tokio::task::spawn_blocking(move || egress::replace_ca_files(&id, &paths, &pem))
            .await
            .map_err(|e| RuntimeError::io("replacing the egress CA", std::io::Error::other(e)))?
    }

    /// Removes every trace of the sandbox: processes, mounts, cgroups, files
    /// and runc state. Succeeds when there is nothing to remove.
    #[tracing::instrument(skip_all, fields(sandbox = %id))]
    pub async fn destroy(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let inner = Arc::clone(&self.inner);
        let id = id.to_string();
        run_to_completion(async move { inner.teardown(&id).await }).await
    }

    /// Freezes every process of the sandbox (cgroup freezer).
    pub async fn pause(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        self.inner.runc.pause(id).await
    }

    /// Thaws a paused sandbox.
    pub async fn resume(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        self.inner.runc.resume(id).await
    }

    /// The sandbox's state; `None` if this host knows nothing of it. A sandbox
    /// directory without a container is `Stopped`.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>> {
        validate_id(id)?;
        match self.inner.runc.state(id).await? {
            Some(container) => Ok(Some(ContainerState::from_runc(&container.status))),
            None if self.inner.layout.sandbox(id).dir.exists() => Ok(Some(ContainerState::Stopped)),
            None => Ok(None),
        }
    }

    /// Current resource use from the sandbox's cgroups.
    pub async fn usage(&self, id: &str) -> Result<Usage> {
        validate_id(id)?;
        self.inner
            .cgroups
            .usage(id)?
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

/// Runs `work` in its own task so it finishes even if the caller's future is dropped.
async fn run_to_completion<F>(work: F) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| RuntimeError::io("sandbox task", std::io::Error::other(e)))?
}

impl Inner {
    fn check_id_fits(&self, id: &str) -> Result<()> {
        if id.len() > self.max_id_len {
            return Err(RuntimeError::InvalidSpec {
                field: "id",
                reason: format!(
                    "{id:?} is longer than {} characters, too long for the sandbox socket paths under this data dir",
                    self.max_id_len
                ),
            });
        }
        Ok(())
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<()> {
        let started = Instant::now();
        let paths = self.layout.sandbox(&spec.id);
        if self.layout.runc_root().join(&spec.id).exists() {
            return Err(RuntimeError::AlreadyExists(spec.id.clone()));
        }
        // Claiming the directory is what makes the id ours.
        match fs::DirBuilder::new().mode(0o700).create(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists(spec.id.clone()))
            }
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("creating {}", paths.dir.display()),
                    e,
                ))
            }
        }
        match self.start(spec, &paths).await {
            Ok(()) => {
                tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "sandbox ready");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "sandbox failed to start; removing it");
                if let Err(cleanup) = self.teardown(&spec.id).await {
                    tracing::error!(error = %cleanup, "cleanup after a failed create was incomplete");
                }
                Err(e)
            }
        }
    }

    async fn start(&self, spec: &SandboxSpec, paths: &SandboxPaths) -> Result<()> {
        let ids = self.ids.claim(&spec.id)?;
        let config = self.base.render(spec, &paths.run(), ids)?;
        let lower = self.template.rootfs.clone();
        let (paths_, spec_, seed) = (paths.clone(), spec.clone(), self.seed.clone());
        let log = tokio::task::spawn_blocking(move || {
            prepare(&paths_, &lower, &seed, ids, &spec_, &config)
        })
        .await
        .map_err(|e| RuntimeError::io("preparing the sandbox", std::io::Error::other(e)))??;

        let id = spec.id.as_str();
        if let Err(e) = self
            .runc
            .run_detached(id, &paths.dir, &paths.pid_file(), log)
            .await
        {
            return Err(match e {
                RuntimeError::Runc {
                    command, status, ..
                } => RuntimeError::Runc {
                    command,
                    status,
                    stderr: log_tail(&paths.log()),
                },
                other => other,
            });
        }
        let pid = read_pid(&paths.pid_file()).ok_or_else(|| RuntimeError::ContainerExited {
            id: id.to_string(),
            log_tail: log_tail(&paths.log()),
        })?;
        let log_path = paths.log();
        // No code but the agent runs inside yet, so the bound socket is the agent's.
        ready::wait_healthy(id, &paths.bound_socket(), pid, || log_tail(&log_path)).await?;
        pin_socket(paths)
    }

    /// Best effort through every step; the first failure is returned at the end.
    pub(crate) async fn teardown(&self, id: &str) -> Result<()> {
        let started = Instant::now();
        let paths = self.layout.sandbox(id);
        let mut first_error: Option<RuntimeError> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(sandbox = id, error = %e, "teardown step failed");
                first_error.get_or_insert(e);
            }
        };

        // Killing the agent (PID 1 of the sandbox) kills the whole PID
        // namespace; runc would otherwise wait 100 ms before checking.
        if let Some(pid) = read_pid(&paths.pid_file()) {
            if in_cgroup(pid, id) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // A frozen process only dies once thawed.
        self.cgroups.thaw(id);
        let deadline = Instant::now() + KILL_TIMEOUT;
        while self.cgroups.has_tasks(id) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        note(self.runc.delete(id).await);
        note(self.cgroups.remove(id).await);
        let paths_ = paths.clone();
        note(
            tokio::task::spawn_blocking(move || remove_sandbox_dir(&paths_))
                .await
                .unwrap_or_else(|e| {
                    Err(RuntimeError::io(
                        "removing the sandbox dir",
                        std::io::Error::other(e),
                    ))
                }),
        );
        let state_dir = self.layout.runc_root().join(id);
        match fs::remove_dir_all(&state_dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => note(Err(RuntimeError::io(
                format!("removing {}", state_dir.display()),
                e,
            ))),
            _ => {}
        }
        match first_error {
            None => {
                self.ids.release(id);
                tracing::debug!(
                    sandbox = id,
                    elapsed_ms = started.elapsed().as_millis(),
                    "sandbox destroyed"
                );
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}

/// Makes the sandbox's disk, builds its files on it (owned by its ids
/// where it may change them) and mounts its root; returns the log file.
/// Blocking.
fn prepare(
    paths: &SandboxPaths,
    lower: &Path,
    seed: &Seed,
    ids: IdRange,
    spec: &SandboxSpec,
    config: &[u8],
) -> Result<fs::File> {
    disk::create(&paths.disk_image, &paths.dir, spec.disk_mb)?;
    let root = ids.host(0);
    let own = |path: &Path, owner: Option<u32>, mode: u32| -> Result<()> {
        std::os::unix::fs::chown(path, owner, Some(root))
            .map_err(io_err(|| format!("chown {}", path.display())))?;
        // Not subject to the umask.
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err(|| format!("setting the mode of {}", path.display())))
    };
    own(&paths.dir, None, SANDBOX_DIR_MODE)?;
    let upper = paths.upper();
    seed.plant(&upper, ids)?;
    for dir in [paths.work(), paths.rootfs(), paths.run()] {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(|| format!("creating {}", dir.display())))?;
    }
    // Root inside binds its sockets here; the user inside must be able to enter it.
    own(&paths.run(), Some(root), RUN_DIR_MODE)?;
    let etc = upper.join("etc");
    egress::write_files(paths, spec.egress_ca_pem.as_deref())?;
    let write = |path: PathBuf, content: &[u8]| {
        fs::write(&path, content).map_err(io_err(|| format!("writing {}", path.display())))
    };
    // The seed's copies, so they keep its owners.
    let hostname = &spec.hostname;
    write(etc.join("hostname"), format!("{hostname}\n").as_bytes())?;
    write(etc.join("hosts"), template::hosts_file(hostname).as_bytes())?;
    // The environment is in it: the host's alone.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(paths.config())
        .and_then(|mut f| std::io::Write::write_all(&mut f, config))
        .map_err(io_err(|| format!("writing {}", paths.config().display())))?;
    overlay::mount_overlay(lower, &upper, &paths.work(), &paths.rootfs())?;
    logs::create(&paths.log())
}

/// Unmounts what is mounted below the sandbox dir, empties the disk (so
/// unmounting it writes nothing back), unmounts it and deletes the dir and
/// the disk image — but never deletes across a mount point that would not
/// go away.
fn remove_sandbox_dir(paths: &SandboxPaths) -> Result<()> {
    let dir = &paths.dir;
    if dir.exists() {
        let still_mounted = |below_only: bool| -> Result<Vec<PathBuf>> {
            let mut found = mountinfo::mounts_under(&mountinfo::read()?, dir);
            found.retain(|p| !below_only || p != dir);
            Ok(found)
        };
        let refuse = |remaining: Vec<PathBuf>| RuntimeError::Teardown {
            id: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reason: format!("still mounted: {remaining:?}"),
        };
        for point in still_mounted(true)? {
            overlay::unmount_all_under(&point)?;
        }
        let remaining = still_mounted(true)?;
        if !remaining.is_empty() {
            return Err(refuse(remaining));
        }
        disk::empty(dir)?;
        disk::unmount(dir)?;
        let remaining = still_mounted(false)?;
        if !remaining.is_empty() {
            return Err(refuse(remaining));
        }
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(RuntimeError::io(format!("removing {}", dir.display()), e))
            }
            _ => {}
        }
    }
    disk::remove_image(&paths.disk_image)
}

/// Capability number of `CAP_SYS_RESOURCE`.
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has capability `cap` in its effective set.
fn has_capability(cap: u32) -> bool {
    let has = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|eff| eff & (1u64 << cap) != 0);
    if !has {
        tracing::warn!(
            cap,
            "capability missing: sandbox agents get no OOM protection and at most our file limit"
        );
    }
    has
}

/// Hard-links the agent's socket to the host-only path [`SandboxPaths::socket`].
fn pin_socket(paths: &SandboxPaths) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let bound = paths.bound_socket();
    let meta = fs::symlink_metadata(&bound)
        .map_err(io_err(|| format!("inspecting {}", bound.display())))?;
    if !meta.file_type().is_socket() {
        return Err(RuntimeError::io(
            format!("{} is not a socket", bound.display()),
            std::io::Error::from(ErrorKind::InvalidData),
        ));
    }
    let pinned = paths.socket();
    fs::hard_link(&bound, &pinned).map_err(io_err(|| format!("linking {}", pinned.display())))
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
}

/// Whether host PID `pid` belongs to sandbox `id` (guards against PID reuse).
fn in_cgroup(pid: i32, id: &str) -> bool {
    let suffix = format!(":{}", cgroups_path(id));
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|cg| cg.lines().any(|line| line.ends_with(&suffix)))
        .unwrap_or(false)
}

/// The last few KiB of the container log, for error messages.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).trim().to_string())
    };
    match read() {
        Ok(tail) if tail.is_empty() => "(empty)".into(),
        Ok(tail) => tail,
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

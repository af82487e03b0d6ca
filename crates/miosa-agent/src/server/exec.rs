//! Starting commands and supervising them: output capture with caps,
//! timeouts, and killing the process group when the caller goes away.

use std::{
    ffi::{CString, OsString},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use nix::sys::signal::Signal as NixSignal;
use time::OffsetDateTime;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};

use super::{
    child::{self, Credentials},
    processes::{kill_group, Registry, Tracked},
};
use crate::{error::describe_io, AgentError, ExecEvent, ExecRequest, ExitInfo, ProcessInfo, RunAs};

/// How long output may keep flowing after the command exited (children that
/// inherited its pipes); then the exit event is sent regardless.
const DRAIN_GRACE: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 64 * 1024;
/// NDJSON lines buffered towards a slow client before the command blocks.
const EVENT_BUFFER: usize = 16;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What commands inherit and where accounts live.
#[derive(Debug, Clone)]
pub(crate) struct ExecConfig {
    /// The agent's environment minus its private variables.
    pub base_env: Vec<(OsString, OsString)>,
    /// Home of `user`.
    pub user_home: PathBuf,
}

/// Who a command runs as.
pub(super) struct Account {
    pub name: &'static str,
    pub home: PathBuf,
    pub creds: Option<Credentials>,
}

pub(super) fn account(config: &ExecConfig, who: RunAs) -> Account {
    match who {
        RunAs::User => Account {
            name: "user",
            home: config.user_home.clone(),
            creds: Some(Credentials {
                uid: 1000,
                gid: 1000,
            }),
        },
        RunAs::Root => Account {
            name: "root",
            home: PathBuf::from("/root"),
            creds: None,
        },
    }
}

/// A started command, listed in the registry until it is reaped.
pub(crate) struct Started {
    child: Child,
    pid: u32,
    tracked: Tracked,
}

impl Started {
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// Validates `req` and spawns it in its own process group. `capture` pipes
/// stdout/stderr; otherwise they go to /dev/null.
pub(crate) fn start(
    config: &ExecConfig,
    registry: &Arc<Registry>,
    req: &ExecRequest,
    capture: bool,
    background: bool,
) -> Result<Started, AgentError> {
    let program = req
        .argv
        .first()
        .ok_or_else(|| AgentError::Invalid("argv must not be empty".into()))?;
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err(AgentError::Invalid("argv contains a NUL byte".into()));
    }
    for (k, v) in &req.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(AgentError::Invalid(format!(
                "env: invalid variable name or value for {k:?}"
            )));
        }
    }
    let acct = account(config, req.user);
    let cwd_c = working_dir_c(req.cwd.as_deref(), &acct.home)?;

    let mut cmd = command(config, &acct, &req.argv);
    cmd.envs(request_env(config, &req.env))
        .stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0)
        .kill_on_drop(false);
    child::prepare(&mut cmd, acct.creds, cwd_c, false);

    let child = cmd.spawn().map_err(|e| {
        AgentError::Invalid(format!("cannot start {program:?}: {}", describe_io(&e)))
    })?;
    let pid = child
        .id()
        .ok_or_else(|| AgentError::Internal("spawned child has no pid".into()))?;
    let tracked = registry.track(ProcessInfo {
        pid,
        argv: req.argv.clone(),
        user: req.user,
        started_at: OffsetDateTime::now_utc(),
        background,
    });
    tracing::info!(pid, argv0 = %program, user = acct.name, background, "command started");
    Ok(Started {
        child,
        pid,
        tracked,
    })
}

/// Variables whose value in the sandbox's environment is kept in front of a
/// request's own value instead of being replaced by it: `NODE_OPTIONS`
/// carries the egress preload (`--require /run/miosa/node-egress.js`),
/// without which Node's `fetch` ignores the proxy.
const MERGED: &[&str] = &["NODE_OPTIONS"];

/// A request's variables, with the [`MERGED`] ones appended to the base
/// environment's value (unless they already contain it).
pub(super) fn request_env<'a>(
    config: &'a ExecConfig,
    env: &'a std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = (String, String)> + 'a {
    env.iter().map(move |(k, v)| {
        let base = MERGED
            .contains(&k.as_str())
            .then(|| {
                config
                    .base_env
                    .iter()
                    .find(|(bk, _)| bk.as_os_str() == k.as_str())
                    .and_then(|(_, bv)| bv.to_str())
            })
            .flatten()
            .filter(|b| !b.is_empty() && !v.contains(b));
        match base {
            Some(b) if v.trim().is_empty() => (k.clone(), b.to_owned()),
            Some(b) => (k.clone(), format!("{b} {v}")),
            None => (k.clone(), v.clone()),
        }
    })
}

/// `argv` (not empty) with the base environment of `acct`: the agent's
/// environment, `HOME`, `USER`, `LOGNAME` and a default `PATH`.
pub(super) fn command(config: &ExecConfig, acct: &Account, argv: &[String]) -> Command {
    let (program, args) = argv.split_first().map_or(("", &[][..]), |(p, a)| (p, a));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(config.base_env.iter().map(|(k, v)| (k, v)))
        .env("HOME", &acct.home)
        .env("USER", acct.name)
        .env("LOGNAME", acct.name);
    if !config.base_env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd
}

/// [`working_dir`] as a C string for the child.
pub(super) fn working_dir_c(requested: Option<&str>, home: &Path) -> Result<CString, AgentError> {
    let cwd = working_dir(requested, home)?;
    CString::new(cwd.as_os_str().as_encoded_bytes())
        .map_err(|_| AgentError::Invalid("cwd contains a NUL byte".into()))
}

/// The requested working directory (relative to the home), or the home, or
/// `/` when the home does not exist.
fn working_dir(requested: Option<&str>, home: &Path) -> Result<PathBuf, AgentError> {
    match requested {
        Some(raw) => {
            if raw.contains('\0') {
                return Err(AgentError::Invalid("cwd contains a NUL byte".into()));
            }
            let dir = super::paths::normalise(&home.join(raw));
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => Ok(dir),
                Ok(_) => Err(AgentError::Invalid(format!(
                    "cannot start in {}: Not a directory",
                    dir.display()
                ))),
                Err(e) => Err(AgentError::Invalid(format!(
                    "cannot start in {}: {}",
                    dir.display(),
                    describe_io(&e)
                ))),
            }
        }
        None if home.is_dir() => Ok(home.to_path_buf()),
        None => Ok(PathBuf::from("/")),
    }
}

/// Runs `started` to completion, streaming NDJSON event lines into `events`
/// (if any). Kills the process group on timeout or when `events` is closed.
pub(crate) async fn supervise(
    started: Started,
    stdin: Option<Vec<u8>>,
    events: Option<mpsc::Sender<Bytes>>,
    timeout: Option<Duration>,
    max_output: usize,
) {
    let Started {
        mut child,
        pid,
        tracked,
    } = started;
    let begin = Instant::now();
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            // The command may exit without reading its input: EPIPE is fine.
            let _ = pipe.write_all(&data).await;
        });
    }
    let mut pumps = Vec::new();
    if let Some(tx) = &events {
        if let Some(out) = child.stdout.take() {
            pumps.push(spawn_pump(out, ExecEvent::Stdout, tx.clone(), max_output));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(spawn_pump(err, ExecEvent::Stderr, tx.clone(), max_output));
        }
    }

    let deadline = timeout.map(|t| begin + t);
    let mut timed_out = false;
    let status = tokio::select! {
        status = child.wait() => status,
        () = sleep_until(deadline) => {
            timed_out = true;
            tracing::info!(pid, "command timed out; killing its process group");
            kill_group(pid, NixSignal::SIGKILL);
            child.wait().await
        }
        () = caller_gone(events.as_ref()) => {
            tracing::info!(pid, "caller disconnected; killing its process group");
            kill_group(pid, NixSignal::SIGKILL);
            child.wait().await
        }
    };
    drop(tracked);
    let duration_ms = u64::try_from(begin.elapsed().as_millis()).unwrap_or(u64::MAX);

    let drain_until = Instant::now() + DRAIN_GRACE;
    let mut truncated = [false, false];
    for (slot, pump) in truncated.iter_mut().zip(pumps) {
        *slot = finish_pump(pump, drain_until).await;
    }
    let status = match status {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(pid, error = %e, "waiting for command failed");
            None
        }
    };
    let info = exit_info(status, timed_out, duration_ms, truncated);
    tracing::info!(pid, exit_code = ?info.exit_code, signal = ?info.signal, timed_out, duration_ms, "command ended");
    if let Some(tx) = events {
        let _ = tx.send(event_line(ExecEvent::Exit(info))).await;
    }
}

fn exit_info(
    status: Option<ExitStatus>,
    timed_out: bool,
    duration_ms: u64,
    [stdout_truncated, stderr_truncated]: [bool; 2],
) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    ExitInfo {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        timed_out,
        duration_ms,
        stdout_truncated,
        stderr_truncated,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn caller_gone(events: Option<&mpsc::Sender<Bytes>>) {
    match events {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

/// Waits for a pump to see EOF, at most until `deadline`; returns whether it
/// truncated. A pump still blocked on a pipe held open by a leftover child is
/// aborted (its read end is closed).
async fn finish_pump(mut pump: JoinHandle<bool>, deadline: Instant) -> bool {
    match tokio::time::timeout_at(deadline, &mut pump).await {
        Ok(Ok(truncated)) => truncated,
        Ok(Err(_)) => false,
        Err(_) => {
            pump.abort();
            false
        }
    }
}

/// Reads `pipe` to EOF; forwards the first `max` bytes as events and
/// discards the rest so the writer never blocks on a full pipe.
fn spawn_pump<R>(
    mut pipe: R,
    make: fn(Bytes) -> ExecEvent,
    tx: mpsc::Sender<Bytes>,
    max: usize,
) -> JoinHandle<bool>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut kept = 0usize;
        let mut truncated = false;
        let mut forward = true;
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let take = n.min(max - kept);
            truncated |= take < n;
            if take > 0 && forward {
                kept += take;
                let line = event_line(make(Bytes::copy_from_slice(&buf[..take])));
                // The caller left: keep draining, the supervisor kills.
                forward = tx.send(line).await.is_ok();
            }
        }
        truncated
    })
}

/// One NDJSON line.
pub(crate) fn event_line(event: ExecEvent) -> Bytes {
    let mut line = serde_json::to_vec(&event).unwrap_or_else(|e| {
        // Serialising these plain structs cannot fail; keep the stream valid.
        format!(r#"{{"type":"error","message":"{e}"}}"#).into_bytes()
    });
    line.push(b'\n');
    Bytes::from(line)
}

/// Channel for event lines of one exec.
pub(crate) fn event_channel() -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    mpsc::channel(EVENT_BUFFER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cwd_falls_back_to_root() {
        let home = Path::new("/nonexistent-miosa-home");
        assert_eq!(working_dir(None, home).unwrap(), Path::new("/"));
        assert_eq!(working_dir(Some("/tmp/.."), home).unwrap(), Path::new("/"));
        let err = working_dir(Some("/nonexistent-miosa-dir"), home).unwrap_err();
        assert_eq!(err.code(), "invalid");
        assert!(
            err.message().ends_with("No such file or directory"),
            "{err}"
        );
    }

    #[test]
    fn event_lines_end_with_newline() {
        let line = event_line(ExecEvent::Start { pid: 7 });
        assert_eq!(&line[..], b"{\"type\":\"start\",\"pid\":7}\n");
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    #[test]
    fn node_options_keep_the_preload() {
        let config = ExecConfig {
            base_env: vec![(
                "NODE_OPTIONS".into(),
                "--require /run/miosa/node-egress.js".into(),
            )],
            user_home: "/home/user".into(),
        };
        let env = |pairs: &[(&str, &str)]| {
            let map = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            request_env(&config, &map).collect::<Vec<_>>()
        };
        let get =
            |v: Vec<(String, String)>, k: &str| v.into_iter().find(|(n, _)| n == k).map(|(_, v)| v);
        assert_eq!(
            get(env(&[("NODE_OPTIONS", "--title=x")]), "NODE_OPTIONS").as_deref(),
            Some("--require /run/miosa/node-egress.js --title=x")
        );
        assert_eq!(
            get(env(&[("NODE_OPTIONS", "")]), "NODE_OPTIONS").as_deref(),
            Some("--require /run/miosa/node-egress.js")
        );
        let named = "--require /run/miosa/node-egress.js --title=x";
        assert_eq!(
            get(env(&[("NODE_OPTIONS", named)]), "NODE_OPTIONS").as_deref(),
            Some(named),
            "named already: not twice"
        );
        assert_eq!(
            get(env(&[("OTHER", "v")]), "OTHER").as_deref(),
            Some("v"),
            "other variables are replaced"
        );
        // Without egress there is nothing to keep.
        let bare = ExecConfig {
            base_env: Vec::new(),
            user_home: "/home/user".into(),
        };
        let map = [("NODE_OPTIONS".to_string(), "--title=x".to_string())].into();
        assert_eq!(
            request_env(&bare, &map).collect::<Vec<_>>(),
            vec![("NODE_OPTIONS".to_string(), "--title=x".to_string())]
        );
    }
}

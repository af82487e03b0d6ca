//! Interactive terminal sessions: a program on a new pseudo-terminal,
//! bridged to a WebSocket (protocol in [`crate::protocol`]'s `PtyControl`).
//!
//! The program is a session leader with the terminal as controlling tty, as
//! `user` or `root` like any command (see `child`), listed in the registry.
//! It exiting ends the session with an `exit` message; the client leaving
//! hangs it up: SIGHUP to its process group, then SIGKILL to the group and
//! to whatever else is left in its session (background jobs).

mod bridge;

use std::{
    os::fd::OwnedFd,
    path::Path,
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::{stream::SplitSink, SinkExt, StreamExt};
use nix::{
    sys::{
        signal::Signal as NixSignal,
        wait::{waitid, Id, WaitPidFlag, WaitStatus},
    },
    unistd::{fchown, Pid, Uid},
};
use time::OffsetDateTime;
use tokio::{process::Child, task::JoinHandle, time::Instant};

use super::{
    child,
    exec::{self, ExecConfig},
    processes::{kill_group, kill_session, Registry, Tracked},
    tty,
};
use crate::{error::describe_io, AgentError, ProcessInfo, PtyControl, PtyRequest};

const READ_CHUNK: usize = 64 * 1024;
/// How long output may keep flowing after the program exited.
const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// How long a hung-up program may take to exit before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for the client to answer the closing handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
const TERM: &str = "xterm-256color";
const LOGIN_SHELL: &str = "/bin/bash";
const PLAIN_SHELL: &str = "/bin/sh";

type Sink = SplitSink<WebSocket, Message>;

/// A program started on a terminal, waiting for its WebSocket.
pub(crate) struct Session {
    child: Child,
    pid: u32,
    master: Arc<bridge::Master>,
    tracked: Option<Tracked>,
    reaped: bool,
}

impl Drop for Session {
    /// A session dropped before its program was reaped (the upgrade never
    /// happened) takes the program down with it.
    fn drop(&mut self) {
        if !self.reaped {
            kill_group(self.pid, NixSignal::SIGKILL);
        }
    }
}

/// The program of a session: `cmd` through `/bin/sh -c`, else a login shell.
fn argv(cmd: Option<&str>) -> Vec<String> {
    match cmd {
        Some(c) => vec![PLAIN_SHELL.into(), "-c".into(), c.into()],
        None if Path::new(LOGIN_SHELL).exists() => vec![LOGIN_SHELL.into(), "-l".into()],
        None => vec![PLAIN_SHELL.into()],
    }
}

/// Opens a terminal and starts the program on it.
pub(crate) fn start(
    config: &ExecConfig,
    registry: &Arc<Registry>,
    req: &PtyRequest,
) -> Result<Session, AgentError> {
    req.validate()?;
    let acct = exec::account(config, req.user);
    let cwd = exec::working_dir_c(req.cwd.as_deref(), &acct.home)?;
    let argv = argv(req.cmd.as_deref());
    let internal = |what: &str, e: std::io::Error| {
        AgentError::Internal(format!("{what}: {}", describe_io(&e)))
    };
    let pair = tty::open_pair(req.cols, req.rows).map_err(|e| internal("opening a terminal", e))?;
    if let Some(c) = acct.creds {
        // The terminal belongs to its user, as after a login (best effort).
        let _ = fchown(&pair.slave, Some(Uid::from_raw(c.uid)), None);
    }
    let stdio = |slave: &OwnedFd| {
        slave
            .try_clone()
            .map(Stdio::from)
            .map_err(|e| internal("duplicating the terminal", e))
    };
    let master = tty::watch(pair.master).map_err(|e| internal("watching the terminal", e))?;

    let mut cmd = exec::command(config, &acct, &argv);
    cmd.envs(exec::request_env(config, &req.env))
        .env("TERM", TERM)
        .stdin(stdio(&pair.slave)?)
        .stdout(stdio(&pair.slave)?)
        .stderr(stdio(&pair.slave)?)
        .kill_on_drop(false);
    child::prepare(&mut cmd, acct.creds, cwd, true);
    let spawned = cmd.spawn();
    // The program holds the only copies of the terminal's slave side now, so
    // the master reads EIO once it and its children are gone.
    drop(cmd);
    drop(pair.slave);
    let child = spawned.map_err(|e| {
        AgentError::Invalid(format!("cannot start {:?}: {}", argv[0], describe_io(&e)))
    })?;
    let pid = child
        .id()
        .ok_or_else(|| AgentError::Internal("spawned child has no pid".into()))?;
    tracing::info!(pid, argv0 = %argv[0], user = acct.name, cols = req.cols, rows = req.rows, "terminal session started");
    let tracked = registry.track(ProcessInfo {
        pid,
        argv,
        user: req.user,
        started_at: OffsetDateTime::now_utc(),
        background: false,
    });
    Ok(Session {
        child,
        pid,
        master: Arc::new(master),
        tracked: Some(tracked),
        reaped: false,
    })
}

impl Session {
    /// Bridges the terminal and `socket` until the program exits or the
    /// client leaves.
    pub(crate) async fn serve(mut self, socket: WebSocket) {
        let (mut sink, client) = socket.split();
        let mut input = tokio::spawn(bridge::pump_input(client, Arc::clone(&self.master)));
        let mut gone = send_control(&mut sink, PtyControl::Start { pid: self.pid })
            .await
            .is_err();
        let mut output_open = true;
        let mut buf = vec![0u8; READ_CHUNK];
        let status = loop {
            if gone {
                break None;
            }
            tokio::select! {
                status = self.child.wait() => break Some(status),
                _ = &mut input => gone = true,
                read = bridge::read(&self.master, &mut buf), if output_open => match read {
                    Ok(n) if n > 0 => gone = send_output(&mut sink, &buf[..n]).await.is_err(),
                    // EIO: nothing holds the terminal any more.
                    _ => output_open = false,
                },
            }
        };
        match status {
            Some(status) => self.finish(status, output_open, sink, &mut input).await,
            None => self.hang_up().await,
        }
        input.abort();
    }

    /// The program exited: the rest of its output, the exit message, close.
    async fn finish(
        &mut self,
        status: std::io::Result<ExitStatus>,
        output_open: bool,
        mut sink: Sink,
        input: &mut JoinHandle<()>,
    ) {
        self.reaped();
        if output_open && drain(&self.master, &mut sink).await.is_err() {
            return;
        }
        let (exit_code, signal) = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                (s.code(), s.signal())
            }
            Err(e) => {
                tracing::error!(pid = self.pid, error = %e, "waiting for the terminal program failed");
                (None, None)
            }
        };
        tracing::info!(pid = self.pid, exit_code, signal, "terminal session ended");
        if send_control(&mut sink, PtyControl::Exit { exit_code, signal })
            .await
            .is_ok()
        {
            let close = CloseFrame {
                code: 1000,
                reason: "exited".into(),
            };
            if sink.send(Message::Close(Some(close))).await.is_ok() {
                // The client's answer ends the input pump.
                let _ = tokio::time::timeout(CLOSE_GRACE, input).await;
            }
        }
    }

    /// The client left: SIGHUP, a grace period, SIGKILL, then reap.
    async fn hang_up(&mut self) {
        tracing::info!(pid = self.pid, "terminal client left; hanging up");
        kill_group(self.pid, NixSignal::SIGHUP);
        let _ = tokio::time::timeout(HANGUP_GRACE, exited(self.pid)).await;
        // Not reaped yet, so the group and session ids cannot have been
        // reused. Jobs in groups of their own go with the session.
        kill_group(self.pid, NixSignal::SIGKILL);
        kill_session(self.pid, NixSignal::SIGKILL);
        if let Err(e) = self.child.wait().await {
            tracing::error!(pid = self.pid, error = %e, "waiting for the terminal program failed");
        }
        self.reaped();
    }

    fn reaped(&mut self) {
        self.reaped = true;
        self.tracked = None;
    }
}

/// Forwards what is left of the output: until EIO (every holder closed the
/// terminal) or the grace period ends.
async fn drain(master: &bridge::Master, sink: &mut Sink) -> Result<(), axum::Error> {
    let until = Instant::now() + DRAIN_GRACE;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match tokio::time::timeout_at(until, bridge::read(master, &mut buf)).await {
            Ok(Ok(n)) if n > 0 => send_output(sink, &buf[..n]).await?,
            _ => return Ok(()),
        }
    }
}

/// Resolves once `pid` (our child) has exited, without reaping it.
async fn exited(pid: u32) {
    let Some(pid) = i32::try_from(pid).ok().map(Pid::from_raw) else {
        return;
    };
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    while let Ok(WaitStatus::StillAlive) = waitid(Id::Pid(pid), flags) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_output(sink: &mut Sink, data: &[u8]) -> Result<(), axum::Error> {
    sink.send(Message::Binary(Bytes::copy_from_slice(data)))
        .await
}

async fn send_control(sink: &mut Sink, control: PtyControl) -> Result<(), axum::Error> {
    sink.send(Message::Text(control.to_json().into())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_program_is_a_login_shell() {
        let shell = argv(None);
        if Path::new(LOGIN_SHELL).exists() {
            assert_eq!(shell, ["/bin/bash", "-l"]);
        } else {
            assert_eq!(shell, ["/bin/sh"]);
        }
        assert_eq!(argv(Some("top")), ["/bin/sh", "-c", "top"]);
    }
}

//! The agent as PID 1 of its sandbox: a tiny init that starts the real server
//! as its child, reaps every orphan that reparents to it, forwards
//! termination signals to the server, and exits with the server's status.
//!
//! Keeping reaping here, in a single-threaded process, leaves tokio's own
//! child handling in the server untouched: `waitpid(-1)` there would steal
//! the exit statuses of commands it supervises.

use std::{path::Path, process::ExitCode};

use nix::{
    errno::Errno,
    sys::{
        signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

use crate::server::CHILD_MARKER;

/// Signals the init waits for synchronously; all but SIGCHLD are forwarded.
const HANDLED: [Signal; 5] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

pub(crate) fn run(socket: &Path) -> ExitCode {
    let mut set = SigSet::empty();
    for sig in HANDLED {
        set.add(sig);
    }
    // Blocked before the server starts so no signal is lost in between; the
    // server inherits the mask and clears it first thing.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        tracing::error!(error = %e, "init: cannot block signals");
        return ExitCode::FAILURE;
    }
    let server = match spawn_server() {
        Ok(pid) => pid,
        Err(e) => {
            tracing::error!(error = %e, socket = %socket.display(), "init: cannot start the agent server");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(server = server.as_raw(), "init: agent server started");
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(server) {
                    tracing::info!(code, "init: agent server exited");
                    return ExitCode::from(code);
                }
            }
            Ok(sig) => {
                tracing::info!(signal = %sig, "init: forwarding to the agent server");
                let _ = kill(server, sig);
            }
            Err(e) => {
                tracing::error!(error = %e, "init: sigwait failed");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Runs this executable again, with the same arguments, as the server.
fn spawn_server() -> std::io::Result<Pid> {
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_MARKER, "1")
        .spawn()?;
    // The child is reaped by `reap`, not through the handle.
    i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|_| std::io::Error::other("child pid out of range"))
}

/// Reaps every exited child; returns the server's exit code once it is among
/// them (128 + signal when it was killed).
fn reap(server: Pid) -> Option<u8> {
    let mut server_code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => {
                server_code = Some(u8::try_from(code).unwrap_or(1));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == server => {
                server_code = Some(128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(0)));
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return server_code,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(error = %e, "init: waitpid failed");
                return server_code;
            }
        }
    }
}

//! What a command's process does between `fork` and `exec`.
//!
//! This is the agent's only `unsafe`: `pre_exec` is needed because the OOM
//! score must be raised while still root (writing it as the target user fails
//! once `setuid` made the process non-dumpable, and only a privileged write
//! also raises the floor the user could lower it back to), and the working
//! directory is entered after dropping privileges so the user's permissions
//! apply. Terminal sessions also become session leaders and take their
//! terminal (already on fd 0) as controlling tty, which only the child
//! itself can do.

use std::ffi::CString;

use nix::{
    fcntl::{open, OFlag},
    libc,
    sys::signal::{sigprocmask, SigSet, SigmaskHow},
    sys::stat::Mode,
    unistd::{chdir, setgid, setgroups, setsid, setuid, write, Gid, Uid},
};

/// `oom_score_adj` of user processes: the kernel's OOM killer picks them long
/// before the agent (which the runtime gives -998).
const OOM_SCORE_ADJ: &[u8] = b"500";

/// Target credentials; `None` keeps root.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

/// Arranges for the child to raise its OOM score, drop to `creds` with no
/// supplementary groups, and enter `cwd`. With `terminal`, it first starts a
/// new session (so it must not be put in a process group beforehand) and
/// makes its standard input, a terminal, the controlling tty.
pub(crate) fn prepare(
    cmd: &mut tokio::process::Command,
    creds: Option<Credentials>,
    cwd: CString,
    terminal: bool,
) {
    let setup = move || -> std::io::Result<()> {
        // Commands start with no blocked signals whatever the agent's threads
        // had blocked.
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        if terminal {
            setsid()?;
            // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal
            // the tty from another session) and touches no memory of ours;
            // fd 0 is the terminal the parent set up as standard input.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // Best effort: /proc may be missing; the command must still run.
        if let Ok(fd) = open(
            c"/proc/self/oom_score_adj",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            let _ = write(&fd, OOM_SCORE_ADJ);
        }
        if let Some(c) = creds {
            setgroups(&[])?;
            setgid(Gid::from_raw(c.gid))?;
            setuid(Uid::from_raw(c.uid))?;
        }
        chdir(cwd.as_c_str())?;
        Ok(())
    };
    // SAFETY: the closure runs in the child after `fork` and before `exec`,
    // where only async-signal-safe operations are allowed. It performs plain
    // system calls (open, write, close, setgroups, setgid, setuid, chdir) on
    // data allocated before the fork (`cwd`, static strings), plus setsid
    // and an ioctl for terminals; it allocates nothing, takes no locks, and
    // converts errors to `io::Error` from a raw errno, which does not
    // allocate either.
    unsafe {
        cmd.pre_exec(setup);
    }
}

//! Commands started through the agent that are still running, and signals.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
};

use nix::{
    errno::Errno,
    sys::signal::{self, Signal as NixSignal},
    unistd::Pid,
};

use crate::{AgentError, ProcessInfo, Signal};

/// Running commands by pid. Entries are removed by their [`Tracked`] guard
/// right after the process is reaped, so a pid here is never a reused one.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<u32, (u64, ProcessInfo)>>,
    next_id: AtomicU64,
}

/// Keeps a process listed until dropped.
pub(crate) struct Tracked {
    registry: Arc<Registry>,
    pid: u32,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let mut entries = self.registry.lock();
        if entries.get(&self.pid).is_some_and(|(id, _)| *id == self.id) {
            entries.remove(&self.pid);
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, (u64, ProcessInfo)>> {
        // A panic while holding this lock leaves the map consistent (single
        // insert/remove calls), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn track(self: &Arc<Self>, info: ProcessInfo) -> Tracked {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pid = info.pid;
        self.lock().insert(pid, (id, info));
        Tracked {
            registry: Arc::clone(self),
            pid,
            id,
        }
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<_> = self.lock().values().map(|(_, p)| p.clone()).collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    fn contains(&self, pid: u32) -> bool {
        self.lock().contains_key(&pid)
    }

    /// SIGKILLs every tracked process group (agent shutdown).
    pub fn kill_all(&self) {
        let pids: Vec<u32> = self.lock().keys().copied().collect();
        for pid in pids {
            kill_group(pid, NixSignal::SIGKILL);
        }
    }

    /// Sends `sig` to `pid`: to its whole process group when the agent started
    /// it (so a shell's children go too), else to that process only.
    pub fn kill(&self, pid: u32, sig: Signal) -> Result<(), AgentError> {
        let target = to_pid(pid).ok_or_else(|| not_running(pid))?;
        if is_agent(pid) {
            return Err(AgentError::Forbidden(format!(
                "pid {pid} is the sandbox agent"
            )));
        }
        let sig = NixSignal::try_from(sig.number())
            .map_err(|_| AgentError::Invalid(format!("unsupported signal {sig}")))?;
        let result = if self.contains(pid) {
            signal::killpg(target, sig).or_else(|_| signal::kill(target, sig))
        } else {
            signal::kill(target, sig)
        };
        match result {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(not_running(pid)),
            Err(Errno::EPERM) => Err(AgentError::Forbidden(format!(
                "not permitted to signal pid {pid}"
            ))),
            Err(e) => Err(AgentError::Internal(format!("kill {pid}: {}", e.desc()))),
        }
    }
}

/// SIGKILL or another signal to the group led by `pid`; a group that is
/// already gone is not an error.
pub(crate) fn kill_group(pid: u32, sig: NixSignal) {
    if let Some(pgid) = to_pid(pid) {
        let _ = signal::killpg(pgid, sig);
    }
}

/// Sends `sig` to every process in the session led by `sid`, whatever its
/// process group: a terminal's background jobs have groups of their own,
/// and a shell killed before it passed its hang-up on leaves them behind.
pub(crate) fn kill_session(sid: u32, sig: NixSignal) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if session_of(&stat) == Some(sid) {
            if let Some(p) = to_pid(pid) {
                let _ = signal::kill(p, sig);
            }
        }
    }
}

/// The session id in a `/proc/<pid>/stat` line: the fourth field after the
/// command name, which is parenthesised and may itself hold spaces or `)`.
fn session_of(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(3)?.parse().ok()
}

fn to_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .map(Pid::from_raw)
}

/// PID 1 (the init, or the agent itself), the agent, its parent, or one of
/// the agent's threads (signalling a thread id hits the whole agent).
fn is_agent(pid: u32) -> bool {
    pid == 1
        || pid == std::process::id()
        || i32::try_from(pid).is_ok_and(|p| p == nix::unistd::getppid().as_raw())
        || std::path::Path::new("/proc/self/task")
            .join(pid.to_string())
            .exists()
}

fn not_running(pid: u32) -> AgentError {
    AgentError::NotFound(format!("no process with pid {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_agent_and_unknown_pids() {
        let reg = Arc::new(Registry::default());
        let me = std::process::id();
        assert_eq!(reg.kill(1, Signal::KILL).unwrap_err().code(), "forbidden");
        assert_eq!(reg.kill(me, Signal::KILL).unwrap_err().code(), "forbidden");
        assert_eq!(reg.kill(0, Signal::KILL).unwrap_err().code(), "not_found");
        assert_eq!(
            reg.kill(i32::MAX as u32, Signal::TERM).unwrap_err().code(),
            "not_found"
        );
    }

    #[test]
    fn the_session_comes_after_the_command_name() {
        assert_eq!(session_of("7 (sh) S 1 7 7 34816 7 4194560 0"), Some(7));
        assert_eq!(session_of("9 (a) b) (c) R 7 9 7 0 -1 0"), Some(7));
        assert_eq!(session_of("9 (truncated"), None);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(
            session_of(&me),
            Some(nix::unistd::getsid(None).unwrap().as_raw() as u32)
        );
    }

    #[test]
    fn guard_removes_only_its_own_entry() {
        let reg = Arc::new(Registry::default());
        let info = |pid| ProcessInfo {
            pid,
            argv: vec!["x".into()],
            user: crate::RunAs::User,
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            background: false,
        };
        let old = reg.track(info(42));
        let new = reg.track(info(42));
        drop(old);
        assert_eq!(reg.list().len(), 1);
        drop(new);
        assert!(reg.list().is_empty());
    }
}

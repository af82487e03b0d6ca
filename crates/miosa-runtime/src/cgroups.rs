//! The host side of the sandboxes' cgroups: where they are, reading usage,
//! thawing before a kill, and removing what runc leaves behind.
//!
//! runc creates `<hierarchy>/miosa/<id>` in every mounted hierarchy (each v1
//! controller, named ones such as `name=systemd`, and the v2 mount).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bundle::cgroups_path;
use crate::error::{io_err, Result, RuntimeError};
use crate::mountinfo::{self, MountEntry};

/// Resource use of one sandbox, read from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Memory charged to the sandbox, page cache included.
    pub memory_bytes: u64,
    /// Memory minus inactive file cache (what `docker stats` shows).
    pub memory_working_set_bytes: u64,
    /// CPU time consumed, in nanoseconds.
    pub cpu_ns: u64,
    /// Tasks (processes and threads) in the sandbox.
    pub pids: u64,
}

/// The cgroup hierarchies mounted on this host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cgroups {
    /// Every hierarchy's mount point (cleanup visits all of them).
    hierarchies: Vec<PathBuf>,
    memory: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
    freezer: Option<PathBuf>,
    /// The cgroup v2 mount, if any.
    unified: Option<PathBuf>,
}

impl Cgroups {
    /// Finds the hierarchies in our mount table.
    pub(crate) fn discover() -> Result<Self> {
        Ok(Self::from_mounts(&mountinfo::read()?))
    }

    pub(crate) fn from_mounts(entries: &[MountEntry]) -> Self {
        let mut found = Self::default();
        for e in entries {
            match e.fs_type.as_str() {
                "cgroup" => {
                    let has = |ctrl: &str| e.super_options.split(',').any(|o| o == ctrl);
                    for (ctrl, slot) in [
                        ("memory", &mut found.memory),
                        ("cpuacct", &mut found.cpuacct),
                        ("pids", &mut found.pids),
                        ("freezer", &mut found.freezer),
                    ] {
                        if has(ctrl) && slot.is_none() {
                            *slot = Some(e.mount_point.clone());
                        }
                    }
                }
                "cgroup2" => {
                    if found.unified.is_none() {
                        found.unified = Some(e.mount_point.clone());
                    }
                }
                _ => continue,
            }
            if !found.hierarchies.contains(&e.mount_point) {
                found.hierarchies.push(e.mount_point.clone());
            }
        }
        found
    }

    /// Whether this host has the v1 memory controller with swap accounting.
    pub(crate) fn swap_accounting(&self) -> bool {
        self.memory
            .as_ref()
            .is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists())
    }

    /// A v1 controller's directory for sandbox `id`, or the v2 one without v1.
    fn dir(&self, controller: Option<&PathBuf>, id: &str) -> Option<PathBuf> {
        controller
            .or(self.unified.as_ref())
            .map(|root| sandbox_dir(root, id))
    }

    #[cfg(test)]
    fn memory_dir(&self, id: &str) -> Option<PathBuf> {
        self.dir(self.memory.as_ref(), id)
    }

    /// Every directory of this sandbox that exists in any hierarchy.
    pub(crate) fn existing_dirs(&self, id: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|root| sandbox_dir(root, id))
            .filter(|dir| dir.exists())
            .collect()
    }

    /// Whether any task is still in the sandbox's cgroup.
    pub(crate) fn has_tasks(&self, id: &str) -> bool {
        let Some(dir) = self.dir(self.pids.as_ref(), id) else {
            return false;
        };
        match fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(procs) => !procs.trim().is_empty(),
            Err(_) => false,
        }
    }

    /// Thaws a frozen (paused) sandbox so a pending SIGKILL takes effect.
    pub(crate) fn thaw(&self, id: &str) {
        if let Some(freezer) = &self.freezer {
            let state = sandbox_dir(freezer, id).join("freezer.state");
            // Absent file: not a v1 freezer cgroup (anymore); nothing to thaw.
            let _ = fs::write(state, "THAWED");
        }
    }

    /// Removes the sandbox's directories in every hierarchy. A directory is
    /// busy for a moment after its last task died, so retry briefly.
    pub(crate) async fn remove(&self, id: &str) -> Result<()> {
        let mut attempts = 0u32;
        loop {
            let mut busy = Vec::new();
            for dir in self.existing_dirs(id) {
                match fs::remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => busy.push(format!("{}: {e}", dir.display())),
                }
            }
            if busy.is_empty() {
                return Ok(());
            }
            attempts += 1;
            if attempts >= 200 {
                return Err(RuntimeError::Teardown {
                    id: id.to_string(),
                    reason: format!("cgroup directories remain: {}", busy.join("; ")),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads the sandbox's resource use.
    pub(crate) fn usage(&self, id: &str) -> Result<Option<Usage>> {
        let Some(memory_dir) = self.dir(self.memory.as_ref(), id) else {
            return Ok(None);
        };
        if !memory_dir.exists() {
            return Ok(None);
        }
        if self.memory.is_some() {
            let memory_bytes = read_u64(&memory_dir.join("memory.usage_in_bytes"))?;
            let stat = read(&memory_dir.join("memory.stat"))?;
            let inactive = stat_value(&stat, "total_inactive_file").unwrap_or(0);
            let cpu_ns = match self.dir(self.cpuacct.as_ref(), id) {
                Some(dir) => read_u64(&dir.join("cpuacct.usage"))?,
                None => 0,
            };
            let pids = match self.dir(self.pids.as_ref(), id) {
                Some(dir) => read_u64(&dir.join("pids.current"))?,
                None => 0,
            };
            return Ok(Some(Usage {
                memory_bytes,
                memory_working_set_bytes: memory_bytes.saturating_sub(inactive),
                cpu_ns,
                pids,
            }));
        }
        // cgroup v2 only.
        let memory_bytes = read_u64(&memory_dir.join("memory.current"))?;
        let stat = read(&memory_dir.join("memory.stat"))?;
        let inactive = stat_value(&stat, "inactive_file").unwrap_or(0);
        let cpu = read(&memory_dir.join("cpu.stat"))?;
        Ok(Some(Usage {
            memory_bytes,
            memory_working_set_bytes: memory_bytes.saturating_sub(inactive),
            cpu_ns: stat_value(&cpu, "usage_usec")
                .unwrap_or(0)
                .saturating_mul(1000),
            pids: read_u64(&memory_dir.join("pids.current")).unwrap_or(0),
        }))
    }
}

/// `<hierarchy>/miosa/<id>`: runc joins an absolute cgroupsPath to the mount point.
fn sandbox_dir(root: &Path, id: &str) -> PathBuf {
    root.join(cgroups_path(id).trim_start_matches('/'))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io_err(|| format!("reading {}", path.display())))
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| {
        RuntimeError::io(
            format!("parsing {}", path.display()),
            std::io::Error::new(ErrorKind::InvalidData, format!("not a number: {text:?}")),
        )
    })
}

/// A `key value` line of a cgroup stat file.
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_every_hierarchy_of_a_hybrid_host() {
        let c = Cgroups::from_mounts(&mountinfo::parse(HYBRID));
        assert_eq!(c.hierarchies.len(), 7);
        assert_eq!(
            c.memory_dir("sbx_1").unwrap(),
            Path::new("/sys/fs/cgroup/memory/miosa/sbx_1")
        );
        assert_eq!(
            c.freezer.as_deref(),
            Some(Path::new("/sys/fs/cgroup/freezer"))
        );
        assert_eq!(
            c.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn comounted_controllers_share_a_hierarchy() {
        let c = Cgroups::from_mounts(&mountinfo::parse(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        ));
        assert_eq!(c.hierarchies.len(), 1);
        assert_eq!(
            c.cpuacct.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
    }

    #[test]
    fn reads_stat_values() {
        let stat = "cache 10\ntotal_inactive_file 4096\ntotal_rss 5\n";
        assert_eq!(stat_value(stat, "total_inactive_file"), Some(4096));
        assert_eq!(stat_value(stat, "inactive_file"), None);
    }
}

//! Where the runtime keeps things under the data dir.
//!
//! ```text
//! <data_dir>/runc/                     runc --root (container state)
//! <data_dir>/templates/default         -> default-<fingerprint> (symlink, swapped atomically)
//! <data_dir>/templates/default-<fp>/   VERSION, rootfs/ (the read-only skeleton)
//! <data_dir>/disks/<id>.img            the sandbox's disk (sparse ext4 image, see `disk`)
//! <data_dir>/sandboxes/<id>/           0700, the OCI bundle, the disk's mount point:
//!     config.json                      the generated OCI spec
//!     rootfs/                          overlay mount point (lower = template, upper, work)
//!     upper/ work/                     the sandbox's writable layer
//!     run/                             0711, bind-mounted to /run/miosa (enter, not list or create):
//!         agent.sock                   bound by the agent (0600)
//!         egress.sock                  bound by the host's egress proxy; the agent bridges 127.0.0.1:3128 to it
//!         egress-ca.pem                0644, the proxy's CA (egress only)
//!         ca-bundle.pem                0644, host bundle + CA, bound read-only over
//!                                      /etc/ssl/certs/ca-certificates.crt (egress only)
//!     agent.sock                       hard link to run/agent.sock, out of the sandbox's reach
//!     egress.sock.new                  where the egress socket is bound before being renamed into run/
//!     container.log                    runc's and the agent's stdout/stderr (append-only,
//!                                      trimmed past 1 MiB into container.log.1)
//!     init.pid                         host PID of the agent
//! ```

use std::path::{Path, PathBuf};

/// Unix socket paths (`sun_path`) hold at most 107 bytes plus the NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// File name of the agent socket in a sandbox's `run/` dir.
pub(crate) const AGENT_SOCKET: &str = "agent.sock";
/// File name of the egress proxy's socket in a sandbox's `run/` dir.
pub(crate) const EGRESS_SOCKET: &str = "egress.sock";
/// File name of the egress CA (alone) in a sandbox's `run/` dir.
pub(crate) const EGRESS_CA: &str = "egress-ca.pem";
/// File name of the trust bundle (host bundle + egress CA) in `run/`.
pub(crate) const CA_BUNDLE: &str = "ca-bundle.pem";
/// Mode of `run/`: root inside the sandbox binds sockets there; anyone may
/// open a known name (the CA), no one else may list it or create files.
pub(crate) const RUN_DIR_MODE: u32 = 0o711;

/// Paths derived from the data dir.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    sandboxes: PathBuf,
    disks: PathBuf,
    templates: PathBuf,
    runc_root: PathBuf,
}

impl Layout {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self {
            sandboxes: data_dir.join("sandboxes"),
            disks: data_dir.join("disks"),
            templates: data_dir.join("templates"),
            runc_root: data_dir.join("runc"),
        }
    }

    pub(crate) fn sandboxes(&self) -> &Path {
        &self.sandboxes
    }

    pub(crate) fn disks(&self) -> &Path {
        &self.disks
    }

    pub(crate) fn templates(&self) -> &Path {
        &self.templates
    }

    pub(crate) fn runc_root(&self) -> &Path {
        &self.runc_root
    }

    /// The sandbox's directory, which is also its OCI bundle. `id` must be validated.
    pub(crate) fn sandbox(&self, id: &str) -> SandboxPaths {
        SandboxPaths {
            dir: self.sandboxes.join(id),
            disk_image: self.disks.join(format!("{id}.img")),
        }
    }
}

/// The paths of one sandbox.
#[derive(Debug, Clone)]
pub(crate) struct SandboxPaths {
    pub(crate) dir: PathBuf,
    /// The image of the disk mounted on `dir` (absent for sandboxes made
    /// before disks were).
    pub(crate) disk_image: PathBuf,
}

impl SandboxPaths {
    pub(crate) fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub(crate) fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub(crate) fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub(crate) fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub(crate) fn run(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Where the agent binds its socket (writable from inside the sandbox).
    pub(crate) fn bound_socket(&self) -> PathBuf {
        self.run().join(AGENT_SOCKET)
    }
    /// The host's handle on the agent socket: a hard link to the bound socket
    /// in a directory the sandbox cannot see, so code inside cannot swap it
    /// for a symlink to some other host socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join(AGENT_SOCKET)
    }
    /// Where the host's egress proxy binds its socket for this sandbox.
    pub(crate) fn egress_socket(&self) -> PathBuf {
        self.run().join(EGRESS_SOCKET)
    }
    pub(crate) fn egress_ca(&self) -> PathBuf {
        self.run().join(EGRESS_CA)
    }
    pub(crate) fn ca_bundle(&self) -> PathBuf {
        self.run().join(CA_BUNDLE)
    }
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// The log's previous part, kept when it is trimmed.
    pub(crate) fn old_log(&self) -> PathBuf {
        self.dir.join("container.log.1")
    }
    pub(crate) fn pid_file(&self) -> PathBuf {
        self.dir.join("init.pid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_live_under_the_sandbox_dir() {
        let layout = Layout::new(Path::new("/var/lib/miosa"));
        let p = layout.sandbox("sbx_1");
        assert_eq!(p.dir, Path::new("/var/lib/miosa/sandboxes/sbx_1"));
        assert_eq!(
            p.bound_socket(),
            Path::new("/var/lib/miosa/sandboxes/sbx_1/run/agent.sock")
        );
        assert_eq!(
            p.socket(),
            Path::new("/var/lib/miosa/sandboxes/sbx_1/agent.sock")
        );
        assert_eq!(
            p.egress_socket(),
            Path::new("/var/lib/miosa/sandboxes/sbx_1/run/egress.sock")
        );
        assert_eq!(layout.runc_root(), Path::new("/var/lib/miosa/runc"));
        assert_eq!(p.disk_image, Path::new("/var/lib/miosa/disks/sbx_1.img"));
    }
}

//! Sandbox lifecycle on the host.
//!
//! One sandbox is one OCI container run by `runc` (see `DESIGN.md`,
//! "Sandboxes"): its own user, PID, mount, IPC, UTS and network namespaces (the
//! network namespace has only `lo`), cgroup limits on memory, CPU and tasks,
//! a reduced capability set, a seccomp deny-list ([`seccomp`]), and a root
//! file system that is an overlay of a per-sandbox writable layer on a small
//! read-only template skeleton, with the host's `/usr` bind-mounted read-only.
//! Inside runs the Miosa agent, reachable on a Unix socket in the sandbox's
//! directory ([`Runtime::agent_socket`]). The agent binds it in `/run/miosa`,
//! which root inside the sandbox can rewrite; the host uses a hard link to it
//! made at create time in a directory the sandbox cannot see, so a symlink
//! planted in `/run/miosa` cannot redirect the host to another host socket.
//!
//! Egress: the host's egress proxy binds a per-sandbox socket in the same
//! directory ([`Runtime::egress_socket`]), which the agent bridges to
//! `127.0.0.1:3128` inside. A sandbox created with
//! [`SandboxSpec::egress_ca_pem`] gets the proxy variables and the proxy's
//! CA in its trust bundle (`egress`); [`Runtime::replace_egress_ca`]
//! rewrites it in place.
//!
//! User namespace: each sandbox's ids 0–65535 map to a range of host ids
//! of its own (`idmap`) that owns nothing on the host but the sandbox's
//! files: its writable layer starts as a copy of the skeleton under those
//! ids (`seed`), and its directory, `run/` and egress socket are opened to
//! its root alone.
//!
//! Disk: each sandbox's directory is the mount point of its own ext4 disk
//! of [`SandboxSpec::disk_mb`] (`disk`), which holds everything the sandbox
//! can make grow: its writable layer, `/run/miosa` and the agent's log
//! (`logs`, trimmed past 1 MiB). A full disk is `ENOSPC` inside, nothing
//! outside.
//!
//! Modules: [`config`] (what callers pass), `layout` (paths under the data
//! dir), `disk` (the sandbox's disk), `logs` (the container log), `idmap`
//! and `seed` (the user namespace),
//! `template` (the skeleton), `bundle` (the OCI `config.json`),
//! `egress` (the proxy environment and CA files),
//! `overlay` (the root mount), `runc` (the command line), `cgroups` (usage
//! and cleanup), `ready` (waiting for the agent), `runtime` (the lifecycle)
//! and `reconcile` (listing and removing orphans after a restart).
//!
//! Requires root, `runc` ≥ 1.1, overlayfs on the data dir's file system,
//! loop devices and `mkfs.ext4`.
//!
//! Known limits:
//! - Without `CAP_SYS_RESOURCE` (some container hosts) the agent gets no OOM
//!   protection and the file limit is capped at ours.
//! - The sandbox can read the host paths of its own overlay layers in
//!   `/proc/self/mountinfo` (not their contents).

#![forbid(unsafe_code)]

mod bundle;
mod cgroups;
pub mod config;
mod disk;
mod egress;
mod error;
mod idmap;
mod layout;
mod logs;
mod mountinfo;
mod overlay;
mod ready;
mod reconcile;
mod runc;
mod runtime;
pub mod seccomp;
mod seed;
mod template;

pub use cgroups::Usage;
pub use config::{RuntimeConfig, SandboxSpec};
pub use error::{Result, RuntimeError};
pub use runc::ContainerState;
pub use runtime::Runtime;

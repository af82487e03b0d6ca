//! The OCI runtime spec (`config.json`) of a sandbox.
//!
//! Everything that is the same for every sandbox is built once into a
//! [`BaseSpec`]; [`BaseSpec::render`] fills in the per-sandbox fields and
//! serialises. Only the fields we set are modelled.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{SandboxSpec, CPU_PERIOD_US};
use crate::egress::{self, SYSTEM_CA_BUNDLE};
use crate::error::{Result, RuntimeError};
use crate::idmap::{IdMapping, IdRange};
use crate::layout::CA_BUNDLE;
use crate::seccomp::{self, Seccomp};

/// Where the agent binary appears inside the sandbox.
pub(crate) const AGENT_PATH: &str = "/opt/miosa/miosa";
/// Where the per-sandbox run dir (holding the agent socket) appears inside.
pub(crate) const RUN_DIR: &str = "/run/miosa";
/// The host's public certificates, bound read-only into every sandbox.
const CERTS_DIR: &str = "/etc/ssl/certs";

/// Open files per process in the sandbox (soft and hard).
const NOFILE_LIMIT: u64 = 65_536;

/// `oom_score_adj` of the agent.
pub(crate) const AGENT_OOM_SCORE_ADJ: i32 = -998;

/// Docker's default capabilities minus `NET_RAW` and `MKNOD`.
const CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("TERM", "xterm"),
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Character devices the sandbox may use: null, zero, full, random, urandom,
/// tty, ptmx and the pts range (`None` = any minor).
const ALLOWED_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// The top of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Spec {
    pub(crate) oci_version: String,
    pub(crate) process: Process,
    pub(crate) root: Root,
    pub(crate) hostname: String,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) linux: Linux,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Process {
    pub(crate) terminal: bool,
    pub(crate) user: User,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) capabilities: Capabilities,
    pub(crate) rlimits: Vec<Rlimit>,
    pub(crate) no_new_privileges: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) oom_score_adj: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// No ambient or inheritable capabilities: programs the agent starts as a
/// non-root user get none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Capabilities {
    pub(crate) bounding: Vec<String>,
    pub(crate) effective: Vec<String>,
    pub(crate) permitted: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Rlimit {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) hard: u64,
    pub(crate) soft: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Root {
    pub(crate) path: String,
    pub(crate) readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Mount {
    pub(crate) destination: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) source: String,
    pub(crate) options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Linux {
    pub(crate) cgroups_path: String,
    pub(crate) resources: Resources,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) masked_paths: Vec<String>,
    pub(crate) readonly_paths: Vec<String>,
    pub(crate) seccomp: Seccomp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) uid_mappings: Vec<IdMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) gid_mappings: Vec<IdMapping>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Namespace {
    #[serde(rename = "type")]
    pub(crate) kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Resources {
    pub(crate) devices: Vec<DeviceRule>,
    pub(crate) memory: Memory,
    pub(crate) cpu: Cpu,
    pub(crate) pids: Pids,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceRule {
    pub(crate) allow: bool,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) minor: Option<i64>,
    pub(crate) access: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Memory {
    pub(crate) limit: i64,
    /// Memory + swap (cgroup v1 `memsw`); equal to `limit` means no swap.
    /// Left out when the kernel has no swap accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) swap: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cpu {
    pub(crate) quota: i64,
    pub(crate) period: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pids {
    pub(crate) limit: i64,
}

/// Host facts the base spec depends on.
#[derive(Debug, Clone)]
pub(crate) struct HostSetup<'a> {
    /// The agent executable on the host.
    pub(crate) agent_binary: &'a Path,
    /// Top-level host dirs that are real directories (not merged-usr
    /// symlinks) and so need their own read-only bind, e.g. `bin`.
    pub(crate) extra_system_dirs: &'a [String],
    pub(crate) pids_limit: i64,
    /// Whether the memory cgroup accounts swap (`memory.memsw.*` exists).
    pub(crate) swap_accounting: bool,
    /// Whether we hold `CAP_SYS_RESOURCE`: without it we cannot lower
    /// `oom_score_adj` or raise the file limit above ours, and runc fails the
    /// start if asked to.
    pub(crate) sys_resource: bool,
    /// Our own hard `RLIMIT_NOFILE`.
    pub(crate) nofile_hard: u64,
}

/// The part of the spec shared by every sandbox.
#[derive(Debug, Clone)]
pub(crate) struct BaseSpec {
    spec: Spec,
    swap_accounting: bool,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: destination.into(),
        kind: kind.into(),
        source: source.into(),
        options: strings(options),
    }
}

/// Read-only, recursive (`rro` makes sub-mounts read-only too), no setuid, no devices.
fn ro_bind(source: &str, destination: &str) -> Mount {
    mount(
        destination,
        "bind",
        source,
        &["rbind", "rro", "nosuid", "nodev"],
    )
}

impl BaseSpec {
    pub(crate) fn new(host: &HostSetup<'_>) -> Self {
        let caps = strings(CAPABILITIES);
        let nofile = if host.sys_resource {
            NOFILE_LIMIT
        } else {
            NOFILE_LIMIT.min(host.nofile_hard)
        };
        let mut mounts = vec![
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            ),
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            mount(
                "/dev/mqueue",
                "mqueue",
                "mqueue",
                &["nosuid", "noexec", "nodev"],
            ),
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
            // The sandbox's own cgroups, read-only, so runtimes (JVM, Node, Go)
            // can size themselves to the limits.
            mount(
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                &["nosuid", "noexec", "nodev", "relatime", "ro"],
            ),
            ro_bind("/usr", "/usr"),
        ];
        mounts.extend(
            host.extra_system_dirs
                .iter()
                .map(|dir| ro_bind(&format!("/{dir}"), &format!("/{dir}"))),
        );
        // Only the public certificates: /etc/ssl/private holds host keys.
        mounts.push(ro_bind(CERTS_DIR, CERTS_DIR));
        mounts.push(ro_bind("/etc/alternatives", "/etc/alternatives"));
        mounts.push(mount(
            AGENT_PATH,
            "bind",
            &host.agent_binary.to_string_lossy(),
            &["bind", "ro", "nosuid", "nodev"],
        ));
        // Source filled in per sandbox by `render`.
        mounts.push(mount(
            RUN_DIR,
            "bind",
            "",
            &["bind", "rw", "nosuid", "nodev", "noexec"],
        ));

        let mut devices = vec![DeviceRule {
            allow: false,
            kind: None,
            major: None,
            minor: None,
            access: "rwm".into(),
        }];
        devices.extend(ALLOWED_DEVICES.iter().map(|&(major, minor)| DeviceRule {
            allow: true,
            kind: Some("c".into()),
            major: Some(major),
            minor,
            access: "rwm".into(),
        }));

        let spec = Spec {
            oci_version: "1.0.2".into(),
            process: Process {
                terminal: false,
                user: User { uid: 0, gid: 0 },
                args: strings(&[AGENT_PATH, "agent", "--socket", "/run/miosa/agent.sock"]),
                env: Vec::new(),
                cwd: "/".into(),
                capabilities: Capabilities {
                    bounding: caps.clone(),
                    effective: caps.clone(),
                    permitted: caps,
                },
                rlimits: vec![Rlimit {
                    kind: "RLIMIT_NOFILE".into(),
                    hard: nofile,
                    soft: nofile,
                }],
                no_new_privileges: true,
                // The agent is the last thing the OOM killer should pick in its
                // cgroup; it must reset this for the processes it starts.
                oom_score_adj: host.sys_resource.then_some(AGENT_OOM_SCORE_ADJ),
            },
            root: Root {
                path: "rootfs".into(),
                readonly: false,
            },
            hostname: String::new(),
            mounts,
            linux: Linux {
                cgroups_path: String::new(),
                resources: Resources {
                    devices,
                    memory: Memory {
                        limit: 0,
                        swap: None,
                    },
                    cpu: Cpu {
                        quota: 0,
                        period: CPU_PERIOD_US,
                    },
                    pids: Pids {
                        limit: host.pids_limit,
                    },
                },
                namespaces: ["pid", "network", "ipc", "uts", "mount"]
                    .iter()
                    .map(|kind| Namespace {
                        kind: (*kind).into(),
                    })
                    .collect(),
                masked_paths: strings(MASKED_PATHS),
                readonly_paths: strings(READONLY_PATHS),
                seccomp: seccomp::profile(),
                uid_mappings: Vec::new(),
                gid_mappings: Vec::new(),
            },
        };
        Self {
            spec,
            swap_accounting: host.swap_accounting,
        }
    }

    /// The full spec of one sandbox. `spec` must be validated.
    pub(crate) fn instantiate(&self, sandbox: &SandboxSpec, run_dir: &Path) -> Spec {
        let mut spec = self.spec.clone();
        spec.hostname.clone_from(&sandbox.hostname);
        if let Some(run) = spec.mounts.iter_mut().find(|m| m.destination == RUN_DIR) {
            run.source = run_dir.to_string_lossy().into_owned();
        }
        let egress_env = if sandbox.egress_ca_pem.is_some() {
            // runc mounts in order: the file bind must come after the
            // directory bind it sits in, or the directory would hide it.
            // The host file is its mount point (no file can be created in
            // the read-only directory).
            let bundle = run_dir.join(CA_BUNDLE).to_string_lossy().into_owned();
            let after_certs = spec
                .mounts
                .iter()
                .position(|m| m.destination == CERTS_DIR)
                .map_or(spec.mounts.len(), |i| i + 1);
            spec.mounts.insert(
                after_certs,
                mount(
                    SYSTEM_CA_BUNDLE,
                    "bind",
                    &bundle,
                    &["bind", "ro", "nosuid", "nodev", "noexec"],
                ),
            );
            egress::env()
        } else {
            Vec::new()
        };
        spec.process.env = merged_env(&[&egress_env, &sandbox.env]);
        spec.linux.cgroups_path = cgroups_path(&sandbox.id);
        let memory = sandbox.memory_bytes();
        spec.linux.resources.memory = Memory {
            limit: memory,
            swap: self.swap_accounting.then_some(memory),
        };
        spec.linux.resources.cpu.quota = sandbox.cpu_quota_us();
        spec
    }

    /// `config.json` bytes of one sandbox, in its own user namespace with
    /// its ids mapped to `ids`.
    pub(crate) fn render(
        &self,
        sandbox: &SandboxSpec,
        run_dir: &Path,
        ids: IdRange,
    ) -> Result<Vec<u8>> {
        let mut spec = self.instantiate(sandbox, run_dir);
        in_user_namespace(&mut spec, ids);
        serde_json::to_vec(&spec).map_err(|e| RuntimeError::io("serialising config.json", e.into()))
    }
}

/// Runs the sandbox in a user namespace whose ids 0–65535 are `ids` outside.
fn in_user_namespace(spec: &mut Spec, ids: IdRange) {
    spec.linux.namespaces.insert(
        0,
        Namespace {
            kind: "user".into(),
        },
    );
    spec.linux.uid_mappings = vec![ids.mapping()];
    spec.linux.gid_mappings = vec![ids.mapping()];
}

/// The cgroup path runc creates in every hierarchy.
pub(crate) fn cgroups_path(id: &str) -> String {
    format!("/miosa/{id}")
}

/// Variables a later layer adds to instead of replacing: the caller's
/// `NODE_OPTIONS` keeps the egress preload in front of it.
const APPENDED: &[&str] = &["NODE_OPTIONS"];

/// Base environment with `layers` on top (later wins, no duplicates; the
/// [`APPENDED`] ones accumulate).
fn merged_env(layers: &[&[(String, String)]]) -> Vec<String> {
    let mut env: Vec<(String, String)> = BASE_ENV
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    for (key, value) in layers.iter().flat_map(|layer| layer.iter()) {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) if APPENDED.contains(&key.as_str()) && !value.contains(&slot.1) => {
                if !value.trim().is_empty() {
                    slot.1 = format!("{} {value}", slot.1);
                }
            }
            Some(slot) => slot.1.clone_from(value),
            None => env.push((key.clone(), value.clone())),
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_s_node_options_keep_the_preload() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let egress = [pair("NODE_OPTIONS", "--require /run/miosa/node-egress.js")];
        let get = |env: Vec<String>| {
            env.into_iter()
                .find_map(|e| e.strip_prefix("NODE_OPTIONS=").map(str::to_owned))
        };
        let own = [pair("NODE_OPTIONS", "--max-old-space-size=64")];
        assert_eq!(
            get(merged_env(&[&egress, &own])).as_deref(),
            Some("--require /run/miosa/node-egress.js --max-old-space-size=64")
        );
        let empty = [pair("NODE_OPTIONS", "")];
        assert_eq!(
            get(merged_env(&[&egress, &empty])).as_deref(),
            Some("--require /run/miosa/node-egress.js")
        );
        assert_eq!(
            get(merged_env(&[&[], &own])).as_deref(),
            Some("--max-old-space-size=64"),
            "without egress there is no preload to keep"
        );
    }

    fn base(extra: &[String], swap: bool) -> BaseSpec {
        BaseSpec::new(&HostSetup {
            agent_binary: Path::new("/usr/local/bin/miosa"),
            extra_system_dirs: extra,
            pids_limit: 512,
            swap_accounting: swap,
            sys_resource: true,
            nofile_hard: 1024,
        })
    }

    fn sandbox() -> SandboxSpec {
        SandboxSpec {
            id: "sbx_abc".into(),
            hostname: "box".into(),
            env: vec![
                ("FOO".into(), "1".into()),
                ("PATH".into(), "/custom".into()),
            ],
            cpu: 0.5,
            memory_mb: 256,
            disk_mb: 256,
            egress_ca_pem: None,
        }
    }

    #[test]
    fn fills_in_the_sandbox_fields() {
        let spec = base(&[], true).instantiate(&sandbox(), Path::new("/d/sandboxes/sbx_abc/run"));
        assert_eq!(spec.hostname, "box");
        assert_eq!(spec.linux.cgroups_path, "/miosa/sbx_abc");
        assert_eq!(spec.linux.resources.memory.limit, 256 << 20);
        assert_eq!(spec.linux.resources.memory.swap, Some(256 << 20));
        assert_eq!(spec.linux.resources.cpu.quota, 50_000);
        assert_eq!(spec.linux.resources.cpu.period, 100_000);
        assert_eq!(spec.linux.resources.pids.limit, 512);
        let run = spec
            .mounts
            .iter()
            .find(|m| m.destination == RUN_DIR)
            .unwrap();
        assert_eq!(run.source, "/d/sandboxes/sbx_abc/run");
        assert!(spec.process.env.contains(&"FOO=1".to_string()));
        assert!(spec.process.env.contains(&"PATH=/custom".to_string()));
        assert_eq!(
            spec.process
                .env
                .iter()
                .filter(|e| e.starts_with("PATH="))
                .count(),
            1
        );
        assert_eq!(
            spec.process.args,
            [
                "/opt/miosa/miosa",
                "agent",
                "--socket",
                "/run/miosa/agent.sock"
            ]
        );
    }

    #[test]
    fn leaves_out_swap_without_swap_accounting() {
        let spec = base(&[], false).instantiate(&sandbox(), Path::new("/r"));
        assert_eq!(spec.linux.resources.memory.swap, None);
        let json = serde_json::to_value(&spec).unwrap();
        assert!(json["linux"]["resources"]["memory"].get("swap").is_none());
    }

    #[test]
    fn runs_in_a_user_namespace_of_its_own_ids() {
        let ids = crate::idmap::IdRanges::default().claim("sbx_abc").unwrap();
        let bytes = base(&[], true)
            .render(&sandbox(), Path::new("/r"), ids)
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let linux = &json["linux"];
        assert!(linux["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "user"));
        for key in ["uidMappings", "gidMappings"] {
            assert_eq!(
                linux[key],
                serde_json::json!([{"containerID": 0, "hostID": ids.host(0), "size": 65536}]),
                "{key}"
            );
        }
    }

    #[test]
    fn isolates_by_default() {
        let spec = base(&[], true).instantiate(&sandbox(), Path::new("/r"));
        let ns: Vec<&str> = spec
            .linux
            .namespaces
            .iter()
            .map(|n| n.kind.as_str())
            .collect();
        assert_eq!(ns, ["pid", "network", "ipc", "uts", "mount"]);
        let caps = &spec.process.capabilities.bounding;
        assert!(!caps
            .iter()
            .any(|c| c == "CAP_NET_RAW" || c == "CAP_MKNOD" || c == "CAP_SYS_ADMIN"));
        assert_eq!(caps.len(), 12);
        assert!(spec.process.no_new_privileges);
        assert!(!spec.root.readonly);
        let first = &spec.linux.resources.devices[0];
        assert!(!first.allow && first.major.is_none() && first.access == "rwm");
        for path in ["/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/scsi"] {
            assert!(spec.linux.masked_paths.iter().any(|p| p == path), "{path}");
        }
    }

    #[test]
    fn system_dirs_are_read_only_binds_and_nothing_else_of_the_host_is_mounted() {
        let extra = vec!["bin".to_string()];
        let spec = base(&extra, true).instantiate(&sandbox(), Path::new("/data/sandboxes/x/run"));
        let binds: Vec<(&str, &str)> = spec
            .mounts
            .iter()
            .filter(|m| m.kind == "bind")
            .map(|m| (m.source.as_str(), m.destination.as_str()))
            .collect();
        assert_eq!(
            binds,
            [
                ("/usr", "/usr"),
                ("/bin", "/bin"),
                ("/etc/ssl/certs", "/etc/ssl/certs"),
                ("/etc/alternatives", "/etc/alternatives"),
                ("/usr/local/bin/miosa", "/opt/miosa/miosa"),
                ("/data/sandboxes/x/run", "/run/miosa"),
            ]
        );
        for m in spec.mounts.iter().filter(|m| m.kind == "bind") {
            let writable = m.destination == RUN_DIR;
            assert_eq!(
                m.options.iter().any(|o| o == "ro" || o == "rro"),
                !writable,
                "{}",
                m.destination
            );
            assert!(m.options.iter().any(|o| o == "nosuid"));
        }
    }

    #[test]
    fn without_cap_sys_resource_asks_for_nothing_runc_cannot_do() {
        let spec = BaseSpec::new(&HostSetup {
            agent_binary: Path::new("/miosa"),
            extra_system_dirs: &[],
            pids_limit: 1,
            swap_accounting: true,
            sys_resource: false,
            nofile_hard: 4096,
        })
        .instantiate(&sandbox(), Path::new("/r"));
        assert_eq!(spec.process.oom_score_adj, None);
        assert_eq!(spec.process.rlimits[0].hard, 4096);
        assert_eq!(spec.process.rlimits[0].soft, 4096);
    }

    #[test]
    fn egress_binds_the_bundle_over_the_system_one_and_sets_the_proxy_env() {
        let mut sbx = sandbox();
        sbx.egress_ca_pem = Some("-----BEGIN CERTIFICATE-----\n".into());
        sbx.env.push(("NO_PROXY".into(), "internal.test".into()));
        let spec = base(&[], true).instantiate(&sbx, Path::new("/data/sandboxes/x/run"));
        let at = |dest: &str| spec.mounts.iter().position(|m| m.destination == dest);
        let certs = at("/etc/ssl/certs").unwrap();
        let bundle = at("/etc/ssl/certs/ca-certificates.crt").unwrap();
        assert_eq!(bundle, certs + 1, "the file bind follows its directory");
        let m = &spec.mounts[bundle];
        assert_eq!(m.source, "/data/sandboxes/x/run/ca-bundle.pem");
        assert_eq!(m.kind, "bind");
        assert!(m.options.iter().any(|o| o == "ro"));
        let env = &spec.process.env;
        assert!(env.contains(&"HTTPS_PROXY=http://127.0.0.1:3128".to_string()));
        assert!(env.contains(&"NODE_EXTRA_CA_CERTS=/run/miosa/egress-ca.pem".to_string()));
        assert!(env.contains(&"NODE_OPTIONS=--require /run/miosa/node-egress.js".to_string()));
        assert!(env.contains(&"FOO=1".to_string()));
        // The caller's variables win over the defaults.
        assert!(env.contains(&"NO_PROXY=internal.test".to_string()));
        assert!(!env.contains(&"NO_PROXY=localhost,127.0.0.1".to_string()));
        assert!(env.contains(&"no_proxy=localhost,127.0.0.1".to_string()));
        sbx.env
            .push(("NODE_OPTIONS".into(), "--no-warnings".into()));
        let spec = base(&[], true).instantiate(&sbx, Path::new("/r"));
        let node: Vec<_> = spec
            .process
            .env
            .iter()
            .filter(|e| e.starts_with("NODE_OPTIONS="))
            .collect();
        assert_eq!(
            node,
            ["NODE_OPTIONS=--require /run/miosa/node-egress.js --no-warnings"],
            "the caller's options follow the preload"
        );
    }

    #[test]
    fn without_egress_there_is_no_proxy_env_and_no_bundle_bind() {
        let spec = base(&[], true).instantiate(&sandbox(), Path::new("/r"));
        assert!(!spec
            .mounts
            .iter()
            .any(|m| m.destination.starts_with("/etc/ssl/certs/")));
        for e in &spec.process.env {
            let name = e.split('=').next().unwrap().to_ascii_uppercase();
            assert!(
                !name.ends_with("_PROXY")
                    && !name.contains("CA_")
                    && !name.contains("CERT")
                    && name != "NODE_OPTIONS",
                "{e}"
            );
        }
    }

    #[test]
    fn renders_oci_field_names() {
        let ids = crate::idmap::IdRanges::default().claim("sbx_abc").unwrap();
        let bytes = base(&[], true)
            .render(&sandbox(), Path::new("/r"), ids)
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["ociVersion"], "1.0.2");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["process"]["oomScoreAdj"], -998);
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(json["process"]["rlimits"][0]["hard"], 65_536);
        assert_eq!(json["linux"]["cgroupsPath"], "/miosa/sbx_abc");
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(json["linux"]["resources"]["devices"][1]["type"], "c");
        assert!(json["linux"]["resources"]["devices"][0]
            .get("major")
            .is_none());
    }
}

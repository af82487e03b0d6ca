//! Shared helpers of the runtime's integration tests: a throwaway data dir
//! with a real [`Runtime`], the real agent binary, and probes of the host.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use miosa_runtime::{Runtime, RuntimeConfig, SandboxSpec};

/// The `miosa` executable (the agent), built once per test binary.
/// `MIOSA_TEST_AGENT` overrides it (any program serving `GET /health` on `--socket`).
pub fn agent_binary() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("MIOSA_TEST_AGENT") {
                return PathBuf::from(path);
            }
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("../../target"));
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "miosa", "--bin", "miosa"])
                .current_dir(manifest)
                .status()
                .expect("running cargo build for the agent");
            assert!(status.success(), "cargo build -p miosa failed");
            let bin = target.join("debug/miosa");
            assert!(bin.is_file(), "{} missing after the build", bin.display());
            bin
        })
        .clone()
}

/// A fresh data dir under /tmp with its own runtime; everything is destroyed on drop.
pub struct TestHost {
    pub runtime: Runtime,
    pub data_dir: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}{}x{n}x{nanos:x}", std::process::id())
}

impl TestHost {
    pub async fn new() -> Self {
        Self::with_agent(&agent_binary()).await
    }

    pub async fn with_agent(agent: &Path) -> Self {
        let data_dir = std::env::temp_dir().join(unique("miosa-rt-"));
        let runtime = Runtime::new(RuntimeConfig::new(&data_dir, agent))
            .await
            .expect("Runtime::new");
        Self { runtime, data_dir }
    }

    /// A spec with a unique id.
    pub fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            id: unique("sbx_t"),
            hostname: "sbx-test".into(),
            env: vec![("MIOSA_TEST".into(), "1".into())],
            cpu: 0.5,
            memory_mb: 256,
            disk_mb: 256,
            egress_ca_pem: None,
        }
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("sandboxes").join(id)
    }

    pub fn disk_image(&self, id: &str) -> PathBuf {
        self.data_dir.join("disks").join(format!("{id}.img"))
    }

    pub fn runc_root(&self) -> PathBuf {
        self.data_dir.join("runc")
    }

    /// Asserts that nothing of sandbox `id` remains on the host.
    pub fn assert_no_trace(&self, id: &str) {
        assert_eq!(
            processes_of(id),
            Vec::<u32>::new(),
            "{id}: processes remain"
        );
        assert_eq!(
            mounts_mentioning(id),
            Vec::<String>::new(),
            "{id}: mounts remain"
        );
        assert_eq!(
            cgroup_dirs(id),
            Vec::<PathBuf>::new(),
            "{id}: cgroup dirs remain"
        );
        assert!(!self.sandbox_dir(id).exists(), "{id}: sandbox dir remains");
        assert!(!self.disk_image(id).exists(), "{id}: disk image remains");
        // The kernel lets go of an auto-clearing loop device in a work
        // queue, just after the unmount returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !loops_of(id).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            loops_of(id),
            Vec::<String>::new(),
            "{id}: loop devices remain"
        );
        assert!(
            !self.runc_root().join(id).exists(),
            "{id}: runc state remains"
        );
    }

    /// `runc exec` inside the sandbox (same namespaces, capabilities and seccomp as the agent).
    pub fn exec(&self, id: &str, args: &[&str]) -> Output {
        Command::new("runc")
            .arg("--root")
            .arg(self.runc_root())
            .arg("exec")
            .arg(id)
            .args(args)
            .output()
            .expect("runc exec")
    }

    /// `exec` of a shell snippet; returns (success, stdout + stderr).
    pub fn sh(&self, id: &str, script: &str) -> (bool, String) {
        let out = self.exec(id, &["/bin/sh", "-c", script]);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let runtime = self.runtime.clone();
        let data_dir = self.data_dir.clone();
        // Drop runs inside the test's runtime; block on a fresh one elsewhere.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            if let Err(e) = rt.block_on(runtime.destroy_orphans(&HashSet::new())) {
                eprintln!("cleanup of {}: {e}", data_dir.display());
            }
            let _ = std::fs::remove_dir_all(&data_dir);
        });
        let _ = cleanup.join();
    }
}

/// Cgroup directories of sandbox `id` in every hierarchy on the host.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .map(|e| e.unwrap().path().join("miosa").join(id))
        .filter(|p| p.exists())
        .collect()
}

/// Lines of our mount table that mention `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// Loop devices whose backing file names sandbox `id`.
pub fn loops_of(id: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            backing
                .contains(id)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// Host PIDs whose cgroup is the sandbox's.
pub fn processes_of(id: &str) -> Vec<u32> {
    let suffix = format!(":/miosa/{id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .map(|cg| cg.lines().any(|l| l.ends_with(&suffix)))
                .unwrap_or(false)
        })
        .collect()
}

/// Reads a number from one of the sandbox's cgroup files, e.g. ("memory", "memory.limit_in_bytes").
pub fn cgroup_value(id: &str, controller: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("miosa")
        .join(id)
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

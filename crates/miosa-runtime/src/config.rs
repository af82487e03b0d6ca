//! What the caller tells the runtime: host-wide settings and one sandbox's shape.

use std::path::PathBuf;

pub use crate::disk::{MAX_DISK_MB, MIN_DISK_MB};
use crate::error::{Result, RuntimeError};

/// Host-wide settings of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Miosa's data dir; the runtime uses `sandboxes/`, `templates/` and `runc/` under it.
    pub data_dir: PathBuf,
    /// The `runc` executable (a bare name is looked up on `PATH`).
    pub runc: PathBuf,
    /// The `miosa` executable, bind-mounted into every sandbox and started as
    /// `miosa agent --socket /run/miosa/agent.sock`.
    pub agent_binary: PathBuf,
    /// Maximum number of tasks (processes and threads) per sandbox.
    pub pids_limit: i64,
}

impl RuntimeConfig {
    /// Defaults: `runc` from `PATH`, 512 tasks per sandbox.
    pub fn new(data_dir: impl Into<PathBuf>, agent_binary: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            runc: PathBuf::from("runc"),
            agent_binary: agent_binary.into(),
            pids_limit: 512,
        }
    }
}

/// The shape of one sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    /// Sandbox id (`sbx_…`); also the container id and directory name.
    pub id: String,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Extra environment of the agent (and so of everything it starts).
    pub env: Vec<(String, String)>,
    /// CPU limit in cores (CFS quota), e.g. `0.5` or `2.0`.
    pub cpu: f64,
    /// Memory limit in MiB; swap is not allowed on top of it.
    pub memory_mb: u64,
    /// Size of the sandbox's disk in MiB: its writable layer, `/run/miosa`
    /// and its agent's log share it (see `disk`).
    pub disk_mb: u64,
    /// PEM of the egress proxy's interception CA. `Some` enables egress: the
    /// CA joins the sandbox's trust bundle and the proxy variables
    /// (`HTTP_PROXY`, `SSL_CERT_FILE`, …) are set; `env` overrides them.
    /// `None`: no proxy variables and the host's bundle unchanged.
    pub egress_ca_pem: Option<String>,
}

/// Smallest memory limit we accept: the agent itself needs a few MiB.
pub const MIN_MEMORY_MB: u64 = 16;
/// Largest memory limit we accept (1 TiB), far from overflowing the byte count.
pub const MAX_MEMORY_MB: u64 = 1 << 20;
/// Smallest CPU limit: a 1 ms quota per 100 ms period.
pub const MIN_CPU: f64 = 0.01;
/// Largest CPU limit in cores.
pub const MAX_CPU: f64 = 1024.0;
/// Longest sandbox id (also bounded by the Unix socket path length).
pub const MAX_ID_LEN: usize = 64;

/// Checks that `id` is safe as a directory name, a runc container id and a cgroup name.
pub fn validate_id(id: &str) -> Result<()> {
    let invalid = |reason: &str| RuntimeError::InvalidSpec {
        field: "id",
        reason: format!("{id:?}: {reason}"),
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(invalid("must be 1 to 64 characters"));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with a letter or digit"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid("may hold only ASCII letters, digits, '_' and '-'"));
    }
    Ok(())
}

impl SandboxSpec {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        validate_hostname(&self.hostname)?;
        for (key, value) in &self.env {
            let bad_key = key.is_empty() || key.contains(['=', '\0']);
            if bad_key || value.contains('\0') {
                return Err(RuntimeError::InvalidSpec {
                    field: "env",
                    reason: format!(
                        "{key:?}: names must be non-empty without '=' or NUL; values without NUL"
                    ),
                });
            }
        }
        if let Some(pem) = &self.egress_ca_pem {
            crate::egress::validate_pem(pem)?;
        }
        if !(MIN_CPU..=MAX_CPU).contains(&self.cpu) {
            return Err(RuntimeError::InvalidSpec {
                field: "cpu",
                reason: format!("{} is outside {MIN_CPU}..={MAX_CPU} cores", self.cpu),
            });
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(RuntimeError::InvalidSpec {
                field: "memory_mb",
                reason: format!(
                    "{} is outside {MIN_MEMORY_MB}..={MAX_MEMORY_MB} MiB",
                    self.memory_mb
                ),
            });
        }
        if !(MIN_DISK_MB..=MAX_DISK_MB).contains(&self.disk_mb) {
            return Err(RuntimeError::InvalidSpec {
                field: "disk_mb",
                reason: format!(
                    "{} is outside {MIN_DISK_MB}..={MAX_DISK_MB} MiB",
                    self.disk_mb
                ),
            });
        }
        Ok(())
    }

    /// CFS quota in µs per 100 ms period.
    pub(crate) fn cpu_quota_us(&self) -> i64 {
        // `validate` bounds cpu to 0.01..=1024, so this is 1_000..=102_400_000.
        #[allow(clippy::cast_possible_truncation)]
        let quota = (self.cpu * CPU_PERIOD_US as f64).round() as i64;
        quota
    }

    /// Memory limit in bytes.
    pub(crate) fn memory_bytes(&self) -> i64 {
        // `validate` bounds memory_mb to 1 TiB, far below i64::MAX bytes.
        i64::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
    }
}

/// CFS period in µs.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

fn validate_hostname(hostname: &str) -> Result<()> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 63
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !hostname.starts_with(['-', '.'])
        && !hostname.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidSpec {
            field: "hostname",
            reason: format!(
                "{hostname:?}: 1 to 63 ASCII letters, digits, '-' and '.', not starting or ending with '-' or '.'"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            id: "sbx_01jq3v".into(),
            hostname: "sandbox".into(),
            env: vec![("FOO".into(), "bar=baz".into())],
            cpu: 1.5,
            memory_mb: 512,
            disk_mb: 1024,
            egress_ca_pem: None,
        }
    }

    fn field_of(spec: &SandboxSpec) -> &'static str {
        match spec.validate() {
            Err(RuntimeError::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_normal_spec_and_computes_limits() {
        let s = spec();
        s.validate().unwrap();
        assert_eq!(s.cpu_quota_us(), 150_000);
        assert_eq!(s.memory_bytes(), 512 * 1024 * 1024);
    }

    #[test]
    fn rejects_ids_that_could_escape_a_path_or_confuse_runc() {
        for id in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            "a\0b",
            &"x".repeat(65),
        ] {
            let mut s = spec();
            s.id = id.to_string();
            assert_eq!(field_of(&s), "id", "{id:?}");
        }
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let mut s = spec();
        s.hostname = "bad_host".into();
        assert_eq!(field_of(&s), "hostname");
        let mut s = spec();
        s.env.push(("A=B".into(), "c".into()));
        assert_eq!(field_of(&s), "env");
        let mut s = spec();
        s.cpu = f64::NAN;
        assert_eq!(field_of(&s), "cpu");
        let mut s = spec();
        s.cpu = 0.0;
        assert_eq!(field_of(&s), "cpu");
        let mut s = spec();
        s.memory_mb = 1;
        assert_eq!(field_of(&s), "memory_mb");
        let mut s = spec();
        s.disk_mb = 8;
        assert_eq!(field_of(&s), "disk_mb");
        let mut s = spec();
        s.disk_mb = u64::MAX;
        assert_eq!(field_of(&s), "disk_mb");
        let mut s = spec();
        s.egress_ca_pem = Some("not a certificate".into());
        assert_eq!(field_of(&s), "egress_ca_pem");
    }

    #[test]
    fn quota_rounds_to_the_nearest_microsecond() {
        let mut s = spec();
        s.cpu = 0.333_337;
        assert_eq!(s.cpu_quota_us(), 33_334);
    }
}

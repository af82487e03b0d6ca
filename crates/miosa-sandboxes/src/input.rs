//! Validation of sandbox input into records. Every check names its field.

use std::collections::BTreeMap;

use miosa_core::{
    sandbox::{self as rules},
    time_util, FieldError, Labels, OnTimeout, Sandbox, SandboxId, SandboxStatus, TenantId,
    WorkspaceId,
};

/// Bounds an operator may set; requests outside them are refused.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_cpu: f64,
    pub max_memory_mb: u32,
    /// The disk a sandbox gets when it does not ask (MiB).
    pub default_disk_mb: u32,
    /// The largest disk a sandbox may ask for (MiB).
    pub max_disk_mb: u32,
    pub max_timeout_seconds: u32,
    /// How long a sandbox paused by its timeout is kept before it is destroyed.
    pub paused_retention: time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_cpu: 8.0,
            max_memory_mb: 16 * 1024,
            default_disk_mb: DEFAULT_DISK_MB,
            max_disk_mb: DEFAULT_MAX_DISK_MB,
            max_timeout_seconds: 24 * 3600,
            paused_retention: time::Duration::days(7),
        }
    }
}

pub const DEFAULT_TEMPLATE: &str = "default";
pub const TEMPLATES: &[&str] = &[DEFAULT_TEMPLATE];
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
pub const DEFAULT_CPU: f64 = 1.0;
pub const DEFAULT_MEMORY_MB: u32 = 512;
pub const MIN_MEMORY_MB: u32 = 64;
pub const MIN_CPU: f64 = 0.1;
/// Smallest disk a sandbox may have (MiB).
pub const MIN_DISK_MB: u32 = miosa_runtime::config::MIN_DISK_MB as u32;
/// Default of [`Limits::default_disk_mb`].
pub const DEFAULT_DISK_MB: u32 = 2048;
/// Default of [`Limits::max_disk_mb`].
pub const DEFAULT_MAX_DISK_MB: u32 = 20 * 1024;

/// What a caller asked for when creating a sandbox (already typed by JSON).
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub template: Option<String>,
    pub workspace_id: Option<WorkspaceId>,
    /// A Miosa-native user the sandbox belongs to (the `user` secret scope).
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub timeout_seconds: Option<i64>,
    pub on_timeout: Option<String>,
    pub cpu: Option<f64>,
    pub memory_mb: Option<i64>,
    pub disk_mb: Option<i64>,
}

/// A validated request: the record to store and the environment to start it with.
pub struct Validated {
    pub sandbox: Sandbox,
    pub env: BTreeMap<String, String>,
}

fn optional_label(field: &str, v: Option<&String>) -> Result<Option<String>, FieldError> {
    v.map(|s| rules::label(field, s)).transpose()
}

/// Checks a timeout in seconds against the limits.
pub fn timeout_seconds(limits: &Limits, t: i64) -> Result<u32, FieldError> {
    if t < 1 || t > i64::from(limits.max_timeout_seconds) {
        return Err(FieldError::new(
            "timeout_seconds",
            format!("must be between 1 and {}", limits.max_timeout_seconds),
        ));
    }
    Ok(t as u32)
}

impl CreateRequest {
    /// Validates everything; `workspace_id` must already be resolved
    /// (checked to exist in the tenant) by the caller.
    pub fn validate(
        &self,
        tenant: &TenantId,
        node_id: &str,
        limits: &Limits,
    ) -> Result<Validated, FieldError> {
        let name = self
            .name
            .as_deref()
            .map(|n| rules::sandbox_name("name", n))
            .transpose()?;
        let template = self.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
        if !TEMPLATES.contains(&template) {
            return Err(FieldError::new(
                "template",
                format!(
                    "unknown template `{template}` (available: {})",
                    TEMPLATES.join(", ")
                ),
            ));
        }
        let labels = Labels {
            owner_user_id: optional_label("owner_user_id", self.owner_user_id.as_ref())?,
            external_user_id: optional_label("external_user_id", self.external_user_id.as_ref())?,
            external_workspace_id: optional_label(
                "external_workspace_id",
                self.external_workspace_id.as_ref(),
            )?,
            external_project_id: optional_label(
                "external_project_id",
                self.external_project_id.as_ref(),
            )?,
        };
        let metadata = rules::metadata(
            "metadata",
            self.metadata.as_ref().unwrap_or(&BTreeMap::new()),
        )?;
        let env = rules::env("env", self.env.as_ref().unwrap_or(&BTreeMap::new()))?;
        let timeout = timeout_seconds(
            limits,
            self.timeout_seconds
                .unwrap_or(i64::from(DEFAULT_TIMEOUT_SECONDS)),
        )?;
        let on_timeout = match self.on_timeout.as_deref() {
            None => OnTimeout::Destroy,
            Some(s) => OnTimeout::parse(s)
                .ok_or_else(|| FieldError::new("on_timeout", "must be `destroy` or `pause`"))?,
        };
        let cpu = self.cpu.unwrap_or(DEFAULT_CPU);
        if !cpu.is_finite() || cpu < MIN_CPU || cpu > limits.max_cpu {
            return Err(FieldError::new(
                "cpu",
                format!("must be between {MIN_CPU} and {}", limits.max_cpu),
            ));
        }
        let memory_mb = self.memory_mb.unwrap_or(i64::from(DEFAULT_MEMORY_MB));
        if memory_mb < i64::from(MIN_MEMORY_MB) || memory_mb > i64::from(limits.max_memory_mb) {
            return Err(FieldError::new(
                "memory_mb",
                format!(
                    "must be between {MIN_MEMORY_MB} and {}",
                    limits.max_memory_mb
                ),
            ));
        }
        let disk_mb = self.disk_mb.unwrap_or(i64::from(limits.default_disk_mb));
        if disk_mb < i64::from(MIN_DISK_MB) || disk_mb > i64::from(limits.max_disk_mb) {
            return Err(FieldError::new(
                "disk_mb",
                format!("must be between {MIN_DISK_MB} and {}", limits.max_disk_mb),
            ));
        }
        let now = time_util::now();
        Ok(Validated {
            sandbox: Sandbox {
                id: SandboxId::generate(),
                tenant_id: tenant.clone(),
                workspace_id: self.workspace_id.clone(),
                name,
                status: SandboxStatus::Creating,
                node_id: node_id.to_owned(),
                template: template.to_owned(),
                labels,
                metadata,
                cpu,
                memory_mb: memory_mb as u32,
                disk_mb: Some(disk_mb as u32),
                timeout_seconds: timeout,
                on_timeout,
                created_at: now,
                expires_at: now + time::Duration::seconds(i64::from(timeout)),
                destroyed_at: None,
                created_by_key_id: None,
                created_by_workspace_key: false,
            },
            env,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(req: CreateRequest) -> Result<Validated, FieldError> {
        req.validate(&TenantId::generate(), "node-a", &Limits::default())
    }

    #[test]
    fn defaults() {
        let v = check(CreateRequest::default()).unwrap();
        let s = v.sandbox;
        assert_eq!(
            (s.template.as_str(), s.cpu, s.memory_mb, s.timeout_seconds),
            ("default", 1.0, 512, 300)
        );
        assert_eq!(s.on_timeout, OnTimeout::Destroy);
        assert_eq!(s.disk_mb, Some(DEFAULT_DISK_MB));
        assert_eq!((s.expires_at - s.created_at).whole_seconds(), 300);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(CreateRequest, &str)> = vec![
            (
                CreateRequest {
                    template: Some("ubuntu".into()),
                    ..Default::default()
                },
                "template",
            ),
            (
                CreateRequest {
                    memory_mb: Some(-5),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                CreateRequest {
                    memory_mb: Some(1 << 40),
                    ..Default::default()
                },
                "memory_mb",
            ),
            (
                CreateRequest {
                    disk_mb: Some(16),
                    ..Default::default()
                },
                "disk_mb",
            ),
            (
                CreateRequest {
                    disk_mb: Some(i64::from(DEFAULT_MAX_DISK_MB) + 1),
                    ..Default::default()
                },
                "disk_mb",
            ),
            (
                CreateRequest {
                    cpu: Some(0.0),
                    ..Default::default()
                },
                "cpu",
            ),
            (
                CreateRequest {
                    cpu: Some(f64::NAN),
                    ..Default::default()
                },
                "cpu",
            ),
            (
                CreateRequest {
                    name: Some("x".repeat(64)),
                    ..Default::default()
                },
                "name",
            ),
            (
                CreateRequest {
                    timeout_seconds: Some(0),
                    ..Default::default()
                },
                "timeout_seconds",
            ),
            (
                CreateRequest {
                    on_timeout: Some("explode".into()),
                    ..Default::default()
                },
                "on_timeout",
            ),
            (
                CreateRequest {
                    external_user_id: Some(String::new()),
                    ..Default::default()
                },
                "external_user_id",
            ),
            (
                CreateRequest {
                    metadata: Some((0..51).map(|i| (format!("k{i}"), "v".into())).collect()),
                    ..Default::default()
                },
                "metadata",
            ),
            (
                CreateRequest {
                    env: Some([("1X".to_string(), "v".to_string())].into()),
                    ..Default::default()
                },
                "env.1X",
            ),
        ];
        for (req, field) in cases {
            assert_eq!(check(req).err().map(|e| e.field), Some(field.to_owned()));
        }
    }
}

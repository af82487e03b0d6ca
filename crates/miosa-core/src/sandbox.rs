//! Sandboxes as the domain sees them, and validation of their labels.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::{ApiKeyId, FieldError, SandboxId, TenantId, WorkspaceId};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxStatus {
    /// Row written, container being started.
    Creating,
    Running,
    /// Frozen by the cgroup freezer.
    Paused,
    /// The container died or could not be started; can only be deleted.
    Error,
    /// Gone from the host; the row is kept for attribution.
    Destroyed,
}

impl SandboxStatus {
    pub const ALL: [SandboxStatus; 5] = [
        Self::Creating,
        Self::Running,
        Self::Paused,
        Self::Error,
        Self::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Error => "error",
            Self::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What the reaper does when a sandbox's `expires_at` passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    Destroy,
    Pause,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Destroy => "destroy",
            Self::Pause => "pause",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "destroy" => Some(Self::Destroy),
            "pause" => Some(Self::Pause),
            _ => None,
        }
    }
}

/// The tenant's own IDs stamped on a sandbox at create; never changed.
/// Exact, case-sensitive labels, not authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub owner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    pub external_workspace_id: Option<String>,
    pub external_project_id: Option<String>,
}

/// A sandbox record.
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    pub id: SandboxId,
    pub tenant_id: TenantId,
    /// `None` for sandboxes created by an admin key without a workspace.
    pub workspace_id: Option<WorkspaceId>,
    /// Unique among the live sandboxes of its workspace (or tenant, when
    /// there is no workspace).
    pub name: Option<String>,
    pub status: SandboxStatus,
    /// The Miosa node whose host runs this sandbox (`MIOSA_NODE_ID`).
    pub node_id: String,
    pub template: String,
    pub labels: Labels,
    pub metadata: BTreeMap<String, String>,
    /// vCPUs (CFS quota), e.g. 0.5, 1.0, 2.0.
    pub cpu: f64,
    pub memory_mb: u32,
    /// Size of the sandbox's disk in MiB (`None` for sandboxes made before
    /// disks were limited).
    pub disk_mb: Option<u32>,
    pub timeout_seconds: u32,
    pub on_timeout: OnTimeout,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub destroyed_at: Option<OffsetDateTime>,
    /// The API key that created the sandbox (`None` for rows made before
    /// this was recorded).
    pub created_by_key_id: Option<ApiKeyId>,
    /// Whether that key was workspace-scoped: such sandboxes resolve only
    /// end-user secrets bound to their workspace, unless the tenant allows
    /// unbound ones.
    pub created_by_workspace_key: bool,
}

/// Limits on labels, names and maps.
pub const MAX_LABEL_CHARS: usize = 256;
pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;
pub const MAX_SANDBOX_NAME_CHARS: usize = 63;
pub const MAX_ENV_VARS: usize = 200;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;

/// A sandbox name: a slug (`[a-z0-9-]`, 1–63 characters, starting and ending
/// alphanumeric), so it can appear in preview hostnames later.
pub fn sandbox_name(field: &str, value: &str) -> Result<String, FieldError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if value.is_empty() || value.len() > MAX_SANDBOX_NAME_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_SANDBOX_NAME_CHARS} characters"),
        ));
    }
    if !value.chars().all(ok_char) || value.starts_with('-') || value.ends_with('-') {
        return Err(FieldError::new(
            field,
            "must use only a-z, 0-9 and `-`, and start and end with a letter or digit",
        ));
    }
    if crate::SandboxId::parse(value).is_ok() || value.starts_with("sbx_") {
        return Err(FieldError::new(field, "must not look like a sandbox ID"));
    }
    Ok(value.to_owned())
}

/// An attribution label: 1–256 characters, no control characters.
pub fn label(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() || value.chars().count() > MAX_LABEL_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_LABEL_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// A metadata map: at most 50 keys of `[A-Za-z0-9_.-]{1,64}`, string values
/// of at most 512 characters.
pub fn metadata(
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    if map.len() > MAX_METADATA_KEYS {
        return Err(FieldError::new(
            field,
            format!("must have at most {MAX_METADATA_KEYS} keys"),
        ));
    }
    for (k, v) in map {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_METADATA_KEY_CHARS
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !key_ok {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} of A-Z a-z 0-9 _ . -"),
            ));
        }
        if v.chars().count() > MAX_METADATA_VALUE_CHARS || v.chars().any(char::is_control) {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                format!(
                    "values must be at most {MAX_METADATA_VALUE_CHARS} characters without control characters"
                ),
            ));
        }
    }
    Ok(map.clone())
}

/// Environment variables: POSIX-ish names, bounded values, no NUL.
pub fn env(
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    if map.len() > MAX_ENV_VARS {
        return Err(FieldError::new(
            field,
            format!("must have at most {MAX_ENV_VARS} variables"),
        ));
    }
    for (k, v) in map {
        let name_ok = !k.is_empty()
            && k.len() <= 256
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                "names must be letters, digits and `_`, not starting with a digit",
            ));
        }
        if v.len() > MAX_ENV_VALUE_BYTES || v.contains('\0') {
            return Err(FieldError::new(
                format!("{field}.{k}"),
                format!("values must be at most {MAX_ENV_VALUE_BYTES} bytes without NUL"),
            ));
        }
    }
    Ok(map.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(sandbox_name("name", "my-app-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "sbx_x"] {
            assert!(sandbox_name("name", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_rules() {
        let ok: BTreeMap<_, _> = [("plan".to_string(), "pro".to_string())].into();
        assert!(metadata("metadata", &ok).is_ok());
        let too_many: BTreeMap<_, _> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert_eq!(
            metadata("metadata", &too_many).unwrap_err().field,
            "metadata"
        );
        let bad_key: BTreeMap<_, _> = [("a b".to_string(), "v".to_string())].into();
        assert_eq!(
            metadata("metadata", &bad_key).unwrap_err().field,
            "metadata.a b"
        );
        let long: BTreeMap<_, _> = [("k".to_string(), "v".repeat(513))].into();
        assert!(metadata("metadata", &long).is_err());
    }

    #[test]
    fn env_rules() {
        let ok: BTreeMap<_, _> = [("PATH_X".to_string(), "1".to_string())].into();
        assert!(env("env", &ok).is_ok());
        for bad in ["1A", "A-B", "", "A=B"] {
            let m: BTreeMap<_, _> = [(bad.to_string(), "v".to_string())].into();
            assert!(env("env", &m).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_round_trip() {
        for s in SandboxStatus::ALL {
            assert_eq!(SandboxStatus::parse(s.as_str()), Some(s));
        }
    }
}

//! User namespaces: each sandbox's uids and gids 0–65535 map to a range of
//! host ids of its own, which owns nothing on the host but that sandbox's
//! files. Root (and `user`, uid 1000) inside are unprivileged strangers
//! outside: a process that escaped its container can touch neither the
//! host's files nor another sandbox's.
//!
//! Ranges start at [`FIRST_HOST_ID`], inside the block systemd sets aside
//! for containers (`0x00080000`–`0x6FFFFFFF`), far above login users and
//! `/etc/subuid` allocations. A sandbox's range is recorded in its
//! `config.json` (the `uidMappings` runc applies), which is where a
//! restarted runtime finds the ranges in use.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// Ids per sandbox: the whole 16-bit range, so every uid and gid a Debian
/// system uses (`nobody` 65534, `tty` 5) is mapped.
pub(crate) const IDS_PER_SANDBOX: u32 = 65_536;
/// The first host id handed to a sandbox (2^28).
pub(crate) const FIRST_HOST_ID: u32 = 0x1000_0000;
/// How many ranges fit below the end of systemd's container block.
const SLOTS: u32 = (0x7000_0000 - FIRST_HOST_ID) / IDS_PER_SANDBOX;

/// One sandbox's host ids: inside id `n` is host id `host_base + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IdRange {
    host_base: u32,
}

impl IdRange {
    fn of_slot(slot: u32) -> Self {
        Self {
            host_base: FIRST_HOST_ID + slot * IDS_PER_SANDBOX,
        }
    }

    fn slot(self) -> Option<u32> {
        let offset = self.host_base.checked_sub(FIRST_HOST_ID)?;
        (offset % IDS_PER_SANDBOX == 0 && offset / IDS_PER_SANDBOX < SLOTS)
            .then_some(offset / IDS_PER_SANDBOX)
    }

    /// The host id of inside id `inside` (< [`IDS_PER_SANDBOX`]).
    pub(crate) fn host(self, inside: u32) -> u32 {
        self.host_base + inside.min(IDS_PER_SANDBOX - 1)
    }

    /// The runc mapping of this range.
    pub(crate) fn mapping(self) -> IdMapping {
        IdMapping {
            container_id: 0,
            host_id: self.host_base,
            size: IDS_PER_SANDBOX,
        }
    }
}

/// An entry of `linux.uidMappings` / `gidMappings` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdMapping {
    #[serde(rename = "containerID")]
    pub(crate) container_id: u32,
    #[serde(rename = "hostID")]
    pub(crate) host_id: u32,
    pub(crate) size: u32,
}

/// The ranges of this host's sandboxes.
#[derive(Debug, Default)]
pub(crate) struct IdRanges {
    by_sandbox: Mutex<HashMap<String, IdRange>>,
}

impl IdRanges {
    /// Gives sandbox `id` a range no other sandbox of this runtime holds.
    /// The search starts at a slot derived from the id, so runtimes that
    /// share a host (tests) rarely meet.
    pub(crate) fn claim(&self, id: &str) -> Result<IdRange> {
        let mut by_sandbox = self.lock();
        if let Some(range) = by_sandbox.get(id) {
            return Ok(*range);
        }
        let used: HashSet<IdRange> = by_sandbox.values().copied().collect();
        let start = fnv(id) % SLOTS;
        let range = (0..SLOTS)
            .map(|i| IdRange::of_slot((start + i) % SLOTS))
            .find(|r| !used.contains(r))
            .ok_or_else(|| {
                RuntimeError::Config(format!("all {SLOTS} user-id ranges are in use"))
            })?;
        by_sandbox.insert(id.to_owned(), range);
        Ok(range)
    }

    /// Records the range a sandbox found on the host already has.
    pub(crate) fn adopt(&self, id: &str, range: IdRange) {
        self.lock().insert(id.to_owned(), range);
    }

    /// The range of sandbox `id`, if it runs in a user namespace.
    pub(crate) fn of(&self, id: &str) -> Option<IdRange> {
        self.lock().get(id).copied()
    }

    /// Frees the range of a sandbox that is gone.
    pub(crate) fn release(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, IdRange>> {
        // The map stays consistent whatever panicked while holding it.
        self.by_sandbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The range recorded in a sandbox's `config.json`; `None` for sandboxes
/// made before user namespaces (or a bundle that cannot be read).
pub(crate) fn recorded(config_json: &Path) -> Option<IdRange> {
    #[derive(Deserialize)]
    struct Bundle {
        linux: Linux,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Linux {
        #[serde(default)]
        uid_mappings: Vec<IdMapping>,
    }
    let bytes = std::fs::read(config_json).ok()?;
    let bundle: Bundle = serde_json::from_slice(&bytes).ok()?;
    let first = bundle.linux.uid_mappings.first()?;
    let range = IdRange {
        host_base: first.host_id,
    };
    (first.container_id == 0 && first.size == IDS_PER_SANDBOX && range.slot().is_some())
        .then_some(range)
}

/// FNV-1a, 32 bit.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_distinct_aligned_and_above_login_users() {
        let ranges = IdRanges::default();
        let a = ranges.claim("sbx_a").unwrap();
        let b = ranges.claim("sbx_b").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            ranges.claim("sbx_a").unwrap(),
            a,
            "claiming again is stable"
        );
        for r in [a, b] {
            assert!(r.host(0) >= FIRST_HOST_ID);
            assert_eq!((r.host(0) - FIRST_HOST_ID) % IDS_PER_SANDBOX, 0);
            assert!(r.host(65_535) < 0x7000_0000);
            assert_eq!(r.host(1000), r.host(0) + 1000);
        }
        ranges.release("sbx_a");
        assert_eq!(ranges.of("sbx_a"), None);
        assert_eq!(ranges.of("sbx_b"), Some(b));
    }

    #[test]
    fn colliding_ids_probe_to_the_next_free_range() {
        let ranges = IdRanges::default();
        let a = ranges.claim("sbx_same").unwrap();
        ranges.release("sbx_same");
        ranges.adopt("other", a);
        let b = ranges.claim("sbx_same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn the_range_is_read_back_from_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let range = IdRange::of_slot(7);
        let json = serde_json::json!({"linux": {"uidMappings": [range.mapping()]}});
        std::fs::write(&path, json.to_string()).unwrap();
        assert_eq!(recorded(&path), Some(range));
        std::fs::write(&path, r#"{"linux": {}}"#).unwrap();
        assert_eq!(
            recorded(&path),
            None,
            "a sandbox from before user namespaces"
        );
        let odd = serde_json::json!({"linux": {"uidMappings": [
            {"containerID": 0, "hostID": 1000, "size": 65536}
        ]}});
        std::fs::write(&path, odd.to_string()).unwrap();
        assert_eq!(recorded(&path), None, "not one of ours");
    }
}

//! What the host has, for making it agree with the database after a restart.
//!
//! The API server compares [`Runtime::list`] with its rows: containers and
//! directories without a row are destroyed ([`Runtime::destroy_orphans`]),
//! rows whose container is missing or stopped are marked as failed.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::ErrorKind;

use crate::config::validate_id;
use crate::error::{io_err, Result, RuntimeError};
use crate::runc::ContainerState;
use crate::runtime::Runtime;

impl Runtime {
    /// Every container runc knows under our root, plus sandbox directories
    /// and disk images without a container (as [`ContainerState::Stopped`]),
    /// sorted by id.
    pub async fn list(&self) -> Result<Vec<(String, ContainerState)>> {
        let inner = self.inner();
        let mut found: BTreeMap<String, ContainerState> = inner
            .runc
            .list()
            .await?
            .into_iter()
            .map(|c| (c.id, ContainerState::from_runc(&c.status)))
            .collect();
        let dir = inner.layout.sandboxes();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(found.into_iter().collect()),
            Err(e) => return Err(RuntimeError::io(format!("listing {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(|| format!("listing {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Anything else in there is not a sandbox we made.
            if validate_id(&name).is_ok() {
                found.entry(name).or_insert(ContainerState::Stopped);
            }
        }
        // A disk image left behind by a create or destroy cut short.
        let disks = inner.layout.disks();
        if let Ok(entries) = fs::read_dir(disks) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".img") {
                    if validate_id(id).is_ok() {
                        found
                            .entry(id.to_owned())
                            .or_insert(ContainerState::Stopped);
                    }
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Destroys every sandbox on this host whose id is not in `keep` and
    /// returns the ids destroyed. A sandbox that cannot be fully removed is
    /// logged and left out of the result; the next run tries again.
    pub async fn destroy_orphans(&self, keep: &HashSet<String>) -> Result<Vec<String>> {
        let mut destroyed = Vec::new();
        for (id, state) in self.list().await? {
            if keep.contains(&id) {
                continue;
            }
            match self.destroy(&id).await {
                Ok(()) => {
                    tracing::info!(sandbox = %id, ?state, "destroyed an orphaned sandbox");
                    destroyed.push(id);
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "cannot destroy an orphaned sandbox")
                }
            }
        }
        Ok(destroyed)
    }
}

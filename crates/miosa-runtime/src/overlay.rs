//! The per-sandbox writable root: an overlay of the sandbox's upper dir on the
//! read-only template skeleton, mounted by us in the host mount namespace
//! (runc then pivots into it).

use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Result, RuntimeError};
use crate::mountinfo;

/// Characters that would break overlay's `key=value,…` option string.
const FORBIDDEN: &[char] = &[',', ':', '\\', '\n', ' ', '\t'];

/// Checks that `path` can appear in overlay mount options.
pub(crate) fn check_path(path: &Path) -> Result<()> {
    match path.to_str() {
        Some(s) if !s.contains(FORBIDDEN) => Ok(()),
        _ => Err(RuntimeError::Config(format!(
            "{} cannot be used for overlay mounts (needs UTF-8 without ',', ':', '\\' or spaces)",
            path.display()
        ))),
    }
}

/// Mounts `lower` + `upper` (+ `work`) at `target`. Paths must pass [`check_path`].
pub(crate) fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| {
        RuntimeError::io(
            format!("mounting overlay at {} ({options})", target.display()),
            e.into(),
        )
    })
}

/// Unmounts everything mounted at or below `dir`, deepest first. A busy mount
/// is detached lazily so teardown never hangs on it.
pub(crate) fn unmount_all_under(dir: &Path) -> Result<()> {
    let entries = mountinfo::read()?;
    for point in mountinfo::mounts_under(&entries, dir) {
        let result = match umount2(&point, MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) => umount2(&point, MntFlags::MNT_DETACH),
            other => other,
        };
        match result {
            // Already gone (a parent's unmount took it along).
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("unmounting {}", point.display()),
                    io::Error::from(e),
                ))
            }
        }
    }
    Ok(())
}

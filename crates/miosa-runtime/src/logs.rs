//! The container log (runc's and the agent's stdout/stderr): opened for
//! appending, and trimmed in the background so it stays small.
//!
//! Root inside a sandbox can write to it through `/proc/1/fd/2`, so it
//! lives on the sandbox's own disk (a flood fills that disk, not the
//! host's), and [`trim`] keeps it from eating that disk in normal life: past
//! [`MAX_LOG_BYTES`] its last [`KEPT_BYTES`] move to `container.log.1` and it
//! starts again from empty (writers append, so they follow the truncation).
//! Lines written between the copy and the truncation are lost.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use crate::config::validate_id;
use crate::error::{io_err, Result, RuntimeError};
use crate::layout::SandboxPaths;
use crate::runtime::Inner;

/// Size past which a container log is trimmed.
pub(crate) const MAX_LOG_BYTES: u64 = 1024 * 1024;
/// How much of a trimmed log is kept, in `container.log.1`.
pub(crate) const KEPT_BYTES: u64 = 256 * 1024;
/// How often every sandbox's log is looked at.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Creates the log for appending (it must not exist).
pub(crate) fn create(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(|| format!("creating {}", path.display())))
}

/// Trims the sandbox's log if it grew past [`MAX_LOG_BYTES`]. Blocking.
pub(crate) fn trim(paths: &SandboxPaths) -> Result<bool> {
    let path = paths.log();
    let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(RuntimeError::io(format!("opening {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .map_err(io_err(|| format!("inspecting {}", path.display())))?
        .len();
    if len <= MAX_LOG_BYTES {
        return Ok(false);
    }
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(len - KEPT_BYTES))
        .and_then(|_| file.by_ref().take(KEPT_BYTES).read_to_end(&mut tail))
        .map_err(io_err(|| format!("reading {}", path.display())))?;
    // Truncate first: on a full disk, that is what makes room for the copy.
    file.set_len(0)
        .map_err(io_err(|| format!("truncating {}", path.display())))?;
    let old = paths.old_log();
    fs::write(&old, &tail).map_err(io_err(|| format!("writing {}", old.display())))?;
    Ok(true)
}

/// Trims every sandbox's log every [`TRIM_EVERY`] until the runtime is gone.
pub(crate) fn spawn_trimmer(inner: Weak<Inner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            let layout = inner.layout.clone();
            drop(inner);
            let _ = tokio::task::spawn_blocking(move || {
                let Ok(entries) = fs::read_dir(layout.sandboxes()) else {
                    return;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if validate_id(&name).is_err() {
                        continue;
                    }
                    match trim(&layout.sandbox(&name)) {
                        Ok(true) => tracing::debug!(sandbox = %name, "container log trimmed"),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(sandbox = %name, error = %e, "cannot trim the container log")
                        }
                    }
                }
            })
            .await;
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_long_log_keeps_its_tail_and_writers_carry_on() {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(dir.path());
        let paths = layout.sandbox("sbx_1");
        fs::create_dir_all(&paths.dir).unwrap();
        let mut writer = create(&paths.log()).unwrap();
        assert!(!trim(&paths).unwrap(), "nothing to trim yet");
        let line = [b'x'; 1023];
        for _ in 0..1100 {
            writer.write_all(&line).unwrap();
            writer.write_all(b"\n").unwrap();
        }
        writer.write_all(b"last line\n").unwrap();
        assert!(trim(&paths).unwrap());
        assert_eq!(fs::metadata(paths.log()).unwrap().len(), 0);
        let kept = fs::read(paths.old_log()).unwrap();
        assert_eq!(kept.len() as u64, KEPT_BYTES);
        assert!(kept.ends_with(b"last line\n"));
        // The writer appends at the new end, not at its old offset.
        writer.write_all(b"after\n").unwrap();
        assert_eq!(fs::read(paths.log()).unwrap(), b"after\n");
    }
}

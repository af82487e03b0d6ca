//! File operations of the file API, on already resolved paths.

use std::{
    fs, io,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use crate::{AgentError, FileEntry, FileType, RunAs};

const NEW_FILE_MODE: u32 = 0o644;

/// Owner given to files and directories the agent creates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    uid: u32,
    gid: u32,
}

impl From<RunAs> for Owner {
    fn from(who: RunAs) -> Self {
        match who {
            RunAs::User => Self {
                uid: 1000,
                gid: 1000,
            },
            RunAs::Root => Self { uid: 0, gid: 0 },
        }
    }
}

impl Owner {
    fn apply(self, path: &Path) -> Result<(), AgentError> {
        // The agent creates as root: only other owners need a chown.
        if self.uid == 0 && self.gid == 0 {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| AgentError::io(path.display(), &e))
    }
}

/// Entries of directory `dir`, sorted by name, without following symlinks.
pub(crate) fn list(dir: &Path) -> Result<Vec<FileEntry>, AgentError> {
    let err = |e: io::Error| AgentError::io(dir.display(), &e);
    let meta = fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(AgentError::Invalid(format!(
            "{}: Not a directory",
            dir.display()
        )));
    }
    let mut entries = Vec::new();
    for item in fs::read_dir(dir).map_err(err)? {
        let item = item.map_err(err)?;
        let path = item.path();
        match fs::symlink_metadata(&path) {
            Ok(meta) => entries.push(entry(&path, &meta)),
            // Removed while listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::io(path.display(), &e)),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The entry for `path` itself (lstat).
pub(crate) fn stat(path: &Path) -> Result<FileEntry, AgentError> {
    let meta = fs::symlink_metadata(path).map_err(|e| AgentError::io(path.display(), &e))?;
    Ok(entry(path, &meta))
}

fn entry(path: &Path, meta: &fs::Metadata) -> FileEntry {
    let ft = meta.file_type();
    let file_type = if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    };
    let modified_at = OffsetDateTime::from_unix_timestamp(meta.mtime())
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(u32::try_from(meta.mtime_nsec()).unwrap_or(0))
                .ok()
        })
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    FileEntry {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_owned()),
        path: path.to_string_lossy().into_owned(),
        file_type,
        size: meta.len(),
        mode: format!("{:04o}", meta.mode() & 0o7777),
        modified_at,
    }
}

/// Opens regular file `path` for streaming; returns it with its length.
pub(crate) async fn open_read(path: &Path) -> Result<(tokio::fs::File, u64), AgentError> {
    let err = |e: io::Error| AgentError::io(path.display(), &e);
    let file = tokio::fs::File::open(path).await.map_err(err)?;
    let meta = file.metadata().await.map_err(err)?;
    if meta.is_dir() {
        return Err(AgentError::Invalid(format!(
            "{}: Is a directory",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

/// Writes `body` to `path` atomically (temporary file in the same directory,
/// then rename), creating parents. Keeps the mode of a file it replaces.
pub(crate) async fn write<S, E>(path: &Path, body: S, owner: Owner) -> Result<FileEntry, AgentError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => return Err(AgentError::Invalid("cannot write to /".into())),
    };
    let mode = match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(AgentError::Invalid(format!(
                "{}: Is a directory",
                path.display()
            )))
        }
        Ok(m) => m.mode() & 0o7777,
        Err(_) => NEW_FILE_MODE,
    };
    {
        let parent = parent.clone();
        blocking(move || mkdir_all(&parent, owner)).await?;
    }
    let tmp = temp_name(&parent, &name);
    let result = write_temp(&tmp, body, owner, mode).await;
    let result = match result {
        Ok(()) => tokio::fs::rename(&tmp, path)
            .await
            .map_err(|e| AgentError::io(path.display(), &e)),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result?;
    stat(path)
}

async fn write_temp<S, E>(
    tmp: &Path,
    mut body: S,
    owner: Owner,
    mode: u32,
) -> Result<(), AgentError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let err = |e: io::Error| AgentError::io(tmp.display(), &e);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .await
        .map_err(err)?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AgentError::Invalid(format!("upload interrupted: {e}")))?;
        file.write_all(&chunk).await.map_err(err)?;
    }
    file.flush().await.map_err(err)?;
    // The umask may have cleared bits of a mode being preserved.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .await
        .map_err(err)?;
    owner.apply(tmp)
}

fn temp_name(dir: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.miosa-{}-{n}.tmp", std::process::id()))
}

/// Creates `dir` and missing parents, giving new ones to `owner`; 409 when a
/// non-directory is in the way.
pub(crate) fn mkdir_all(dir: &Path, owner: Owner) -> Result<(), AgentError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(AgentError::Conflict(format!(
                    "{}: exists and is not a directory",
                    cur.display()
                )))
            }
            // ENOTDIR: an ancestor is a file; the walk up reports it.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                missing.push(cur.to_path_buf());
                match cur.parent() {
                    Some(p) => cur = p,
                    None => break,
                }
            }
            Err(e) => return Err(AgentError::io(cur.display(), &e)),
        }
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => owner.apply(d)?,
            // Created concurrently: fine if it is a directory.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(AgentError::Conflict(format!(
                    "{}: exists and is not a directory",
                    d.display()
                )))
            }
            Err(e) => return Err(AgentError::io(d.display(), &e)),
        }
    }
    Ok(())
}

/// Removes a file or symlink, or a directory with its contents.
pub(crate) fn remove(path: &Path) -> Result<(), AgentError> {
    let err = |e: io::Error| AgentError::io(path.display(), &e);
    let meta = fs::symlink_metadata(path).map_err(err)?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(err)
    } else {
        fs::remove_file(path).map_err(err)
    }
}

/// Runs blocking file system work off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, AgentError>
where
    F: FnOnce() -> Result<T, AgentError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Internal(format!("file task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_all_conflicts_with_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let err = mkdir_all(&file.join("sub"), Owner::from(RunAs::Root)).unwrap_err();
        assert_eq!(err.code(), "conflict");
        mkdir_all(&dir.path().join("a/b/c"), Owner::from(RunAs::Root)).unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
    }

    #[test]
    fn entries_report_mode_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"abc").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        let e = stat(&f).unwrap();
        assert_eq!(
            (e.file_type, e.size, e.mode.as_str()),
            (FileType::File, 3, "0640")
        );
        assert_eq!(stat(Path::new("/")).unwrap().name, "/");
    }
}

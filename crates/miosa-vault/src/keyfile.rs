//! The master key's files in the data dir.
//!
//! `master-key` holds 64 hex characters and a newline, mode 0600. During a
//! rotation `master-key.next` (same format) holds the new key until every
//! stored value is re-wrapped, then replaces `master-key` by rename. Files
//! appear only complete: each is written to a temporary file in the same
//! directory and linked or renamed into place.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::{
    error::{io, VaultError, VaultResult},
    key::MasterKey,
};

/// The current key's file in the data dir.
pub const KEY_FILE: &str = "master-key";
/// The file of the key a rotation is moving to.
pub const NEXT_KEY_FILE: &str = "master-key.next";

/// Reads a key file; `None` if it does not exist. Refuses a file that group
/// or others may access, or that does not hold a key.
pub(crate) fn read(path: &Path) -> VaultResult<Option<MasterKey>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    let bad = |reason: String| VaultError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "has mode {mode:04o}, so users other than its owner may read the master key; \
             fix it with `chmod 600 {}`",
            path.display()
        )));
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io("read", path))?);
    MasterKey::from_hex(&text, &path.display().to_string())
        .map(Some)
        .map_err(|_| {
            bad(
                "does not hold a master key (64 hex characters and a newline). Restore it \
                 from a backup: a new key cannot open the secrets already stored"
                    .into(),
            )
        })
}

/// Writes `key` to a new temporary file in `dir` (mode 0600, synced).
fn temp_with(dir: &Path, key: &MasterKey) -> VaultResult<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".master-key.")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(key.to_hex().as_bytes())
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io("write", tmp.path().to_owned()))?;
    Ok(tmp)
}

fn sync_dir(dir: &Path) -> VaultResult<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

/// The key in `<dir>/<name>`, generated into it if the file does not exist, and
/// whether it was generated. Two processes doing this at once agree: the
/// file is created complete, never replacing one that appeared meanwhile,
/// and the loser reads the winner's key.
pub(crate) fn load_or_create(dir: &Path, name: &str) -> VaultResult<(MasterKey, bool)> {
    let path = &dir.join(name);
    if let Some(key) = read(path)? {
        return Ok((key, false));
    }
    let key = MasterKey::generate()?;
    let tmp = temp_with(dir, &key)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_dir(dir)?;
            Ok((key, true))
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = read(path)?.ok_or_else(|| VaultError::KeyFile {
                path: path.to_owned(),
                reason: "disappeared while being created".into(),
            })?;
            Ok((key, false))
        }
        Err(e) => Err(io("create", path)(e.error)),
    }
}

/// Renames `master-key.next` over `master-key`. Done already (by a
/// concurrent run) counts as success if `master-key` now holds `expected`.
pub(crate) fn promote_next(dir: &Path, expected: &MasterKey) -> VaultResult<PathBuf> {
    let path = dir.join(KEY_FILE);
    match fs::rename(dir.join(NEXT_KEY_FILE), &path) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let now = read(&path)?;
            if now.as_ref().map(MasterKey::id) != Some(expected.id()) {
                return Err(io("replace", path)(e));
            }
        }
        Err(e) => return Err(io("replace", path)(e)),
    }
    Ok(path)
}

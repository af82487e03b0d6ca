//! The start of every sandbox's writable layer: the template skeleton,
//! copied into the upper dir and owned by the sandbox's own host ids.
//!
//! The skeleton (the overlay's lower dir, shared by every sandbox) is owned
//! by host root, which a sandbox's user namespace does not map: seen from
//! inside, its directories would belong to `nobody`, and root inside could
//! not create files in `/etc` or `/root`. So each sandbox gets the
//! skeleton's few dozen entries (mostly directories and short files) in its
//! upper dir, shifted into its id range; the lower dir then only shows
//! through where the sandbox deletes something.

use std::fs;
use std::os::unix::fs::{lchown, symlink, DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result, RuntimeError};
use crate::idmap::IdRange;

/// Largest skeleton file copied (the dynamic-loader cache is the biggest).
const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

#[derive(Debug, Clone)]
struct Entry {
    /// Relative to the skeleton's root; empty for the root itself.
    rel: PathBuf,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The skeleton, read once when the runtime starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seed {
    /// Parents before children.
    entries: Vec<Entry>,
}

impl Seed {
    /// Reads the skeleton at `rootfs`. Blocking.
    pub(crate) fn scan(rootfs: &Path) -> Result<Self> {
        let mut seed = Self::default();
        seed.visit(rootfs, PathBuf::new())?;
        Ok(seed)
    }

    fn visit(&mut self, root: &Path, rel: PathBuf) -> Result<()> {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path)
            .map_err(io_err(|| format!("inspecting {}", path.display())))?;
        let kind = if meta.file_type().is_symlink() {
            Kind::Symlink(
                fs::read_link(&path).map_err(io_err(|| format!("reading {}", path.display())))?,
            )
        } else if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() && meta.len() <= MAX_FILE_BYTES {
            Kind::File(fs::read(&path).map_err(io_err(|| format!("reading {}", path.display())))?)
        } else {
            return Err(RuntimeError::Config(format!(
                "{} is not a directory, symlink or small file",
                path.display()
            )));
        };
        let is_dir = matches!(kind, Kind::Dir);
        self.entries.push(Entry {
            rel: rel.clone(),
            kind,
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
        if is_dir {
            let mut names: Vec<_> = fs::read_dir(&path)
                .map_err(io_err(|| format!("listing {}", path.display())))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .map_err(io_err(|| format!("listing {}", path.display())))?;
            names.sort();
            for name in names {
                self.visit(root, rel.join(name))?;
            }
        }
        Ok(())
    }

    /// Creates the skeleton at `upper` (which must not exist) with every
    /// owner shifted into `ids`. Blocking.
    pub(crate) fn plant(&self, upper: &Path, ids: IdRange) -> Result<()> {
        for entry in &self.entries {
            let path = upper.join(&entry.rel);
            let made = match &entry.kind {
                Kind::Dir => fs::DirBuilder::new().mode(entry.mode).create(&path),
                Kind::File(content) => fs::write(&path, content),
                Kind::Symlink(target) => symlink(target, &path),
            };
            made.map_err(io_err(|| format!("creating {}", path.display())))?;
            lchown(&path, Some(ids.host(entry.uid)), Some(ids.host(entry.gid)))
                .map_err(io_err(|| format!("chown {}", path.display())))?;
            if !matches!(entry.kind, Kind::Symlink(_)) {
                // After the chown (which clears set-id bits) and past the umask.
                fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))
                    .map_err(io_err(|| format!("setting the mode of {}", path.display())))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::idmap::IdRanges;

    #[test]
    fn the_skeleton_is_copied_with_shifted_owners() {
        let dir = tempfile::tempdir().unwrap();
        let skel = dir.path().join("skel");
        fs::create_dir(&skel).unwrap();
        fs::create_dir(skel.join("tmp")).unwrap();
        fs::set_permissions(skel.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(skel.join("home")).unwrap();
        fs::create_dir(skel.join("home/user")).unwrap();
        lchown(skel.join("home/user"), Some(1000), Some(1000)).unwrap();
        fs::write(skel.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        symlink("usr/bin", skel.join("bin")).unwrap();

        let seed = Seed::scan(&skel).unwrap();
        let ids = IdRanges::default().claim("sbx_seed").unwrap();
        let upper = dir.path().join("upper");
        seed.plant(&upper, ids).unwrap();

        let meta = |rel: &str| fs::symlink_metadata(upper.join(rel)).unwrap();
        assert_eq!((meta("").uid(), meta("").gid()), (ids.host(0), ids.host(0)));
        assert_eq!(meta("tmp").permissions().mode() & 0o7777, 0o1777);
        assert_eq!(meta("home/user").uid(), ids.host(1000));
        assert_eq!(meta("bin").uid(), ids.host(0));
        assert_eq!(
            fs::read_link(upper.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read_to_string(upper.join("passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
    }
}

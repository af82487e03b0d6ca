//! Each sandbox's disk: an ext4 file system of `disk_mb` MiB in a sparse
//! image under `<data_dir>/disks/`, loop-mounted on the sandbox's directory.
//!
//! Everything the sandbox can make grow lives on it — the overlay's upper
//! and work dirs, `run/` (bind-mounted to `/run/miosa`, writable by root
//! inside) and `container.log` (the agent's stdout/stderr, which root inside
//! can reach through `/proc/1/fd`) — so the kernel stops the sandbox with
//! `ENOSPC` at its limit while the host's disk and other sandboxes are
//! untouched. The image is sparse: it takes host space only for what is
//! written (and gives it back when files are deleted: `discard`).
//!
//! Creating one costs a `mkfs.ext4` (no journal, lazily initialised inode
//! tables that are never zeroed: the sparse image reads as zeros) and a
//! `mount -o loop` (whose loop device detaches itself on unmount). Teardown
//! deletes the files *before* unmounting, so dirty pages are dropped rather
//! than written back through the loop device.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use crate::error::{io_err, Result, RuntimeError};

/// Smallest disk we make: room for the agent's files and some work.
pub const MIN_DISK_MB: u64 = 64;
/// Largest disk we make (16 TiB), far below ext4's limits.
pub const MAX_DISK_MB: u64 = 16 << 20;

/// How long [`unmount`] waits for a busy disk before detaching it lazily.
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// Bytes per inode: ext4's default ratio, enough for `node_modules`.
const BYTES_PER_INODE: &str = "16384";

/// Checks that this host can make sandbox disks: `mkfs.ext4` runs and
/// loop devices exist.
pub(crate) fn check_host() -> Result<()> {
    let mkfs = Command::new("mkfs.ext4").arg("-V").output();
    match mkfs {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(RuntimeError::Config(format!(
                "mkfs.ext4 -V failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
        Err(e) => {
            return Err(RuntimeError::Config(format!(
                "sandbox disks need mkfs.ext4 (apt-get install e2fsprogs): {e}"
            )))
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(RuntimeError::Config(
            "sandbox disks need loop devices, but /dev/loop-control is missing (modprobe loop)"
                .into(),
        ));
    }
    Ok(())
}

/// Makes a `disk_mb` MiB file system in `image` (which must not exist) and
/// mounts it on `dir` (which must exist and be empty), mode 0700.
pub(crate) fn create(image: &Path, dir: &Path, disk_mb: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(image)
        .map_err(io_err(|| format!("creating {}", image.display())))?;
    file.set_len(disk_mb * 1024 * 1024)
        .map_err(io_err(|| format!("sizing {}", image.display())))?;
    drop(file);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal,^resize_inode", "-m", "1"])
        .args(["-i", BYTES_PER_INODE])
        .args(["-E", "lazy_itable_init=1,nodiscard", "-L", "miosa-sandbox"])
        .arg(image))?;
    run(Command::new("mount")
        .args(["-t", "ext4", "-o"])
        .arg("loop,nosuid,nodev,noatime,discard,noinit_itable")
        .arg(image)
        .arg(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err(|| format!("setting the mode of {}", dir.display())))
}

/// Deletes what is in `dir` (the disk's root, nothing mounted below it) so
/// that unmounting has nothing to write back.
pub(crate) fn empty(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RuntimeError::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(|| format!("listing {}", dir.display())))?;
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match result {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(RuntimeError::io(format!("removing {}", path.display()), e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Unmounts the disk from `dir`. While something still holds a file on it
/// (say a socket the egress proxy is letting go of), tries again for up to
/// [`BUSY_WAIT`], then detaches it lazily: the loop device and its image
/// are released when the last holder lets go.
pub(crate) fn unmount(dir: &Path) -> Result<()> {
    let started = Instant::now();
    loop {
        let result = match umount2(dir, MntFlags::empty()) {
            Err(Errno::EBUSY) if started.elapsed() < BUSY_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(Errno::EBUSY) => {
                tracing::warn!(dir = %dir.display(), "sandbox disk busy; detaching it lazily");
                umount2(dir, MntFlags::MNT_DETACH)
            }
            other => other,
        };
        return match result {
            // Not a mount point (a sandbox made before disks), or gone.
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
            Err(e) => Err(RuntimeError::io(
                format!("unmounting {}", dir.display()),
                e.into(),
            )),
        };
    }
}

/// Removes the image (its loop device, if still attached, lets go of it
/// when the file system's last user does).
pub(crate) fn remove_image(image: &Path) -> Result<()> {
    match fs::remove_file(image) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(RuntimeError::io(format!("removing {}", image.display()), e))
        }
        _ => Ok(()),
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let described = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(io_err(|| format!("running {described}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(RuntimeError::io(
        format!("{described} failed ({})", out.status),
        std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    ))
}

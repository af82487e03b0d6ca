//! The default template: a small read-only skeleton that every sandbox's
//! overlay sits on.
//!
//! The skeleton holds only what is per-system rather than per-package: the
//! top-level directory tree, merged-usr symlinks mirroring the host, users and
//! groups, name-service config, and copies of the host's dynamic-loader cache
//! so host binaries run. The host's `/usr` (and, on hosts without merged-usr,
//! `/bin`, `/lib`, …) is bind-mounted read-only over it at start.
//!
//! The skeleton lives in `templates/default-<fingerprint>/rootfs`, and
//! `templates/default` is a symlink to the current one. The fingerprint covers
//! the skeleton's format version and every host file copied into it, so a
//! change on the host (new `ld.so.cache` after installing a library) yields a
//! new skeleton at the next start while running sandboxes keep the one they
//! were mounted on; unused old skeletons are removed.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{io_err, Result, RuntimeError};
use crate::mountinfo;

/// Bump when the skeleton's content or layout changes.
const FORMAT_VERSION: u32 = 1;

/// Top-level system dirs mirrored from the host: a symlink on the host
/// (merged-usr) becomes the same symlink; a real directory gets bind-mounted.
const SYSTEM_DIRS: &[&str] = &["bin", "lib", "lib32", "lib64", "libx32", "sbin"];

/// Host files copied into the skeleton (symlinks are copied as symlinks).
const HOST_FILES: &[&str] = &[
    "etc/ld.so.cache",
    "etc/ld.so.conf",
    "etc/os-release",
    "etc/protocols",
    "etc/services",
    "etc/ssl/openssl.cnf",
];

/// Host directories whose entries are copied the same way.
const HOST_FILE_DIRS: &[&str] = &["etc/ld.so.conf.d"];

/// Directories of the skeleton with their modes (created in this order).
const DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("etc", 0o755),
    ("etc/alternatives", 0o755),
    ("etc/ld.so.conf.d", 0o755),
    ("etc/ssl", 0o755),
    ("etc/ssl/certs", 0o755),
    ("home", 0o755),
    ("home/user", 0o755),
    ("opt", 0o755),
    ("opt/miosa", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("run/miosa", 0o700),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("var", 0o755),
    ("var/cache", 0o755),
    ("var/lib", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
];

/// The unprivileged user the agent runs sandbox code as.
pub(crate) const USER_UID: u32 = 1000;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
user:x:1000:1000::/home/user:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
";

const GROUP: &str = "\
root:x:0:
tty:x:5:
user:x:1000:
nogroup:x:65534:
";

const NSSWITCH: &str = "\
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
";

const PROFILE: &str = "\
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ \"$(id -u)\" -eq 0 ]; then PS1='\\h:\\w# '; else PS1='\\h:\\w$ '; fi
";

const FILES: &[(&str, &str, u32)] = &[
    ("etc/passwd", PASSWD, 0o644),
    ("etc/group", GROUP, 0o644),
    ("etc/nsswitch.conf", NSSWITCH, 0o644),
    ("etc/profile", PROFILE, 0o644),
    (
        "etc/resolv.conf",
        "# no DNS: egress goes through the proxy\n",
        0o644,
    ),
    (
        "etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        0o644,
    ),
    ("etc/hostname", "sandbox\n", 0o644),
    // Mount point of the agent binary.
    ("opt/miosa/miosa", "", 0o755),
];

const SYMLINKS: &[(&str, &str)] = &[
    ("etc/mtab", "../proc/self/mounts"),
    ("etc/localtime", "/usr/share/zoneinfo/Etc/UTC"),
];

/// Per-sandbox `/etc/hosts`.
pub(crate) fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// The skeleton in use.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// The versioned skeleton (`templates/default-<fp>/rootfs`): the overlay lower dir.
    pub(crate) rootfs: PathBuf,
    /// Host top-level dirs that are real directories and need a bind mount.
    pub(crate) extra_system_dirs: Vec<String>,
}

/// What was found on the host.
#[derive(Debug, Clone, PartialEq)]
enum HostItem {
    Symlink(PathBuf),
    File(Vec<u8>),
}

#[derive(Debug, Default)]
struct HostScan {
    /// (name, symlink target) of merged-usr links.
    links: Vec<(String, PathBuf)>,
    /// Names of real top-level system dirs.
    dirs: Vec<String>,
    /// (relative path, content) of copied host files.
    files: Vec<(String, HostItem)>,
}

fn scan_host(host_root: &Path) -> Result<HostScan> {
    let mut scan = HostScan::default();
    for name in SYSTEM_DIRS {
        let path = host_root.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path)
                    .map_err(io_err(|| format!("reading link {}", path.display())))?;
                scan.links.push(((*name).to_string(), target));
            }
            Ok(meta) if meta.is_dir() => scan.dirs.push((*name).to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("inspecting {}", path.display()),
                    e,
                ))
            }
        }
    }
    let mut rel_paths: Vec<String> = HOST_FILES.iter().map(|s| (*s).to_string()).collect();
    for dir in HOST_FILE_DIRS {
        let path = host_root.join(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(RuntimeError::io(format!("listing {}", path.display()), e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(|| format!("listing {}", path.display())))?;
            names.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
        }
        names.sort();
        rel_paths.extend(names);
    }
    for rel in rel_paths {
        let path = host_root.join(&rel);
        let item = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => HostItem::Symlink(
                fs::read_link(&path)
                    .map_err(io_err(|| format!("reading link {}", path.display())))?,
            ),
            Ok(meta) if meta.is_file() => HostItem::File(
                fs::read(&path).map_err(io_err(|| format!("reading {}", path.display())))?,
            ),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("inspecting {}", path.display()),
                    e,
                ))
            }
        };
        scan.files.push((rel, item));
    }
    Ok(scan)
}

/// FNV-1a, 64 bit: stable across Rust releases (unlike `DefaultHasher`).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Field separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

fn fingerprint(scan: &HostScan) -> String {
    let mut h = Fnv::new();
    h.write(&FORMAT_VERSION.to_le_bytes());
    for (name, target) in &scan.links {
        h.write(b"link");
        h.write(name.as_bytes());
        h.write(target.as_os_str().as_encoded_bytes());
    }
    for name in &scan.dirs {
        h.write(b"dir");
        h.write(name.as_bytes());
    }
    for (rel, item) in &scan.files {
        h.write(rel.as_bytes());
        match item {
            HostItem::Symlink(target) => {
                h.write(b"symlink");
                h.write(target.as_os_str().as_encoded_bytes());
            }
            HostItem::File(content) => {
                h.write(b"file");
                h.write(content);
            }
        }
    }
    format!("{:016x}", h.0)
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RuntimeError::io(format!("creating {}", path.display()), e)),
    }
    // The umask may have cleared bits (sticky /tmp, for one).
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(|| format!("setting mode of {}", path.display())))
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    fs::write(path, content).map_err(io_err(|| format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(|| format!("setting mode of {}", path.display())))
}

fn make_symlink(target: &Path, link: &Path) -> Result<()> {
    symlink(target, link).map_err(io_err(|| format!("creating symlink {}", link.display())))
}

fn build_skeleton(rootfs: &Path, scan: &HostScan) -> Result<()> {
    mkdir(rootfs, 0o755)?;
    for (dir, mode) in DIRS {
        mkdir(&rootfs.join(dir), *mode)?;
    }
    for name in &scan.dirs {
        mkdir(&rootfs.join(name), 0o755)?;
    }
    for (name, target) in &scan.links {
        make_symlink(target, &rootfs.join(name))?;
    }
    for (rel, content, mode) in FILES {
        write_file(&rootfs.join(rel), content.as_bytes(), *mode)?;
    }
    for (rel, target) in SYMLINKS {
        make_symlink(Path::new(target), &rootfs.join(rel))?;
    }
    for (rel, item) in &scan.files {
        let dest = rootfs.join(rel);
        match item {
            HostItem::Symlink(target) => make_symlink(target, &dest)?,
            HostItem::File(content) => write_file(&dest, content, 0o644)?,
        }
    }
    let home = rootfs.join("home/user");
    nix::unistd::chown(
        &home,
        Some(nix::unistd::Uid::from_raw(USER_UID)),
        Some(nix::unistd::Gid::from_raw(USER_UID)),
    )
    .map_err(|e| RuntimeError::io(format!("chown {}", home.display()), e.into()))
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

/// Makes sure `templates/default` points at an up-to-date skeleton built
/// from `host_root` (`/` outside tests) and removes unused old ones. Blocking.
pub(crate) fn ensure_default(templates: &Path, host_root: &Path) -> Result<Template> {
    mkdir(templates, 0o700)?;
    let scan = scan_host(host_root)?;
    let name = format!("default-{}", fingerprint(&scan));
    let versioned = templates.join(&name);
    let marker = versioned.join("VERSION");
    let current = fs::read_to_string(&marker).ok();

    if current.as_deref() != Some(name.as_str()) {
        let build = templates.join(format!(".build-{}", unique_suffix()));
        mkdir(&build, 0o755)?;
        build_skeleton(&build.join("rootfs"), &scan)?;
        write_file(&build.join("VERSION"), name.as_bytes(), 0o644)?;
        if versioned.exists() {
            // An interrupted earlier build without a marker: replace it.
            fs::remove_dir_all(&versioned)
                .map_err(io_err(|| format!("removing {}", versioned.display())))?;
        }
        fs::rename(&build, &versioned).map_err(io_err(|| {
            format!("renaming {} into place", build.display())
        }))?;
        tracing::info!(template = %versioned.display(), "built the default template");
    }

    let link = templates.join("default");
    if fs::read_link(&link).ok().as_deref() != Some(Path::new(&name)) {
        let tmp_link = templates.join(format!(".default-{}", unique_suffix()));
        make_symlink(Path::new(&name), &tmp_link)?;
        fs::rename(&tmp_link, &link)
            .map_err(io_err(|| format!("pointing {} at {name}", link.display())))?;
    }

    remove_unused(templates, &name)?;
    Ok(Template {
        rootfs: versioned.join("rootfs"),
        extra_system_dirs: scan.dirs,
    })
}

/// Removes old skeletons no mounted overlay uses, and abandoned builds.
fn remove_unused(templates: &Path, keep: &str) -> Result<()> {
    let mounts = mountinfo::read()?;
    let entries =
        fs::read_dir(templates).map_err(io_err(|| format!("listing {}", templates.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(|| format!("listing {}", templates.display())))?;
        let file_name = entry.file_name();
        let name = file_name.to_string_lossy();
        let stale = (name.starts_with("default-") && name != keep) || name.starts_with(".build-");
        let path = entry.path();
        if stale && !mountinfo::overlay_uses_lower(&mounts, &path) {
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an old template");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("miosa-template-{tag}-{}", unique_suffix()));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fake_host(root: &Path) {
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(root.join("etc/ld.so.conf.d")).unwrap();
        fs::create_dir_all(root.join("lib64")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        fs::write(root.join("etc/ld.so.cache"), b"cache-v1").unwrap();
        fs::write(
            root.join("etc/ld.so.conf"),
            b"include /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/ld.so.conf.d/x86_64.conf"),
            b"/usr/local/lib\n",
        )
        .unwrap();
        symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    }

    #[test]
    fn builds_a_skeleton_mirroring_the_host() {
        let tmp = TempDir::new("build");
        let host = tmp.0.join("host");
        fake_host(&host);
        let templates = tmp.0.join("templates");
        let t = ensure_default(&templates, &host).unwrap();
        let root = &t.rootfs;
        assert!(root.starts_with(&templates));
        assert_eq!(
            fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read_link(root.join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert!(
            fs::symlink_metadata(root.join("sbin")).is_err(),
            "absent on host"
        );
        assert_eq!(
            t.extra_system_dirs,
            ["lib64"],
            "a real dir on the host gets a bind"
        );
        assert!(root.join("lib64").is_dir());
        assert_eq!(fs::read(root.join("etc/ld.so.cache")).unwrap(), b"cache-v1");
        assert_eq!(
            fs::read(root.join("etc/ld.so.conf.d/x86_64.conf")).unwrap(),
            b"/usr/local/lib\n"
        );
        assert_eq!(
            fs::read_link(root.join("etc/os-release")).unwrap(),
            Path::new("../usr/lib/os-release")
        );
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("var/tmp"), 0o1777);
        assert_eq!(mode("root"), 0o700);
        let home = fs::metadata(root.join("home/user")).unwrap();
        assert_eq!((home.uid(), home.gid()), (USER_UID, USER_UID));
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"));
        assert!(passwd.contains("user:x:1000:1000::/home/user:/bin/bash\n"));
        assert!(fs::read_to_string(root.join("etc/group"))
            .unwrap()
            .contains("nogroup:x:65534:"));
        assert!(root.join("opt/miosa/miosa").is_file());
        assert_eq!(
            fs::read_link(templates.join("default")).unwrap(),
            t.rootfs.parent().unwrap().file_name().unwrap()
        );
        assert!(templates.join("default/rootfs/etc/passwd").is_file());
    }

    #[test]
    fn is_idempotent_and_rebuilds_when_the_host_changes() {
        let tmp = TempDir::new("refresh");
        let host = tmp.0.join("host");
        fake_host(&host);
        let templates = tmp.0.join("templates");
        let first = ensure_default(&templates, &host).unwrap();
        let marker = fs::metadata(first.rootfs.join("etc/passwd"))
            .unwrap()
            .modified()
            .unwrap();
        let again = ensure_default(&templates, &host).unwrap();
        assert_eq!(first.rootfs, again.rootfs);
        let marker_again = fs::metadata(again.rootfs.join("etc/passwd"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            marker, marker_again,
            "an up-to-date skeleton is not rebuilt"
        );

        fs::write(host.join("etc/ld.so.cache"), b"cache-v2").unwrap();
        let changed = ensure_default(&templates, &host).unwrap();
        assert_ne!(changed.rootfs, first.rootfs);
        assert_eq!(
            fs::read(changed.rootfs.join("etc/ld.so.cache")).unwrap(),
            b"cache-v2"
        );
        assert!(!first.rootfs.exists(), "the unused old skeleton is removed");
        let names: Vec<String> = fs::read_dir(&templates)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "only the link and the current skeleton: {names:?}"
        );
    }

    #[test]
    fn hosts_file_names_the_sandbox() {
        assert!(hosts_file("box-1").starts_with("127.0.0.1\tlocalhost box-1\n"));
    }
}

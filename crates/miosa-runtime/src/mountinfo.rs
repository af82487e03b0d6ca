//! Reading `/proc/self/mountinfo` (cgroup hierarchies, our overlays, leftovers).

use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Path inside the file system that is mounted (field 4).
    pub(crate) root: String,
    /// Where it is mounted (field 5).
    pub(crate) mount_point: PathBuf,
    /// File system type after the `-` separator.
    pub(crate) fs_type: String,
    /// Super-block options (e.g. `rw,memory` for a cgroup, `lowerdir=…` for overlay).
    pub(crate) super_options: String,
}

/// Parses the current process's mount table.
pub(crate) fn read() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err(|| "reading /proc/self/mountinfo".into()))?;
    Ok(parse(&text))
}

/// Parses mountinfo text; malformed lines are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (head, tail) = line.split_once(" - ")?;
    let head: Vec<&str> = head.split(' ').collect();
    let mut tail = tail.split(' ');
    let fs_type = tail.next()?;
    let _source = tail.next()?;
    let super_options = tail.next().unwrap_or("");
    Some(MountEntry {
        root: unescape(head.get(3)?),
        mount_point: PathBuf::from(unescape(head.get(4)?)),
        fs_type: fs_type.to_string(),
        super_options: unescape(super_options),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&[b'\\', a, b, c]) = bytes.get(i..i + 4) {
            let octal = |d: u8| (b'0'..=b'7').contains(&d).then(|| u32::from(d - b'0'));
            if let (Some(a), Some(b), Some(c)) = (octal(a), octal(b), octal(c)) {
                if let Ok(value) = u8::try_from(a * 64 + b * 8 + c) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `dir`, deepest first (the order to unmount them in).
pub(crate) fn mounts_under(entries: &[MountEntry], dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.mount_point.starts_with(dir))
        .map(|e| e.mount_point.clone())
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Whether any overlay mount uses `dir` as (one of) its lower dirs.
pub(crate) fn overlay_uses_lower(entries: &[MountEntry], dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    entries
        .iter()
        .filter(|e| e.fs_type == "overlay")
        .filter_map(|e| {
            e.super_options
                .split(',')
                .find_map(|o| o.strip_prefix("lowerdir="))
        })
        .any(|lower| {
            lower
                .split(':')
                .any(|l| Path::new(l).starts_with(dir.as_ref()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 27 0:50 / /data/sandboxes/sbx_1/rootfs rw,relatime - overlay overlay rw,lowerdir=/data/templates/default-00ff/rootfs,upperdir=/data/sandboxes/sbx_1/upper,workdir=/data/sandboxes/sbx_1/work
91 90 0:51 / /data/sandboxes/sbx_1/rootfs/proc rw - proc proc rw
92 27 0:52 / /tmp/with\\040space rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn parses_fields_and_escapes() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 6);
        assert_eq!(entries[1].fs_type, "cgroup");
        assert_eq!(entries[1].super_options, "rw,memory");
        assert_eq!(entries[1].mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(entries[5].mount_point, Path::new("/tmp/with space"));
    }

    #[test]
    fn finds_mounts_below_a_dir_deepest_first() {
        let entries = parse(SAMPLE);
        assert_eq!(
            mounts_under(&entries, Path::new("/data/sandboxes/sbx_1")),
            [
                PathBuf::from("/data/sandboxes/sbx_1/rootfs/proc"),
                PathBuf::from("/data/sandboxes/sbx_1/rootfs"),
            ]
        );
        assert!(mounts_under(&entries, Path::new("/data/sandboxes/sbx_10")).is_empty());
    }

    #[test]
    fn knows_which_template_is_in_use() {
        let entries = parse(SAMPLE);
        assert!(overlay_uses_lower(
            &entries,
            Path::new("/data/templates/default-00ff")
        ));
        assert!(!overlay_uses_lower(
            &entries,
            Path::new("/data/templates/default-00fe")
        ));
    }
}

//! Turning request paths into absolute, normalised paths, and keeping the
//! agent's own directory (its socket) out of reach of the file API.

use std::path::{Component, Path, PathBuf};

use crate::AgentError;

/// Where file paths may and may not point.
#[derive(Debug, Clone)]
pub(crate) struct PathPolicy {
    /// Base of relative paths.
    pub home: PathBuf,
    /// Directories the file API refuses to touch (lexical and real forms).
    pub protected: Vec<PathBuf>,
}

impl PathPolicy {
    /// Builds a policy protecting `dirs` (also in their symlink-free form).
    pub fn new(home: PathBuf, dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut protected = Vec::new();
        for dir in dirs {
            if let Ok(real) = std::fs::canonicalize(&dir) {
                protected.push(real);
            }
            protected.push(normalise(&dir));
        }
        protected.sort();
        protected.dedup();
        Self { home, protected }
    }

    /// Absolute normalised form of `raw`, refused when it lies inside a
    /// protected directory (directly or through symlinks).
    pub fn resolve(&self, raw: &str) -> Result<PathBuf, AgentError> {
        if raw.is_empty() {
            return Err(AgentError::Invalid("path is empty".into()));
        }
        if raw.contains('\0') {
            return Err(AgentError::Invalid("path contains a NUL byte".into()));
        }
        let path = normalise(&self.home.join(raw));
        let real = real_path(&path);
        if self
            .protected
            .iter()
            .any(|dir| path.starts_with(dir) || real.starts_with(dir))
        {
            return Err(AgentError::Forbidden(format!(
                "{}: belongs to the sandbox agent",
                path.display()
            )));
        }
        Ok(path)
    }

    /// Whether removing `path` would remove a protected directory.
    pub fn contains_protected(&self, path: &Path) -> bool {
        let real = real_path(path);
        self.protected
            .iter()
            .any(|dir| dir.starts_with(path) || dir.starts_with(&real))
    }
}

/// Lexical normalisation: makes `path` absolute against `/`, drops `.` and
/// resolves `..` without following symlinks (never above `/`).
pub(crate) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `path` with symlinks resolved in its longest existing prefix; the missing
/// rest is appended as is.
fn real_path(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PathPolicy {
        PathPolicy::new("/home/user".into(), [PathBuf::from("/run/miosa")])
    }

    #[test]
    fn normalises_relative_and_dot_dot() {
        let p = policy();
        assert_eq!(p.resolve("a/b").unwrap(), Path::new("/home/user/a/b"));
        assert_eq!(p.resolve("./a/../b/").unwrap(), Path::new("/home/user/b"));
        assert_eq!(p.resolve("/x/../../etc").unwrap(), Path::new("/etc"));
        assert_eq!(p.resolve("../../../..").unwrap(), Path::new("/"));
        assert_eq!(p.resolve("/").unwrap(), Path::new("/"));
    }

    #[test]
    fn refuses_nul_empty_and_agent_dir() {
        let p = policy();
        assert_eq!(p.resolve("").unwrap_err().code(), "invalid");
        assert_eq!(p.resolve("a\0b").unwrap_err().code(), "invalid");
        assert_eq!(p.resolve("/run/miosa").unwrap_err().code(), "forbidden");
        assert_eq!(
            p.resolve("/run/x/../miosa/agent.sock").unwrap_err().code(),
            "forbidden"
        );
        assert!(p.resolve("/run/miosa-other").is_ok());
        assert!(p.contains_protected(Path::new("/run")));
        assert!(p.contains_protected(Path::new("/")));
        assert!(!p.contains_protected(Path::new("/home")));
    }

    #[test]
    fn refuses_symlinks_into_agent_dir() {
        let protected = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let link = other.path().join("link");
        std::os::unix::fs::symlink(protected.path(), &link).unwrap();
        let p = PathPolicy::new("/home/user".into(), [protected.path().to_path_buf()]);
        let via = format!("{}/agent.sock", link.display());
        assert_eq!(p.resolve(&via).unwrap_err().code(), "forbidden");
        assert!(p.resolve(&other.path().display().to_string()).is_ok());
    }
}

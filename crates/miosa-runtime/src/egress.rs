//! The sandbox side of the egress proxy: the proxy environment, the trust
//! bundle holding the sandbox's interception CA, and Node's preload.
//!
//! The agent bridges `127.0.0.1:3128` inside to the proxy's socket
//! ([`crate::Runtime::egress_socket`]); the variables below point every
//! common HTTP client there. The proxy intercepts HTTPS with a per-sandbox
//! CA, so its PEM goes into two root-owned 0644 files in the sandbox's run
//! dir: `egress-ca.pem` (the CA alone, for `NODE_EXTRA_CA_CERTS`) and
//! `ca-bundle.pem` (the host's bundle followed by the CA), which is
//! bind-mounted read-only over the system bundle so that tools reading the
//! default path trust the proxy too.
//!
//! Node (18 to 22) ignores the proxy variables in `fetch` and in the
//! `http`/`https` default agents, so a third file, `node-egress.js`
//! (`node_egress.js` beside this file), is preloaded through `NODE_OPTIONS`
//! and routes both through the proxy. A caller's own `NODE_OPTIONS` (at
//! create or per command) is added after ours, so the preload stays.
//!
//! Replacing the CA (after `miosa serve` restarts with a fresh one) rewrites
//! both CA files in place: the file bind mount pins the inode it was made on,
//! so a new file renamed over the path would never be seen inside. The
//! preload does not depend on the CA and is left as it is.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::bundle::RUN_DIR;
use crate::error::{io_err, Result, RuntimeError};
use crate::layout::{SandboxPaths, EGRESS_CA};

/// The system trust bundle, on the host and inside the sandbox.
pub(crate) const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Mode of the files in the run dir: readable by the sandbox's user,
/// writable by no one inside but root.
const FILE_MODE: u32 = 0o644;
/// Hosts reached directly rather than through the proxy.
const NO_PROXY: &str = "localhost,127.0.0.1";
/// Variables naming the proxy, in both spellings tools look for (curl reads
/// only the lower-case `http_proxy`).
const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// Variables naming a trust bundle (OpenSSL, Python requests, curl).
const BUNDLE_VARS: &[&str] = &["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"];
/// File name of Node's preload in a sandbox's `run/` dir.
const NODE_PRELOAD: &str = "node-egress.js";
/// The preload: a global `fetch` dispatcher and `http`/`https` agents that
/// honour `HTTP(S)_PROXY` and `NO_PROXY`.
const NODE_PRELOAD_JS: &str = include_str!("node_egress.js");
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";
/// A CA certificate is a few KiB; this only bounds what we write to disk.
const MAX_CA_PEM_BYTES: usize = 64 * 1024;

/// The proxy environment of a sandbox with egress.
pub(crate) fn env() -> Vec<(String, String)> {
    let proxy = format!("http://{}", miosa_agent::DEFAULT_EGRESS_LISTEN);
    let egress_ca = format!("{RUN_DIR}/{EGRESS_CA}");
    let mut env: Vec<(String, String)> = PROXY_VARS
        .iter()
        .map(|k| ((*k).to_string(), proxy.clone()))
        .collect();
    env.extend(["NO_PROXY", "no_proxy"].map(|k| (k.to_string(), NO_PROXY.to_string())));
    env.extend(
        BUNDLE_VARS
            .iter()
            .map(|k| ((*k).to_string(), SYSTEM_CA_BUNDLE.to_string())),
    );
    env.push(("NODE_EXTRA_CA_CERTS".into(), egress_ca));
    env.push((
        "NODE_OPTIONS".into(),
        format!("--require {RUN_DIR}/{NODE_PRELOAD}"),
    ));
    env
}

/// Checks the PEM a caller hands us: a certificate, not too large, no NUL.
pub(crate) fn validate_pem(pem: &str) -> Result<()> {
    let reason = if !pem.contains(PEM_CERTIFICATE) {
        Some("must hold a PEM certificate (-----BEGIN CERTIFICATE-----)".to_string())
    } else if pem.len() > MAX_CA_PEM_BYTES {
        Some(format!("is longer than {MAX_CA_PEM_BYTES} bytes"))
    } else if pem.contains('\0') {
        Some("contains a NUL byte".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(RuntimeError::InvalidSpec {
            field: "egress_ca_pem",
            reason,
        }),
        None => Ok(()),
    }
}

/// The two files' contents: the CA alone, and the host bundle plus the CA.
fn contents(ca_pem: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut ca = ca_pem.as_bytes().to_vec();
    if !ca.ends_with(b"\n") {
        ca.push(b'\n');
    }
    let mut bundle = fs::read(SYSTEM_CA_BUNDLE).map_err(io_err(|| {
        format!("reading the host's trust bundle {SYSTEM_CA_BUNDLE} (package ca-certificates)")
    }))?;
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(&ca);
    Ok((ca, bundle))
}

/// Writes the egress files (both CA files and Node's preload) into the fresh
/// run dir of a sandbox being created; nothing for a sandbox without egress
/// (no CA). Blocking.
pub(crate) fn write_files(paths: &SandboxPaths, ca_pem: Option<&str>) -> Result<()> {
    let Some(ca_pem) = ca_pem else {
        return Ok(());
    };
    let (ca, bundle) = contents(ca_pem)?;
    for (path, content) in [
        (paths.egress_ca(), ca.as_slice()),
        (paths.ca_bundle(), bundle.as_slice()),
        (paths.run().join(NODE_PRELOAD), NODE_PRELOAD_JS.as_bytes()),
    ] {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io_err(|| format!("creating {}", path.display())))?;
        finish(file, &path, content)?;
    }
    Ok(())
}

/// Rewrites both CA files of a running sandbox in place. Blocking.
///
/// Root inside the sandbox can replace anything in its run dir, so the names
/// are opened without following symlinks, without blocking on a FIFO and
/// without creating anything, and must turn out to be regular files.
pub(crate) fn replace_ca_files(id: &str, paths: &SandboxPaths, ca_pem: &str) -> Result<()> {
    if !paths.run().is_dir() {
        return Err(RuntimeError::NotFound(id.to_string()));
    }
    let (ca, bundle) = contents(ca_pem)?;
    for (path, content) in [(paths.egress_ca(), ca), (paths.ca_bundle(), bundle)] {
        let file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| {
                let context = if e.kind() == ErrorKind::NotFound {
                    format!(
                        "sandbox {id} has no egress CA to replace ({} is missing; created without egress?)",
                        path.display()
                    )
                } else {
                    format!("opening {}", path.display())
                };
                RuntimeError::io(context, e)
            })?;
        let meta = file
            .metadata()
            .map_err(io_err(|| format!("inspecting {}", path.display())))?;
        if !meta.file_type().is_file() {
            return Err(RuntimeError::io(
                format!("{} is not a regular file", path.display()),
                std::io::Error::from(ErrorKind::InvalidData),
            ));
        }
        finish(file, &path, &content)?;
    }
    Ok(())
}

/// Writes `content`, then makes the file ours and 0644 whatever the umask
/// or code inside the sandbox did to it.
fn finish(mut file: fs::File, path: &Path, content: &[u8]) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    file.write_all(content).map_err(io_err(ctx))?;
    let meta = file.metadata().map_err(io_err(ctx))?;
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    if meta.uid() != uid.as_raw() || meta.gid() != gid.as_raw() {
        nix::unistd::fchown(&file, Some(uid), Some(gid))
            .map_err(|e| RuntimeError::io(ctx(), e.into()))?;
    }
    // No fsync: the files are as short-lived as the sandbox.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .map_err(io_err(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_points_at_the_bridge_and_the_bundles() {
        let env = env();
        let get = |k: &str| {
            env.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        for k in PROXY_VARS {
            assert_eq!(get(k), Some("http://127.0.0.1:3128"), "{k}");
        }
        assert_eq!(get("no_proxy"), Some("localhost,127.0.0.1"));
        assert_eq!(get("NO_PROXY"), Some("localhost,127.0.0.1"));
        for k in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
            assert_eq!(get(k), Some("/etc/ssl/certs/ca-certificates.crt"), "{k}");
        }
        assert_eq!(get("NODE_EXTRA_CA_CERTS"), Some("/run/miosa/egress-ca.pem"));
        assert_eq!(
            get("NODE_OPTIONS"),
            Some("--require /run/miosa/node-egress.js")
        );
        assert_eq!(env.len(), 13);
    }

    /// A fresh, empty run dir under the system temp dir, removed on drop.
    struct TempRun(SandboxPaths);
    impl TempRun {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "miosa-egress-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            let paths = SandboxPaths {
                disk_image: dir.with_extension("img"),
                dir,
            };
            fs::create_dir_all(paths.run()).unwrap();
            Self(paths)
        }
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.0.run())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }
    impl Drop for TempRun {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0.dir);
        }
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_files_exist_only_with_a_ca() {
        let without = TempRun::new("without");
        write_files(&without.0, None).unwrap();
        assert!(without.names().is_empty());

        let with = TempRun::new("with");
        write_files(&with.0, Some(PEM)).unwrap();
        assert_eq!(
            with.names(),
            ["ca-bundle.pem", "egress-ca.pem", "node-egress.js"]
        );
        let preload = with.0.run().join(NODE_PRELOAD);
        assert_eq!(fs::read_to_string(&preload).unwrap(), NODE_PRELOAD_JS);
        assert_eq!(fs::read_to_string(with.0.egress_ca()).unwrap(), PEM);
        for name in with.names() {
            let meta = fs::metadata(with.0.run().join(&name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, FILE_MODE, "{name}");
            assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw(), "{name}");
        }
    }

    #[test]
    fn replacing_the_ca_leaves_the_preload_alone() {
        let run = TempRun::new("replace");
        write_files(&run.0, Some(PEM)).unwrap();
        let other = PEM.replace("MII=", "MIIB");
        replace_ca_files("sbx_t", &run.0, &other).unwrap();
        assert_eq!(fs::read_to_string(run.0.egress_ca()).unwrap(), other);
        let preload = fs::read_to_string(run.0.run().join(NODE_PRELOAD)).unwrap();
        assert_eq!(preload, NODE_PRELOAD_JS);
    }

    #[test]
    fn the_agent_s_default_socket_is_the_one_the_runtime_mounts() {
        assert_eq!(
            miosa_agent::DEFAULT_EGRESS_SOCKET,
            format!("{RUN_DIR}/{}", crate::layout::EGRESS_SOCKET)
        );
    }

    #[test]
    fn only_certificates_are_accepted() {
        let field = |pem: &str| match validate_pem(pem) {
            Err(RuntimeError::InvalidSpec { field, .. }) => Some(field),
            _ => None,
        };
        assert_eq!(field(""), Some("egress_ca_pem"));
        assert_eq!(
            field("-----BEGIN PRIVATE KEY-----\n"),
            Some("egress_ca_pem")
        );
        let big = format!("{PEM_CERTIFICATE}\n{}", "A".repeat(MAX_CA_PEM_BYTES));
        assert_eq!(field(&big), Some("egress_ca_pem"));
        assert_eq!(
            field(&format!("{PEM_CERTIFICATE}\0")),
            Some("egress_ca_pem")
        );
        assert!(validate_pem(PEM).is_ok());
    }
}

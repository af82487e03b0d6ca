//! Layered configuration: built-in defaults, then `miosa.toml` (from
//! `--config` / `MIOSA_CONFIG`), then `MIOSA_*` environment variables.
//! Every error names the key and where its value came from.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use miosa_core::{keys::check_root_key, Redacted};
use serde::Deserialize;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The validated configuration of a Miosa process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// May hold a password, hence redacted.
    pub database_url: Redacted<String>,
    pub root_key: Option<Redacted<String>>,
    pub api_key_pepper: Option<Redacted<String>>,
    pub log: String,
    pub log_format: LogFormat,
    /// Run sandboxes on this host (needs root and runc).
    pub sandboxes: bool,
    /// The `runc` executable.
    pub runc: PathBuf,
    /// The executable started inside each sandbox as its agent (this binary).
    pub agent_binary: Option<PathBuf>,
    /// This node's name; default: generated once into `<data_dir>/node-id`.
    pub node_id: Option<String>,
    /// Key-encryption key for secrets (64 hex characters); default: the key
    /// file `<data_dir>/master-key`, created at first start.
    pub master_key: Option<Redacted<String>>,
    /// Earlier master keys (each 64 hex characters), held for opening and
    /// for sealing while the database still names one of them: what every
    /// replica needs during a rotation of `master_key`.
    pub previous_master_keys: Redacted<Vec<String>>,
    /// Run the egress proxy (sandboxes have no network without it).
    pub egress: bool,
    /// Operator override of where the egress proxy connects for a host
    /// (`host=ip:port`), for tests and private upstreams; such destinations
    /// skip the private-address refusal.
    pub egress_resolve: Vec<(String, SocketAddr)>,
    /// Extra PEM roots the egress proxy trusts for upstream TLS.
    pub egress_upstream_ca: Option<PathBuf>,
    /// Ports a raw (non-TLS) CONNECT tunnel may reach.
    pub egress_allowed_ports: Vec<u16>,
    /// Connections one sandbox may hold open to the egress proxy.
    pub egress_max_connections: usize,
    /// Requests one sandbox may have in flight through the egress proxy.
    pub egress_max_in_flight: usize,
    /// The disk a sandbox gets when it does not ask (MiB).
    pub sandbox_disk_mb: u32,
    /// The largest disk a sandbox may ask for (MiB).
    pub sandbox_max_disk_mb: u32,
    /// How often each tenant's audit chain head is signed (0: only by
    /// `miosa admin audit verify`).
    pub audit_checkpoint_interval: std::time::Duration,
}

/// What `miosa.toml` may contain. Unknown keys are errors (typos).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    root_key: Option<String>,
    api_key_pepper: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    sandboxes: Option<bool>,
    runc: Option<String>,
    agent_binary: Option<String>,
    node_id: Option<String>,
    master_key: Option<String>,
    previous_master_keys: Option<String>,
    egress: Option<bool>,
    egress_resolve: Option<String>,
    egress_upstream_ca: Option<String>,
    egress_allowed_ports: Option<String>,
    egress_max_connections: Option<u64>,
    egress_max_in_flight: Option<u64>,
    sandbox_disk_mb: Option<u64>,
    sandbox_max_disk_mb: Option<u64>,
    audit_checkpoint_interval: Option<u64>,
}

/// A configuration problem, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key} (from {origin}): {reason}")]
    Invalid {
        key: &'static str,
        origin: String,
        reason: String,
    },
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./miosa-data";

/// One setting: its file key and environment variable.
struct Key {
    file: &'static str,
    env: &'static str,
}

const LISTEN: Key = Key {
    file: "listen",
    env: "MIOSA_LISTEN",
};
const DATA_DIR: Key = Key {
    file: "data_dir",
    env: "MIOSA_DATA_DIR",
};
const DATABASE_URL: Key = Key {
    file: "database_url",
    env: "MIOSA_DATABASE_URL",
};
const ROOT_KEY: Key = Key {
    file: "root_key",
    env: "MIOSA_ROOT_KEY",
};
const PEPPER: Key = Key {
    file: "api_key_pepper",
    env: "MIOSA_API_KEY_PEPPER",
};
const LOG: Key = Key {
    file: "log",
    env: "MIOSA_LOG",
};
const LOG_FORMAT: Key = Key {
    file: "log_format",
    env: "MIOSA_LOG_FORMAT",
};
const SANDBOXES: Key = Key {
    file: "sandboxes",
    env: "MIOSA_SANDBOXES",
};
const RUNC: Key = Key {
    file: "runc",
    env: "MIOSA_RUNC",
};
const AGENT_BINARY: Key = Key {
    file: "agent_binary",
    env: "MIOSA_AGENT_BINARY",
};
const NODE_ID: Key = Key {
    file: "node_id",
    env: "MIOSA_NODE_ID",
};
const MASTER_KEY: Key = Key {
    file: "master_key",
    env: "MIOSA_MASTER_KEY",
};
const PREVIOUS_MASTER_KEYS: Key = Key {
    file: "previous_master_keys",
    env: "MIOSA_PREVIOUS_MASTER_KEYS",
};
const EGRESS: Key = Key {
    file: "egress",
    env: "MIOSA_EGRESS",
};
const EGRESS_RESOLVE: Key = Key {
    file: "egress_resolve",
    env: "MIOSA_EGRESS_RESOLVE",
};
const EGRESS_UPSTREAM_CA: Key = Key {
    file: "egress_upstream_ca",
    env: "MIOSA_EGRESS_UPSTREAM_CA",
};
const AUDIT_CHECKPOINT_INTERVAL: Key = Key {
    file: "audit_checkpoint_interval",
    env: "MIOSA_AUDIT_CHECKPOINT_INTERVAL",
};
const EGRESS_ALLOWED_PORTS: Key = Key {
    file: "egress_allowed_ports",
    env: "MIOSA_EGRESS_ALLOWED_PORTS",
};
const EGRESS_MAX_CONNECTIONS: Key = Key {
    file: "egress_max_connections",
    env: "MIOSA_EGRESS_MAX_CONNECTIONS",
};
const SANDBOX_DISK_MB: Key = Key {
    file: "sandbox_disk_mb",
    env: "MIOSA_SANDBOX_DISK_MB",
};
const SANDBOX_MAX_DISK_MB: Key = Key {
    file: "sandbox_max_disk_mb",
    env: "MIOSA_SANDBOX_MAX_DISK_MB",
};
const EGRESS_MAX_IN_FLIGHT: Key = Key {
    file: "egress_max_in_flight",
    env: "MIOSA_EGRESS_MAX_IN_FLIGHT",
};

impl Config {
    /// Loads from the real environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, |k| std::env::var(k).ok())
    }

    /// Loads with an injectable environment (for tests).
    pub fn load_with(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_owned(),
                    message: e.message().to_owned(),
                })?
            }
            None => FileConfig::default(),
        };
        let file_origin = path.map(|p| p.display().to_string());
        // The effective value of a key and a description of where it came from.
        let pick = |key: &Key, from_file: Option<String>| -> Option<(String, String)> {
            match env(key.env).filter(|v| !v.is_empty()) {
                Some(v) => Some((v, format!("environment variable {}", key.env))),
                None => from_file.map(|v| {
                    let origin = file_origin.clone().unwrap_or_default();
                    (v, format!("`{}` in {origin}", key.file))
                }),
            }
        };
        let invalid = |key: &Key, origin: String, reason: String| ConfigError::Invalid {
            key: key.file,
            origin,
            reason,
        };

        let listen = match pick(&LISTEN, file.listen) {
            Some((v, origin)) => v.parse().map_err(|_| {
                invalid(
                    &LISTEN,
                    origin,
                    format!("`{v}` is not an address like 127.0.0.1:8080"),
                )
            })?,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| invalid(&LISTEN, "default".into(), "bad built-in default".into()))?,
        };

        let data_dir = match pick(&DATA_DIR, file.data_dir) {
            Some((v, origin)) if v.trim().is_empty() => {
                return Err(invalid(&DATA_DIR, origin, "must not be empty".into()))
            }
            Some((v, _)) => PathBuf::from(v),
            None => PathBuf::from(DEFAULT_DATA_DIR),
        };
        let data_dir = absolute(&data_dir);

        let database_url = match pick(&DATABASE_URL, file.database_url) {
            Some((v, origin)) => {
                if !(v.starts_with("sqlite:")
                    || v.starts_with("postgres://")
                    || v.starts_with("postgresql://"))
                {
                    return Err(invalid(
                        &DATABASE_URL,
                        origin,
                        "must start with `sqlite:`, `postgres://` or `postgresql://`".into(),
                    ));
                }
                v
            }
            None => format!("sqlite://{}", data_dir.join("miosa.db").display()),
        };

        let root_key = match pick(&ROOT_KEY, file.root_key) {
            Some((v, origin)) => {
                check_root_key(&v).map_err(|reason| invalid(&ROOT_KEY, origin, reason))?;
                Some(Redacted::new(v))
            }
            None => None,
        };

        let api_key_pepper = match pick(&PEPPER, file.api_key_pepper) {
            Some((v, origin)) => {
                miosa_core::Pepper::from_hex(&v).map_err(|reason| {
                    invalid(&PEPPER, origin, format!("{reason} (64+ hex characters)"))
                })?;
                Some(Redacted::new(v))
            }
            None => None,
        };

        let log = pick(&LOG, file.log)
            .map(|(v, _)| v)
            .unwrap_or_else(|| "info".to_owned());

        let log_format = match pick(&LOG_FORMAT, file.log_format) {
            None => LogFormat::Pretty,
            Some((v, origin)) => match v.as_str() {
                "pretty" | "text" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => {
                    return Err(invalid(
                        &LOG_FORMAT,
                        origin,
                        format!("`{v}` is not one of `pretty`, `json`"),
                    ))
                }
            },
        };

        let flag = |key: &'static Key, v: Option<(String, String)>| match v {
            None => Ok(true),
            Some((v, origin)) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(invalid(key, origin, format!("`{v}` is not true or false"))),
            },
        };
        let sandboxes = flag(
            &SANDBOXES,
            pick(&SANDBOXES, file.sandboxes.map(|b| b.to_string())),
        )?;
        let egress = flag(&EGRESS, pick(&EGRESS, file.egress.map(|b| b.to_string())))?;

        let master_key = match pick(&MASTER_KEY, file.master_key) {
            Some((v, origin)) => {
                let ok = v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    return Err(invalid(
                        &MASTER_KEY,
                        origin,
                        "must be 64 hex characters (32 bytes; e.g. `openssl rand -hex 32`)".into(),
                    ));
                }
                Some(Redacted::new(v))
            }
            None => None,
        };
        let previous_master_keys = match pick(&PREVIOUS_MASTER_KEYS, file.previous_master_keys) {
            None => Vec::new(),
            Some((v, origin)) => {
                let keys: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect();
                if keys
                    .iter()
                    .any(|k| k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(invalid(
                        &PREVIOUS_MASTER_KEYS,
                        origin,
                        "must be a comma-separated list of 64-hex-character keys".into(),
                    ));
                }
                if master_key.is_none() && !keys.is_empty() {
                    return Err(invalid(
                        &PREVIOUS_MASTER_KEYS,
                        origin,
                        "only applies with master_key (MIOSA_MASTER_KEY) set".into(),
                    ));
                }
                keys
            }
        };

        let egress_resolve = match pick(&EGRESS_RESOLVE, file.egress_resolve) {
            None => Vec::new(),
            Some((v, origin)) => {
                parse_resolve(&v).map_err(|reason| invalid(&EGRESS_RESOLVE, origin, reason))?
            }
        };
        let egress_upstream_ca = match pick(&EGRESS_UPSTREAM_CA, file.egress_upstream_ca) {
            None => None,
            Some((v, origin)) => {
                let p = absolute(Path::new(&v));
                if !p.is_file() {
                    return Err(invalid(
                        &EGRESS_UPSTREAM_CA,
                        origin,
                        format!("{} is not a file", p.display()),
                    ));
                }
                Some(p)
            }
        };
        let egress_allowed_ports = match pick(&EGRESS_ALLOWED_PORTS, file.egress_allowed_ports) {
            None => miosa_egress::config::DEFAULT_RAW_TUNNEL_PORTS.to_vec(),
            Some((v, origin)) => {
                parse_ports(&v).map_err(|reason| invalid(&EGRESS_ALLOWED_PORTS, origin, reason))?
            }
        };
        // Per-sandbox egress bounds: 1 to 65536 each.
        let count = |key: &Key, from_file: Option<u64>, default: usize| match pick(
            key,
            from_file.map(|n| n.to_string()),
        ) {
            None => Ok(default),
            Some((v, origin)) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=65_536).contains(n))
                .ok_or_else(|| invalid(key, origin, "must be a number from 1 to 65536".into())),
        };
        let egress_max_connections = count(
            &EGRESS_MAX_CONNECTIONS,
            file.egress_max_connections,
            miosa_egress::config::DEFAULT_MAX_CONNECTIONS,
        )?;
        let egress_max_in_flight = count(
            &EGRESS_MAX_IN_FLIGHT,
            file.egress_max_in_flight,
            miosa_egress::config::DEFAULT_MAX_IN_FLIGHT,
        )?;
        let disk_mb = |key: &Key, from_file: Option<u64>, default: u32| {
            let (min, max) = (
                miosa_sandboxes::input::MIN_DISK_MB,
                miosa_runtime::config::MAX_DISK_MB,
            );
            match pick(key, from_file.map(|n| n.to_string())) {
                None => Ok((default, None)),
                Some((v, origin)) => v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= min && u64::from(*n) <= max)
                    .map(|n| (n, Some(origin.clone())))
                    .ok_or_else(|| {
                        invalid(key, origin, format!("must be MiB from {min} to {max}"))
                    }),
            }
        };
        let (sandbox_disk_mb, disk_origin) = disk_mb(
            &SANDBOX_DISK_MB,
            file.sandbox_disk_mb,
            miosa_sandboxes::input::DEFAULT_DISK_MB,
        )?;
        let (sandbox_max_disk_mb, max_origin) = disk_mb(
            &SANDBOX_MAX_DISK_MB,
            file.sandbox_max_disk_mb,
            miosa_sandboxes::input::DEFAULT_MAX_DISK_MB,
        )?;
        if sandbox_disk_mb > sandbox_max_disk_mb {
            let (key, origin) = match (disk_origin, max_origin) {
                (Some(o), _) => (&SANDBOX_DISK_MB, o),
                (None, Some(o)) => (&SANDBOX_MAX_DISK_MB, o),
                (None, None) => (&SANDBOX_DISK_MB, "default".into()),
            };
            return Err(invalid(
                key,
                origin,
                format!(
                    "sandbox_disk_mb ({sandbox_disk_mb}) must not exceed sandbox_max_disk_mb ({sandbox_max_disk_mb})"
                ),
            ));
        }
        let audit_checkpoint_interval = match pick(
            &AUDIT_CHECKPOINT_INTERVAL,
            file.audit_checkpoint_interval.map(|s| s.to_string()),
        ) {
            None => std::time::Duration::from_secs(300),
            Some((v, origin)) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s <= 86_400)
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| {
                    invalid(
                        &AUDIT_CHECKPOINT_INTERVAL,
                        origin,
                        "must be a number of seconds from 0 (off) to 86400".into(),
                    )
                })?,
        };
        let runc = pick(&RUNC, file.runc)
            .map(|(v, _)| PathBuf::from(v))
            .unwrap_or_else(|| PathBuf::from("runc"));
        let agent_binary = match pick(&AGENT_BINARY, file.agent_binary) {
            None => None,
            Some((v, origin)) => {
                let p = absolute(Path::new(&v));
                if !p.is_file() {
                    return Err(invalid(
                        &AGENT_BINARY,
                        origin,
                        format!("{} is not a file", p.display()),
                    ));
                }
                Some(p)
            }
        };

        let node_id = match pick(&NODE_ID, file.node_id) {
            None => None,
            Some((v, origin)) => {
                let ok = !v.is_empty()
                    && v.len() <= 63
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    return Err(invalid(
                        &NODE_ID,
                        origin,
                        "must be 1 to 63 of a-z, 0-9 and `-`".into(),
                    ));
                }
                Some(v)
            }
        };

        Ok(Self {
            listen,
            data_dir,
            database_url: Redacted::new(database_url),
            root_key,
            api_key_pepper,
            log,
            log_format,
            sandboxes,
            runc,
            agent_binary,
            node_id,
            master_key,
            previous_master_keys: Redacted::new(previous_master_keys),
            egress,
            egress_resolve,
            egress_upstream_ca,
            egress_allowed_ports,
            egress_max_connections,
            egress_max_in_flight,
            sandbox_disk_mb,
            sandbox_max_disk_mb,
            audit_checkpoint_interval,
        })
    }
}

/// Parses `443,80`: port numbers 1 to 65535; an empty list allows none.
fn parse_ports(v: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let port: u16 = item
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{item}` is not a port number (1 to 65535)"))?;
        if !out.contains(&port) {
            out.push(port);
        }
    }
    Ok(out)
}

/// Parses `host=ip:port,host2=ip:port`.
fn parse_resolve(v: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not `host=ip:port`"))?;
        let host = host.trim().to_ascii_lowercase();
        if host.is_empty() || host.contains(['/', ':', ' ']) {
            return Err(format!("`{host}` is not a hostname"));
        }
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not ip:port"))?;
        out.push((host, addr));
    }
    Ok(out)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(p))
        .unwrap_or_else(|_| p.to_owned())
}

/// The commented example printed by `miosa config default`.
pub const DEFAULT_TOML: &str = r#"# miosa.toml — Miosa configuration.
# Precedence: built-in defaults < this file (--config or MIOSA_CONFIG) < MIOSA_* environment variables.

# Address the HTTP API listens on.                          env: MIOSA_LISTEN
listen = "127.0.0.1:8080"

# Where Miosa keeps its state: the SQLite database, the API-key pepper and
# master-key files, and each sandbox's disk and bundle. Created with mode
# 0700; 0711 with sandboxes on (a sandbox's root, an unprivileged host id,
# passes through it to its own files; nothing in it is readable by others).
#                                                            env: MIOSA_DATA_DIR
data_dir = "./miosa-data"

# Database. Default: SQLite at <data_dir>/miosa.db (WAL mode).
# Use PostgreSQL to run several `miosa serve` replicas as one service.
#                                                            env: MIOSA_DATABASE_URL
# database_url = "sqlite:///var/lib/miosa/miosa.db"
# database_url = "postgres://miosa:password@127.0.0.1:5432/miosa"

# The operator's root key for /v1/admin/*. Must start with `msk_root_` followed by
# at least 20 letters, digits, `_` or `-`. If unset, one is generated at first start
# and printed once.                                          env: MIOSA_ROOT_KEY
# root_key = "msk_root_..."

# Secret mixed into every API-key hash (64+ hex characters). If unset, one is
# generated at first start into <data_dir>/api-key-pepper (mode 0600). Replicas
# sharing a PostgreSQL database must all use the same value.  env: MIOSA_API_KEY_PEPPER
# api_key_pepper = "..."

# Run sandboxes on this host: needs root, runc, and cgroup v1 or v2 controllers.
# With `false` the sandbox endpoints answer 503.               env: MIOSA_SANDBOXES
sandboxes = true

# The runc executable.                                          env: MIOSA_RUNC
runc = "runc"

# The executable started inside every sandbox as its agent. Default: this
# miosa binary itself.                                          env: MIOSA_AGENT_BINARY
# agent_binary = "/usr/local/bin/miosa"

# This node's name. Sandboxes are stamped with the node that runs them; each
# replica reconciles and reaps only its own. Default: generated once into
# <data_dir>/node-id.                                           env: MIOSA_NODE_ID
# node_id = "node-a"

# Key-encryption key for secrets: 64 hex characters (`openssl rand -hex 32`).
# If unset, one is generated at first start into <data_dir>/master-key (mode
# 0600). Replicas sharing a database must use the same key. Rotate with
# `miosa admin rotate-master-key`.                            env: MIOSA_MASTER_KEY
# master_key = "..."

# Earlier master keys, comma-separated, during a rotation of master_key on
# several replicas: give every replica the new master_key with the old one
# here, then run `miosa admin rotate-master-key`, then drop this.
#                                                 env: MIOSA_PREVIOUS_MASTER_KEYS
# previous_master_keys = "..."

# Run the credential-injecting egress proxy. Sandboxes have no other way out:
# with `false` they have no network at all.                     env: MIOSA_EGRESS
egress = true

# Operator override of where the egress proxy connects for a hostname, as
# `host=ip:port,...` (for tests and private upstreams). Overridden hosts skip
# the refusal of loopback/private destinations.          env: MIOSA_EGRESS_RESOLVE
# egress_resolve = "api.openai.com=127.0.0.1:9443"

# Extra PEM roots the egress proxy trusts for upstream TLS, on top of the
# system roots.                                         env: MIOSA_EGRESS_UPSTREAM_CA
# egress_upstream_ca = "/etc/miosa/upstream-ca.pem"

# Ports a CONNECT tunnel whose client does not start TLS may reach (raw
# bytes both ways), so sandboxes cannot, say, send mail from this host's
# address. Intercepted HTTPS may go to any port.  env: MIOSA_EGRESS_ALLOWED_PORTS
egress_allowed_ports = "443,80"

# What one sandbox may use of the egress proxy: connections held open at once
# (more are closed as they arrive) and requests in flight (more wait up to
# 10 s, then get 503 `too_many_requests`).
#                     env: MIOSA_EGRESS_MAX_CONNECTIONS, MIOSA_EGRESS_MAX_IN_FLIGHT
egress_max_connections = 256
egress_max_in_flight = 128

# Each sandbox's disk (its writable files, /run/miosa and its agent's log) in
# MiB: what a sandbox gets unless it asks (`disk_mb`), and the most it may
# ask for. A sparse ext4 image per sandbox, so only what is written takes
# host space; writing past it fails with ENOSPC inside the sandbox.
#                        env: MIOSA_SANDBOX_DISK_MB, MIOSA_SANDBOX_MAX_DISK_MB
sandbox_disk_mb = 2048
sandbox_max_disk_mb = 20480

# Seconds between signed checkpoints of each tenant's audit chain head (an
# Ed25519 key derived from the master key, not stored in the database);
# 0: only when `miosa admin audit verify` runs.
#                                           env: MIOSA_AUDIT_CHECKPOINT_INTERVAL
audit_checkpoint_interval = 300

# Log filter (tracing EnvFilter syntax) and format (`pretty` or `json`).
#                                                 env: MIOSA_LOG, MIOSA_LOG_FORMAT
log = "info"
log_format = "pretty"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = file.map(|text| {
            let p = dir.path().join("miosa.toml");
            std::fs::write(&p, text).unwrap();
            p
        });
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with(path.as_deref(), |k| env.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.data_dir.is_absolute() && c.data_dir.ends_with("miosa-data"));
        assert!(c.database_url.expose().starts_with("sqlite://"));
        assert!(c.database_url.expose().ends_with("miosa-data/miosa.db"));
        assert!(c.root_key.is_none());
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.egress_allowed_ports, [443, 80]);
        assert_eq!(c.egress_max_connections, 256);
        assert_eq!(c.egress_max_in_flight, 128);
    }

    #[test]
    fn sandbox_disks() {
        let c = load(None, &[]).unwrap();
        assert_eq!((c.sandbox_disk_mb, c.sandbox_max_disk_mb), (2048, 20480));
        let c = load(
            Some("sandbox_disk_mb = 512\nsandbox_max_disk_mb = 4096"),
            &[],
        )
        .unwrap();
        assert_eq!((c.sandbox_disk_mb, c.sandbox_max_disk_mb), (512, 4096));
        for (file, env, key) in [
            ("", "10", "sandbox_disk_mb"),
            ("", "lots", "sandbox_disk_mb"),
            ("sandbox_max_disk_mb = 1024", "", "sandbox_max_disk_mb"),
            ("sandbox_max_disk_mb = 4096", "8192", "sandbox_disk_mb"),
        ] {
            let e = load(Some(file), &[("MIOSA_SANDBOX_DISK_MB", env)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{file} / {env}: {e}");
        }
    }

    #[test]
    fn egress_bounds() {
        let c = load(Some("egress_max_connections = 64"), &[]).unwrap();
        assert_eq!(c.egress_max_connections, 64);
        let c = load(None, &[("MIOSA_EGRESS_MAX_IN_FLIGHT", "8")]).unwrap();
        assert_eq!(c.egress_max_in_flight, 8);
        for bad in ["0", "65537", "many", "-1"] {
            let e = load(None, &[("MIOSA_EGRESS_MAX_CONNECTIONS", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("egress_max_connections"), "{bad}: {e}");
        }
    }

    #[test]
    fn egress_ports() {
        let c = load(None, &[("MIOSA_EGRESS_ALLOWED_PORTS", "443, 8443,443")]).unwrap();
        assert_eq!(c.egress_allowed_ports, [443, 8443]);
        let c = load(Some("egress_allowed_ports = \"\""), &[]).unwrap();
        assert!(c.egress_allowed_ports.is_empty());
        for bad in ["0", "65536", "smtp", "25;80"] {
            let e = load(None, &[("MIOSA_EGRESS_ALLOWED_PORTS", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("egress_allowed_ports"), "{bad}: {e}");
        }
    }

    #[test]
    fn env_overrides_file_overrides_default() {
        let file = "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/m\"\n";
        let c = load(Some(file), &[]).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/m"));
        let c = load(Some(file), &[("MIOSA_LISTEN", "0.0.0.0:7000")]).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/m"));
    }

    #[test]
    fn the_example_config_parses() {
        let c = load(Some(DEFAULT_TOML), &[]).unwrap();
        assert_eq!(c.listen.port(), 8080);
    }

    #[test]
    fn errors_name_the_key_and_origin() {
        let e = load(None, &[("MIOSA_LISTEN", "nope")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("MIOSA_LISTEN"), "{e}");
        let e = load(Some("root_key = \"abc\""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("root_key") && e.contains("msk_root_"), "{e}");
        let e = load(Some("lisen = 1"), &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = load(None, &[("MIOSA_DATABASE_URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("database_url"), "{e}");
        let e = load(None, &[("MIOSA_API_KEY_PEPPER", "abcd")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_key_pepper"), "{e}");
        let e = load(None, &[("MIOSA_LOG_FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log_format"), "{e}");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let key = "msk_root_abcdefghijklmnopqrstuvwxyz";
        let (new, old) = ("ab".repeat(32), "cd".repeat(32));
        let c = load(
            None,
            &[
                ("MIOSA_ROOT_KEY", key),
                ("MIOSA_MASTER_KEY", &new),
                ("MIOSA_PREVIOUS_MASTER_KEYS", &old),
            ],
        )
        .unwrap();
        let shown = format!("{c:?}");
        for secret in [key, new.as_str(), old.as_str()] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(c.previous_master_keys.expose().as_slice(), [old]);
    }

    #[test]
    fn previous_master_keys_need_a_master_key() {
        let old = "cd".repeat(32);
        let e = load(None, &[("MIOSA_PREVIOUS_MASTER_KEYS", &old)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("previous_master_keys"), "{e}");
        let e = load(
            None,
            &[
                ("MIOSA_MASTER_KEY", &"ab".repeat(32)),
                ("MIOSA_PREVIOUS_MASTER_KEYS", "nothex"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("previous_master_keys") && !e.contains("nothex"),
            "{e}"
        );
    }
}

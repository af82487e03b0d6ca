//! Typed requests, responses and events of the agent's HTTP API.
//!
//! The same types are the wire format (JSON; bytes as standard base64) and the
//! client's API, so the API server can forward them unchanged.

use std::{collections::BTreeMap, fmt, time::Duration};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::AgentError;

mod pty;
pub use pty::{
    valid_dimension, PtyControl, PtyRequest, DEFAULT_PTY_COLS, DEFAULT_PTY_ROWS, MAX_PTY_DIMENSION,
};

/// Default cap on captured output, per stream.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Default timeout of a foreground `exec`.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Which account a command runs as inside the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunAs {
    /// The unprivileged `user` (uid/gid 1000, home /home/user).
    #[default]
    User,
    /// `root` inside the sandbox.
    Root,
}

impl RunAs {
    /// `"user"` or `"root"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Root => "root",
        }
    }
}

/// A command to run in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Working directory (default: the account's home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Variables added to (or overriding) the sandbox's base environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Bytes fed to standard input, which is then closed (base64 on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub stdin: Option<Vec<u8>>,
    /// Account to run as.
    #[serde(default)]
    pub user: RunAs,
    /// Kill the process group after this long (`timeout_ms` on the wire).
    /// Foreground default: 60 s; background default: none.
    #[serde(
        default,
        rename = "timeout_ms",
        skip_serializing_if = "Option::is_none",
        with = "millis_opt"
    )]
    pub timeout: Option<Duration>,
    /// Output kept per stream; the rest is read and discarded.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: usize,
}

fn default_max_output() -> usize {
    DEFAULT_MAX_OUTPUT_BYTES
}

impl ExecRequest {
    /// A request for `argv` with every option at its default.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            env: BTreeMap::new(),
            stdin: None,
            user: RunAs::User,
            timeout: None,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }

    /// `/bin/sh -c script`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(["/bin/sh".to_owned(), "-c".to_owned(), script.into()])
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit status when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Whether the agent killed it because the timeout expired.
    pub timed_out: bool,
    /// Wall time from start to exit.
    pub duration_ms: u64,
    /// Whether stdout went over `max_output_bytes`.
    pub stdout_truncated: bool,
    /// Whether stderr went over `max_output_bytes`.
    pub stderr_truncated: bool,
}

/// One event of a streaming exec (one NDJSON line on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireEvent", into = "WireEvent")]
pub enum ExecEvent {
    /// The process started with this pid (in the sandbox's PID namespace).
    Start {
        /// Process id, also its process group id.
        pid: u32,
    },
    /// A chunk of standard output.
    Stdout(Bytes),
    /// A chunk of standard error.
    Stderr(Bytes),
    /// The process ended; always the last event.
    Exit(ExitInfo),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    Start {
        pid: u32,
    },
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        #[serde(flatten)]
        info: ExitInfo,
    },
}

impl From<ExecEvent> for WireEvent {
    fn from(e: ExecEvent) -> Self {
        match e {
            ExecEvent::Start { pid } => Self::Start { pid },
            ExecEvent::Stdout(b) => Self::Stdout {
                data: b64::encode(&b),
            },
            ExecEvent::Stderr(b) => Self::Stderr {
                data: b64::encode(&b),
            },
            ExecEvent::Exit(info) => Self::Exit { info },
        }
    }
}

impl TryFrom<WireEvent> for ExecEvent {
    type Error = String;
    fn try_from(e: WireEvent) -> Result<Self, String> {
        Ok(match e {
            WireEvent::Start { pid } => Self::Start { pid },
            WireEvent::Stdout { data } => Self::Stdout(b64::decode(&data)?.into()),
            WireEvent::Stderr { data } => Self::Stderr(b64::decode(&data)?.into()),
            WireEvent::Exit { info } => Self::Exit(info),
        })
    }
}

/// Result of a buffered exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Exit status when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Captured standard output (base64 in JSON), at most `max_output_bytes`.
    #[serde(with = "b64_vec")]
    pub stdout: Vec<u8>,
    /// Captured standard error (base64 in JSON), at most `max_output_bytes`.
    #[serde(with = "b64_vec")]
    pub stderr: Vec<u8>,
    /// Whether stdout was cut at `max_output_bytes`.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at `max_output_bytes`.
    pub stderr_truncated: bool,
    /// Whether the timeout killed the command.
    pub timed_out: bool,
    /// Wall time from start to exit.
    pub duration_ms: u64,
}

impl ExecOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

/// Answer of `POST /exec/background`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spawned {
    /// Process id (and process group id) of the started command.
    pub pid: u32,
}

/// A command started through the agent that is still running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Process id (and process group id).
    pub pid: u32,
    /// The command as requested.
    pub argv: Vec<String>,
    /// Account it runs as.
    pub user: RunAs,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Started with `/exec/background`.
    pub background: bool,
}

/// A POSIX signal number, written on the wire as its name (`"SIGTERM"`) when
/// it has one, else as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(pub i32);

impl Signal {
    /// SIGKILL (9), the default of `kill`.
    pub const KILL: Self = Self(9);
    /// SIGTERM (15).
    pub const TERM: Self = Self(15);
    /// SIGINT (2).
    pub const INT: Self = Self(2);
    /// SIGHUP (1).
    pub const HUP: Self = Self(1);

    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The signal with number `n`, if it is a standard signal.
    pub fn from_number(n: i32) -> Result<Self, AgentError> {
        // Real-time signals have no use here; 0 only probes for existence.
        match nix::sys::signal::Signal::try_from(n) {
            Ok(_) => Ok(Self(n)),
            Err(_) => Err(AgentError::Invalid(format!("unsupported signal {n}"))),
        }
    }

    /// Parses `"SIGTERM"`, `"TERM"` or `"15"`.
    pub fn parse(s: &str) -> Result<Self, AgentError> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i32>() {
            return Self::from_number(n);
        }
        let upper = s.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        name.parse::<nix::sys::signal::Signal>()
            .map(|sig| Self(sig as i32))
            .map_err(|_| AgentError::Invalid(format!("unknown signal {s:?}")))
    }

    /// The conventional name, e.g. `"SIGTERM"`.
    pub fn name(self) -> Option<&'static str> {
        nix::sys::signal::Signal::try_from(self.0)
            .ok()
            .map(|s| s.as_str())
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::KILL
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.number()),
        }
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_i32(self.number()),
        }
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i32),
            Name(String),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::Num(n) => Self::from_number(n),
            Raw::Name(s) => Self::parse(&s),
        };
        parsed.map_err(|e| serde::de::Error::custom(e.message()))
    }
}

/// Body of `POST /processes/{pid}/kill`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct KillRequest {
    /// Signal to send (default SIGKILL).
    #[serde(default)]
    pub signal: Signal,
}

/// Kind of a directory entry (from `lstat`: symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A socket, FIFO or device.
    Other,
}

impl FileType {
    /// `"file"`, `"dir"`, `"symlink"` or `"other"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Other => "other",
        }
    }
}

/// One file or directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Last path component.
    pub name: String,
    /// Absolute, normalised path.
    pub path: String,
    /// Kind of entry (`type` on the wire).
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// Size in bytes (of the link itself for symlinks).
    pub size: u64,
    /// Permission bits as a four-digit octal string, e.g. `"0644"`.
    pub mode: String,
    /// Last modification time.
    #[serde(with = "time::serde::rfc3339")]
    pub modified_at: OffsetDateTime,
}

/// Body of `POST /files/mkdir`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MkdirRequest {
    /// Directory to create, with its parents.
    pub path: String,
    /// Owner of the directories created (default `user`).
    #[serde(default)]
    pub user: RunAs,
}

/// Query of the file endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathQuery {
    /// The path (absolute, or relative to /home/user).
    pub path: String,
    /// Owner of created files and directories (`PUT` only; default `user`).
    #[serde(default)]
    pub user: RunAs,
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorDetail {
    pub code: String,
    pub message: String,
}

pub(crate) mod b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        STANDARD
            .decode(s)
            .map_err(|e| format!("invalid base64: {e}"))
    }
}

mod b64_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::b64::decode(&s).map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&super::b64::encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::b64::decode(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_wire_shape() {
        let mut req = ExecRequest::new(["cat"]);
        req.stdin = Some(b"hi".to_vec());
        req.timeout = Some(Duration::from_millis(1500));
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["stdin"], "aGk=");
        assert_eq!(v["timeout_ms"], 1500);
        assert_eq!(v["user"], "user");
        let back: ExecRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
        let minimal: ExecRequest = serde_json::from_str(r#"{"argv":["true"]}"#).unwrap();
        assert_eq!(minimal.max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES);
        assert_eq!(minimal.timeout, None);
    }

    #[test]
    fn events_round_trip_as_ndjson() {
        let out = ExecEvent::Stdout(Bytes::from_static(b"\x00\xffhello"));
        let line = serde_json::to_string(&out).unwrap();
        assert!(line.starts_with(r#"{"type":"stdout","data":""#), "{line}");
        assert_eq!(serde_json::from_str::<ExecEvent>(&line).unwrap(), out);
        let exit = ExecEvent::Exit(ExitInfo {
            exit_code: None,
            signal: Some(9),
            timed_out: true,
            duration_ms: 12,
            stdout_truncated: false,
            stderr_truncated: true,
        });
        let line = serde_json::to_string(&exit).unwrap();
        assert!(line.contains(r#""type":"exit""#) && line.contains(r#""signal":9"#));
        assert_eq!(serde_json::from_str::<ExecEvent>(&line).unwrap(), exit);
        assert!(serde_json::from_str::<ExecEvent>(r#"{"type":"stdout","data":"%%"}"#).is_err());
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(Signal::parse("SIGTERM").unwrap(), Signal::TERM);
        assert_eq!(Signal::parse("hup").unwrap(), Signal::HUP);
        assert_eq!(Signal::parse("9").unwrap(), Signal::KILL);
        assert_eq!(Signal::parse("SIGUSR1").unwrap(), Signal(10));
        assert!(Signal::parse("SIGNOPE").is_err());
        assert!(Signal::parse("0").is_err());
        let k: KillRequest = serde_json::from_str(r#"{"signal":"SIGINT"}"#).unwrap();
        assert_eq!(k.signal, Signal::INT);
        let k: KillRequest = serde_json::from_str(r#"{"signal":10}"#).unwrap();
        assert_eq!(k.signal, Signal(10));
        assert!(serde_json::from_str::<KillRequest>(r#"{"signal":40}"#).is_err());
        let k: KillRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(k.signal, Signal::KILL);
        assert_eq!(
            serde_json::to_string(&Signal::TERM).unwrap(),
            r#""SIGTERM""#
        );
    }
}

//! Interactive terminal sessions (`GET /pty`, a WebSocket upgrade).
//!
//! After the upgrade, Binary messages carry terminal bytes both ways (client
//! → the terminal's input, terminal output → client). Text messages are
//! JSON [`PtyControl`]s: the client sends `resize`; the agent sends `start`
//! first and `exit` last, then closes the WebSocket.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::RunAs;
use crate::AgentError;

/// Largest accepted terminal width or height.
pub const MAX_PTY_DIMENSION: u16 = 1000;
/// Default terminal width.
pub const DEFAULT_PTY_COLS: u16 = 80;
/// Default terminal height.
pub const DEFAULT_PTY_ROWS: u16 = 24;

/// Query of `GET /pty`: what to run on a new pseudo-terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyRequest {
    /// Width in columns, 1–1000.
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Height in rows, 1–1000.
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Account to run as.
    #[serde(default)]
    pub user: RunAs,
    /// Working directory (default: the account's home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Command line run by `/bin/sh -c`; default: a login shell
    /// (`/bin/bash -l`, or `/bin/sh` without bash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Variables added to (or overriding) the sandbox's base environment;
    /// in the query string, one `env` parameter holding a JSON object.
    #[serde(
        default,
        with = "env_as_json",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
}

mod env_as_json {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&serde_json::to_string(v).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

fn default_cols() -> u16 {
    DEFAULT_PTY_COLS
}

fn default_rows() -> u16 {
    DEFAULT_PTY_ROWS
}

impl Default for PtyRequest {
    fn default() -> Self {
        Self {
            cols: DEFAULT_PTY_COLS,
            rows: DEFAULT_PTY_ROWS,
            user: RunAs::User,
            cwd: None,
            cmd: None,
            env: BTreeMap::new(),
        }
    }
}

impl PtyRequest {
    /// Checks the size and rejects NUL bytes.
    pub fn validate(&self) -> Result<(), AgentError> {
        check_dimension("cols", self.cols)?;
        check_dimension("rows", self.rows)?;
        for (name, value) in [("cwd", &self.cwd), ("cmd", &self.cmd)] {
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                return Err(AgentError::Invalid(format!("{name} contains a NUL byte")));
            }
        }
        if self
            .env
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        {
            return Err(AgentError::Invalid(
                "env names must be non-empty without `=` or NUL, values without NUL".into(),
            ));
        }
        Ok(())
    }

    /// The query string of `GET /pty` (without the `?`).
    pub fn to_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("cols", &self.cols.to_string())
            .append_pair("rows", &self.rows.to_string())
            .append_pair("user", self.user.as_str());
        if let Some(cwd) = &self.cwd {
            q.append_pair("cwd", cwd);
        }
        if let Some(cmd) = &self.cmd {
            q.append_pair("cmd", cmd);
        }
        if !self.env.is_empty() {
            // A map of strings always serialises.
            q.append_pair("env", &serde_json::to_string(&self.env).unwrap_or_default());
        }
        q.finish()
    }
}

/// Whether `value` is a valid terminal width or height.
pub fn valid_dimension(value: u16) -> bool {
    (1..=MAX_PTY_DIMENSION).contains(&value)
}

fn check_dimension(name: &str, value: u16) -> Result<(), AgentError> {
    if valid_dimension(value) {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "{name} must be between 1 and {MAX_PTY_DIMENSION}"
        )))
    }
}

/// A control message: the JSON of a Text WebSocket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PtyControl {
    /// Client → agent: the terminal's new size (SIGWINCH for the program).
    Resize {
        /// Width in columns, 1–1000.
        cols: u16,
        /// Height in rows, 1–1000.
        rows: u16,
    },
    /// Agent → client, first: the session's process (and process group and
    /// session) id; `kill` on it ends the session.
    Start {
        /// Process id in the sandbox.
        pid: u32,
    },
    /// Agent → client, last: how the program ended. The agent then closes.
    Exit {
        /// Exit status when the program exited normally.
        exit_code: Option<i32>,
        /// Signal number when it was killed by a signal.
        signal: Option<i32>,
    },
}

impl PtyControl {
    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Plain enums of integers always serialise; keep the text valid.
            format!(r#"{{"type":"error","message":"{e}"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_wire_shape() {
        let exit = PtyControl::Exit {
            exit_code: Some(3),
            signal: None,
        };
        assert_eq!(
            exit.to_json(),
            r#"{"type":"exit","exit_code":3,"signal":null}"#
        );
        let resize: PtyControl =
            serde_json::from_str(r#"{"type":"resize","cols":100,"rows":40}"#).unwrap();
        assert_eq!(
            resize,
            PtyControl::Resize {
                cols: 100,
                rows: 40
            }
        );
        assert!(serde_json::from_str::<PtyControl>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn request_query_round_trip_and_validation() {
        let req = PtyRequest {
            cols: 120,
            rows: 1,
            user: RunAs::Root,
            cwd: Some("/tmp/a b".into()),
            cmd: Some("echo $((6*7)) && x=1".into()),
            env: [("TOKEN".to_string(), "miosa_ph_x y&z".to_string())].into(),
        };
        let q = req.to_query();
        assert!(
            q.ends_with("&env=%7B%22TOKEN%22%3A%22miosa_ph_x+y%26z%22%7D"),
            "{q}"
        );
        let back: PtyRequest = serde_json::from_value(serde_json::to_value(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        assert!(
            q.starts_with("cols=120&rows=1&user=root&cwd=%2Ftmp%2Fa+b&cmd="),
            "{q}"
        );
        assert!(req.validate().is_ok());
        for bad in [0, MAX_PTY_DIMENSION + 1] {
            let r = PtyRequest {
                cols: bad,
                ..PtyRequest::default()
            };
            assert_eq!(r.validate().unwrap_err().code(), "invalid");
        }
        let r = PtyRequest {
            cmd: Some("a\0b".into()),
            ..PtyRequest::default()
        };
        assert!(r.validate().unwrap_err().message().contains("cmd"));
    }
}

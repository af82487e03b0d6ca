//! A thin wrapper around the `runc` command line, always with our `--root`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde::Deserialize;
use tokio::process::Command;

use crate::error::{Result, RuntimeError};

/// What runc says about a container, reduced to what the API needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// The agent is running.
    Running,
    /// Frozen by the cgroup freezer.
    Paused,
    /// Created but not started, exited, or only a directory without a container.
    Stopped,
}

impl ContainerState {
    /// Maps runc's status word.
    pub(crate) fn from_runc(status: &str) -> Self {
        match status {
            "running" => Self::Running,
            "paused" | "pausing" => Self::Paused,
            _ => Self::Stopped,
        }
    }
}

/// One entry of `runc list --format json` / `runc state`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RuncContainer {
    pub(crate) id: String,
    pub(crate) status: String,
}

/// runc with a fixed binary and state root.
#[derive(Debug, Clone)]
pub(crate) struct Runc {
    bin: PathBuf,
    root: PathBuf,
}

impl Runc {
    pub(crate) fn new(bin: PathBuf, root: PathBuf) -> Self {
        Self { bin, root }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(&self.root);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs a subcommand and collects its output; a failure becomes [`RuntimeError::Runc`].
    async fn run(&self, args: &[&str]) -> Result<Output> {
        let output = self.command().args(args).output().await.map_err(|e| {
            RuntimeError::io(
                format!("running {} {}", self.bin.display(), args.join(" ")),
                e,
            )
        })?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(RuntimeError::Runc {
                command: args.join(" "),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// `runc --version`, first line; proves the binary runs.
    pub(crate) async fn version(&self) -> Result<String> {
        let output = Command::new(&self.bin)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| RuntimeError::Config(format!("cannot run {}: {e}", self.bin.display())))?;
        if !output.status.success() {
            return Err(RuntimeError::Config(format!(
                "{} --version failed ({}): {}",
                self.bin.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    }

    /// `runc run --detach`: creates and starts the container from `bundle`;
    /// runc and the container write to `log`. Returns once runc has exited.
    pub(crate) async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: File,
    ) -> Result<()> {
        let log_err = log
            .try_clone()
            .map_err(|e| RuntimeError::io("duplicating the container log handle", e))?;
        let status = self
            .command()
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .status()
            .await
            .map_err(|e| RuntimeError::io(format!("running {} run", self.bin.display()), e))?;
        if status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Runc {
                command: format!("run {id}"),
                status: status.to_string(),
                // runc wrote its error into the log; the caller adds the tail.
                stderr: String::new(),
            })
        }
    }

    /// `runc state`; `None` if runc does not know the container.
    pub(crate) async fn state(&self, id: &str) -> Result<Option<RuncContainer>> {
        if !self.root.join(id).exists() {
            return Ok(None);
        }
        match self.run(&["state", id]).await {
            Ok(output) => serde_json::from_slice(&output.stdout)
                .map(Some)
                .map_err(|e| RuntimeError::RuncOutput {
                    command: format!("state {id}"),
                    reason: e.to_string(),
                }),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container under our root.
    pub(crate) async fn list(&self) -> Result<Vec<RuncContainer>> {
        let output = self.run(&["list", "--format", "json"]).await?;
        // runc prints `null` when there are none.
        let parsed: Option<Vec<RuncContainer>> =
            serde_json::from_slice(&output.stdout).map_err(|e| RuntimeError::RuncOutput {
                command: "list".into(),
                reason: e.to_string(),
            })?;
        Ok(parsed.unwrap_or_default())
    }

    pub(crate) async fn pause(&self, id: &str) -> Result<()> {
        self.run(&["pause", id])
            .await
            .map(drop)
            .map_err(|e| not_found_as(e, id))
    }

    pub(crate) async fn resume(&self, id: &str) -> Result<()> {
        self.run(&["resume", id])
            .await
            .map(drop)
            .map_err(|e| not_found_as(e, id))
    }

    /// `runc delete --force`; a container runc does not know is not an error.
    pub(crate) async fn delete(&self, id: &str) -> Result<()> {
        match self.run(&["delete", "--force", id]).await {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other.map(drop),
        }
    }
}

fn is_not_found(e: &RuntimeError) -> bool {
    matches!(e, RuntimeError::Runc { stderr, .. } if stderr.contains("does not exist"))
}

fn not_found_as(e: RuntimeError, id: &str) -> RuntimeError {
    if is_not_found(&e) {
        RuntimeError::NotFound(id.to_string())
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_runc_statuses() {
        assert_eq!(
            ContainerState::from_runc("running"),
            ContainerState::Running
        );
        assert_eq!(ContainerState::from_runc("paused"), ContainerState::Paused);
        assert_eq!(ContainerState::from_runc("pausing"), ContainerState::Paused);
        for s in ["created", "stopped", "creating", ""] {
            assert_eq!(ContainerState::from_runc(s), ContainerState::Stopped);
        }
    }

    #[test]
    fn parses_runc_list_output() {
        let json = br#"[{"ociVersion":"1.0.2","id":"sbx_1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-11-23T14:36:10.465495263Z","owner":"root"}]"#;
        let parsed: Option<Vec<RuncContainer>> = serde_json::from_slice(json).unwrap();
        let list = parsed.unwrap();
        assert_eq!(list[0].id, "sbx_1");
        assert_eq!(list[0].status, "running");
        let none: Option<Vec<RuncContainer>> = serde_json::from_slice(b"null\n").unwrap();
        assert!(none.is_none());
    }
}

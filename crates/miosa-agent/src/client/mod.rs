//! Host-side client of the agent: one connection per call over the sandbox's
//! Unix socket.

mod pty;
mod transport;

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::Method;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::{
    AgentError, ExecEvent, ExecOutput, ExecRequest, FileEntry, KillRequest, MkdirRequest,
    ProcessInfo, RunAs, Signal, Spawned,
};
use transport::ReqBody;

/// Default wait for the agent's response head before declaring it
/// unavailable (a paused sandbox accepts connections but never answers).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest NDJSON line accepted: a 64 KiB chunk in base64 plus framing,
/// with ample margin.
const MAX_EVENT_LINE: usize = 1024 * 1024;

/// Client of one sandbox's agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Option<Duration>,
}

/// Contents of a file upload: bytes in memory or a stream.
pub struct FileBody(ReqBody);

impl FileBody {
    /// Streams `chunks` to the agent without buffering them.
    pub fn from_stream<S, E>(chunks: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let frames = chunks.map(|c| c.map(Frame::data).map_err(io::Error::other));
        Self(StreamBody::new(frames).boxed_unsync())
    }
}

impl From<Bytes> for FileBody {
    fn from(b: Bytes) -> Self {
        Self(transport::full(b))
    }
}

impl From<Vec<u8>> for FileBody {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl From<&'static [u8]> for FileBody {
    fn from(s: &'static [u8]) -> Self {
        Bytes::from_static(s).into()
    }
}

impl From<String> for FileBody {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}

impl AgentClient {
    /// A client for the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// Sets how long to wait for the agent's response head (`None`: forever).
    /// Streams and uploads are not limited by it once answered.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// The agent's socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<ReqBody>,
        content_type: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<http::Response<hyper::body::Incoming>, AgentError> {
        let req = transport::request(
            method,
            uri,
            content_type,
            body.unwrap_or_else(transport::empty),
        )?;
        transport::send(&self.socket, req, timeout).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, uri: &str) -> Result<T, AgentError> {
        let resp = self
            .call(Method::GET, uri, None, None, self.timeout)
            .await?;
        transport::json(resp).await
    }

    async fn send_json<B, T>(&self, method: Method, uri: &str, body: &B) -> Result<T, AgentError>
    where
        B: serde::Serialize,
        T: serde::de::DeserializeOwned,
    {
        let body = transport::json_body(body)?;
        let resp = self
            .call(
                method,
                uri,
                Some(body),
                Some("application/json"),
                self.timeout,
            )
            .await?;
        transport::json(resp).await
    }

    /// Checks that the agent answers.
    pub async fn health(&self) -> Result<(), AgentError> {
        let _: serde_json::Value = self.get_json("/health").await?;
        Ok(())
    }

    /// Runs a command to completion and returns its captured output.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecOutput, AgentError> {
        let events = self.exec_stream(req).await?;
        let mut events = std::pin::pin!(events);
        let cap = req.max_output_bytes;
        let mut out = ExecOutput {
            exit_code: None,
            signal: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            timed_out: false,
            duration_ms: 0,
        };
        while let Some(event) = events.next().await {
            match event? {
                ExecEvent::Start { .. } => {}
                ExecEvent::Stdout(b) => {
                    out.stdout_truncated |= append_capped(&mut out.stdout, &b, cap)
                }
                ExecEvent::Stderr(b) => {
                    out.stderr_truncated |= append_capped(&mut out.stderr, &b, cap)
                }
                ExecEvent::Exit(info) => {
                    out.exit_code = info.exit_code;
                    out.signal = info.signal;
                    out.timed_out = info.timed_out;
                    out.duration_ms = info.duration_ms;
                    out.stdout_truncated |= info.stdout_truncated;
                    out.stderr_truncated |= info.stderr_truncated;
                    return Ok(out);
                }
            }
        }
        Err(AgentError::Protocol(
            "exec stream ended before the exit event".into(),
        ))
    }

    /// Starts a command and streams its events; the last one is
    /// [`ExecEvent::Exit`]. Dropping the stream kills the command.
    pub async fn exec_stream(
        &self,
        req: &ExecRequest,
    ) -> Result<impl Stream<Item = Result<ExecEvent, AgentError>> + Send + 'static, AgentError>
    {
        let body = transport::json_body(req)?;
        let resp = self
            .call(
                Method::POST,
                "/exec",
                Some(body),
                Some("application/json"),
                self.timeout,
            )
            .await?;
        let mut finished = false;
        let events = transport::lines(resp.into_body(), MAX_EVENT_LINE)
            .try_filter(|line| std::future::ready(!line.is_empty()))
            .map(|line| {
                line.and_then(|l| {
                    serde_json::from_slice::<ExecEvent>(&l)
                        .map_err(|e| AgentError::Protocol(format!("bad exec event: {e}")))
                })
            })
            // Nothing follows the exit event or an error.
            .take_while(move |event| {
                let go_on = !finished;
                finished = !matches!(
                    event,
                    Ok(ExecEvent::Start { .. } | ExecEvent::Stdout(_) | ExecEvent::Stderr(_))
                );
                std::future::ready(go_on)
            });
        Ok(events)
    }

    /// Starts a command in the background; returns its pid.
    pub async fn spawn(&self, req: &ExecRequest) -> Result<u32, AgentError> {
        let spawned: Spawned = self
            .send_json(Method::POST, "/exec/background", req)
            .await?;
        Ok(spawned.pid)
    }

    /// Commands started through the agent that are still running.
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>, AgentError> {
        self.get_json("/processes").await
    }

    /// Sends `signal` to `pid` (its whole group when the agent started it).
    pub async fn kill(&self, pid: u32, signal: Signal) -> Result<(), AgentError> {
        let _: serde_json::Value = self
            .send_json(
                Method::POST,
                &format!("/processes/{pid}/kill"),
                &KillRequest { signal },
            )
            .await?;
        Ok(())
    }

    /// Entries of a directory, sorted by name.
    pub async fn list_dir(&self, path: &str) -> Result<Vec<FileEntry>, AgentError> {
        self.get_json(&path_uri("/files", path, None)).await
    }

    /// Streams a file's contents.
    pub async fn read_file(
        &self,
        path: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, AgentError>> + Send + 'static, AgentError> {
        let uri = path_uri("/files/content", path, None);
        let resp = self
            .call(Method::GET, &uri, None, None, self.timeout)
            .await?;
        Ok(transport::chunks(resp.into_body()))
    }

    /// Reads a whole file into memory.
    pub async fn read_file_bytes(&self, path: &str) -> Result<Vec<u8>, AgentError> {
        let mut chunks = std::pin::pin!(self.read_file(path).await?);
        let mut out = Vec::new();
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Writes a file atomically (the agent writes a temporary file and
    /// renames it), creating parent directories; new files and directories
    /// belong to `owner`. `body` is bytes or [`FileBody::from_stream`].
    pub async fn write_file(
        &self,
        path: &str,
        body: impl Into<FileBody>,
        owner: RunAs,
    ) -> Result<FileEntry, AgentError> {
        self.upload(path, body.into().0, owner).await
    }

    async fn upload(
        &self,
        path: &str,
        body: ReqBody,
        owner: RunAs,
    ) -> Result<FileEntry, AgentError> {
        let uri = path_uri("/files/content", path, Some(owner));
        // The agent answers only after the whole upload: no head timeout.
        let resp = self
            .call(
                Method::PUT,
                &uri,
                Some(body),
                Some("application/octet-stream"),
                None,
            )
            .await?;
        transport::json(resp).await
    }

    /// Removes a file, symlink, or directory with its contents.
    pub async fn remove(&self, path: &str) -> Result<(), AgentError> {
        let uri = path_uri("/files", path, None);
        let resp = self
            .call(Method::DELETE, &uri, None, None, self.timeout)
            .await?;
        let _: serde_json::Value = transport::json(resp).await?;
        Ok(())
    }

    /// Creates a directory and its parents (no error if it exists).
    pub async fn mkdir(&self, path: &str, owner: RunAs) -> Result<FileEntry, AgentError> {
        let req = MkdirRequest {
            path: path.to_owned(),
            user: owner,
        };
        self.send_json(Method::POST, "/files/mkdir", &req).await
    }
}

/// Appends up to `cap` bytes in total; returns whether some were dropped.
fn append_capped(buf: &mut Vec<u8>, chunk: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    let take = room.min(chunk.len());
    buf.extend_from_slice(&chunk[..take]);
    take < chunk.len()
}

fn path_uri(route: &str, path: &str, owner: Option<RunAs>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("path", path);
    if owner == Some(RunAs::Root) {
        q.append_pair("user", "root");
    }
    format!("{route}?{}", q.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_query_is_encoded() {
        assert_eq!(
            path_uri("/files", "/a b/&c=d?é", Some(RunAs::Root)),
            "/files?path=%2Fa+b%2F%26c%3Dd%3F%C3%A9&user=root"
        );
        assert_eq!(path_uri("/files", "x", Some(RunAs::User)), "/files?path=x");
    }

    #[test]
    fn append_respects_cap() {
        let mut buf = Vec::new();
        assert!(!append_capped(&mut buf, b"abc", 5));
        assert!(append_capped(&mut buf, b"defg", 5));
        assert_eq!(buf, b"abcde");
        assert!(append_capped(&mut buf, b"h", 5));
    }
}

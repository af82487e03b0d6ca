//! Terminal sessions over the agent's WebSocket.
#![allow(clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{alive, path_str, start_agent, wait_gone};
use futures_util::{SinkExt, StreamExt};
use miosa_agent::{
    tokio_tungstenite::{tungstenite::Message, WebSocketStream},
    AgentClient, AgentError, PtyControl, PtyRequest, RunAs, Signal,
};
use tokio::net::UnixStream;

const READ_LIMIT: Duration = Duration::from_secs(10);

/// One side of a session: everything received so far.
struct Term {
    ws: WebSocketStream<UnixStream>,
    output: String,
    controls: Vec<PtyControl>,
    closed: bool,
}

#[allow(clippy::unwrap_used, clippy::panic)]
impl Term {
    async fn open(client: &AgentClient, req: &PtyRequest) -> (Self, u32) {
        let ws = client.pty(req).await.unwrap();
        let mut term = Self {
            ws,
            output: String::new(),
            controls: Vec::new(),
            closed: false,
        };
        term.until("the start message", |t| !t.controls.is_empty())
            .await;
        match term.controls[0] {
            PtyControl::Start { pid } => (term, pid),
            other => panic!("first control message: {other:?}"),
        }
    }

    async fn type_in(&mut self, text: &str) {
        let bytes = text.as_bytes().to_vec();
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    async fn resize(&mut self, cols: u16, rows: u16) {
        let msg = PtyControl::Resize { cols, rows }.to_json();
        self.ws.send(Message::text(msg)).await.unwrap();
    }

    /// Reads until `done` holds; fails with what was received after 10 s.
    async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + READ_LIMIT;
        while !done(self) {
            assert!(
                !self.closed,
                "closed before {what}; output: {:?}",
                self.output
            );
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 10 s; output: {:?}", self.output));
            match msg {
                Some(Ok(Message::Binary(b))) => self.output.push_str(&String::from_utf8_lossy(&b)),
                Some(Ok(Message::Text(t))) => self.controls.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None => self.closed = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("reading the session: {e}; output: {:?}", self.output),
            }
        }
    }

    /// Reads up to the exit message and the close that must follow it.
    async fn exit(&mut self) -> PtyControl {
        self.until("the exit message", |t| {
            t.controls
                .iter()
                .any(|c| matches!(c, PtyControl::Exit { .. }))
        })
        .await;
        let exit = *self.controls.last().unwrap();
        assert!(
            matches!(exit, PtyControl::Exit { .. }),
            "{:?}",
            self.controls
        );
        self.until("the close", |t| t.closed).await;
        exit
    }

    /// Clears what was read so far (the next `until` sees new output only).
    fn clear(&mut self) {
        self.output.clear();
    }

    /// The output's lines without escape sequences and carriage returns.
    fn lines(&self) -> Vec<String> {
        plain(&self.output)
            .split('\n')
            .map(|l| l.trim_matches('\r').to_owned())
            .collect()
    }

    /// Whether a whole line of output is `line`.
    fn has_line(&self, line: &str) -> bool {
        self.lines().iter().any(|l| l == line)
    }

    /// The rest of the first complete line starting with `prefix`.
    fn line_after(&self, prefix: &str) -> Option<String> {
        let lines = self.lines();
        let complete = &lines[..lines.len().saturating_sub(1)];
        complete
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
    }
}

/// `text` without CSI (`ESC [ … final`) and OSC (`ESC ] … BEL`) sequences.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                for c in chars.by_ref() {
                    if c == '\u{7}' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_runs_on_a_terminal_resizes_and_exits() {
    let agent = start_agent().await;
    let (mut term, pid) = Term::open(&agent.client, &PtyRequest::default()).await;

    let list = agent.client.processes().await.unwrap();
    let listed = list.iter().find(|p| p.pid == pid).unwrap();
    assert!(listed.argv[0].ends_with("sh"), "{listed:?}");
    assert_eq!(listed.user, RunAs::User);

    term.type_in("echo $((6*7))\n").await;
    term.until("42", |t| t.has_line("42")).await;
    term.type_in("tty; id -u; echo \"$TERM\"\n").await;
    term.until("the tty", |t| t.has_line("xterm-256color"))
        .await;
    assert!(
        term.lines().iter().any(|l| l.starts_with("/dev/pts/")),
        "{:?}",
        term.output
    );
    assert!(term.has_line("1000"), "{:?}", term.output);

    term.type_in("stty size\n").await;
    term.until("the size", |t| t.has_line("24 80")).await;
    term.clear();
    term.resize(100, 40).await;
    term.type_in("stty size\n").await;
    term.until("the new size", |t| t.has_line("40 100")).await;

    term.type_in("exit 3\n").await;
    assert_eq!(
        term.exit().await,
        PtyControl::Exit {
            exit_code: Some(3),
            signal: None
        }
    );
    assert!(wait_gone(pid, Duration::from_secs(3)).await);
    assert!(agent.client.processes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_as_root_in_a_directory() {
    let agent = start_agent().await;
    let req = PtyRequest {
        cols: 33,
        rows: 11,
        user: RunAs::Root,
        cwd: Some(path_str(agent.dir.path())),
        cmd: Some("id -u; pwd; stty size; printf \"$PTY_VAR\"; printf 'no newline'".into()),
        env: [("PTY_VAR".to_string(), "from-env:".to_string())].into(),
    };
    let (mut term, _) = Term::open(&agent.client, &req).await;
    let exit = term.exit().await;
    assert_eq!(
        exit,
        PtyControl::Exit {
            exit_code: Some(0),
            signal: None
        }
    );
    let expected = format!(
        "0\r\n{}\r\n11 33\r\nfrom-env:no newline",
        path_str(agent.dir.path())
    );
    assert_eq!(term.output, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_hangs_up_the_shell_and_its_jobs() {
    let agent = start_agent().await;
    let (mut term, pid) = Term::open(&agent.client, &PtyRequest::default()).await;
    term.type_in("sleep 1000 & echo \"job=$!\"\n").await;
    term.until("the job's pid", |t| t.line_after("job=").is_some())
        .await;
    let job: u32 = term.line_after("job=").unwrap().parse().unwrap();
    term.type_in("sleep 1000\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(pid) && alive(job));

    drop(term);
    assert!(
        wait_gone(pid, Duration::from_secs(5)).await,
        "the shell survived"
    );
    assert!(
        wait_gone(job, Duration::from_secs(5)).await,
        "its job survived"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !agent.client.processes().await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_ignoring_sighup_is_killed() {
    let agent = start_agent().await;
    let req = PtyRequest {
        cmd: Some("trap '' HUP; echo ready; sleep 1000".into()),
        ..PtyRequest::default()
    };
    let (mut term, pid) = Term::open(&agent.client, &req).await;
    term.until("ready", |t| t.output.contains("ready")).await;
    drop(term);
    assert!(wait_gone(pid, Duration::from_secs(5)).await);
}

/// A job in a process group of its own, which never hears a hang-up (its
/// shell ignores it, and so does the job), still goes with the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_its_own_group_goes_with_the_session() {
    let agent = start_agent().await;
    let req = PtyRequest {
        cmd: Some("set -m; trap '' HUP; sleep 1000 & echo \"job=$!\"; sleep 1000".into()),
        ..PtyRequest::default()
    };
    let (mut term, pid) = Term::open(&agent.client, &req).await;
    term.until("the job's pid", |t| t.line_after("job=").is_some())
        .await;
    let job: u32 = term.line_after("job=").unwrap().parse().unwrap();
    assert!(alive(job));
    drop(term);
    assert!(
        wait_gone(pid, Duration::from_secs(5)).await,
        "the shell survived"
    );
    assert!(
        wait_gone(job, Duration::from_secs(5)).await,
        "its job survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_the_session() {
    let agent = start_agent().await;
    let (mut term, pid) = Term::open(&agent.client, &PtyRequest::default()).await;
    agent.client.kill(pid, Signal::KILL).await.unwrap();
    assert_eq!(
        term.exit().await,
        PtyControl::Exit {
            exit_code: None,
            signal: Some(9)
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_fail_before_the_upgrade() {
    let agent = start_agent().await;
    let req = PtyRequest {
        cwd: Some("/nonexistent-miosa-dir".into()),
        ..PtyRequest::default()
    };
    let err = agent.client.pty(&req).await.unwrap_err();
    assert!(
        matches!(err, AgentError::Invalid(ref m) if m.contains("cannot start in")),
        "{err:?}"
    );
    let req = PtyRequest {
        rows: 1001,
        ..PtyRequest::default()
    };
    let err = agent.client.pty(&req).await.unwrap_err();
    assert!(
        matches!(err, AgentError::Invalid(ref m) if m.contains("rows")),
        "{err:?}"
    );
    assert!(agent.client.processes().await.unwrap().is_empty());
}

//! Interactive terminals through the API's WebSocket, in real sandboxes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use futures_util::{SinkExt, StreamExt};
use miosa_agent::tokio_tungstenite::{
    client_async,
    tungstenite::{self, client::IntoClientRequest, http::StatusCode, Message},
    WebSocketStream,
};
use miosa_client::Client;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpStream;

type Ws = WebSocketStream<TcpStream>;

/// Opens the terminal WebSocket of sandbox `id` with `key`.
async fn connect(
    client: &Client,
    key: &str,
    id: &str,
    query: &str,
) -> Result<Ws, tungstenite::Error> {
    let url = client.pty_url(id, query);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let host = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let tcp = TcpStream::connect(host).await.unwrap();
    client_async(req, tcp).await.map(|(ws, _)| ws)
}

/// The HTTP answer of a refused handshake.
async fn refused(client: &Client, key: &str, id: &str, query: &str) -> (StatusCode, Value) {
    match connect(client, key, id, query).await {
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Ok(_) => panic!("the handshake for {query:?} succeeded"),
        Err(e) => panic!("the handshake for {query:?} failed otherwise: {e}"),
    }
}

/// What a session sent: terminal output (lossy text) and control messages.
#[derive(Default)]
struct Received {
    output: String,
    controls: Vec<Value>,
    closed: bool,
}

impl Received {
    fn lines(&self) -> Vec<String> {
        self.output
            .split('\n')
            .map(|l| {
                // Drop escape sequences such as bash's bracketed-paste toggles.
                let mut plain = String::new();
                let mut rest = l;
                while let Some(i) = rest.find('\u{1b}') {
                    plain.push_str(&rest[..i]);
                    let tail = &rest[i + 1..];
                    let end = tail
                        .char_indices()
                        .skip(1)
                        .find(|(_, c)| c.is_ascii_alphabetic())
                        .map_or(tail.len(), |(j, c)| j + c.len_utf8());
                    rest = &tail[end..];
                }
                plain.push_str(rest);
                plain.trim_matches('\r').to_owned()
            })
            .collect()
    }

    fn has_line(&self, line: &str) -> bool {
        self.lines().iter().any(|l| l == line)
    }

    fn exit(&self) -> Option<&Value> {
        self.controls.iter().find(|c| c["type"] == "exit")
    }
}

/// Reads until `done` holds; fails with what arrived after 20 s.
async fn read_until(ws: &mut Ws, got: &mut Received, what: &str, done: impl Fn(&Received) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(got) {
        assert!(!got.closed, "closed before {what}; output {:?}", got.output);
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within 20 s; output {:?}", got.output));
        match msg {
            Some(Ok(Message::Binary(b))) => got.output.push_str(&String::from_utf8_lossy(&b)),
            Some(Ok(Message::Text(t))) => got.controls.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None => got.closed = true,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("reading the terminal: {e}; output {:?}", got.output),
        }
    }
}

async fn type_in(ws: &mut Ws, text: &str) {
    ws.send(Message::binary(text.as_bytes().to_vec()))
        .await
        .unwrap();
}

async fn process_pids(client: &Client, id: &str) -> Vec<u64> {
    let r = client
        .raw(Method::GET, &format!("/v1/sandboxes/{id}/processes"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_session_through_the_api() {
    let t = TestServer::start(Backend::Sqlite).await;
    let s = t.admin.create_sandbox(&json!({})).await.unwrap();

    // The default login shell, as `user`, resized, ended with a status.
    let mut ws = connect(&t.admin, &t.admin_key, &s.id, "cols=90&rows=30")
        .await
        .unwrap();
    let mut got = Received::default();
    read_until(&mut ws, &mut got, "the start message", |g| {
        !g.controls.is_empty()
    })
    .await;
    assert_eq!(got.controls[0]["type"], "start", "{:?}", got.controls);
    let pid = got.controls[0]["pid"].as_u64().unwrap();
    assert!(process_pids(&t.admin, &s.id).await.contains(&pid));

    type_in(&mut ws, "id -u; stty size; tty\n").await;
    read_until(&mut ws, &mut got, "the size", |g| g.has_line("30 90")).await;
    assert!(got.has_line("1000"), "{:?}", got.output);
    let resize = json!({"type": "resize", "cols": 132, "rows": 43}).to_string();
    ws.send(Message::text(resize)).await.unwrap();
    type_in(&mut ws, "stty size; exit 5\n").await;
    read_until(&mut ws, &mut got, "the exit", |g| g.closed).await;
    assert!(got.has_line("43 132"), "{:?}", got.output);
    assert!(
        got.lines().iter().any(|l| l.starts_with("/dev/pts/")),
        "{:?}",
        got.output
    );
    assert_eq!(
        got.exit(),
        Some(&json!({"type": "exit", "exit_code": 5, "signal": null})),
        "{:?}",
        got.controls
    );

    // A command as root in a directory.
    let mut ws = connect(
        &t.admin,
        &t.admin_key,
        &s.id,
        "user=root&cwd=/tmp&cmd=id%20-u%3B%20pwd",
    )
    .await
    .unwrap();
    let mut got = Received::default();
    read_until(&mut ws, &mut got, "the end", |g| g.closed).await;
    assert!(
        got.has_line("0") && got.has_line("/tmp"),
        "{:?}",
        got.output
    );
    assert_eq!(got.exit().unwrap()["exit_code"], 0);

    // Closing the WebSocket hangs the shell up.
    let mut ws = connect(&t.admin, &t.admin_key, &s.id, "").await.unwrap();
    let mut got = Received::default();
    read_until(&mut ws, &mut got, "the start message", |g| {
        !g.controls.is_empty()
    })
    .await;
    let pid = got.controls[0]["pid"].as_u64().unwrap();
    type_in(&mut ws, "echo ready\n").await;
    read_until(&mut ws, &mut got, "the shell", |g| g.has_line("ready")).await;
    ws.close(None).await.unwrap();
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while process_pids(&t.admin, &s.id).await.contains(&pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shell outlived its WebSocket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    t.admin.delete_sandbox(&s.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_refusals_are_http_errors() {
    let t = TestServer::start(Backend::Sqlite).await;
    let s = t.admin.create_sandbox(&json!({})).await.unwrap();

    // Another tenant's key: 404, no upgrade.
    let other = t.root.create_tenant("other").await.unwrap();
    let (status, body) = refused(&t.admin, &other.api_key, &s.id, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // No key: 401.
    let (status, _) = refused(&t.admin, "msk_live_nope", &s.id, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Parameters are checked before anything starts.
    for (query, field) in [
        ("cols=0", "cols"),
        ("rows=1001", "rows"),
        ("user=admin", "user"),
        ("cwd=/nonexistent", "cwd"),
        ("tty=1", "tty"),
    ] {
        let (status, body) = refused(&t.admin, &t.admin_key, &s.id, query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    assert!(process_pids(&t.admin, &s.id).await.is_empty());

    // A plain GET is told to upgrade.
    let r = t
        .admin
        .raw(Method::GET, &format!("/v1/sandboxes/{}/pty", s.id), None)
        .await
        .unwrap();
    assert_eq!(r.status, 426, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "websocket_required");

    // A paused sandbox: 409.
    t.admin.sandbox_action(&s.id, "pause").await.unwrap();
    let (status, body) = refused(&t.admin, &t.admin_key, &s.id, "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "sandbox_paused", "{body}");
    t.admin.sandbox_action(&s.id, "resume").await.unwrap();

    t.admin.delete_sandbox(&s.id).await.unwrap();
}

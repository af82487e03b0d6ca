#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The egress proxy end to end: a sandbox's socket, CONNECT, TLS trusting
//! the sandbox CA, HTTP/1.1 — against local fake upstreams over loopback.

mod support;

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use miosa_core::{audit::action, Outcome, SecretScope};
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, protocol::Role, Message},
    WebSocketStream,
};

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn bearer_header_is_substituted_and_never_seen_by_the_client() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/echo", "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .header("accept-encoding", "gzip, br")
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(&mut c, req).await;
    assert_eq!(status, 200);

    let seen = h.upstream.last();
    assert_eq!(seen.header("authorization"), format!("Bearer {VALUE}"));
    assert_eq!(seen.header("accept-encoding"), "identity");
    // The upstream echoed the value in a header and the body; the sandbox
    // gets the placeholder back instead.
    assert_eq!(headers["x-echo-auth"], format!("Bearer {ph}").as_str());
    assert!(!contains(&body, VALUE));
    assert!(contains(&body, &format!("authorization: Bearer {ph}")));
    for v in headers.values() {
        assert!(!contains(v.as_bytes(), VALUE));
    }
    let rows = h.audit.wait_for(1).await;
    assert_rows_clean(&rows, VALUE);
}

#[tokio::test]
async fn basic_auth_is_decoded_substituted_and_reencoded() {
    let h = Harness::start().await;
    let mut c = h.https("api.openai.com", 443).await;
    let basic = BASE64.encode(format!("user:{}", h.main.placeholder));
    let req = request("GET", "/", "api.openai.com")
        .header("authorization", format!("Basic {basic}"))
        .body(empty())
        .unwrap();
    let (status, _, _) = send(&mut c, req).await;
    assert_eq!(status, 200);
    let seen = h.upstream.last();
    let sent = seen.header("authorization").strip_prefix("Basic ").unwrap();
    assert_eq!(
        BASE64.decode(sent).unwrap(),
        format!("user:{VALUE}").as_bytes()
    );
}

#[tokio::test]
async fn query_string_and_path_get_percent_encoded_values() {
    let h = Harness::start().await;
    h.substitute_everywhere();
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", &format!("/v1/models?key={ph}&x=1"), "api.openai.com")
        .body(empty())
        .unwrap();
    send(&mut c, req).await;
    let uri = h.upstream.last().uri;
    assert_eq!(uri, "/v1/models?key=sk-live-0123456789abcdef%2B%2F%3D&x=1");
    assert_eq!(
        form_value(uri.split_once('?').unwrap().1, "key").unwrap(),
        VALUE
    );

    // Tokens in the path (Telegram-style APIs).
    let req = request("GET", &format!("/bot{ph}/getMe"), "api.openai.com")
        .body(empty())
        .unwrap();
    send(&mut c, req).await;
    assert_eq!(
        h.upstream.last().uri,
        "/botsk-live-0123456789abcdef%2B%2F%3D/getMe"
    );
    let rows = h.audit.wait_for(2).await;
    assert_eq!(rows[0].request.as_ref().unwrap().path, "/v1/models");
    // The row keeps the path the sandbox sent: placeholder, not value.
    assert_eq!(
        rows[1].request.as_ref().unwrap().path,
        format!("/bot{ph}/getMe")
    );
    assert_rows_clean(&rows, VALUE);
}

#[tokio::test]
async fn json_and_form_bodies_are_substituted_in_their_encoding() {
    let h = Harness::start().await;
    h.substitute_everywhere();
    let (main, json) = (h.main.placeholder.clone(), h.json.placeholder.clone());
    let mut c = h.https("api.openai.com", 443).await;

    let body = format!(r#"{{"password":"{json}","key":"{main}"}}"#);
    let req = request("POST", "/sink", "api.openai.com")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(full(body))
        .unwrap();
    send(&mut c, req).await;
    let seen = h.upstream.last();
    let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(v["password"], JSON_VALUE);
    assert_eq!(v["key"], VALUE);
    assert_eq!(seen.header("content-length"), seen.body.len().to_string());

    let body = format!("a=1&key={main}&b=2");
    let req = request("POST", "/sink", "api.openai.com")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", body.len())
        .body(full(body))
        .unwrap();
    send(&mut c, req).await;
    let seen = h.upstream.last();
    let form = std::str::from_utf8(&seen.body).unwrap();
    assert_eq!(form_value(form, "key").unwrap(), VALUE);
    assert_eq!(form_value(form, "b").unwrap(), "2");

    // Chunked, ending within the limit: buffered, substituted, re-framed.
    let parts = vec![
        Bytes::from(r#"{"key":""#),
        Bytes::from(main.clone()),
        Bytes::from(r#""}"#),
    ];
    let req = request("POST", "/sink", "api.openai.com")
        .header("content-type", "application/json")
        .body(chunked(parts))
        .unwrap();
    send(&mut c, req).await;
    let seen = h.upstream.last();
    let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(v["key"], VALUE);
    assert_eq!(seen.header("content-length"), seen.body.len().to_string());
    assert_eq!(seen.header("transfer-encoding"), "");
}

#[tokio::test]
async fn bodies_over_the_limit_stream_through_unchanged() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    let mut big = ph.clone().into_bytes();
    big.resize(1024 * 1024 + 10, b'x');
    let big = Bytes::from(big);
    let req = request("POST", "/sink", "api.openai.com")
        .header("content-length", big.len())
        .body(full(big.clone()))
        .unwrap();
    let (status, _, _) = send(&mut c, req).await;
    assert_eq!(status, 200);
    assert_eq!(h.upstream.last().body, big);

    // Chunked and only found to be too large part way.
    let pieces: Vec<Bytes> = big.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    let req = request("POST", "/sink", "api.openai.com")
        .body(chunked(pieces))
        .unwrap();
    send(&mut c, req).await;
    assert_eq!(h.upstream.last().body, big);
    let rows = h.audit.wait_for(2).await;
    assert_eq!(
        rows[1].request.as_ref().unwrap().bytes_out,
        big.len() as u64
    );
}

#[tokio::test]
async fn allowed_hosts_decide_where_a_value_may_go() {
    let h = Harness::start().await;
    // `other` is for api.anthropic.com only: it goes to OpenAI unchanged.
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/", "api.openai.com")
        .header("x-api-key", &h.other.placeholder)
        .body(empty())
        .unwrap();
    send(&mut c, req).await;
    assert_eq!(h.upstream.last().header("x-api-key"), h.other.placeholder);
    // `main` allows *.github.com.
    let mut c = h.https("api.github.com", 443).await;
    let req = request("GET", "/", "api.github.com")
        .header("authorization", format!("token {}", h.main.placeholder))
        .body(empty())
        .unwrap();
    send(&mut c, req).await;
    assert_eq!(
        h.upstream.last().header("authorization"),
        format!("token {VALUE}")
    );
    let rows = h.audit.wait_for(2).await;
    assert_eq!(rows[0].credential, None);
    assert_eq!(rows[1].credential.as_ref().unwrap().name, "openai");
}

#[tokio::test]
async fn plain_http_is_forwarded_without_substitution() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.plain_client().await;
    let req = request("GET", "http://plain.example/echo?x=1", "plain.example")
        .header("authorization", format!("Bearer {ph}"))
        .header("proxy-connection", "keep-alive")
        .body(empty())
        .unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 200);
    let seen = h.plain.last();
    assert_eq!(seen.header("authorization"), format!("Bearer {ph}"));
    assert_eq!(seen.uri, "/echo?x=1");
    assert_eq!(seen.header("proxy-connection"), "");
    assert!(contains(&body, &ph));
    // Keep-alive on the proxy connection.
    let req = request("GET", "http://plain.example/", "plain.example")
        .body(empty())
        .unwrap();
    assert_eq!(send(&mut c, req).await.0, 200);
    // Not a proxy request: told so, and recorded.
    let req = request("GET", "/", "plain.example").body(empty()).unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 400);
    assert!(contains(&body, "absolute http:// URI or CONNECT"));
    assert_eq!(h.creds.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let rows = h.audit.wait_for(3).await;
    assert_eq!(rows[2].outcome, Outcome::Error);
    assert!(rows.iter().all(|r| r.credential.is_none()));
    assert_eq!(rows[0].request.as_ref().unwrap().path, "/echo");
}

#[tokio::test]
async fn a_disabled_secret_stops_on_the_very_next_request() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    let req = || {
        request("GET", "/", "api.openai.com")
            .header("authorization", format!("Bearer {ph}"))
            .body(empty())
            .unwrap()
    };
    send(&mut c, req()).await;
    assert_eq!(
        h.upstream.last().header("authorization"),
        format!("Bearer {VALUE}")
    );
    h.creds.set(Vec::new());
    send(&mut c, req()).await;
    assert_eq!(
        h.upstream.last().header("authorization"),
        format!("Bearer {ph}")
    );
}

#[tokio::test]
async fn echoes_are_scrubbed_across_chunk_boundaries() {
    let h = Harness::start().await;
    h.substitute_everywhere();
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    for chunk in [1, 3, 7, 16, 64] {
        let body = format!("before {ph} middle {ph} after");
        let req = request(
            "POST",
            &format!("/chunked-echo?chunk={chunk}"),
            "api.openai.com",
        )
        .header("x-token", &ph)
        .header("content-length", body.len())
        .body(full(body))
        .unwrap();
        let (status, headers, body) = send(&mut c, req).await;
        assert_eq!(status, 200);
        assert!(!contains(&body, VALUE), "chunk {chunk}");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(text.matches(&ph).count(), 3, "chunk {chunk}: {text}");
        assert!(text.ends_with(&format!("before {ph} middle {ph} after")));
        assert!(headers.get("content-length").is_none());
        // The upstream did get the value.
        assert!(contains(&h.upstream.last().body, VALUE));
    }
}

#[tokio::test]
async fn keep_alive_reuses_one_upstream_connection() {
    let h = Harness::start().await;
    let mut c = h.https("api.openai.com", 443).await;
    for _ in 0..5 {
        let req = request("GET", "/echo", "api.openai.com")
            .header("authorization", format!("Bearer {}", h.main.placeholder))
            .body(empty())
            .unwrap();
        assert_eq!(send(&mut c, req).await.0, 200);
    }
    // A second tunnel from the same sandbox reuses it too.
    let mut c2 = h.https("api.openai.com", 443).await;
    let req = request("GET", "/", "api.openai.com").body(empty()).unwrap();
    assert_eq!(send(&mut c2, req).await.0, 200);
    assert_eq!(h.upstream.seen().len(), 6);
    assert_eq!(h.upstream.connections(), 1);
    // Exactly one row per request.
    h.audit.wait_for(6).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.audit.rows().len(), 6);
}

#[tokio::test]
async fn private_destinations_are_refused() {
    let h = Harness::start().await;
    for (authority, why) in [
        ("127.0.0.1:443", "loopback"),
        ("10.0.0.1:443", "private"),
        ("169.254.169.254:80", "link-local"),
        ("[::1]:443", "loopback"),
        ("[::ffff:10.1.1.1]:443", "private"),
        ("localhost:443", "loopback"),
    ] {
        let (status, text, _) = h.connect(authority).await;
        assert_eq!(status, 403, "{authority}: {text}");
        assert!(text.contains(why), "{authority}: {text}");
    }
    let mut c = h.plain_client().await;
    for uri in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9/",
        "http://192.168.0.1/",
    ] {
        let req = request("GET", uri, "x").body(empty()).unwrap();
        let (status, _, body) = send(&mut c, req).await;
        assert_eq!(status, 403, "{uri}");
        assert!(contains(&body, "sandboxes may only reach public addresses"));
    }
    let rows = h.audit.wait_for(9).await;
    for row in &rows {
        assert_eq!(row.outcome, Outcome::Denied, "{row:?}");
        assert_eq!(row.request.as_ref().unwrap().status, Some(403));
    }
    assert_eq!(rows[0].request.as_ref().unwrap().method, "CONNECT");
    assert_eq!(rows[0].request.as_ref().unwrap().host, "127.0.0.1");
    assert_eq!(rows[6].request.as_ref().unwrap().path, "/latest/meta-data/");
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_a_502() {
    let h = Harness::start().await;
    let mut c = h.https("untrusted.example", 443).await;
    let req = request("GET", "/", "untrusted.example")
        .header("authorization", format!("Bearer {}", h.main.placeholder))
        .body(empty())
        .unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 502);
    assert!(contains(&body, "TLS"), "{body:?}");
    assert!(h.untrusted.seen().is_empty());
    let rows = h.audit.wait_for(1).await;
    assert_eq!(rows[0].outcome, Outcome::Error);
    assert_eq!(rows[0].request.as_ref().unwrap().status, Some(502));
}

#[tokio::test]
async fn audit_rows_describe_the_request_and_never_the_value() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("POST", &format!("/status/401?token={ph}"), "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .header("content-length", 5)
        .body(full("hello"))
        .unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 401);
    assert_eq!(body, "status body");

    let rows = h.audit.wait_for(1).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let id = &h.identity;
    assert_eq!(row.action, action::EGRESS_REQUEST);
    assert_eq!(row.actor, None);
    assert_eq!(row.tenant_id, id.tenant_id);
    assert_eq!(row.sandbox_id.as_ref(), Some(&id.sandbox_id));
    assert_eq!(row.workspace_id, id.workspace_id);
    assert_eq!(row.owner_user_id, id.labels.owner_user_id);
    assert_eq!(row.external_user_id, id.labels.external_user_id);
    assert_eq!(row.external_workspace_id, id.labels.external_workspace_id);
    assert_eq!(row.external_project_id, id.labels.external_project_id);
    assert_eq!(row.outcome, Outcome::Success);
    assert_eq!(row.time.nanosecond() % 1_000, 0);
    let r = row.request.as_ref().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.host, "api.openai.com");
    assert_eq!(r.path, "/status/401");
    assert_eq!(r.status, Some(401));
    assert_eq!(r.bytes_out, 5);
    assert_eq!(r.bytes_in, 11);
    let cred = row.credential.as_ref().unwrap();
    assert_eq!(cred.secret_id, h.main.secret.id);
    assert_eq!(cred.name, "openai");
    assert_eq!(cred.scope, SecretScope::ExternalUser);
    assert_rows_clean(&rows, VALUE);
    assert!(!format!("{:?}", h.main).contains(VALUE));
}

#[tokio::test]
async fn a_failing_credential_source_fails_only_requests_that_need_it() {
    let h = Harness::start().await;
    h.creds
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/", "api.openai.com")
        .header("authorization", format!("Bearer {}", h.main.placeholder))
        .body(empty())
        .unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 502);
    assert!(!contains(&body, "vault sealed"));
    assert!(h.upstream.seen().is_empty());
    let req = request("GET", "/", "api.openai.com").body(empty()).unwrap();
    assert_eq!(send(&mut c, req).await.0, 200);
    let rows = h.audit.wait_for(2).await;
    assert_eq!(rows[0].outcome, Outcome::Error);
    assert_eq!(rows[1].outcome, Outcome::Success);
}

#[tokio::test]
async fn websockets_pass_through_intercepted_tls() {
    let h = Harness::start().await;
    let (status, _, s) = h.connect("api.openai.com:443").await;
    assert_eq!(status, 200);
    let name = ServerName::try_from("api.openai.com").unwrap();
    let tls = tls_client(&h.ca_pem).connect(name, s).await.unwrap();
    let mut req = "wss://api.openai.com/ws".into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", h.main.placeholder).parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello through the proxy"))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.to_text().unwrap(), "hello through the proxy");
    assert_eq!(
        h.upstream.last().header("authorization"),
        format!("Bearer {VALUE}")
    );
    ws.close(None).await.unwrap();
    drop(ws);
    let rows = h.audit.wait_for(1).await;
    let r = rows[0].request.as_ref().unwrap();
    assert_eq!((r.path.as_str(), r.status), ("/ws", Some(101)));
    assert!(r.bytes_out > 0 && r.bytes_in > 0, "{r:?}");
    assert!(rows[0].credential.is_some());
}

#[tokio::test]
async fn websockets_pass_through_plain_http() {
    let h = Harness::start().await;
    let mut c = h.plain_client().await;
    let req = request("GET", "http://plain.example/ws", "plain.example")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data(), Bytes::from_static(&[1, 2, 3]));
}

#[tokio::test]
async fn non_tls_connect_is_a_raw_tunnel() {
    let h = Harness::start().await;
    let (status, _, mut s) = h.connect("raw.example:443").await;
    assert_eq!(status, 200);
    s.write_all(b"hello raw").await.unwrap();
    let mut buf = [0u8; 9];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello raw");
    drop(s);
    let rows = h.audit.wait_for(1).await;
    let r = rows[0].request.as_ref().unwrap();
    assert_eq!(
        (r.method.as_str(), r.host.as_str()),
        ("CONNECT", "raw.example")
    );
    assert_eq!((r.bytes_out, r.bytes_in, r.status), (9, 9, Some(200)));
    assert_eq!(rows[0].outcome, Outcome::Success);

    // A protocol where the server speaks first still gets through.
    let (status, _, mut s) = h.connect("banner.example:80").await;
    assert_eq!(status, 200);
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"220 hello\r\n");
}

#[tokio::test]
async fn raw_tunnels_reach_only_the_ports_the_operator_allows() {
    let h = Harness::start().await;
    // SMTP from the host's address: the tunnel is closed before any byte.
    let (status, _, mut s) = h.connect("banner.example:25").await;
    assert_eq!(status, 200);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the tunnel was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let rows = h.audit.wait_for(1).await;
    let r = rows[0].request.as_ref().unwrap();
    assert_eq!((r.host.as_str(), r.status), ("banner.example", Some(403)));
    assert_eq!(rows[0].outcome, Outcome::Denied);

    // The operator may allow it.
    let h = Harness::start_with(|c| c.raw_tunnel_ports = vec![25]).await;
    let (status, _, mut s) = h.connect("banner.example:25").await;
    assert_eq!(status, 200);
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"220 hello\r\n");
}

#[tokio::test]
async fn detach_closes_the_socket_and_its_connections() {
    let h = Harness::start().await;
    let (status, _, mut s) = h.connect("raw.example:443").await;
    assert_eq!(status, 200);
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();

    let id = h.identity.sandbox_id.clone();
    h.proxy.detach(&id).await;
    assert!(!h.socket.exists());
    assert!(!h.proxy.is_attached(&id));
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut one))
        .await
        .expect("the tunnel was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(tokio::net::UnixStream::connect(&h.socket).await.is_err());
    h.proxy.detach(&id).await; // idempotent

    // A stale socket file is replaced on attach.
    drop(std::os::unix::net::UnixListener::bind(&h.socket).unwrap());
    assert!(h.socket.exists());
    let ca = h.proxy.new_ca(&id).unwrap();
    h.proxy
        .attach(h.identity.clone(), ca, &h.paths)
        .await
        .unwrap();
    let (status, _, _) = h.connect("raw.example:443").await;
    assert_eq!(status, 200);
    let ca = h.proxy.new_ca(&id).unwrap();
    let err = h
        .proxy
        .attach(h.identity.clone(), ca, &h.paths)
        .await
        .unwrap_err();
    assert!(
        matches!(err, miosa_egress::EgressError::AlreadyAttached(_)),
        "{err}"
    );
}

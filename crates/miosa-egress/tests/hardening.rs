#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The proxy as an attacker inside a sandbox (or a hostile upstream) would
//! try it: recovering a value through a transforming upstream, through
//! compression, trailers, reason phrases or WebSocket frames, and sending a
//! tunnel's secrets to another host.

mod support;

use std::io::Read as _;

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt as _;
use miosa_core::{Outcome, SubstituteIn};
use rustls::pki_types::ServerName;
use support::*;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// `s` with a space after every byte, as the `/spaced` upstream answers.
fn spaced(s: &str) -> String {
    s.bytes().flat_map(|b| [b as char, ' ']).collect()
}

#[tokio::test]
async fn a_transforming_upstream_cannot_hand_back_a_value_by_default() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    // "Repeat my prompt with spaces between the characters."
    let body = format!(r#"{{"prompt":"{ph}"}}"#);
    let req = request("POST", &format!("/spaced?key={ph}"), "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap();
    let (status, _, answer) = send(&mut c, req).await;
    assert_eq!(status, 200);
    let seen = h.upstream.last();
    // Headers carry the value; the body and query string do not.
    assert_eq!(seen.header("authorization"), format!("Bearer {VALUE}"));
    assert!(!contains(&seen.body, VALUE));
    assert!(contains(&seen.body, &ph));
    assert!(seen.uri.contains(&ph) && !seen.uri.contains("sk-live"));
    assert!(!contains(&answer, &spaced(VALUE)));
    let rows = h.audit.wait_for(1).await;
    assert_eq!(rows[0].credential.as_ref().unwrap().name, "openai");

    // A secret that opts in to the body trusts the host with the value:
    // this upstream hands it back, spaced out, past the scrubber.
    h.substitute_everywhere();
    let req = request("POST", "/spaced", "api.openai.com")
        .header("content-type", "application/json")
        .body(full(format!(r#"{{"prompt":"{ph}"}}"#)))
        .unwrap();
    let (_, _, answer) = send(&mut c, req).await;
    assert!(contains(&answer, &spaced(VALUE)), "the opt-in is real");
}

#[tokio::test]
async fn query_and_body_substitution_follow_each_secret() {
    let h = Harness::start().await;
    let mut main = h.main.clone();
    main.secret.substitute_in = SubstituteIn {
        headers: true,
        query: true,
        body: false,
    };
    h.creds.set(vec![main.clone()]);
    let ph = main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("POST", &format!("/sink?key={ph}"), "api.openai.com")
        .body(full(format!("body {ph}")))
        .unwrap();
    send(&mut c, req).await;
    let seen = h.upstream.last();
    assert_eq!(
        form_value(seen.uri.split_once('?').unwrap().1, "key").unwrap(),
        VALUE
    );
    assert_eq!(seen.body, format!("body {ph}").as_bytes());
}

#[tokio::test]
async fn a_connection_header_cannot_strip_the_forced_identity_encoding() {
    let h = Harness::start().await;
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/echo", "api.openai.com")
        .header("authorization", format!("Bearer {}", h.main.placeholder))
        .header("accept-encoding", "gzip")
        .header("connection", "accept-encoding")
        .body(empty())
        .unwrap();
    let (status, _, _) = send(&mut c, req).await;
    assert_eq!(status, 200);
    assert_eq!(h.upstream.last().header("accept-encoding"), "identity");
}

#[tokio::test]
async fn compressed_answers_to_requests_with_a_value_are_refused() {
    let h = Harness::start().await;
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/gzip-echo", "api.openai.com")
        .header("authorization", format!("Bearer {}", h.main.placeholder))
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(&mut c, req).await;
    assert_eq!(status, 502);
    assert!(headers.get("content-encoding").is_none());
    assert!(contains(&body, "compressed response"), "{body:?}");
    // The upstream did echo the value, compressed: it never got through.
    let mut gz = flate2::read::GzDecoder::new(&body[..]);
    assert!(gz.read_to_end(&mut Vec::new()).is_err());
    let rows = h.audit.wait_for(1).await;
    assert_eq!(rows[0].outcome, Outcome::Error);
    assert_eq!(rows[0].request.as_ref().unwrap().status, Some(502));

    // Without a value in the request, a compressed answer passes as is.
    let req = request("GET", "/gzip-echo", "api.openai.com")
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(&mut c, req).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("host: api.openai.com"), "{text}");
}

#[tokio::test]
async fn trailers_and_reason_phrases_are_scrubbed() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/trailer-echo", "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    c.ready().await.unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers were sent");
    assert_eq!(trailers["x-echo-trailer"], format!("Bearer {ph}").as_str());
    assert_eq!(
        h.upstream.last().header("authorization"),
        format!("Bearer {VALUE}")
    );

    let req = request("GET", "/reason-echo", "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .body(empty())
        .unwrap();
    c.ready().await.unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 299);
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .unwrap_or_default();
    assert!(!reason.contains(VALUE), "{reason}");
    assert_eq!(reason, format!("Bearer {ph}"));
}

#[tokio::test]
async fn websocket_frames_after_a_value_are_scrubbed() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let (status, _, s) = h.connect("api.openai.com:443").await;
    assert_eq!(status, 200);
    let name = ServerName::try_from("api.openai.com").unwrap();
    let tls = tls_client(&h.ca_pem).connect(name, s).await.unwrap();
    let mut req = "wss://api.openai.com/ws-auth"
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ph}").parse().unwrap());
    req.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate".parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    // The upstream greets with the Authorization header it received.
    let greeting = ws.next().await.unwrap().unwrap();
    assert_eq!(greeting.to_text().unwrap(), format!("Bearer {ph}"));
    let seen = h.upstream.last();
    assert_eq!(seen.header("authorization"), format!("Bearer {VALUE}"));
    assert_eq!(
        seen.header("sec-websocket-extensions"),
        "",
        "compression is never offered upstream"
    );
    // Echoes of what the sandbox sends come back as they went.
    ws.send(Message::text("plain text")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        "plain text"
    );
    ws.send(Message::binary(b"bin".to_vec())).await.unwrap();
    assert_eq!(&ws.next().await.unwrap().unwrap().into_data()[..], b"bin");
    ws.close(None).await.unwrap();
    drop(ws);
    let rows = h.audit.wait_for(1).await;
    let r = rows[0].request.as_ref().unwrap();
    assert_eq!((r.path.as_str(), r.status), ("/ws-auth", Some(101)));
    assert!(r.bytes_out > 0 && r.bytes_in > 0, "{r:?}");
    assert_rows_clean(&rows, VALUE);
}

#[tokio::test]
async fn a_request_for_another_host_inside_a_tunnel_is_misdirected() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    for (uri, host) in [
        ("/echo", "untrusted.example"),
        ("/echo", "api.openai.com:8443"),
        ("https://untrusted.example/echo", "api.openai.com"),
    ] {
        let before = h.upstream.seen().len();
        let req = request("GET", uri, host)
            .header("authorization", format!("Bearer {ph}"))
            .body(empty())
            .unwrap();
        let (status, _, body) = send(&mut c, req).await;
        assert_eq!(status, 421, "{uri} {host}");
        assert!(contains(&body, "needs a CONNECT of its own"), "{body:?}");
        assert_eq!(h.upstream.seen().len(), before, "nothing was forwarded");
        c = h.https("api.openai.com", 443).await;
    }
    // The tunnel's own name, with or without its port, is fine.
    for host in ["api.openai.com", "API.OpenAI.com:443"] {
        let req = request("GET", "/", host)
            .header("authorization", format!("Bearer {ph}"))
            .body(empty())
            .unwrap();
        assert_eq!(send(&mut c, req).await.0, 200, "{host}");
    }
    let rows = h.audit.wait_for(5).await;
    for row in &rows[..3] {
        let r = row.request.as_ref().unwrap();
        assert_eq!((r.host.as_str(), r.status), ("api.openai.com", Some(421)));
        assert_eq!(row.outcome, Outcome::Denied);
        assert!(row.credential.is_none());
    }
}

#[tokio::test]
async fn a_tls_server_name_for_another_host_is_refused() {
    let h = Harness::start().await;
    let (status, _, s) = h.connect("api.openai.com:443").await;
    assert_eq!(status, 200);
    let name = ServerName::try_from("api.github.com").unwrap();
    let handshake = tls_client(&h.ca_pem).connect(name, s).await;
    assert!(handshake.is_err(), "the handshake must fail");
    let rows = h.audit.wait_for(1).await;
    let r = rows[0].request.as_ref().unwrap();
    assert_eq!(
        (r.method.as_str(), r.host.as_str(), r.status),
        ("CONNECT", "api.openai.com", Some(421))
    );
    assert_eq!(rows[0].outcome, Outcome::Denied);
    assert!(h.upstream.seen().is_empty());
}

#[tokio::test]
async fn allowed_hosts_name_their_port() {
    let h = Harness::start().await;
    let mut main = h.main.clone();
    main.secret.allowed_hosts = vec!["api.openai.com:8443".into()];
    h.creds.set(vec![main.clone()]);
    let ph = main.placeholder.clone();
    for (port, sent) in [(443, ph.clone()), (8443, VALUE.to_owned())] {
        let mut c = h.https("api.openai.com", port).await;
        let req = request("GET", "/", &format!("api.openai.com:{port}"))
            .header("authorization", format!("Bearer {ph}"))
            .body(empty())
            .unwrap();
        assert_eq!(send(&mut c, req).await.0, 200);
        assert_eq!(
            h.upstream.last().header("authorization"),
            format!("Bearer {sent}"),
            "port {port}"
        );
    }
}

#[tokio::test]
async fn a_request_with_a_value_waits_for_its_durable_row() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    h.audit
        .hold
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let req = request("GET", "/echo", "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .body(empty())
        .unwrap();
    let pending = tokio::spawn(async move { send(&mut c, req).await.0 });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        h.upstream.seen().is_empty(),
        "nothing leaves before the row is durable"
    );
    h.audit
        .hold
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(pending.await.unwrap(), 200);
    assert_eq!(h.upstream.seen().len(), 1);
    let rows = h.audit.wait_for(1).await;
    assert_eq!(h.audit.durable.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Completed in place: status, bytes, duration and the secret.
    let r = rows[0].request.as_ref().unwrap();
    assert_eq!((r.status, r.path.as_str()), (Some(200), "/echo"));
    assert!(r.bytes_in > 0);
    assert_eq!(rows[0].credential.as_ref().unwrap().name, "openai");
    assert!(rows[0].created_by_key_id.is_some());

    // A request without a value keeps the queued path.
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/", "api.openai.com").body(empty()).unwrap();
    assert_eq!(send(&mut c, req).await.0, 200);
    assert_eq!(h.audit.durable.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_a_durable_row_nothing_is_sent() {
    let h = Harness::start().await;
    let ph = h.main.placeholder.clone();
    let mut c = h.https("api.openai.com", 443).await;
    h.audit
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let req = request("GET", "/echo", "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .body(empty())
        .unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 503);
    assert!(contains(&body, "audit_unavailable"), "{body:?}");
    assert!(h.upstream.seen().is_empty());
    // A log that cannot take even queued rows refuses everything.
    h.audit
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let req = request("GET", "/", "api.openai.com").body(empty()).unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 503);
    assert!(contains(&body, "audit_unavailable"), "{body:?}");
    let (status, head, _) = h.connect("api.github.com:443").await;
    assert_eq!(status, 503, "{head}");
    assert!(h.upstream.seen().is_empty());
    // Back: traffic flows again.
    h.audit
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    h.audit
        .refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/echo", "api.openai.com")
        .header("authorization", format!("Bearer {ph}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(&mut c, req).await.0, 200);
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One sandbox must not take the host down through its egress socket:
//! connections, requests in flight, idle and slow peers are bounded, and no
//! host file operation follows a link the sandbox planted.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether the peer closed `s` within a few seconds (read → 0 or error).
async fn closed(s: &mut tokio::net::UnixStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let h = Harness::start_with(|c| c.max_connections = 4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let (status, _, s) = h.connect("raw.example:443").await;
        assert_eq!(status, 200);
        open.push(s);
    }
    let mut extra = h.dial().await;
    extra
        .write_all(b"CONNECT raw.example:443 HTTP/1.1\r\n\r\n")
        .await
        .ok();
    assert!(closed(&mut extra).await, "the fifth is closed at once");
    // Tunnels count as long as they are open; closing one frees its slot.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, _s) = h.connect("raw.example:443").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let h = Harness::start_with(|c| {
        c.header_timeout = Duration::from_millis(300);
        c.body_idle_timeout = Duration::from_millis(300);
    })
    .await;
    // Silent from the start.
    let mut s = h.dial().await;
    assert!(closed(&mut s).await);
    // Half a request head, then nothing.
    let mut s = h.dial().await;
    s.write_all(b"GET http://plain.example/ HTTP/1.1\r\nHost: pl")
        .await
        .unwrap();
    assert!(closed(&mut s).await);
    // Inside a tunnel: a body that stops half way is not sent on.
    let mut c = h.https("api.openai.com", 443).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    tx.send(bytes::Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(
        futures_util::stream::unfold(rx, |mut rx| async move {
            let b = rx.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                rx,
            ))
        }),
    ));
    let req = request("POST", "/sink", "api.openai.com")
        .header("content-length", "100")
        .body(body)
        .unwrap();
    c.ready().await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), c.send_request(req))
        .await
        .expect("answered in time");
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 400);
    }
    assert!(
        h.upstream.seen().is_empty(),
        "a stalled body is not forwarded"
    );
    drop(tx);
}

#[tokio::test]
async fn requests_in_flight_are_bounded() {
    let h = Harness::start_with(|c| {
        c.max_in_flight = 1;
        c.header_timeout = Duration::from_millis(500);
    })
    .await;
    // Both tunnels first: a CONNECT is a request too.
    let mut slow = h.https("api.openai.com", 443).await;
    let mut c = h.https("api.openai.com", 443).await;
    let first = tokio::spawn(async move {
        let req = request("GET", "/slow", "api.openai.com")
            .body(empty())
            .unwrap();
        send(&mut slow, req).await.0
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let req = request("GET", "/", "api.openai.com").body(empty()).unwrap();
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!(status, 503);
    assert!(
        String::from_utf8_lossy(&body).contains("too_many_requests"),
        "{body:?}"
    );
    assert_eq!(first.await.unwrap(), 200);
    // (The idle tunnel was closed meanwhile: idle time counts too.)
    let mut c = h.https("api.openai.com", 443).await;
    let req = request("GET", "/", "api.openai.com").body(empty()).unwrap();
    assert_eq!(send(&mut c, req).await.0, 200, "free again");
}

#[tokio::test]
async fn a_planted_link_never_redirects_a_host_chmod() {
    let h = Harness::start().await;
    let victim = h.dir.path().join("victim");
    std::fs::write(&victim, "host secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let id = h.identity.sandbox_id.clone();

    // Root in the sandbox plants a link at the socket's path, before an
    // attach (a restart adopting the sandbox) …
    h.proxy.detach(&id).await;
    std::os::unix::fs::symlink(&victim, &h.socket).unwrap();
    let ca = h.proxy.new_ca(&id).unwrap();
    h.proxy
        .attach(h.identity.clone(), ca, &h.paths)
        .await
        .unwrap();
    assert!(std::fs::symlink_metadata(&h.socket)
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o600);
    let (status, _, _) = h.connect("raw.example:443").await;
    assert_eq!(status, 200, "the socket works again");

    // … and keeps swapping one in while the host binds, over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, victim, socket) = (stop.clone(), victim.clone(), h.socket.clone());
        let tmp = h.dir.path().join("run").join("planted");
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&tmp);
                if std::os::unix::fs::symlink(&victim, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, &socket);
                }
                n += 1;
            }
            n
        })
    };
    for _ in 0..300 {
        h.proxy.detach(&id).await;
        let ca = h.proxy.new_ca(&id).unwrap();
        // A racing rename may land between bind and rename; either way the
        // victim is never touched.
        let _ = h.proxy.attach(h.identity.clone(), ca, &h.paths).await;
    }
    stop.store(true, Ordering::Relaxed);
    let raced = racer.join().unwrap();
    assert!(raced > 0);
    assert_eq!(
        std::fs::metadata(&victim).unwrap().mode() & 0o7777,
        0o600,
        "after {raced} swaps"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host secret");
}

//! One request, sandbox → upstream → sandbox: buffer what substitution may
//! need, substitute (HTTPS only), send on a pooled connection, and hand the
//! response back scrubbed. `Upgrade` requests (WebSocket) become spliced
//! streams once the upstream switches protocols.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{
    header::{self, HeaderName},
    HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tracing::Instrument as _;

use crate::{
    audit::Record,
    body::{ReqBody, RespBody},
    io::splice,
    pool::{Checkin, Conn, Pool, PoolKey},
    proxy::SandboxCtx,
    scrub::ScrubSet,
    substitute::{request_has_placeholder, Encoding, Substituter},
    target::Target,
    ws, EgressError,
};

/// Forwards `req` to `target` (over TLS when `tls`, and only then with
/// substitution) and returns what the sandbox gets. Writes one audit row.
pub(crate) async fn forward(
    ctx: &SandboxCtx,
    req: Request<Incoming>,
    target: &Target,
    tls: bool,
) -> Response<RespBody> {
    let record = Record::new(
        ctx.shared.audit.clone(),
        ctx.identity.clone(),
        req.method().as_str(),
        &target.host,
        req.uri().path(),
    );
    match exchange(ctx, req, target, tls, &record).await {
        Ok(resp) => resp,
        Err(err) => failure(&err, record),
    }
}

/// The sandbox's answer when the proxy itself refuses or fails: a short
/// text saying why (never a secret), with the row marked accordingly.
pub(crate) fn failure(err: &EgressError, record: Arc<Record>) -> Response<RespBody> {
    let status = err.status();
    record.set_status(status.as_u16());
    record.set_outcome(err.outcome());
    tracing::debug!(host = record.host(), error = %err, "egress request not forwarded");
    text_response(status, format!("miosa egress: {err}\n"), Some(record))
}

/// A plain-text response written by the proxy.
pub(crate) fn text_response(
    status: StatusCode,
    text: String,
    record: Option<Arc<Record>>,
) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(Bytes::from(text), record));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A request body as substitution sees it.
enum BodyIn {
    /// Read whole (within the buffering limit).
    Buffered(Bytes),
    /// Too large: what was read so far, then the rest, sent unchanged.
    Stream(Bytes, Incoming),
}

async fn exchange(
    ctx: &SandboxCtx,
    mut req: Request<Incoming>,
    target: &Target,
    tls: bool,
    record: &Arc<Record>,
) -> Result<Response<RespBody>, EgressError> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();
    let mut path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let default_port = if tls { 443 } else { 80 };
    let host_header = (parts.uri.authority().is_some()
        || !parts.headers.contains_key(header::HOST))
    .then(|| host_header(target, &parts.uri, default_port));

    let mut body = if tls {
        read_body(
            incoming,
            ctx.shared.max_body_bytes,
            ctx.shared.limits.body_idle_timeout,
        )
        .await?
    } else {
        BodyIn::Stream(Bytes::new(), incoming)
    };

    let scrub = if tls {
        substitute(
            ctx,
            target,
            &mut parts.headers,
            &mut path_and_query,
            &mut body,
            record,
        )
        .await?
    } else {
        None
    };
    // A request that carries a value goes out only once its row is durable.
    if scrub.is_some() {
        record
            .commit()
            .await
            .map_err(|_| EgressError::AuditUnavailable)?;
    }
    // After a request that carried a value, only a WebSocket can be scrubbed
    // frame by frame, and only uncompressed: no other protocol switch.
    let upgrade = upgrade && (scrub.is_none() || is_websocket(&parts.headers));
    if scrub.is_some() {
        parts.headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    }

    if let BodyIn::Buffered(b) = &body {
        let framed = parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING);
        parts.headers.remove(header::TRANSFER_ENCODING);
        if framed || !b.is_empty() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
    }
    let trailers = te_trailers(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    if trailers {
        // The proxy passes trailers on (scrubbed), so it may ask for them.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    parts.headers.remove(header::EXPECT);
    parts.headers.remove(header::PROXY_AUTHORIZATION);
    if scrub.is_some() {
        // The response must be readable to be scrubbed. Set after the
        // hop-by-hop headers are gone, so a client `Connection:
        // accept-encoding` cannot remove it.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    if let Some(h) = host_header {
        parts.headers.insert(header::HOST, h);
    }
    parts.uri = Uri::try_from(path_and_query)
        .map_err(|_| EgressError::BadRequest("the request target is not a valid path"))?;
    parts.version = Version::HTTP_11;

    let body = match body {
        BodyIn::Buffered(b) => ReqBody::full(b, record.clone()),
        BodyIn::Stream(prefix, rest) => ReqBody::stream(
            prefix,
            rest,
            record.clone(),
            ctx.shared.limits.body_idle_timeout,
        ),
    };
    let key = PoolKey {
        host: target.host.clone(),
        port: target.port,
        addr: target.addr,
        tls,
    };
    let (resp, conn) = send(&ctx.pool, &key, Request::from_parts(parts, body)).await?;
    record.set_status(resp.status().as_u16());

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return match (client_upgrade.filter(|_| upgrade), scrub) {
            (Some(client_upgrade), None) => Ok(switch_protocols(ctx, client_upgrade, resp, record)),
            (Some(client_upgrade), Some(scrub)) => {
                if resp.headers().contains_key(SEC_WEBSOCKET_EXTENSIONS) {
                    return Err(EgressError::Unscrubbable {
                        host: target.host.clone(),
                        what: "a WebSocket with extensions (compression) that was not asked for",
                    });
                }
                Ok(switch_to_scrubbed_websocket(
                    ctx,
                    client_upgrade,
                    resp,
                    scrub,
                    record,
                ))
            }
            (None, _) => Err(EgressError::Upstream {
                host: target.host.clone(),
                cause: "switched protocols without being asked to".into(),
            }),
        };
    }

    let (mut parts, incoming) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.version = Version::HTTP_11;
    if let Some(s) = &scrub {
        if let Some(coding) = compressed(&parts.headers) {
            // Asked for `identity` and compressed anyway: the body cannot be
            // scrubbed, so it is not passed on (nor is the connection reused).
            tracing::debug!(host = %target.host, %coding, "compressed response to a request that carried a secret");
            return Err(EgressError::Unscrubbable {
                host: target.host.clone(),
                what: "a compressed response to a request that carried a secret",
            });
        }
        s.headers(&mut parts.headers);
        scrub_reason(s, &mut parts.extensions);
        if !incoming.is_end_stream() {
            // Scrubbing may change the length; the body goes chunked.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
    }
    let checkin = Checkin::new(ctx.pool.clone(), conn);
    let body = RespBody::upstream(
        incoming,
        scrub.map(ScrubSet::stream),
        record.clone(),
        Some(checkin),
    );
    Ok(Response::from_parts(parts, body))
}

/// The upstream agreed to switch protocols: splice the two upgraded
/// streams (the row is written when they close) and pass the 101 on.
fn switch_protocols(
    ctx: &SandboxCtx,
    client_upgrade: OnUpgrade,
    mut resp: Response<Incoming>,
    record: &Arc<Record>,
) -> Response<RespBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (record, stop) = (record.clone(), ctx.stop.clone());
    ctx.tasks.spawn(
        async move {
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(sandbox), Ok(upstream)) => {
                    splice(TokioIo::new(sandbox), TokioIo::new(upstream), record, stop).await;
                }
                (Err(e), _) | (_, Err(e)) => {
                    record.set_outcome(miosa_core::Outcome::Error);
                    tracing::debug!(error = %e, "upgrade failed");
                }
            }
        }
        .in_current_span(),
    );
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    Response::from_parts(parts, RespBody::empty())
}

/// The upstream accepted a WebSocket for a request that carried a value:
/// both sides are spoken to as WebSockets, and every message, close reason
/// and header the upstream sends is scrubbed before the sandbox sees it.
fn switch_to_scrubbed_websocket(
    ctx: &SandboxCtx,
    client_upgrade: OnUpgrade,
    mut resp: Response<Incoming>,
    scrub: ScrubSet,
    record: &Arc<Record>,
) -> Response<RespBody> {
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let (record, stop) = (record.clone(), ctx.stop.clone());
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    scrub.headers(&mut parts.headers);
    scrub_reason(&scrub, &mut parts.extensions);
    ctx.tasks.spawn(
        async move {
            match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(sandbox), Ok(upstream)) => {
                    ws::scrubbed(
                        TokioIo::new(sandbox),
                        TokioIo::new(upstream),
                        scrub,
                        record,
                        stop,
                    )
                    .await;
                }
                (Err(e), _) | (_, Err(e)) => {
                    record.set_outcome(miosa_core::Outcome::Error);
                    tracing::debug!(error = %e, "upgrade failed");
                }
            }
        }
        .in_current_span(),
    );
    Response::from_parts(parts, RespBody::empty())
}

/// A non-canonical reason phrase is passed on as the upstream wrote it, so
/// it is scrubbed like a header.
fn scrub_reason(scrub: &ScrubSet, extensions: &mut http::Extensions) {
    let Some(reason) = extensions.get::<hyper::ext::ReasonPhrase>() else {
        return;
    };
    if let Some(clean) = scrub.bytes(reason.as_bytes()) {
        extensions.remove::<hyper::ext::ReasonPhrase>();
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(clean) {
            extensions.insert(r);
        }
    }
}

/// The response's content coding, unless it is none or `identity`.
fn compressed(headers: &HeaderMap) -> Option<String> {
    let coding = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))?;
    Some(coding.to_owned())
}

/// Replaces the placeholders the request carries with the values allowed
/// for `target` (fetching credentials only when there is a placeholder),
/// names the first secret used in the row, and returns what to scrub from
/// the response.
async fn substitute(
    ctx: &SandboxCtx,
    target: &Target,
    headers: &mut HeaderMap,
    path_and_query: &mut String,
    body: &mut BodyIn,
    record: &Record,
) -> Result<Option<ScrubSet>, EgressError> {
    let buffered = match &*body {
        BodyIn::Buffered(b) => Some(&b[..]),
        BodyIn::Stream(..) => None,
    };
    if !request_has_placeholder(headers, path_and_query, buffered) {
        return Ok(None);
    }
    let creds = ctx
        .shared
        .creds
        .credentials(&ctx.identity)
        .await
        .map_err(|cause| {
            tracing::warn!(sandbox = %ctx.identity.sandbox_id, %cause, "credential source failed");
            EgressError::Credentials
        })?;
    let mut sub = Substituter::new(&creds, &target.host, target.port);
    sub.headers(headers);
    if let Some(pq) = sub.path_and_query(path_and_query) {
        *path_and_query = pq;
    }
    if let BodyIn::Buffered(b) = body {
        let enc = Encoding::for_content_type(headers.get(header::CONTENT_TYPE));
        if let Some(new) = sub.body(b, enc) {
            *b = Bytes::from(new);
        }
    }
    let Some(&first) = sub.used().first() else {
        return Ok(None);
    };
    record.set_credential(&creds[first]);
    Ok(ScrubSet::new(creds.clone(), sub.used()))
}

/// Sends on a pooled connection; a request a reused connection never took
/// is retried once on a fresh one.
async fn send(
    pool: &Pool,
    key: &PoolKey,
    req: Request<ReqBody>,
) -> Result<(Response<Incoming>, Conn), EgressError> {
    let upstream_err = |e: hyper::Error| EgressError::Upstream {
        host: key.host.clone(),
        cause: e.to_string(),
    };
    let mut conn = pool.get(key).await?;
    match conn.sender.try_send_request(req).await {
        Ok(resp) => Ok((resp, conn)),
        Err(mut e) => match (conn.reused, e.take_message()) {
            (true, Some(req)) => {
                let mut fresh = pool.connect(key).await?;
                let resp = fresh.sender.send_request(req).await.map_err(upstream_err)?;
                Ok((resp, fresh))
            }
            _ => Err(upstream_err(e.into_error())),
        },
    }
}

/// Reads the body whole if it fits in `max` bytes; otherwise returns what
/// was read and the rest, to be streamed unchanged. A body that stalls for
/// `idle` is abandoned.
async fn read_body(mut body: Incoming, max: usize, idle: Duration) -> Result<BodyIn, EgressError> {
    if body.is_end_stream() {
        return Ok(BodyIn::Buffered(Bytes::new()));
    }
    let hint = body.size_hint();
    if hint.lower() > max as u64 {
        return Ok(BodyIn::Stream(Bytes::new(), body));
    }
    // Most bodies arrive as one frame: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut len = 0usize;
    loop {
        let Some(frame) = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| EgressError::BadRequest("the request body stalled"))?
        else {
            break;
        };
        let frame =
            frame.map_err(|_| EgressError::BadRequest("the request body could not be read"))?;
        let Ok(data) = frame.into_data() else {
            continue; // request trailers are not forwarded
        };
        len += data.len();
        if first.is_none() && buf.is_empty() {
            first = Some(data);
        } else {
            if let Some(held) = first.take() {
                buf.reserve(len.min(max.saturating_add(1)));
                buf.extend_from_slice(&held);
            }
            buf.extend_from_slice(&data);
        }
        if len > max {
            let read = first.take().unwrap_or_else(|| buf.split().freeze());
            return Ok(BodyIn::Stream(read, body));
        }
    }
    Ok(BodyIn::Buffered(first.unwrap_or_else(|| buf.freeze())))
}

/// The `Host` header for the upstream: the absolute-form URI's authority,
/// else the target.
fn host_header(target: &Target, uri: &Uri, default_port: u16) -> HeaderValue {
    if let Some(auth) = uri.authority() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            return v;
        }
    }
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let value = if target.port == default_port {
        host
    } else {
        format!("{host}:{}", target.port)
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Whether the client accepts trailers (`TE: trailers`).
fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

const SEC_WEBSOCKET_EXTENSIONS: HeaderName = HeaderName::from_static("sec-websocket-extensions");

/// Whether the protocol asked for is a WebSocket.
fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Whether the request asks to switch protocols (`Connection: upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes the headers that describe one hop, not the message; keeps
/// `Connection: upgrade` and `Upgrade` when switching protocols.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| !t.eq_ignore_ascii_case("upgrade") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| n != header::CONTENT_LENGTH && n != header::HOST)
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in [
        PROXY_CONNECTION,
        KEEP_ALIVE,
        header::TE,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-end", HeaderValue::from_static("2"));
        assert!(!is_upgrade(&h));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end"], "2");

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn host_headers() {
        let t = Target {
            host: "api.openai.com".into(),
            port: 8443,
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let origin: Uri = "/v1".parse().unwrap();
        assert_eq!(host_header(&t, &origin, 443), "api.openai.com:8443");
        let abs: Uri = "http://example.com:8080/x".parse().unwrap();
        assert_eq!(host_header(&t, &abs, 80), "example.com:8080");
        let v6 = Target {
            host: "2606:4700::1".into(),
            port: 443,
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        assert_eq!(host_header(&v6, &origin, 443), "[2606:4700::1]");
    }
}

//! Request IDs and the per-request span: every response carries
//! `x-request-id` (the caller's, if sane, else a fresh `req_…`), every log
//! line of the request carries it, and error bodies quote it.

use std::time::Instant;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request ID of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: assigns the ID, opens the span, logs the outcome.
pub async fn layer(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", miosa_core::id::new_body()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        tenant = tracing::field::Empty,
        key = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(req))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn acceptable_ids() {
        assert!(super::acceptable("abc-123_x.y:z"));
        assert!(!super::acceptable(""));
        assert!(!super::acceptable("a b"));
        assert!(!super::acceptable(&"a".repeat(129)));
    }
}

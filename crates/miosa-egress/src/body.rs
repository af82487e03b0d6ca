//! The bodies the proxy sends on: request bodies going upstream (buffered
//! after substitution, or streamed unchanged) and response bodies coming
//! back (scrubbed as they stream, counted, and handing the upstream
//! connection back to the pool when they end).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::{audit::Record, pool::Checkin, scrub::Scrubber};

/// A request body on its way upstream.
pub(crate) struct ReqBody {
    kind: ReqKind,
    record: Arc<Record>,
}

enum ReqKind {
    Full(Option<Bytes>),
    Stream {
        /// Bytes already read while deciding not to buffer.
        prefix: Option<Bytes>,
        inner: Incoming,
        /// How long the sandbox may pause between frames.
        idle: Duration,
        /// Fires when it paused too long.
        deadline: Pin<Box<tokio::time::Sleep>>,
    },
}

impl ReqBody {
    /// A body held in memory.
    pub(crate) fn full(bytes: Bytes, record: Arc<Record>) -> Self {
        let kind = ReqKind::Full((!bytes.is_empty()).then_some(bytes));
        Self { kind, record }
    }

    /// `prefix`, then the rest of `inner`, unchanged; a pause longer than
    /// `idle` between frames ends the body with an error.
    pub(crate) fn stream(
        prefix: Bytes,
        inner: Incoming,
        record: Arc<Record>,
        idle: Duration,
    ) -> Self {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        Self {
            kind: ReqKind::Stream {
                prefix,
                inner,
                idle,
                deadline: Box::pin(tokio::time::sleep(idle)),
            },
            record,
        }
    }
}

/// A streamed request body that stalled.
#[derive(Debug)]
pub(crate) struct Stalled;

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body stalled")
    }
}

impl std::error::Error for Stalled {}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            ReqKind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            ReqKind::Stream {
                prefix,
                inner,
                idle,
                deadline,
            } => match prefix.take() {
                Some(p) => Some(Ok(Frame::data(p))),
                None => match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        deadline.as_mut().reset(tokio::time::Instant::now() + *idle);
                        frame.map(|f| f.map_err(Into::into))
                    }
                    Poll::Pending => {
                        ready!(deadline.as_mut().poll(cx));
                        this.record.set_outcome(miosa_core::Outcome::Error);
                        return Poll::Ready(Some(Err(Box::new(Stalled))));
                    }
                },
            },
        };
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            this.record.add_out(data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ReqKind::Full(bytes) => bytes.is_none(),
            ReqKind::Stream { prefix, inner, .. } => prefix.is_none() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ReqKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ReqKind::Stream { prefix, inner, .. } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
        }
    }
}

/// A response body on its way to the sandbox.
pub(crate) struct RespBody {
    kind: RespKind,
    scrub: Option<Scrubber>,
    /// Trailers waiting for the scrubber's held bytes to go first.
    pending: Option<Frame<Bytes>>,
    record: Option<Arc<Record>>,
    checkin: Option<Checkin>,
}

enum RespKind {
    Full(Option<Bytes>),
    Upstream(Incoming),
    Done,
}

impl RespBody {
    /// A body the proxy wrote itself (refusals, errors).
    pub(crate) fn full(bytes: Bytes, record: Option<Arc<Record>>) -> Self {
        if let Some(r) = &record {
            r.add_in(bytes.len() as u64);
        }
        Self {
            kind: RespKind::Full((!bytes.is_empty()).then_some(bytes)),
            scrub: None,
            pending: None,
            record,
            checkin: None,
        }
    }

    /// No body.
    pub(crate) fn empty() -> Self {
        Self::full(Bytes::new(), None)
    }

    /// The upstream's body, scrubbed if `scrub`; `checkin` returns the
    /// connection to the pool once the body has been read to its end.
    pub(crate) fn upstream(
        inner: Incoming,
        scrub: Option<Scrubber>,
        record: Arc<Record>,
        checkin: Option<Checkin>,
    ) -> Self {
        let mut body = Self {
            kind: RespKind::Upstream(inner),
            scrub,
            pending: None,
            record: Some(record),
            checkin,
        };
        if body.upstream_finished() {
            body.finish();
        }
        body
    }

    fn upstream_finished(&self) -> bool {
        matches!(&self.kind, RespKind::Upstream(inner) if inner.is_end_stream())
    }

    /// The upstream body is over: the connection goes back to the pool and
    /// the row may be written.
    fn finish(&mut self) {
        self.kind = RespKind::Done;
        if let Some(c) = self.checkin.take() {
            c.done();
        }
        self.record = None;
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.pending.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        loop {
            let inner = match &mut this.kind {
                RespKind::Full(bytes) => {
                    return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
                }
                RespKind::Done => return Poll::Ready(None),
                RespKind::Upstream(inner) => inner,
            };
            let (data, trailers) = match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match &mut this.scrub {
                        Some(s) => (s.push(data), None),
                        None => (data, None),
                    },
                    Err(trailers) => {
                        let held = this
                            .scrub
                            .as_mut()
                            .map(Scrubber::finish)
                            .unwrap_or_default();
                        let trailers = match (&this.scrub, trailers.into_trailers()) {
                            (Some(s), Ok(mut t)) => {
                                s.trailers(&mut t);
                                Frame::trailers(t)
                            }
                            (_, Ok(t)) => Frame::trailers(t),
                            (_, Err(other)) => other,
                        };
                        (held, Some(trailers))
                    }
                },
                Some(Err(e)) => {
                    if let Some(r) = &this.record {
                        r.set_outcome(miosa_core::Outcome::Error);
                    }
                    this.checkin = None;
                    this.kind = RespKind::Done;
                    this.record = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let held = this
                        .scrub
                        .as_mut()
                        .map(Scrubber::finish)
                        .unwrap_or_default();
                    if let Some(r) = &this.record {
                        r.add_in(held.len() as u64);
                    }
                    this.finish();
                    return Poll::Ready((!held.is_empty()).then(|| Ok(Frame::data(held))));
                }
            };
            if let Some(r) = &this.record {
                r.add_in(data.len() as u64);
            }
            match (data.is_empty(), trailers) {
                (true, None) => continue,
                (true, Some(t)) => return Poll::Ready(Some(Ok(t))),
                (false, t) => {
                    this.pending = t;
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.pending.is_some() {
            return false;
        }
        match &self.kind {
            RespKind::Full(bytes) => bytes.is_none(),
            RespKind::Done => true,
            RespKind::Upstream(inner) => {
                inner.is_end_stream() && !self.scrub.as_ref().is_some_and(Scrubber::is_holding)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RespKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RespKind::Done => SizeHint::with_exact(0),
            RespKind::Upstream(inner) if self.scrub.is_none() => inner.size_hint(),
            RespKind::Upstream(_) => SizeHint::default(),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // Hyper stops polling once `is_end_stream` says so; the connection
        // is still good then.
        if self.upstream_finished() {
            self.finish();
        }
    }
}

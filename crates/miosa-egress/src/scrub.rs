//! Response scrubbing: a real value the upstream echoes back (in a header or
//! the body) is replaced with its placeholder before the sandbox sees it.
//! Bodies are scrubbed as they stream, holding back just enough bytes
//! (the longest value less one) to catch a value split across chunks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use memchr::memmem;

use zeroize::Zeroizing;

use crate::{credential::Credential, substitute::Encoding};

/// The values to take back out of one response.
#[derive(Clone)]
pub(crate) struct ScrubSet {
    creds: Arc<Vec<Credential>>,
    /// Each value sent, as is and in the other encodings substitution
    /// writes (percent, JSON) where they differ, with its index in `creds`.
    patterns: Vec<(Zeroizing<Vec<u8>>, usize)>,
    longest: usize,
}

impl ScrubSet {
    /// The values of `creds[used]`; `None` when there is nothing to scrub.
    pub(crate) fn new(creds: Arc<Vec<Credential>>, used: &[usize]) -> Option<Self> {
        let mut patterns: Vec<(Zeroizing<Vec<u8>>, usize)> = Vec::new();
        for &i in used {
            let Some(value) = creds.get(i).map(|c| c.value.expose()) else {
                continue;
            };
            for enc in [Encoding::Raw, Encoding::Percent, Encoding::Json] {
                let mut form = Zeroizing::new(Vec::new());
                enc.write(value, &mut form);
                if !form.is_empty() && !patterns.iter().any(|(p, _)| *p == form) {
                    patterns.push((form, i));
                }
            }
        }
        let longest = patterns.iter().map(|(p, _)| p.len()).max()?;
        Some(Self {
            creds,
            patterns,
            longest,
        })
    }

    /// The leftmost (then longest) value in `hay`: (start, length, index).
    fn find(&self, hay: &[u8]) -> Option<(usize, usize, usize)> {
        self.patterns
            .iter()
            .filter_map(|(p, i)| memmem::find(hay, p).map(|at| (at, p.len(), *i)))
            .min_by_key(|&(at, len, _)| (at, usize::MAX - len))
    }

    fn placeholder(&self, i: usize) -> &[u8] {
        self.creds[i].placeholder.as_bytes()
    }

    /// `hay` with every value replaced, appended to `out`, stopping before
    /// the first match that starts at or after `stop`; returns how far
    /// `hay` was consumed.
    fn replace_into(&self, hay: &[u8], stop: usize, out: &mut BytesMut) -> usize {
        let mut at = 0;
        while let Some((start, len, i)) = self.find(&hay[at..]) {
            let start = at + start;
            if start >= stop {
                break;
            }
            out.extend_from_slice(&hay[at..start]);
            out.extend_from_slice(self.placeholder(i));
            at = start + len;
        }
        at
    }

    /// Scrubs every header value in place.
    pub(crate) fn headers(&self, headers: &mut HeaderMap) {
        for value in headers.values_mut() {
            if self.find(value.as_bytes()).is_none() {
                continue;
            }
            let mut out = BytesMut::new();
            let bytes = value.as_bytes();
            let done = self.replace_into(bytes, bytes.len(), &mut out);
            out.extend_from_slice(&bytes[done..]);
            if let Ok(new) = HeaderValue::from_maybe_shared(out.freeze()) {
                *value = new;
            }
        }
    }

    /// `input` with every value replaced, or `None` if it holds none (a
    /// whole WebSocket message, a reason phrase).
    pub(crate) fn bytes(&self, input: &[u8]) -> Option<Vec<u8>> {
        self.find(input)?;
        let mut out = BytesMut::with_capacity(input.len());
        let done = self.replace_into(input, input.len(), &mut out);
        out.extend_from_slice(&input[done..]);
        Some(out.to_vec())
    }

    /// A streaming scrubber for one body.
    pub(crate) fn stream(self) -> Scrubber {
        Scrubber {
            set: self,
            carry: BytesMut::new(),
        }
    }
}

/// Scrubs a body chunk by chunk.
pub(crate) struct Scrubber {
    set: ScrubSet,
    /// Bytes held back: they may be the start of a value.
    carry: BytesMut,
}

impl Scrubber {
    /// The scrubbed bytes that are final after `chunk`; the rest is held.
    pub(crate) fn push(&mut self, chunk: Bytes) -> Bytes {
        let keep = self.set.longest - 1;
        if self.carry.is_empty() {
            // The common case: nothing held, nothing found — pass the chunk
            // through without copying all but its tail.
            let cut = chunk.len().saturating_sub(keep);
            if self.set.find(&chunk).is_none_or(|(at, _, _)| at >= cut) {
                self.carry.extend_from_slice(&chunk[cut..]);
                return chunk.slice(..cut);
            }
        }
        self.carry.extend_from_slice(&chunk);
        let work = std::mem::take(&mut self.carry);
        let cut = work.len().saturating_sub(keep);
        let mut out = BytesMut::with_capacity(work.len());
        let done = self.set.replace_into(&work, cut, &mut out);
        let emit_to = done.max(cut);
        out.extend_from_slice(&work[done..emit_to]);
        self.carry.extend_from_slice(&work[emit_to..]);
        out.freeze()
    }

    /// Whatever is still held, scrubbed: the end of the body.
    pub(crate) fn finish(&mut self) -> Bytes {
        let work = std::mem::take(&mut self.carry);
        let mut out = BytesMut::with_capacity(work.len());
        let done = self.set.replace_into(&work, work.len(), &mut out);
        out.extend_from_slice(&work[done..]);
        out.freeze()
    }

    /// Scrubs the body's trailers.
    pub(crate) fn trailers(&self, trailers: &mut HeaderMap) {
        self.set.headers(trailers);
    }

    /// Whether bytes are held back.
    pub(crate) fn is_holding(&self) -> bool {
        !self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substitute::tests::cred;
    use proptest::prelude::*;

    fn creds(pairs: &[(&str, &str)]) -> Arc<Vec<Credential>> {
        Arc::new(pairs.iter().map(|(ph, v)| cred(ph, v, &[])).collect())
    }

    fn naive(input: &[u8], pairs: &[(&str, &str)]) -> Vec<u8> {
        // Leftmost, then longest, non-overlapping.
        let mut out = Vec::new();
        let mut i = 0;
        'outer: while i < input.len() {
            let mut best: Option<(&str, &str)> = None;
            for &(ph, v) in pairs {
                if input[i..].starts_with(v.as_bytes())
                    && best.is_none_or(|(_, b)| v.len() > b.len())
                {
                    best = Some((ph, v));
                }
            }
            if let Some((ph, v)) = best {
                out.extend_from_slice(ph.as_bytes());
                i += v.len();
                continue 'outer;
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    fn scrub_chunks(set: ScrubSet, chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = set.stream();
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&s.push(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&s.finish());
        out
    }

    #[test]
    fn across_chunk_boundaries() {
        let pairs = [("PH1", "sk-secret-value")];
        let set = ScrubSet::new(creds(&pairs), &[0]).unwrap();
        let out = scrub_chunks(set.clone(), &[b"{\"echo\":\"sk-se", b"cret-", b"value\"}"]);
        assert_eq!(out, b"{\"echo\":\"PH1\"}");
        // One byte at a time.
        let body = b"a sk-secret-value b sk-secret-valu c sk-secret-value";
        let singles: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(scrub_chunks(set, &singles), naive(body, &pairs));
    }

    #[test]
    fn headers_are_scrubbed() {
        let set = ScrubSet::new(creds(&[("PH1", "sk-secret-value")]), &[0]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("Bearer sk-secret-value"));
        h.insert("x-other", HeaderValue::from_static("fine"));
        set.headers(&mut h);
        assert_eq!(h["x-echo"], "Bearer PH1");
        assert_eq!(h["x-other"], "fine");
    }

    #[test]
    fn encoded_echoes_are_scrubbed_too() {
        let set = ScrubSet::new(creds(&[("PH1", "a+b/c=\"d")]), &[0]).unwrap();
        let body: &[&[u8]] = &[b"raw a+b/c=\"d pct a%2Bb%2Fc", b"%3D%22d json a+b/c=\\\"d"];
        assert_eq!(scrub_chunks(set, body), b"raw PH1 pct PH1 json PH1");
    }

    #[test]
    fn whole_messages() {
        let set = ScrubSet::new(creds(&[("PH1", "sk-secret-value")]), &[0]).unwrap();
        assert_eq!(set.bytes(b"x sk-secret-value y").unwrap(), b"x PH1 y");
        assert!(set.bytes(b"nothing here").is_none());
    }

    #[test]
    fn unused_values_are_left_alone() {
        let c = creds(&[("PH1", "sk-secret-value"), ("PH2", "other-secret")]);
        assert!(ScrubSet::new(c.clone(), &[]).is_none());
        let set = ScrubSet::new(c, &[0]).unwrap();
        assert_eq!(scrub_chunks(set, &[b"other-secret"]), b"other-secret");
    }

    proptest! {
        /// However a body is split, streaming scrubbing equals scrubbing
        /// the whole body at once.
        #[test]
        fn streaming_equals_whole(
            pieces in proptest::collection::vec(prop_oneof![
                "[a-d]{0,6}".prop_map(|s| s.into_bytes()),
                Just(b"abcab".to_vec()),
                Just(b"bca".to_vec()),
            ], 0..12),
            splits in proptest::collection::vec(1usize..9, 0..40),
        ) {
            let pairs = [("<1>", "abcab"), ("<2>", "bca"), ("<3>", "dd")];
            let body: Vec<u8> = pieces.concat();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut rest = &body[..];
            for s in splits {
                if rest.is_empty() { break; }
                let n = s.min(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            if !rest.is_empty() { chunks.push(rest); }
            let set = ScrubSet::new(creds(&pairs), &[0, 1, 2]).unwrap();
            prop_assert_eq!(scrub_chunks(set, &chunks), naive(&body, &pairs));
        }
    }
}

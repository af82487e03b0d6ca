//! Placeholder → value substitution in a request: header values (also
//! inside `Authorization: Basic`), the path and query string, and buffered
//! bodies, each value written in the encoding of where it lands.
//!
//! One pass, left to right: a substituted value is never scanned again, so a
//! value that happens to contain a placeholder cannot trigger another one.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use http::{header, HeaderMap, HeaderValue};
use memchr::memmem;
use miosa_core::secret::PLACEHOLDER_PREFIX;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use crate::credential::Credential;

/// What stays unescaped in a URL component or form value (RFC 3986
/// unreserved characters).
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How a value is written where its placeholder stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As is (headers, plain bodies).
    Raw,
    /// Percent-encoded (path, query string, form bodies).
    Percent,
    /// Escaped for the inside of a JSON string.
    Json,
}

impl Encoding {
    /// The encoding for a body of this `Content-Type`.
    pub(crate) fn for_content_type(ct: Option<&HeaderValue>) -> Self {
        let Some(ct) = ct.and_then(|v| v.to_str().ok()) else {
            return Self::Raw;
        };
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Self::Percent
        } else if mime.eq_ignore_ascii_case("application/json")
            || mime.to_ascii_lowercase().ends_with("+json")
        {
            Self::Json
        } else {
            Self::Raw
        }
    }

    /// Appends `value`, encoded, to `out`.
    pub(crate) fn write(self, value: &str, out: &mut Vec<u8>) {
        match self {
            Self::Raw => out.extend_from_slice(value.as_bytes()),
            Self::Percent => {
                for part in percent_encoding::utf8_percent_encode(value, URL_VALUE) {
                    out.extend_from_slice(part.as_bytes());
                }
            }
            Self::Json => {
                // A string always serialises; strip its quotes.
                let quoted = serde_json::to_string(value).unwrap_or_default();
                let inner = quoted
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .unwrap_or("");
                out.extend_from_slice(inner.as_bytes());
            }
        }
    }
}

/// Whether `bytes` holds anything that looks like a placeholder.
pub(crate) fn has_placeholder(bytes: &[u8]) -> bool {
    memmem::find(bytes, PLACEHOLDER_PREFIX.as_bytes()).is_some()
}

/// Whether a request carries a placeholder anywhere substitution looks.
pub(crate) fn request_has_placeholder(
    headers: &HeaderMap,
    path_and_query: &str,
    body: Option<&[u8]>,
) -> bool {
    has_placeholder(path_and_query.as_bytes())
        || body.is_some_and(has_placeholder)
        || headers.iter().any(|(name, value)| {
            has_placeholder(value.as_bytes())
                || (name == header::AUTHORIZATION
                    && basic_credentials(value).is_some_and(|d| has_placeholder(&d)))
        })
}

/// The decoded `user:pass` of a `Basic` authorization value.
fn basic_credentials(value: &HeaderValue) -> Option<Vec<u8>> {
    let v = value.as_bytes();
    let scheme = v.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    BASE64.decode(v[6..].trim_ascii()).ok()
}

/// Where in a request a placeholder stands; each secret says where it may
/// be substituted (`Secret::substitute_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location {
    Headers,
    /// The request target: path and query string.
    Query,
    Body,
}

impl Location {
    fn allowed(self, c: &Credential) -> bool {
        let s = c.secret.substitute_in;
        match self {
            Self::Headers => s.headers,
            Self::Query => s.query,
            Self::Body => s.body,
        }
    }
}

/// Substitutes the credentials allowed for one host and remembers which
/// were used, in order of first use.
pub(crate) struct Substituter<'a> {
    creds: &'a [Credential],
    /// Indices into `creds` that may be sent to the host.
    eligible: Vec<usize>,
    used: Vec<usize>,
}

impl<'a> Substituter<'a> {
    /// The credentials of `creds` that may go to `host` on `port`: allowed
    /// there, with a proper placeholder and a non-empty value.
    pub(crate) fn new(creds: &'a [Credential], host: &str, port: u16) -> Self {
        let eligible = creds
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.placeholder.starts_with(PLACEHOLDER_PREFIX)
                    && !c.value.expose().is_empty()
                    && c.secret.allows_host(host, port)
            })
            .map(|(i, _)| i)
            .collect();
        Self {
            creds,
            eligible,
            used: Vec::new(),
        }
    }

    /// Indices into the credentials, in order of first substitution.
    pub(crate) fn used(&self) -> &[usize] {
        &self.used
    }

    /// `input` (found at `loc`) with every placeholder eligible there
    /// replaced, or `None` when nothing was. `hits` collects the
    /// credentials used.
    fn replace(
        &self,
        input: &[u8],
        loc: Location,
        enc: Encoding,
        hits: &mut Vec<usize>,
    ) -> Option<Vec<u8>> {
        let here: Vec<usize> = self
            .eligible
            .iter()
            .copied()
            .filter(|&i| loc.allowed(&self.creds[i]))
            .collect();
        if here.is_empty() {
            return None;
        }
        let finder = memmem::Finder::new(PLACEHOLDER_PREFIX.as_bytes());
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut at = 0;
        while let Some(found) = finder.find(&input[at..]) {
            let start = at + found;
            let hit = here
                .iter()
                .copied()
                .filter(|&i| input[start..].starts_with(self.creds[i].placeholder.as_bytes()))
                .max_by_key(|&i| self.creds[i].placeholder.len());
            let Some(i) = hit else {
                at = start + 1;
                continue;
            };
            let out = out.get_or_insert_with(|| Vec::with_capacity(input.len() + 64));
            out.extend_from_slice(&input[copied..start]);
            enc.write(self.creds[i].value.expose(), out);
            if !hits.contains(&i) {
                hits.push(i);
            }
            at = start + self.creds[i].placeholder.len();
            copied = at;
        }
        let mut out = out?;
        out.extend_from_slice(&input[copied..]);
        Some(out)
    }

    fn commit(&mut self, hits: &[usize]) {
        for &i in hits {
            if !self.used.contains(&i) {
                self.used.push(i);
            }
        }
    }

    /// Substitutes a body, recording what was used.
    pub(crate) fn body(&mut self, input: &[u8], enc: Encoding) -> Option<Vec<u8>> {
        self.bytes(input, Location::Body, enc)
    }

    fn bytes(&mut self, input: &[u8], loc: Location, enc: Encoding) -> Option<Vec<u8>> {
        let mut hits = Vec::new();
        let out = self.replace(input, loc, enc, &mut hits)?;
        self.commit(&hits);
        Some(out)
    }

    /// Substitutes every header value in place. A result that would not be
    /// a valid header value is left as it was (the placeholder goes out).
    pub(crate) fn headers(&mut self, headers: &mut HeaderMap) {
        let mut hits = Vec::new();
        for (name, value) in headers.iter_mut() {
            hits.clear();
            let replaced = if name == header::AUTHORIZATION {
                self.basic(value, &mut hits)
            } else {
                None
            };
            let replaced = replaced.or_else(|| {
                let raw = self.replace(
                    value.as_bytes(),
                    Location::Headers,
                    Encoding::Raw,
                    &mut hits,
                )?;
                HeaderValue::from_bytes(&raw).ok()
            });
            if let Some(mut new) = replaced {
                new.set_sensitive(true);
                *value = new;
                self.commit(&hits);
            }
        }
    }

    fn basic(&self, value: &HeaderValue, hits: &mut Vec<usize>) -> Option<HeaderValue> {
        let decoded = basic_credentials(value)?;
        let replaced = self.replace(&decoded, Location::Headers, Encoding::Raw, hits)?;
        let mut out = b"Basic ".to_vec();
        out.extend_from_slice(BASE64.encode(replaced).as_bytes());
        HeaderValue::from_bytes(&out).ok()
    }

    /// Substitutes the path and query string, percent-encoding values.
    pub(crate) fn path_and_query(&mut self, pq: &str) -> Option<String> {
        let out = self.bytes(pq.as_bytes(), Location::Query, Encoding::Percent)?;
        // Percent-encoding leaves only ASCII behind.
        String::from_utf8(out).ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::credential::SecretValue;
    use miosa_core::{Secret, SecretId, SecretScope, SubstituteIn, TenantId};
    use proptest::prelude::*;
    use time::OffsetDateTime;

    const PH_A: &str = "miosa_ph_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const PH_B: &str = "miosa_ph_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// A credential for unit tests.
    pub(crate) fn cred(placeholder: &str, value: &str, hosts: &[&str]) -> Credential {
        Credential {
            secret: Secret {
                id: SecretId::generate(),
                tenant_id: TenantId::generate(),
                name: "k".into(),
                scope: SecretScope::Tenant,
                scope_key: None,
                workspace_id: None,
                expose_as_env: "K".into(),
                allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
                // Everywhere, so the encodings below can be exercised.
                substitute_in: SubstituteIn::ALL,
                version: 1,
                enabled: true,
                created_at: OffsetDateTime::UNIX_EPOCH,
                updated_at: OffsetDateTime::UNIX_EPOCH,
            },
            placeholder: placeholder.into(),
            value: SecretValue::new(value.into()),
        }
    }

    #[test]
    fn encodings() {
        let creds = [cred(PH_A, "s k&\"=/é", &[])];
        let mut s = Substituter::new(&creds, "h", 443);
        let raw = s
            .body(format!("x{PH_A}y").as_bytes(), Encoding::Raw)
            .unwrap();
        assert_eq!(raw, "xs k&\"=/éy".as_bytes());
        let pct = s
            .body(format!("a={PH_A}").as_bytes(), Encoding::Percent)
            .unwrap();
        assert_eq!(pct, b"a=s%20k%26%22%3D%2F%C3%A9");
        let json = s
            .body(format!("{{\"k\":\"{PH_A}\"}}").as_bytes(), Encoding::Json)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["k"], "s k&\"=/é");
        assert_eq!(s.used(), &[0]);
    }

    #[test]
    fn hosts_and_first_use_order() {
        let creds = [
            cred(PH_A, "value-a-123", &["*.github.com"]),
            cred(PH_B, "value-b-123", &[]),
        ];
        let input = format!("{PH_B} {PH_A}");
        let mut s = Substituter::new(&creds, "api.github.com", 443);
        assert_eq!(
            s.body(input.as_bytes(), Encoding::Raw).unwrap(),
            b"value-b-123 value-a-123"
        );
        assert_eq!(s.used(), &[1, 0]);
        let mut s = Substituter::new(&creds, "api.openai.com", 443);
        let out = s.body(input.as_bytes(), Encoding::Raw).unwrap();
        assert_eq!(out, format!("value-b-123 {PH_A}").as_bytes());
        assert_eq!(s.used(), &[1]);
        let mut s = Substituter::new(&creds[..1], "api.openai.com", 443);
        assert!(s.body(input.as_bytes(), Encoding::Raw).is_none());
    }

    #[test]
    fn headers_including_basic() {
        let creds = [cred(PH_A, "sk-real-value", &[])];
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static(PH_A));
        let basic = format!("Basic {}", BASE64.encode(format!("user:{PH_A}")));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&basic).unwrap(),
        );
        h.insert("x-other", HeaderValue::from_static("plain"));
        assert!(request_has_placeholder(&h, "/", None));
        let mut s = Substituter::new(&creds, "h", 443);
        s.headers(&mut h);
        assert_eq!(h["x-api-key"], "sk-real-value");
        assert!(h["x-api-key"].is_sensitive());
        let auth = h[header::AUTHORIZATION].to_str().unwrap();
        assert_eq!(
            BASE64.decode(auth.strip_prefix("Basic ").unwrap()).unwrap(),
            b"user:sk-real-value"
        );
        assert_eq!(h["x-other"], "plain");
        assert_eq!(s.used(), &[0]);
    }

    #[test]
    fn each_secret_is_substituted_only_where_it_opted_in() {
        let mut headers_only = cred(PH_A, "value-a-123", &[]);
        headers_only.secret.substitute_in = SubstituteIn::HEADERS;
        let everywhere = cred(PH_B, "value-b-123", &[]);
        let creds = [headers_only, everywhere];
        let mut s = Substituter::new(&creds, "h", 443);
        let input = format!("{PH_A} {PH_B}");
        assert_eq!(
            s.body(input.as_bytes(), Encoding::Raw).unwrap(),
            format!("{PH_A} value-b-123").as_bytes()
        );
        assert_eq!(
            s.path_and_query(&format!("/x?a={PH_A}")),
            None,
            "the query string is not a header"
        );
        let mut h = HeaderMap::new();
        h.insert("x-key", HeaderValue::from_str(&input).unwrap());
        s.headers(&mut h);
        assert_eq!(h["x-key"], "value-a-123 value-b-123");
    }

    #[test]
    fn ports_decide_too() {
        let creds = [cred(PH_A, "value-a-123", &["api.example.com:8443"])];
        let mut s = Substituter::new(&creds, "api.example.com", 443);
        assert!(s.body(PH_A.as_bytes(), Encoding::Raw).is_none());
        let mut s = Substituter::new(&creds, "api.example.com", 8443);
        assert!(s.body(PH_A.as_bytes(), Encoding::Raw).is_some());
    }

    #[test]
    fn nothing_to_do_means_no_copy() {
        let creds = [cred(PH_A, "sk-real-value", &[])];
        let mut s = Substituter::new(&creds, "h", 443);
        assert!(s
            .body(b"miosa_ph_unknown and more", Encoding::Raw)
            .is_none());
        assert!(s.path_and_query("/v1/models?x=1").is_none());
        assert!(s.used().is_empty());
    }

    #[test]
    fn content_types() {
        let ct = |s: &'static str| Encoding::for_content_type(Some(&HeaderValue::from_static(s)));
        assert_eq!(ct("application/json; charset=utf-8"), Encoding::Json);
        assert_eq!(ct("application/vnd.api+json"), Encoding::Json);
        assert_eq!(ct("application/x-www-form-urlencoded"), Encoding::Percent);
        assert_eq!(ct("text/plain"), Encoding::Raw);
        assert_eq!(Encoding::for_content_type(None), Encoding::Raw);
    }

    proptest! {
        /// Text around placeholders survives byte for byte; each placeholder
        /// becomes its value; no eligible placeholder is left behind.
        #[test]
        fn raw_substitution_is_exact(
            parts in proptest::collection::vec(("[a-z_ ]{0,12}", 0usize..3), 0..8),
            value_a in "[ -~]{8,40}",
            value_b in "[ -~]{8,40}",
        ) {
            let creds = [cred(PH_A, &value_a, &[]), cred(PH_B, &value_b, &[])];
            let mut input = String::new();
            let mut want = String::new();
            for (text, which) in &parts {
                input.push_str(text);
                want.push_str(text);
                match which {
                    1 => { input.push_str(PH_A); want.push_str(&value_a); }
                    2 => { input.push_str(PH_B); want.push_str(&value_b); }
                    _ => {}
                }
            }
            let mut s = Substituter::new(&creds, "h", 443);
            let out = s.body(input.as_bytes(), Encoding::Raw).unwrap_or_else(|| input.clone().into_bytes());
            prop_assert_eq!(String::from_utf8(out).unwrap(), want);
        }

        /// Percent and JSON encodings decode back to the value.
        #[test]
        fn encodings_round_trip(value in "\\PC{1,40}") {
            let creds = [cred(PH_A, &value, &[])];
            let mut s = Substituter::new(&creds, "h", 443);
            let pct = s.body(PH_A.as_bytes(), Encoding::Percent).unwrap();
            let decoded = percent_encoding::percent_decode(&pct).decode_utf8().unwrap();
            prop_assert_eq!(decoded.as_ref(), value.as_str());
            prop_assert!(pct.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b)));
            let json = s.body(format!("\"{PH_A}\"").as_bytes(), Encoding::Json).unwrap();
            let back: String = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(back, value);
        }

        /// Input without the placeholder prefix is never touched.
        #[test]
        fn no_prefix_no_change(input in "[ -~]{0,200}") {
            prop_assume!(!input.contains(PLACEHOLDER_PREFIX));
            let creds = [cred(PH_A, "sk-real-value", &[])];
            let mut s = Substituter::new(&creds, "h", 443);
            prop_assert!(s.body(input.as_bytes(), Encoding::Raw).is_none());
        }
    }
}

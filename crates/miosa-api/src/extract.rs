//! Input extractors that speak the error contract: malformed JSON is a 400,
//! a wrong or unknown field is a 422 that names the field.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body, parsed whatever the `Content-Type` says (so a plain
/// `curl -d` works), with field-level error messages.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON into `T`, classifying failures.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "the request body must be a JSON object".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = redact_input(&strip_position(&inner.to_string()));
                let field = if path == "." || path.is_empty() {
                    backticked(&message).unwrap_or_else(|| "body".to_owned())
                } else {
                    path
                };
                ApiError::invalid(field, message)
            }
            _ => ApiError::MalformedJson(format!(
                "the request body is not valid JSON: {}",
                strip_position(&inner.to_string())
            )),
        }
    })
}

/// serde_json appends " at line 1 column 12"; people do not need it.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Drops the offending input from serde's "invalid type/value" messages
/// (`invalid type: string "sk-…", expected a sequence` → `invalid type:
/// string, expected a sequence`): what was sent may be a secret pasted into
/// the wrong field, and errors never echo values.
fn redact_input(msg: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = msg.strip_prefix(prefix) else {
            continue;
        };
        let Some(end) = rest.rfind(", expected") else {
            continue;
        };
        let what = &rest[..end];
        let kind = match [what.find(" `"), what.find(" \"")]
            .into_iter()
            .flatten()
            .min()
        {
            Some(i) => &what[..i],
            None => what,
        };
        return format!("{prefix}{kind}{}", &rest[end..]);
    }
    msg.to_owned()
}

/// The first `name` in a message like "missing field `name`".
fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

/// Query-string parameters with strict, field-naming accessors.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Self(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

impl QueryParams {
    /// Rejects parameters the endpoint does not know (typos would otherwise
    /// silently widen a filter).
    pub fn allow_only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::invalid(
                k.clone(),
                format!(
                    "is not a parameter of this endpoint (known: {})",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The single value of `name`; a repeated parameter is an error.
    pub fn get(&self, name: &str) -> Result<Option<String>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.clone());
        if values.next().is_some() {
            return Err(ApiError::invalid(name, "must be given at most once"));
        }
        Ok(first)
    }

    pub fn get_i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)?
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid(name, "must be an integer"))
            })
            .transpose()
    }

    /// Every `(key, value)` pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// `limit` and `cursor` as a validated page request.
    pub fn page(&self) -> Result<miosa_core::PageRequest, ApiError> {
        Ok(miosa_core::PageRequest::parse(
            self.get_i64("limit")?,
            self.get("cursor")?,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        name: String,
        count: Option<u32>,
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn errors_do_not_echo_what_was_sent() {
        for body in [
            &br#"{"name": 12345678901}"#[..],
            br#"{"name": "x", "count": "sk-secret-value"}"#,
            br#"{"name": "x", "count": -5}"#,
            br#"{"name": "x", "count": 1.5}"#,
        ] {
            let e = parse_json::<Input>(body).unwrap_err();
            let text = e.to_string();
            for leaked in ["12345678901", "sk-secret-value", "-5", "1.5"] {
                assert!(!text.contains(leaked), "{text}");
            }
            assert!(text.contains("expected"), "{text}");
        }
        assert_eq!(
            redact_input("invalid type: string \"a\\\", b\", expected u32"),
            "invalid type: string, expected u32"
        );
        assert_eq!(redact_input("missing field `name`"), "missing field `name`");
    }

    #[test]
    fn classifies_json_errors() {
        assert!(matches!(
            parse_json::<Input>(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Input>(b""),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Input>(b"nope"),
            Err(ApiError::MalformedJson(_))
        ));
        assert_eq!(field_of(parse_json::<Input>(b"{}").unwrap_err()), "name");
        assert_eq!(
            field_of(parse_json::<Input>(br#"{"name":1}"#).unwrap_err()),
            "name"
        );
        assert_eq!(
            field_of(parse_json::<Input>(br#"{"name":"a","count":-1}"#).unwrap_err()),
            "count"
        );
        assert_eq!(
            field_of(parse_json::<Input>(br#"{"name":"a","nmae":1}"#).unwrap_err()),
            "nmae"
        );
        assert_eq!(field_of(parse_json::<Input>(b"[]").unwrap_err()), "body");
        assert!(parse_json::<Input>(br#"{"name":"a"}"#).is_ok());
    }
}

//! The rules secret input must follow: names, variables, values and where
//! the value may be substituted.

use crate::FieldError;

use super::{SubstituteIn, PLACEHOLDER_PREFIX};

pub const MAX_SECRET_NAME_CHARS: usize = 128;
pub const MIN_SECRET_VALUE_BYTES: usize = 8;
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;

/// Variables Miosa itself sets in every sandbox; a secret cannot take them.
pub const RESERVED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "HOSTNAME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CURL_CA_BUNDLE",
    "NODE_OPTIONS",
];

/// A secret name: 1–128 of `A-Z a-z 0-9 _ . -`.
pub fn secret_name(field: &str, value: &str) -> Result<String, FieldError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_SECRET_NAME_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_SECRET_NAME_CHARS} of A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(value.to_owned())
}

/// An environment variable name a secret may be exposed as.
pub fn expose_as_env(field: &str, value: &str) -> Result<String, FieldError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.as_bytes()[0].is_ascii_digit()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        return Err(FieldError::new(
            field,
            "must be 1 to 128 letters, digits and `_`, not starting with a digit",
        ));
    }
    if RESERVED_ENV.contains(&value.to_ascii_uppercase().as_str()) || value.starts_with("MIOSA_") {
        return Err(FieldError::new(
            field,
            "is set by Miosa in every sandbox and cannot hold a secret",
        ));
    }
    Ok(value.to_owned())
}

/// A secret value: 8 bytes to 64 KiB, no NUL, no line breaks (it must fit in
/// a header), and not a placeholder.
pub fn secret_value(field: &str, value: &str) -> Result<(), FieldError> {
    if value.len() < MIN_SECRET_VALUE_BYTES || value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "must be {MIN_SECRET_VALUE_BYTES} bytes to {} KiB (shorter values cannot be told apart from ordinary text)",
                MAX_SECRET_VALUE_BYTES / 1024
            ),
        ));
    }
    if value.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(FieldError::new(
            field,
            "must not contain NUL or line breaks",
        ));
    }
    if value.contains(PLACEHOLDER_PREFIX) {
        return Err(FieldError::new(field, "must not contain a placeholder"));
    }
    Ok(())
}

/// `substitute_in`: a non-empty list of `headers`, `query` and `body`.
pub fn substitute_in(field: &str, values: &[String]) -> Result<SubstituteIn, FieldError> {
    if values.is_empty() {
        return Err(FieldError::new(
            field,
            "must name at least one of `headers`, `query`, `body`",
        ));
    }
    let mut out = SubstituteIn::NONE;
    for (i, v) in values.iter().enumerate() {
        match v.as_str() {
            "headers" => out.headers = true,
            "query" => out.query = true,
            "body" => out.body = true,
            _ => {
                return Err(FieldError::new(
                    format!("{field}[{i}]"),
                    "must be `headers`, `query` or `body`",
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_rules() {
        assert!(secret_name("name", "openai-key_1.v2").is_ok());
        assert!(secret_name("name", "a b").is_err());
        assert!(expose_as_env("expose_as_env", "OPENAI_API_KEY").is_ok());
        for bad in [
            "1A",
            "A-B",
            "",
            "HTTPS_PROXY",
            "https_proxy",
            "PATH",
            "MIOSA_X",
        ] {
            assert!(expose_as_env("expose_as_env", bad).is_err(), "{bad}");
        }
        assert!(secret_value("value", "sk-live-0123456789").is_ok());
        for bad in [
            "short",
            "has\nnewline-1234",
            "x\0yyyyyyyyy",
            "miosa_ph_0123456789",
        ] {
            assert!(secret_value("value", bad).is_err(), "{bad:?}");
        }
        assert!(secret_value("value", &"v".repeat(64 * 1024 + 1)).is_err());
    }

    #[test]
    fn substitution_locations() {
        let s = |v: &[&str]| {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            substitute_in("substitute_in", &v)
        };
        assert_eq!(s(&["headers"]).unwrap(), SubstituteIn::HEADERS);
        let all = s(&["body", "query", "headers", "body"]).unwrap();
        assert_eq!(all.names(), ["headers", "query", "body"]);
        assert_eq!(s(&[]).unwrap_err().field, "substitute_in");
        assert_eq!(
            s(&["headers", "path"]).unwrap_err().field,
            "substitute_in[1]"
        );
    }
}

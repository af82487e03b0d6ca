//! Where a secret's value may go: host patterns with an optional port.
//!
//! `api.example.com` allows that host on port 443 only; `api.example.com:8443`
//! allows port 8443 only; `*.github.com` allows any name below `github.com`
//! (not `github.com` itself) on 443. Patterns are stored normalised:
//! lower-case, and without `:443`.

use crate::FieldError;

/// The port a pattern without one allows (substitution happens only inside
/// intercepted HTTPS).
pub const DEFAULT_PORT: u16 = 443;

/// Most patterns one secret may list.
pub const MAX_ALLOWED_HOSTS: usize = 50;

/// One parsed pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPattern<'a> {
    /// `api.example.com` or `*.github.com`, lower-case.
    pub host: &'a str,
    pub port: u16,
}

impl<'a> HostPattern<'a> {
    /// Splits a stored (normalised) pattern; a malformed port never
    /// matches anything.
    pub fn parse(stored: &'a str) -> Self {
        match stored.rsplit_once(':') {
            Some((host, port)) => Self {
                host,
                port: port.parse().unwrap_or(0),
            },
            None => Self {
                host: stored,
                port: DEFAULT_PORT,
            },
        }
    }

    /// Whether `host` (any case, trailing dot allowed) on `port` matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port != 0 && self.port == port && host_matches(self.host, host)
    }
}

/// Whether `host` matches the host part `pattern`: exactly, or for
/// `*.example.com` any name below `example.com` (not `example.com`
/// itself). Case-insensitive.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Validates and normalises host patterns: `api.openai.com`,
/// `*.github.com` (a wildcard only as the whole leftmost label), either
/// with `:port` (1–65535); at most 50, duplicates dropped.
pub fn allowed_hosts(field: &str, hosts: &[String]) -> Result<Vec<String>, FieldError> {
    if hosts.len() > MAX_ALLOWED_HOSTS {
        return Err(FieldError::new(
            field,
            format!("must have at most {MAX_ALLOWED_HOSTS} entries"),
        ));
    }
    let mut out = Vec::with_capacity(hosts.len());
    for (i, raw) in hosts.iter().enumerate() {
        let bad = || {
            FieldError::new(
                format!("{field}[{i}]"),
                "must be a hostname like `api.openai.com` or `*.github.com`, optionally with \
                 `:port` (443 when left out)",
            )
        };
        let lower = raw.trim().to_ascii_lowercase();
        let (host, port) = match lower.rsplit_once(':') {
            Some((host, port)) => {
                let ok =
                    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| ok && *p != 0)
                    .ok_or_else(bad)?;
                (host.to_owned(), port)
            }
            None => (lower, DEFAULT_PORT),
        };
        let rest = host.strip_prefix("*.").unwrap_or(&host);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.len() > 253 || rest.is_empty() || !rest.split('.').all(label_ok) {
            return Err(bad());
        }
        let normal = if port == DEFAULT_PORT {
            host
        } else {
            format!("{host}:{port}")
        };
        if !out.contains(&normal) {
            out.push(normal);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(host_matches("api.openai.com", "API.openai.com"));
        assert!(!host_matches(
            "api.openai.com",
            "api.openai.com.evil.example"
        ));
        assert!(host_matches("*.github.com", "api.github.com"));
        assert!(host_matches("*.github.com", "a.b.github.com"));
        assert!(!host_matches("*.github.com", "github.com"));
        assert!(!host_matches("*.github.com", "evilgithub.com"));
    }

    #[test]
    fn ports_default_to_443_and_are_kept_otherwise() {
        let hosts = allowed_hosts(
            "allowed_hosts",
            &[
                "API.OpenAI.com".into(),
                "api.openai.com:443".into(),
                "api.example.com:8443".into(),
                "*.github.com".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            hosts,
            ["api.openai.com", "api.example.com:8443", "*.github.com"]
        );
        let p = |s| HostPattern::parse(s);
        assert!(p("api.openai.com").matches("api.openai.com", 443));
        assert!(!p("api.openai.com").matches("api.openai.com", 8443));
        assert!(p("api.example.com:8443").matches("api.example.com", 8443));
        assert!(!p("api.example.com:8443").matches("api.example.com", 443));
        assert!(p("*.github.com").matches("uploads.github.com", 443));
        assert!(!p("x.com:junk").matches("x.com", 0));
    }

    #[test]
    fn bad_patterns_name_their_index() {
        for bad in [
            "",
            "*",
            "a.*.com",
            "http://x.com",
            "x .com",
            "-a.com",
            "*.",
            "a..b",
            "a.com:",
            "a.com:0",
            "a.com:65536",
            "a.com:-1",
            "a.com:80:80",
            "[::1]:443",
        ] {
            let err = allowed_hosts("allowed_hosts", &["ok.com".into(), bad.into()]).unwrap_err();
            assert_eq!(err.field, "allowed_hosts[1]", "{bad}");
        }
        let many: Vec<String> = (0..=MAX_ALLOWED_HOSTS)
            .map(|i| format!("h{i}.com"))
            .collect();
        assert_eq!(
            allowed_hosts("allowed_hosts", &many).unwrap_err().field,
            "allowed_hosts"
        );
    }
}

//! Where a request goes: the operator's override list first, else DNS, then
//! the network policy. The address checked is the address connected to, so
//! a name that re-resolves elsewhere later (DNS rebinding) changes nothing.
//!
//! DNS is an in-process asynchronous resolver (the system's
//! `/etc/resolv.conf` and `/etc/hosts`): a lookup that times out or whose
//! request is dropped frees everything it held, unlike `getaddrinfo` on a
//! blocking thread, which keeps the thread until the system resolver gives
//! up — so one sandbox's slow lookups cannot starve the others'.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{classify::classify, EgressError};

/// How long a DNS lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the list of this host's own addresses is trusted.
const LOCAL_ADDRS_TTL: Duration = Duration::from_secs(30);

/// A checked destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    /// Lower-case, no brackets, no trailing dot: what TLS and the audit
    /// row use.
    pub host: String,
    /// The port the sandbox asked for.
    pub port: u16,
    /// The address connected to.
    pub addr: SocketAddr,
}

/// Resolves hosts and applies the network policy.
pub(crate) struct Resolver {
    overrides: HashMap<String, SocketAddr>,
    local: LocalAddrs,
    dns: Option<hickory_resolver::TokioResolver>,
}

impl Resolver {
    pub(crate) fn new(overrides: &[(String, SocketAddr)]) -> Self {
        let dns = match hickory_resolver::Resolver::builder_tokio() {
            Ok(mut b) => {
                let opts = b.options_mut();
                opts.timeout = RESOLVE_TIMEOUT / 2;
                opts.attempts = 2;
                Some(b.build())
            }
            Err(e) => {
                tracing::warn!(error = %e, "no usable DNS configuration (/etc/resolv.conf); only mapped hosts and addresses resolve");
                None
            }
        };
        Self {
            overrides: overrides
                .iter()
                .map(|(h, a)| (normalize_host(h), *a))
                .collect(),
            local: LocalAddrs::default(),
            dns,
        }
    }

    /// Every address `host` resolves to, on `port`.
    async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let dns = self.dns.as_ref().ok_or("no DNS configuration")?;
        // A trailing dot: the name is absolute, no search domains.
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, dns.lookup_ip(format!("{host}.")))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }

    /// Resolves `host` once and checks every address it has; the first is
    /// the one to connect to.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Target, EgressError> {
        let host = normalize_host(host);
        if let Some(addr) = self.overrides.get(&host) {
            return Ok(Target {
                host,
                port,
                addr: *addr,
            });
        }
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let resolve_err = |cause: String| EgressError::Resolve {
                    host: host.clone(),
                    cause,
                };
                if !plausible_hostname(&host) {
                    return Err(resolve_err("not a hostname".into()));
                }
                self.lookup(&host, port).await.map_err(resolve_err)?
            }
        };
        let Some(first) = addrs.first().copied() else {
            return Err(EgressError::Resolve {
                host,
                cause: "no addresses".into(),
            });
        };
        let local = self.local.get();
        for addr in &addrs {
            let ip = addr.ip();
            let reason = classify(ip).or_else(|| local.contains(&ip).then_some("this host's own"));
            if let Some(reason) = reason {
                return Err(EgressError::Refused {
                    host,
                    addr: ip,
                    reason,
                });
            }
        }
        Ok(Target {
            host,
            port,
            addr: first,
        })
    }
}

/// Lower-case, without IPv6 brackets or a trailing dot.
pub(crate) fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

/// Letters, digits, `-`, `_` and dots, 1 to 253 bytes: anything else would
/// only reach the resolver to fail there.
fn plausible_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// This host's own interface addresses, refreshed now and then: a public
/// address of the host would otherwise reach services bound to it.
#[derive(Default)]
struct LocalAddrs {
    cached: Mutex<Option<(Instant, Arc<HashSet<IpAddr>>)>>,
}

impl LocalAddrs {
    fn get(&self) -> Arc<HashSet<IpAddr>> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, set)) = cached.as_ref() {
            if at.elapsed() < LOCAL_ADDRS_TTL {
                return set.clone();
            }
        }
        let set = Arc::new(interface_addrs());
        *cached = Some((Instant::now(), set.clone()));
        set
    }
}

fn interface_addrs() -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for ifa in addrs {
                let Some(addr) = ifa.address else { continue };
                if let Some(v4) = addr.as_sockaddr_in() {
                    out.insert(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = addr.as_sockaddr_in6() {
                    out.insert(IpAddr::V6(v6.ip()));
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing this host's addresses failed"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("API.OpenAI.com."), "api.openai.com");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert!(plausible_hostname("api.openai.com"));
        assert!(!plausible_hostname("a b"));
        assert!(!plausible_hostname(""));
    }

    #[test]
    fn knows_its_own_addresses() {
        let set = interface_addrs();
        assert!(set.contains(&IpAddr::from([127, 0, 0, 1])), "{set:?}");
    }

    #[tokio::test]
    async fn refuses_literals_and_honours_overrides() {
        let over: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let r = Resolver::new(&[("Upstream.Test".into(), over)]);
        let t = r.resolve("upstream.test", 443).await.unwrap();
        assert_eq!((t.host.as_str(), t.addr), ("upstream.test", over));
        for host in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "[::1]",
            "::ffff:7f00:1",
        ] {
            let err = r.resolve(host, 443).await.unwrap_err();
            assert!(matches!(err, EgressError::Refused { .. }), "{host}: {err}");
        }
        // A name from /etc/hosts (no DNS traffic) that points at loopback.
        let err = r.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(err, EgressError::Refused { .. }), "{err}");
        let err = r.resolve("bad host", 80).await.unwrap_err();
        assert!(matches!(err, EgressError::Resolve { .. }), "{err}");
    }
}

//! The crate's one error type, and how a failed request maps to what the
//! sandbox sees (status) and what the audit log records (outcome).

use std::{io, net::IpAddr, path::PathBuf};

use http::StatusCode;
use miosa_core::{Outcome, SandboxId};

/// Everything that can go wrong in the egress proxy. No variant ever holds a
/// secret value: messages name hosts, addresses and causes only.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The extra upstream CA file could not be read.
    #[error("reading the upstream CA file {path}: {source}")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The extra upstream CA file holds no usable certificate.
    #[error("the upstream CA file {0} holds no usable certificate")]
    EmptyCa(PathBuf),
    /// A TLS configuration could not be built.
    #[error("building a TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// A certificate could not be made.
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The configuration is inconsistent.
    #[error("invalid egress configuration: {0}")]
    Config(String),
    /// The sandbox's socket could not be set up.
    #[error("listening on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why it could not be bound.
        source: io::Error,
    },
    /// The sandbox is already attached; detach it first.
    #[error("sandbox {0} is already attached to the egress proxy")]
    AlreadyAttached(SandboxId),
    /// The request was not a proxy request this proxy understands.
    #[error("bad proxy request: {0}")]
    BadRequest(&'static str),
    /// The destination resolves to an address sandboxes may not reach.
    #[error(
        "{host} resolves to {addr}, a {reason} address; sandboxes may only reach public addresses"
    )]
    Refused {
        /// The host the sandbox asked for.
        host: String,
        /// The address that was refused.
        addr: IpAddr,
        /// What kind of address it is (`loopback`, `private`, …).
        reason: &'static str,
    },
    /// The destination's name did not resolve.
    #[error("{host} could not be resolved: {cause}")]
    Resolve {
        /// The host.
        host: String,
        /// What the resolver said.
        cause: String,
    },
    /// The upstream could not be connected to.
    #[error("{host} could not be reached: {cause}")]
    Connect {
        /// The host.
        host: String,
        /// Why the connection failed.
        cause: String,
    },
    /// The upstream's TLS handshake failed (e.g. its certificate is not trusted).
    #[error("TLS with {host} failed: {cause}")]
    UpstreamTls {
        /// The host.
        host: String,
        /// What TLS said (e.g. an unknown issuer).
        cause: String,
    },
    /// The upstream broke the HTTP exchange.
    #[error("{host} failed the HTTP exchange: {cause}")]
    Upstream {
        /// The host.
        host: String,
        /// What went wrong.
        cause: String,
    },
    /// Inside a tunnel to one host, a request named another (in its `Host`
    /// header, its absolute-form target or the TLS SNI).
    #[error("this connection is for {tunnel}; a request for {named} needs a CONNECT of its own")]
    Misdirected {
        /// The host the tunnel was opened to.
        tunnel: String,
        /// The host the request named.
        named: String,
    },
    /// What the upstream sent back could not be scrubbed, so it is not
    /// passed on.
    #[error("{host} sent {what}; refused, since it could carry the secret back unscrubbed")]
    Unscrubbable {
        /// The host.
        host: String,
        /// What it sent.
        what: &'static str,
    },
    /// A raw (non-TLS) tunnel to a port the operator does not allow.
    #[error("raw tunnels to port {port} are not allowed (egress_allowed_ports)")]
    PortNotAllowed {
        /// The port asked for.
        port: u16,
    },
    /// The audit log cannot take the request's row; it was not forwarded.
    #[error("audit_unavailable: the audit log cannot take this request's row, so it was not sent")]
    AuditUnavailable,
    /// The credential source failed; the request was not forwarded.
    #[error("the sandbox's credentials are unavailable")]
    Credentials,
}

impl EgressError {
    /// The status the sandbox receives for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Refused { .. } | Self::PortNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            Self::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// How the audit row records this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Refused { .. } | Self::Misdirected { .. } | Self::PortNotAllowed { .. } => {
                Outcome::Denied
            }
            _ => Outcome::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_statuses_and_outcomes() {
        let refused = EgressError::Refused {
            host: "metadata".into(),
            addr: [169, 254, 169, 254].into(),
            reason: "link-local",
        };
        assert_eq!(
            (refused.status(), refused.outcome()),
            (StatusCode::FORBIDDEN, Outcome::Denied)
        );
        for err in [
            EgressError::Resolve {
                host: "x.invalid".into(),
                cause: "no such host".into(),
            },
            EgressError::UpstreamTls {
                host: "x".into(),
                cause: "UnknownIssuer".into(),
            },
            EgressError::Credentials,
        ] {
            assert_eq!(
                (err.status(), err.outcome()),
                (StatusCode::BAD_GATEWAY, Outcome::Error)
            );
        }
        assert_eq!(
            EgressError::BadRequest("x").status(),
            StatusCode::BAD_REQUEST
        );
    }
}

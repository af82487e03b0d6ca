//! The operator's knobs for the egress proxy.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// The system trust bundle upstream certificates are verified against
/// (Debian's `ca-certificates`).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Bodies up to this many bytes are buffered for substitution by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Connections one sandbox may hold open to the proxy at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Requests one sandbox may have in flight at once, by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;
/// How long a connection may sit idle, or take to send a request's head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may go without a byte arriving.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the proxy reaches upstreams, and what one sandbox may use of it.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Operator-only resolver override, host → address (tests, private
    /// upstreams). An overridden host skips the private-address refusal; the
    /// address's port replaces the requested one.
    pub resolve: Vec<(String, SocketAddr)>,
    /// A PEM file of extra roots trusted for upstream TLS on top of
    /// [`SYSTEM_ROOTS`].
    pub upstream_extra_ca: Option<PathBuf>,
    /// Request bodies up to this size are buffered for substitution; larger
    /// ones stream through unchanged.
    pub max_body_bytes: usize,
    /// Ports a raw (not intercepted: the client did not start TLS) CONNECT
    /// tunnel may reach, so a sandbox cannot, say, send mail from the host's
    /// address. Intercepted tunnels carry HTTP only and may go to any port.
    pub raw_tunnel_ports: Vec<u16>,
    /// Connections one sandbox may hold open to the proxy; more are closed
    /// as they arrive.
    pub max_connections: usize,
    /// Requests one sandbox may have in flight; more wait (up to the header
    /// timeout) and are then answered 503.
    pub max_in_flight: usize,
    /// A connection is closed when idle this long between requests, or
    /// when a request's head takes longer to arrive.
    pub header_timeout: Duration,
    /// A request whose body stalls this long is abandoned.
    pub body_idle_timeout: Duration,
}

/// The default of [`EgressConfig::raw_tunnel_ports`].
pub const DEFAULT_RAW_TUNNEL_PORTS: [u16; 2] = [443, 80];

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            resolve: Vec::new(),
            upstream_extra_ca: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            raw_tunnel_ports: DEFAULT_RAW_TUNNEL_PORTS.to_vec(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_idle_timeout: DEFAULT_BODY_IDLE_TIMEOUT,
        }
    }
}

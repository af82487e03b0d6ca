//! Miosa's credential-injecting egress proxy.
//!
//! A sandbox has no network of its own: an agent inside relays every TCP
//! connection to `127.0.0.1:3128` onto a per-sandbox Unix socket that this
//! crate listens on, so the socket a connection arrives on is the sandbox's
//! identity. The socket speaks the HTTP/1.1 proxy protocol:
//!
//! - `http://` absolute-form requests are forwarded unchanged (no
//!   substitution over plain HTTP);
//! - `CONNECT host:port` followed by a TLS ClientHello is intercepted: TLS
//!   is terminated with a leaf certificate from the sandbox's own CA, each
//!   request inside has its placeholders (`miosa_ph_…`) replaced by the real
//!   values the secret allows for that host, and any echo of a value in the
//!   response is replaced by its placeholder again;
//! - any other `CONNECT` tunnel is spliced raw.
//!
//! Destinations are resolved once per connection and refused (403) when any
//! address is loopback, private, link-local, CGNAT, multicast, … or this
//! host's own; the address checked is the address connected to. Upstream
//! TLS is verified. Every request, tunnel and refusal is one audit row.
//!
//! Module map: [`config`] (knobs), `ca`/`leaf` (certificates), `classify`
//! (IP policy), `target` (resolution), `substitute` and `scrub` (secrets in
//! and out), `conn` (the socket's connections and tunnels), `forward` (one
//! request), `pool` (upstream connections), `body`, `io`, `audit` (rows).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
mod body;
mod ca;
mod classify;
pub mod config;
mod conn;
mod credential;
mod error;
mod forward;
mod io;
mod leaf;
mod pool;
mod proxy;
mod scrub;
mod substitute;
mod target;
mod tls;
mod ws;

pub use ca::{SandboxCa, CA_VALIDITY, LEAF_VALIDITY};
pub use config::EgressConfig;
pub use credential::{
    AuditSink, AuditUnavailable, Credential, CredentialSource, SandboxIdentity, SecretValue,
    SinkFuture,
};
pub use error::EgressError;
pub use proxy::{EgressProxy, SocketPaths};

//! One audit row per proxied request, raw tunnel, or refused or failed
//! attempt. A [`Record`] is shared by whatever is still moving bytes for the
//! request (the response body, an upgraded stream); when the last holder
//! lets go, the row is written — exactly once, whichever way it ended.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering},
        Arc, OnceLock,
    },
    time::Instant,
};

use miosa_core::{
    audit::action, AuditCompletion, AuditCredential, AuditEntry, AuditId, AuditRequest, Outcome,
};

use crate::credential::{AuditSink, AuditUnavailable, Credential, SandboxIdentity};

/// The row being built for one request.
pub(crate) struct Record {
    sink: Arc<dyn AuditSink>,
    identity: Arc<SandboxIdentity>,
    method: String,
    host: String,
    path: String,
    credential: OnceLock<AuditCredential>,
    /// When the request arrived.
    time: time::OffsetDateTime,
    start: Instant,
    /// 0 until a response is sent.
    status: AtomicU16,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    outcome: AtomicU8,
    /// Set when the attempt turned out to need no row of its own (an
    /// intercepted tunnel: its requests get rows instead).
    silent: AtomicBool,
    /// The row's ID (a durable row and its completion share it).
    id: AuditId,
    /// Set once the row was written durably: the end then completes it.
    committed: AtomicBool,
}

const SUCCESS: u8 = 0;
const DENIED: u8 = 1;
const ERROR: u8 = 2;

impl Record {
    pub(crate) fn new(
        sink: Arc<dyn AuditSink>,
        identity: Arc<SandboxIdentity>,
        method: &str,
        host: &str,
        path: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            sink,
            identity,
            method: method.to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
            credential: OnceLock::new(),
            time: miosa_core::time_util::now(),
            start: Instant::now(),
            status: AtomicU16::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            outcome: AtomicU8::new(SUCCESS),
            silent: AtomicBool::new(false),
            id: AuditId::generate(),
            committed: AtomicBool::new(false),
        })
    }

    /// Writes the row as it stands (method, host, path, secret, identity)
    /// durably, before the request is sent; its end completes it. Fails
    /// when the audit log cannot take it.
    pub(crate) async fn commit(&self) -> Result<(), AuditUnavailable> {
        let mut row = self.row(None, Outcome::Success);
        row.deferred = true;
        self.sink.record_durable(row).await?;
        self.committed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Names the secret that was substituted (never its value); the first
    /// one named stays.
    pub(crate) fn set_credential(&self, credential: &Credential) {
        let _ = self
            .credential
            .set(AuditCredential::from(&credential.secret));
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    pub(crate) fn set_outcome(&self, outcome: Outcome) {
        let v = match outcome {
            Outcome::Success => SUCCESS,
            Outcome::Denied => DENIED,
            Outcome::Error => ERROR,
        };
        self.outcome.store(v, Ordering::Relaxed);
    }

    pub(crate) fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Drops the row: something else records this attempt.
    pub(crate) fn silence(&self) {
        self.silent.store(true, Ordering::Relaxed);
    }

    /// The host the row names.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    fn outcome(&self) -> Outcome {
        match self.outcome.load(Ordering::Relaxed) {
            DENIED => Outcome::Denied,
            ERROR => Outcome::Error,
            _ => Outcome::Success,
        }
    }

    fn duration_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The row with these completion fields (all zero for a durable row
    /// written before the request is sent).
    fn row(&self, done: Option<(Option<u16>, u64, u64, u64)>, outcome: Outcome) -> AuditEntry {
        let (status, bytes_out, bytes_in, duration_ms) = done.unwrap_or((None, 0, 0, 0));
        let id = &self.identity;
        let mut row = AuditEntry::new(&id.tenant_id, action::EGRESS_REQUEST, outcome)
            .for_sandbox(&id.sandbox_id, id.workspace_id.as_ref(), &id.labels)
            .created_by(id.created_by_key_id.as_ref());
        row.id = self.id.clone();
        row.time = self.time;
        row.request = Some(AuditRequest {
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            status,
            bytes_out,
            bytes_in,
            duration_ms,
        });
        row.credential = self.credential.get().cloned();
        row
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if *self.silent.get_mut() {
            return;
        }
        let status = *self.status.get_mut();
        let status = (status != 0).then_some(status);
        let (bytes_out, bytes_in) = (*self.bytes_out.get_mut(), *self.bytes_in.get_mut());
        // No answer reached the sandbox (it hung up, or the proxy shut
        // down mid-request): not a success.
        let outcome = match (status, self.outcome()) {
            (None, Outcome::Success) => Outcome::Error,
            (_, outcome) => outcome,
        };
        if *self.committed.get_mut() {
            self.sink.complete(AuditCompletion {
                tenant_id: self.identity.tenant_id.clone(),
                id: self.id.clone(),
                status,
                bytes_out,
                bytes_in,
                duration_ms: self.duration_ms(),
                outcome,
            });
        } else {
            let done = (status, bytes_out, bytes_in, self.duration_ms());
            let row = self.row(Some(done), outcome);
            self.sink.record(row);
        }
    }
}

//! The audit log writer.
//!
//! Rows come from three places, all written by one background task that
//! links them into their tenants' hash chains inside the store's append
//! transaction:
//!
//! - requests carrying a secret: the proxy waits for the row to be
//!   durable ([`AuditLog::append_durable`]) before it forwards anything;
//!   rows arriving together share one transaction (group commit). Their
//!   status, byte counts and duration follow as a completion;
//! - other proxied requests: queued ([`AuditLog::record`]) and written in
//!   batches; while the database is down they wait in a bounded backlog,
//!   and once that is full the proxy is refused ([`AuditLog::admit`])
//!   rather than a row dropped;
//! - API actions: written at once ([`AuditLog::append`]).
//!
//! [`checkpoint`] signs each tenant's chain head with a key the database
//! does not hold.
#![forbid(unsafe_code)]

pub mod checkpoint;

use std::collections::VecDeque;
use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};
use std::time::Duration;
use tokio::time::Instant;

use miosa_core::{AuditCompletion, AuditEntry};
use miosa_store::{Store, StoreResult};
use tokio::sync::{mpsc, oneshot};

pub use checkpoint::Checkpointer;

/// Most rows written in one transaction.
const BATCH: usize = 1000;
/// Rows queued (and, during an outage, held) before `admit` starts
/// refusing new requests.
const QUEUE: usize = 100_000;
/// How long `admit` waits for room before refusing, when the database is
/// answering but behind.
const ADMIT_WAIT: Duration = Duration::from_secs(10);
/// How long completions may wait to ride along with the next rows' commit
/// (they are outside the hash and need not be prompt); a commit of their
/// own would stand between the next request and its durable row.
const LINGER: Duration = Duration::from_millis(100);
/// Retries of a backlog while the database does not answer: from this...
const RETRY_MIN: Duration = Duration::from_millis(50);
/// ...doubling up to this, for as long as it takes.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The crate's one error type.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot take a row now (the database does not write, or the
    /// backlog is full): the request it would describe must not go out.
    #[error("the audit log is unavailable")]
    Unavailable,
    #[error(transparent)]
    Store(#[from] miosa_store::StoreError),
    #[error(transparent)]
    Vault(#[from] miosa_vault::VaultError),
}

/// Shorthand for the refusal.
const UNAVAILABLE: AuditError = AuditError::Unavailable;

enum Msg {
    Entry(Box<AuditEntry>),
    Complete(Box<AuditCompletion>),
    Flush(oneshot::Sender<()>),
}

struct Durable {
    entry: Box<AuditEntry>,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// Handle to the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    tx: mpsc::Sender<Msg>,
    durable: mpsc::Sender<Durable>,
    /// False while the database does not answer the writer.
    healthy: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the background writer. It runs until every handle is dropped,
    /// writing what is queued before it ends.
    pub fn start(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        Self::start_with_queue(store, QUEUE)
    }

    /// As [`AuditLog::start`], with room for `queue` rows before `admit`
    /// waits.
    pub fn start_with_queue(
        store: Arc<dyn Store>,
        queue: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let (durable, durable_rx) = mpsc::channel(BATCH * 4);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            store: Arc::clone(&store),
            rx,
            durable_rx,
            healthy: Arc::clone(&healthy),
            max_backlog: queue.max(1),
            backlog: VecDeque::new(),
            completions: Vec::new(),
            completions_since: None,
            waiters: Vec::new(),
        };
        let task = tokio::spawn(writer.run());
        (
            Self {
                store,
                tx,
                durable,
                healthy,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
        )
    }

    /// Queues a row without waiting. Callers should first [`admit`] the
    /// work the row describes, so the queue has room; if it is full anyway,
    /// the row waits in a task of its own rather than being lost. Only a
    /// stopped writer loses rows (counted in [`AuditLog::dropped`], logged).
    ///
    /// [`admit`]: AuditLog::admit
    pub fn record(&self, entry: AuditEntry) {
        self.send(Msg::Entry(Box::new(entry)));
    }

    /// Queues the completion of a row written by [`append_durable`].
    ///
    /// [`append_durable`]: AuditLog::append_durable
    pub fn complete(&self, completion: AuditCompletion) {
        self.send(Msg::Complete(Box::new(completion)));
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                let dropped = Arc::clone(&self.dropped);
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            if let Err(e) = tx.send(msg).await {
                                lost(&dropped, e.0);
                            }
                        });
                    }
                    Err(_) => lost(&self.dropped, msg),
                }
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => lost(&self.dropped, msg),
        }
    }

    /// Whether the log can take the row of a request about to start: at
    /// once when the queue has room; otherwise it waits for room (a writer
    /// behind the traffic slows the traffic), unless the database does not
    /// answer, and refuses after [`ADMIT_WAIT`].
    pub async fn admit(&self) -> Result<(), AuditError> {
        if self.tx.capacity() > 0 {
            return Ok(());
        }
        if !self.healthy.load(Ordering::Relaxed) {
            return Err(UNAVAILABLE);
        }
        match tokio::time::timeout(ADMIT_WAIT, self.tx.reserve()).await {
            // A permit is a free slot; dropping it returns the slot.
            Ok(Ok(_permit)) => Ok(()),
            _ => Err(UNAVAILABLE),
        }
    }

    /// Writes a deferred row (`entry.deferred`) and returns once it is
    /// committed; rows that arrive together share a transaction. Fails
    /// (closed) when the database cannot take it.
    pub async fn append_durable(&self, entry: AuditEntry) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        let msg = Durable {
            entry: Box::new(entry),
            done,
        };
        if self.durable.send(msg).await.is_err() {
            return Err(UNAVAILABLE);
        }
        wait.await.unwrap_or(Err(UNAVAILABLE))
    }

    /// Writes one row now (for API actions).
    pub async fn append(&self, entry: AuditEntry) -> StoreResult<()> {
        self.store
            .append_audit(std::slice::from_ref(&entry))
            .await?;
        Ok(())
    }

    /// Writes an API action's row; a failure is logged, not returned, since
    /// the action itself already happened.
    pub async fn append_logged(&self, entry: AuditEntry) {
        let (id, action) = (entry.id.clone(), entry.action.clone());
        if let Err(e) = self.append(entry).await {
            tracing::error!(error = %e, row = %id, %action, "could not write audit row");
        }
    }

    /// Waits until every row and completion queued before this call is
    /// written (or given up as bad), however long an outage lasts; bound it
    /// with a timeout where that matters.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Rows lost because the writer had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether the database answered the writer's last attempt.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

fn lost(dropped: &AtomicU64, msg: Msg) {
    let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    let row = match msg {
        Msg::Entry(r) => Some(r.id),
        Msg::Complete(c) => Some(c.id),
        Msg::Flush(_) => None,
    };
    tracing::error!(dropped_total = n, row = ?row, "audit writer stopped; row lost");
}

/// The background writer's state.
struct Writer {
    store: Arc<dyn Store>,
    rx: mpsc::Receiver<Msg>,
    durable_rx: mpsc::Receiver<Durable>,
    healthy: Arc<AtomicBool>,
    max_backlog: usize,
    /// Queued rows not yet written (kept across an outage).
    backlog: VecDeque<AuditEntry>,
    completions: Vec<AuditCompletion>,
    /// When the oldest of `completions` arrived.
    completions_since: Option<Instant>,
    /// Flushes waiting for the backlog to empty.
    waiters: Vec<oneshot::Sender<()>>,
}

impl Writer {
    async fn run(mut self) {
        let mut delay = Duration::ZERO;
        let mut open = (true, true);
        loop {
            let mut durables = Vec::new();
            let closing = !open.1;
            let retry = !self.backlog.is_empty() || self.completions_due(closing);
            let room = self.backlog.len() < self.max_backlog;
            if !open.0 && !open.1 && !retry {
                for w in self.waiters.drain(..) {
                    let _ = w.send(());
                }
                return;
            }
            let linger = self.completions_since.map(|t| t + LINGER);
            // Durable rows first; queued ones while the backlog has room;
            // with a backlog, wake up to retry it; lingering completions
            // are written when they are due.
            tokio::select! {
                biased;
                d = self.durable_rx.recv(), if open.0 => match d {
                    Some(d) => durables.push(d),
                    None => open.0 = false,
                },
                n = recv_some(&mut self.rx, BATCH), if open.1 && room => match n {
                    Some(msgs) => self.take(msgs),
                    None => open.1 = false,
                },
                () = tokio::time::sleep(delay), if retry => {}
                () = sleep_until(linger), if linger.is_some() && !retry => {}
            }
            while durables.len() < BATCH {
                match self.durable_rx.try_recv() {
                    Ok(d) => durables.push(d),
                    Err(_) => break,
                }
            }
            if open.1 && self.backlog.len() < self.max_backlog {
                let mut msgs = Vec::new();
                while msgs.len() < BATCH {
                    match self.rx.try_recv() {
                        Ok(m) => msgs.push(m),
                        Err(_) => break,
                    }
                }
                self.take(msgs);
            }
            if self.write(durables, !open.1).await {
                // Drain a remaining backlog without pausing.
                delay = Duration::ZERO;
            } else {
                delay = (delay * 2).clamp(RETRY_MIN, RETRY_MAX);
            }
            if self.backlog.is_empty() && self.completions.is_empty() {
                for w in self.waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        }
    }

    /// Whether the completions must be written now rather than ride along
    /// with the next rows: a full batch, one older than [`LINGER`], a
    /// flush waiting, or the queue closed.
    fn completions_due(&self, closing: bool) -> bool {
        !self.completions.is_empty()
            && (closing
                || !self.waiters.is_empty()
                || self.completions.len() >= BATCH
                || self
                    .completions_since
                    .is_some_and(|t| t.elapsed() >= LINGER))
    }

    fn take(&mut self, msgs: Vec<Msg>) {
        for m in msgs {
            match m {
                Msg::Entry(e) => self.backlog.push_back(*e),
                Msg::Complete(c) => {
                    self.completions_since.get_or_insert_with(Instant::now);
                    self.completions.push(*c);
                }
                Msg::Flush(w) => self.waiters.push(w),
            }
        }
    }

    /// Writes the durable rows, a batch of the backlog and a batch of
    /// completions in one transaction (one commit). Returns false while the
    /// database cannot write (durable rows then fail at once; queued rows
    /// and completions stay).
    async fn write(&mut self, durables: Vec<Durable>, closing: bool) -> bool {
        let queued = self.backlog.len().min(BATCH);
        let done = if !durables.is_empty() || queued > 0 || self.completions_due(closing) {
            self.completions.len().min(BATCH)
        } else {
            0
        };
        if durables.is_empty() && queued == 0 && done == 0 {
            return true;
        }
        let mut rows: Vec<AuditEntry> = durables.iter().map(|d| (*d.entry).clone()).collect();
        rows.extend(self.backlog.iter().take(queued).cloned());
        match self
            .store
            .write_audit(&rows, &self.completions[..done])
            .await
        {
            Ok(_) => {
                for d in durables {
                    let _ = d.done.send(Ok(()));
                }
                self.backlog.drain(..queued);
                self.drain_completions(done);
            }
            Err(err) if bad_row(&err) => {
                // A row in the batch is bad (unknown tenant, repeated ID):
                // each row on its own, so only a bad one is given up; then
                // the completions by themselves.
                tracing::warn!(error = %err, rows = rows.len(), "audit batch refused; writing its rows one by one");
                if !self.one_by_one(durables, queued).await || !self.complete(done).await {
                    return false;
                }
            }
            Err(err) => {
                self.set_healthy(false, &err.to_string());
                for d in durables {
                    let _ = d.done.send(Err(UNAVAILABLE));
                }
                return false;
            }
        }
        self.set_healthy(true, "");
        true
    }

    /// Writes the first `done` completions on their own.
    async fn complete(&mut self, done: usize) -> bool {
        match self.store.complete_audit(&self.completions[..done]).await {
            Ok(()) => {}
            Err(err) if bad_row(&err) => {
                tracing::error!(error = %err, completions = done, "audit completions refused; given up");
            }
            Err(err) => {
                self.set_healthy(false, &err.to_string());
                return false;
            }
        }
        self.drain_completions(done);
        true
    }

    fn drain_completions(&mut self, done: usize) {
        self.completions.drain(..done);
        self.completions_since = if self.completions.is_empty() {
            None
        } else if done > 0 {
            Some(Instant::now())
        } else {
            self.completions_since
        };
    }

    /// Writes the durable rows and `queued` backlog rows one at a time:
    /// a bad row is logged with its ID and given up; an outage stops the
    /// walk (false), failing the durable rows not written and keeping the
    /// queued ones.
    async fn one_by_one(&mut self, durables: Vec<Durable>, queued: usize) -> bool {
        let mut durables = durables.into_iter();
        while let Some(d) = durables.next() {
            match self.one(&d.entry).await {
                Ok(written) => {
                    let _ = d.done.send(if written { Ok(()) } else { Err(UNAVAILABLE) });
                }
                Err(err) => {
                    self.set_healthy(false, &err);
                    let _ = d.done.send(Err(UNAVAILABLE));
                    for d in durables {
                        let _ = d.done.send(Err(UNAVAILABLE));
                    }
                    return false;
                }
            }
        }
        for _ in 0..queued {
            let Some(e) = self.backlog.front().cloned() else {
                break;
            };
            match self.one(&e).await {
                Ok(_) => {
                    self.backlog.pop_front();
                }
                Err(err) => {
                    self.set_healthy(false, &err);
                    return false;
                }
            }
        }
        true
    }

    /// Writes one row: `Ok(true)` written, `Ok(false)` refused as bad (and
    /// logged), `Err` when the database cannot write at all.
    async fn one(&self, entry: &AuditEntry) -> Result<bool, String> {
        match self.store.append_audit(std::slice::from_ref(entry)).await {
            Ok(_) => Ok(true),
            Err(e) if bad_row(&e) => {
                tracing::error!(error = %e, row = %entry.id, action = %entry.action, "audit row refused by the database; given up");
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn set_healthy(&self, healthy: bool, cause: &str) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!("audit log writes again");
            } else {
                tracing::error!(error = %cause, backlog = self.backlog.len(), "the database does not take audit rows; requests carrying secrets are refused until it does");
            }
        }
    }
}

/// Whether the store refused the data rather than failed to write: such a
/// row will never be written, while anything else (a lost connection, a
/// locked or read-only database) may pass on a later attempt.
fn bad_row(e: &miosa_store::StoreError) -> bool {
    matches!(
        e,
        miosa_store::StoreError::Conflict { .. } | miosa_store::StoreError::MissingReference { .. }
    )
}

/// Sleeps until `at`; forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next messages (at least one), or `None` once the channel is closed.
async fn recv_some(rx: &mut mpsc::Receiver<Msg>, max: usize) -> Option<Vec<Msg>> {
    let mut msgs = Vec::new();
    (rx.recv_many(&mut msgs, max).await > 0).then_some(msgs)
}

#[cfg(test)]
mod tests;

//! The audit log writer.
//!
//! Rows come from two places: the egress proxy (one per proxied request, at
//! thousands per second, so they are queued and written in batches by one
//! background task) and API actions (written at once, so the caller knows the
//! row exists when the response is sent). Either way the store links each row
//! into its tenant's hash chain inside the append transaction.
#![forbid(unsafe_code)]

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};
use std::time::Duration;

use miosa_core::AuditEntry;
use miosa_store::{Store, StoreResult};
use tokio::sync::{mpsc, oneshot};

/// Most rows written in one transaction.
const BATCH: usize = 1000;
/// Rows queued before `record` starts refusing (and counting) new ones.
const QUEUE: usize = 100_000;

enum Msg {
    Entry(Box<AuditEntry>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Starts the background writer. It runs until every handle is dropped,
    /// writing what is queued before it ends.
    pub fn start(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        Self::start_with_queue(store, QUEUE)
    }

    /// As [`AuditLog::start`], with room for `queue` rows before `ready`
    /// waits.
    pub fn start_with_queue(
        store: Arc<dyn Store>,
        queue: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let task = tokio::spawn(writer(Arc::clone(&store), rx));
        (
            Self {
                store,
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
        )
    }

    /// Queues a row without waiting (for the egress proxy). Callers should
    /// await [`AuditLog::ready`] before the work the row describes, so the
    /// queue has room; if it is full anyway, the row waits in a task of its
    /// own rather than being lost. Only a stopped writer loses rows (counted
    /// in [`AuditLog::dropped`] and logged).
    pub fn record(&self, entry: AuditEntry) {
        match self.tx.try_send(Msg::Entry(Box::new(entry))) {
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

    /// Resolves once the queue has room for another row: backpressure for
    /// the egress proxy, which awaits it before each request, so a database
    /// slower than the traffic slows the traffic instead of losing rows.
    pub async fn ready(&self) {
        if self.tx.capacity() > 0 {
            return;
        }
        // A permit is a free slot; dropping it returns the slot.
        let _ = self.tx.reserve().await;
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

    /// Waits until every row queued before this call is written (or given up).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Rows lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn lost(dropped: &AtomicU64, msg: Msg) {
    let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    let row = match msg {
        Msg::Entry(r) => Some(r.id),
        Msg::Flush(_) => None,
    };
    tracing::error!(dropped_total = n, row = ?row, "audit writer stopped; row lost");
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(BATCH);
    loop {
        msgs.clear();
        if rx.recv_many(&mut msgs, BATCH).await == 0 {
            return;
        }
        let mut rows = Vec::with_capacity(msgs.len());
        let mut waiters = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Entry(e) => rows.push(*e),
                Msg::Flush(w) => waiters.push(w),
            }
        }
        if !rows.is_empty() {
            write_with_retry(store.as_ref(), &rows).await;
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

/// Writes a batch. While the database is unreachable the whole batch is
/// retried with backoff (about a minute in all, so an outage does not stall
/// the writer forever); when the database answers but the batch still
/// fails, a row in it is bad, so the batch is split until the bad row is
/// isolated and only that row is given up (logged with its ID).
async fn write_with_retry(store: &dyn Store, rows: &[AuditEntry]) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=12 {
        let err = match store.append_audit(rows).await {
            Ok(_) => return,
            Err(e) => e,
        };
        if store.ping().await.is_ok() {
            if rows.len() == 1 {
                tracing::error!(error = %err, row = %rows[0].id, "audit row refused by the database; given up");
                return;
            }
            let (a, b) = rows.split_at(rows.len() / 2);
            Box::pin(write_with_retry(store, a)).await;
            Box::pin(write_with_retry(store, b)).await;
            return;
        }
        tracing::warn!(error = %err, attempt, rows = rows.len(), "audit batch write failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    tracing::error!(rows = ?ids, "audit batch given up after retries");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use miosa_core::audit::{action, ChainVerifier};
    use miosa_core::{AuditId, NewApiKey, Outcome, Tenant, TenantId};

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>, TenantId) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = miosa_store_sqlite::SqliteStore::connect(&url)
            .await
            .unwrap();
        let pepper = miosa_core::Pepper::generate().unwrap();
        let (tenant, key) = fixture(&pepper);
        store.create_tenant(&tenant, &key).await.unwrap();
        (dir, Arc::new(store), tenant.id)
    }

    fn fixture(pepper: &miosa_core::Pepper) -> (Tenant, NewApiKey) {
        let tenant = Tenant {
            id: TenantId::generate(),
            name: "acme".into(),
            created_at: miosa_core::time_util::now(),
        };
        let (key, _plain) = miosa_core::issue_key(
            &tenant.id,
            "first".into(),
            miosa_core::KeyScope::Admin,
            pepper,
        )
        .unwrap();
        (tenant, key)
    }

    fn entry(tenant: &TenantId) -> AuditEntry {
        AuditEntry {
            id: AuditId::generate(),
            tenant_id: tenant.clone(),
            time: miosa_core::time_util::now(),
            action: action::EGRESS_REQUEST.into(),
            actor: None,
            target: None,
            sandbox_id: None,
            workspace_id: None,
            owner_user_id: None,
            external_user_id: Some("u1".into()),
            external_workspace_id: None,
            external_project_id: None,
            request: None,
            credential: None,
            outcome: Outcome::Success,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_delays_rows_but_loses_none() {
        let (_dir, store, tenant) = store().await;
        let (log, _task) = AuditLog::start_with_queue(Arc::clone(&store), 4);
        for _ in 0..300 {
            log.record(entry(&tenant));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            log.flush().await;
            let n = store.audit_chain(&tenant, 0, 1000).await.unwrap().len();
            if n == 300 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {n} of 300 written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(log.dropped(), 0);
        // With room again, `ready` does not wait.
        tokio::time::timeout(Duration::from_secs(5), log.ready())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_bad_row_loses_only_itself() {
        let (_dir, store, tenant) = store().await;
        let (log, _task) = AuditLog::start(Arc::clone(&store));
        let mut ids = Vec::new();
        for i in 0..10 {
            if i == 4 {
                // No such tenant: the database refuses this row.
                log.record(entry(&TenantId::generate()));
            }
            let e = entry(&tenant);
            ids.push(e.id.clone());
            log.record(e);
        }
        log.flush().await;
        let chain = store.audit_chain(&tenant, 0, 100).await.unwrap();
        let written: Vec<_> = chain.iter().map(|e| e.entry.id.clone()).collect();
        assert_eq!(written, ids);
    }

    #[tokio::test]
    async fn queued_rows_are_written_in_order_and_chain() {
        let (_dir, store, tenant) = store().await;
        let (log, task) = AuditLog::start(Arc::clone(&store));
        let ids: Vec<_> = (0..1200)
            .map(|_| {
                let e = entry(&tenant);
                let id = e.id.clone();
                log.record(e);
                id
            })
            .collect();
        log.append(entry(&tenant)).await.unwrap();
        log.flush().await;
        let chain = store.audit_chain(&tenant, 0, 2000).await.unwrap();
        assert_eq!(chain.len(), 1201);
        let mut v = ChainVerifier::default();
        for ev in &chain {
            v.check(ev).unwrap();
        }
        let queued: Vec<_> = chain
            .iter()
            .map(|e| e.entry.id.clone())
            .filter(|id| ids.contains(id))
            .collect();
        assert_eq!(queued, ids, "queued rows keep their order");
        assert_eq!(log.dropped(), 0);
        drop(log);
        task.await.unwrap();
    }
}

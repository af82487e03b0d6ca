//! Fresh reads of a tenant's secrets epoch, shared between the requests
//! that arrive while one is under way.
//!
//! The egress proxy must see a change to a tenant's secrets (a disable, on
//! any replica) on the very next request: so each request needs an epoch
//! read *started after it arrived* — one that began earlier may have missed
//! a change committed just before the request came in. Any such read will
//! do, though. So while a read is in flight, the requests arriving meanwhile
//! wait for the single next read, which starts when the current one ends:
//! at most two reads per tenant are ever outstanding, whatever the
//! concurrency, and no request trusts a read older than itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use miosa_core::TenantId;
use miosa_store::Store;
use tokio::sync::Notify;

/// The outcome of one read, shared by everyone who waited for it.
type Reading = Result<i64, String>;

#[derive(Default)]
struct State {
    /// Reads started so far (the ticket of the latest).
    started: u64,
    in_flight: bool,
    /// The latest finished read: its ticket and outcome.
    latest: Option<(u64, Reading)>,
}

#[derive(Default)]
struct Tenant {
    state: Mutex<State>,
    done: Notify,
}

/// Coalesced, never stale reads of `Store::secrets_epoch`.
#[derive(Default)]
pub(crate) struct EpochReads {
    tenants: Mutex<HashMap<TenantId, Arc<Tenant>>>,
}

impl EpochReads {
    /// The tenant's epoch as read by a query that started after this call.
    pub(crate) async fn read(&self, store: &dyn Store, tenant: &TenantId) -> Reading {
        let t = {
            let mut map = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(tenant.clone()).or_default())
        };
        let arrived = t.lock().started;
        loop {
            let next = {
                let mut s = t.lock();
                match &s.latest {
                    Some((ticket, reading)) if *ticket > arrived => return reading.clone(),
                    _ => {}
                }
                if s.in_flight {
                    // Made before the lock is released: no wake-up is missed.
                    Err(t.done.notified())
                } else {
                    s.in_flight = true;
                    s.started += 1;
                    Ok(s.started)
                }
            };
            let ticket = match next {
                Ok(ticket) => ticket,
                Err(done) => {
                    done.await;
                    continue;
                }
            };
            // Whatever happens to this future, the next reader must not
            // wait for a read that will never finish.
            let mut guard = InFlight {
                tenant: &t,
                ticket,
                reading: None,
            };
            let reading = store.secrets_epoch(tenant).await.map_err(|e| e.to_string());
            guard.reading = Some(reading.clone());
            return reading;
        }
    }
}

impl Tenant {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ends a read: publishes its outcome (if it has one) and wakes the waiters.
struct InFlight<'a> {
    tenant: &'a Tenant,
    ticket: u64,
    reading: Option<Reading>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.tenant.lock();
        s.in_flight = false;
        if let Some(reading) = self.reading.take() {
            if s.latest.as_ref().is_none_or(|(t, _)| *t < self.ticket) {
                s.latest = Some((self.ticket, reading));
            }
        }
        drop(s);
        self.tenant.done.notify_waiters();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use miosa_store::SettingsPatch;
    use miosa_store_conformance::fixtures::new_tenant;

    /// Under a constant stream of concurrent reads, a read that begins
    /// after a change always sees it — reads already in flight are never
    /// handed to it — and concurrent callers share reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_after_a_change_sees_it_while_reads_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        let store: Arc<dyn Store> = Arc::new(
            miosa_store_sqlite::SqliteStore::connect(&url)
                .await
                .unwrap(),
        );
        let (tenant, _) = new_tenant(store.as_ref()).await;
        let reads = Arc::new(EpochReads::default());

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut noise = Vec::new();
        for _ in 0..8 {
            let (store, reads, tenant, stop, calls) = (
                store.clone(),
                reads.clone(),
                tenant.id.clone(),
                stop.clone(),
                calls.clone(),
            );
            noise.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reads.read(store.as_ref(), &tenant).await.unwrap();
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // A read answered from the cache never yields.
                    tokio::task::yield_now().await;
                }
            }));
        }
        for round in 0..100 {
            let patch = SettingsPatch {
                allow_end_user_credentials: Some(round % 2 == 0),
                ..SettingsPatch::default()
            };
            store
                .update_settings(&tenant.id, &patch, miosa_core::time_util::now())
                .await
                .unwrap();
            let truth = store.secrets_epoch(&tenant.id).await.unwrap();
            let seen = reads.read(store.as_ref(), &tenant.id).await.unwrap();
            assert!(
                seen >= truth,
                "round {round}: read {seen}, but {truth} was committed"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in noise {
            task.await.unwrap();
        }
        let queries = reads.tenants.lock().unwrap()[&tenant.id].lock().started;
        let served = calls.load(std::sync::atomic::Ordering::Relaxed) + 100;
        assert!(
            queries < served,
            "{queries} queries for {served} reads: nothing was shared"
        );
    }
}

//! The writer against a real SQLite store.
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
        created_by_key_id: None,
        deferred: false,
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
    // With room again, `admit` does not wait.
    tokio::time::timeout(Duration::from_secs(5), log.admit())
        .await
        .unwrap()
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

fn deferred(tenant: &TenantId) -> AuditEntry {
    let mut e = entry(tenant);
    e.request = Some(miosa_core::AuditRequest {
        method: "GET".into(),
        host: "api.openai.com".into(),
        path: "/v1/models".into(),
        status: None,
        bytes_out: 0,
        bytes_in: 0,
        duration_ms: 0,
    });
    e.deferred = true;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_rows_are_committed_before_the_call_returns() {
    let (_dir, store, tenant) = store().await;
    let (log, _task) = AuditLog::start(Arc::clone(&store));
    // Many at once share transactions, each returns once its row is in.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let (log, e) = (log.clone(), deferred(&tenant));
            let id = e.id.clone();
            tokio::spawn(async move {
                log.append_durable(e).await.unwrap();
                id
            })
        })
        .collect();
    for call in calls {
        let id = call.await.unwrap();
        let chain = store.audit_chain(&tenant, 0, 1000).await.unwrap();
        let row = chain.iter().find(|ev| ev.entry.id == id).expect("durable");
        assert!(row.pending);
    }
    // Completions follow, outside the hash.
    let chain = store.audit_chain(&tenant, 0, 1000).await.unwrap();
    for ev in &chain {
        log.complete(miosa_core::AuditCompletion {
            tenant_id: tenant.clone(),
            id: ev.entry.id.clone(),
            status: Some(200),
            bytes_out: 1,
            bytes_in: 2,
            duration_ms: 3,
            outcome: Outcome::Success,
        });
    }
    log.flush().await;
    let chain = store.audit_chain(&tenant, 0, 1000).await.unwrap();
    assert_eq!(chain.len(), 200);
    let mut v = ChainVerifier::default();
    for ev in &chain {
        assert!(!ev.pending);
        assert_eq!(ev.entry.request.as_ref().unwrap().status, Some(200));
        v.check(ev).unwrap();
    }
}

#[tokio::test]
async fn a_bad_durable_row_fails_closed_and_alone() {
    let (_dir, store, tenant) = store().await;
    let (log, _task) = AuditLog::start(Arc::clone(&store));
    let good = deferred(&tenant);
    // No such tenant: the database refuses this row.
    let bad = deferred(&TenantId::generate());
    let (a, b) = tokio::join!(log.append_durable(good.clone()), log.append_durable(bad));
    a.unwrap();
    assert!(matches!(b, Err(AuditError::Unavailable)));
    let chain = store.audit_chain(&tenant, 0, 10).await.unwrap();
    assert_eq!(chain.len(), 1);
    assert!(log.healthy(), "a bad row is no outage");
}

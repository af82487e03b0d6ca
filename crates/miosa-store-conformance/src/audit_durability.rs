//! Deferred audit rows (durable before their request is sent, completed
//! after) and signed checkpoints of each tenant's chain.

use miosa_core::audit::{action, AuditRequest, ChainVerifier, Outcome};
use miosa_core::time_util::now;
use miosa_core::{AuditCheckpoint, AuditCompletion, AuditEntry, PageRequest, TenantId};
use miosa_store::Store;

use crate::fixtures::{all_pages, audit_entry, new_tenant};

/// The whole story.
pub async fn audit_durability(store: &dyn Store) {
    deferred_rows(store).await;
    rows_and_completions_together(store).await;
    checkpoints(store).await;
}

fn deferred(tenant: &TenantId) -> AuditEntry {
    let mut e = audit_entry(tenant, action::EGRESS_REQUEST);
    e.request = Some(AuditRequest {
        method: "POST".into(),
        host: "api.openai.com".into(),
        path: "/v1/chat/completions".into(),
        status: None,
        bytes_out: 0,
        bytes_in: 0,
        duration_ms: 0,
    });
    e.deferred = true;
    e
}

async fn verify(store: &dyn Store, tenant: &TenantId) -> u64 {
    let mut v = ChainVerifier::default();
    for ev in store.audit_chain(tenant, 0, 1000).await.expect("chain") {
        v.check(&ev).expect("the chain verifies");
    }
    let head = store.audit_head(tenant).await.expect("head");
    v.check_head(head.as_ref().map(|(s, h)| (*s, h.as_str())))
        .expect("head");
    v.checked
}

/// Appended pending; a completion fills in status, bytes, duration and
/// outcome once, for that tenant's pending row only; the chain verifies
/// before and after.
async fn deferred_rows(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let (u, _) = new_tenant(store).await;
    let d = deferred(&t.id);
    let inline = audit_entry(&t.id, action::SECRET_SET);
    let events = store
        .append_audit(&[d.clone(), inline.clone()])
        .await
        .expect("append");
    assert!(events[0].pending && !events[1].pending);
    assert_eq!(verify(store, &t.id).await, 2);

    let done = AuditCompletion {
        tenant_id: t.id.clone(),
        id: d.id.clone(),
        status: Some(201),
        bytes_out: 512,
        bytes_in: 2048,
        duration_ms: 37,
        outcome: Outcome::Success,
    };
    let stray = [
        // Another tenant's, an inline row, a row that does not exist.
        AuditCompletion {
            tenant_id: u.id.clone(),
            ..done.clone()
        },
        AuditCompletion {
            id: inline.id.clone(),
            status: Some(500),
            ..done.clone()
        },
        AuditCompletion {
            id: miosa_core::AuditId::generate(),
            ..done.clone()
        },
    ];
    store.complete_audit(&stray).await.expect("complete");
    let chain = store.audit_chain(&t.id, 0, 10).await.expect("chain");
    assert!(chain[0].pending, "still pending");
    assert_eq!(
        chain[1].entry, events[1].entry,
        "the inline row is untouched"
    );

    store
        .complete_audit(std::slice::from_ref(&done))
        .await
        .expect("complete");
    let chain = store.audit_chain(&t.id, 0, 10).await.expect("chain");
    assert!(!chain[0].pending);
    let r = chain[0].entry.request.clone().expect("request");
    assert_eq!(
        (r.status, r.bytes_out, r.bytes_in, r.duration_ms),
        (Some(201), 512, 2048, 37)
    );
    assert_eq!(chain[0].entry.outcome, Outcome::Success);
    assert_eq!(verify(store, &t.id).await, 2, "completion keeps the chain");
    // A second completion changes nothing.
    let again = AuditCompletion {
        status: Some(599),
        outcome: Outcome::Error,
        ..done
    };
    store.complete_audit(&[again]).await.expect("complete");
    let chain = store.audit_chain(&t.id, 0, 10).await.expect("chain");
    assert_eq!(
        chain[0].entry.request.as_ref().map(|r| r.status),
        Some(Some(201))
    );
    store.complete_audit(&[]).await.expect("nothing to do");
}

fn completion(tenant: &TenantId, id: &miosa_core::AuditId, status: u16) -> AuditCompletion {
    AuditCompletion {
        tenant_id: tenant.clone(),
        id: id.clone(),
        status: Some(status),
        bytes_out: 1,
        bytes_in: 2,
        duration_ms: 3,
        outcome: Outcome::Success,
    }
}

/// `write_audit` appends and completes in one transaction: a batch
/// refused for a bad row applies none of its completions either.
async fn rows_and_completions_together(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let first = deferred(&t.id);
    store
        .write_audit(std::slice::from_ref(&first), &[])
        .await
        .expect("append alone");

    let ghost = TenantId::generate();
    let refused = store
        .write_audit(
            &[deferred(&t.id), deferred(&ghost)],
            &[completion(&t.id, &first.id, 200)],
        )
        .await
        .expect_err("a row of an unknown tenant");
    assert!(
        matches!(
            refused,
            miosa_store::StoreError::MissingReference { field: "tenant_id" }
        ),
        "{refused:?}"
    );
    let chain = store.audit_chain(&t.id, 0, 10).await.expect("chain");
    assert_eq!(chain.len(), 1, "no row of the refused batch");
    assert!(chain[0].pending, "nor its completion");

    let second = deferred(&t.id);
    let events = store
        .write_audit(
            std::slice::from_ref(&second),
            &[completion(&t.id, &first.id, 204)],
        )
        .await
        .expect("append and complete");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 2);
    let chain = store.audit_chain(&t.id, 0, 10).await.expect("chain");
    assert!(!chain[0].pending && chain[1].pending);
    assert_eq!(
        chain[0].entry.request.as_ref().and_then(|r| r.status),
        Some(204)
    );
    store
        .write_audit(&[], &[completion(&t.id, &second.id, 201)])
        .await
        .expect("complete alone");
    assert_eq!(verify(store, &t.id).await, 2);
    assert!(store
        .write_audit(&[], &[])
        .await
        .expect("nothing")
        .is_empty());
}

fn checkpoint(tenant: &TenantId, seq: i64, hash: &str, kek: &str) -> AuditCheckpoint {
    AuditCheckpoint {
        tenant_id: tenant.clone(),
        seq,
        hash: hash.to_owned(),
        time: now(),
        kek_id: kek.to_owned(),
        signature: vec![seq as u8; 64],
    }
}

/// Stored once per (tenant, seq); listed newest first and oldest first;
/// the heads beyond their newest checkpoint are what a round signs;
/// re-signing replaces key and signature.
async fn checkpoints(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let (u, _) = new_tenant(store).await;
    let heads = |all: Vec<(TenantId, i64, String)>| -> Vec<(i64, String)> {
        all.into_iter()
            .filter(|(tenant, ..)| *tenant == t.id)
            .map(|(_, s, h)| (s, h))
            .collect()
    };
    assert!(heads(
        store
            .audit_heads_to_checkpoint(10_000)
            .await
            .expect("heads")
    )
    .is_empty());
    let mut made = Vec::new();
    for i in 1..=5 {
        let ev = store
            .append_audit(&[audit_entry(&t.id, action::SECRET_SET)])
            .await
            .expect("append");
        let (seq, hash) = (ev[0].seq, ev[0].hash.clone());
        assert_eq!(
            heads(
                store
                    .audit_heads_to_checkpoint(10_000)
                    .await
                    .expect("heads")
            ),
            vec![(seq, hash.clone())],
            "the new head waits to be signed"
        );
        let cp = checkpoint(&t.id, seq, &hash, if i < 4 { "kek-a" } else { "kek-b" });
        store.put_audit_checkpoint(&cp).await.expect("put");
        // A second replica signing the same head: the first one stays.
        let twin = AuditCheckpoint {
            signature: vec![0xee; 64],
            ..cp.clone()
        };
        store.put_audit_checkpoint(&twin).await.expect("put");
        assert!(heads(
            store
                .audit_heads_to_checkpoint(10_000)
                .await
                .expect("heads")
        )
        .is_empty());
        made.push(cp);
    }
    store
        .put_audit_checkpoint(&checkpoint(&u.id, 1, &"0".repeat(64), "kek-a"))
        .await
        .expect("another tenant");

    let newest_first: Vec<AuditCheckpoint> = made.iter().rev().cloned().collect();
    let pages = all_pages(
        2,
        |c: &AuditCheckpoint| c.seq.to_string(),
        async |p: &PageRequest| store.list_audit_checkpoints(&t.id, p).await,
    )
    .await;
    assert_eq!(pages.concat(), newest_first);
    let after = store
        .audit_checkpoints_after(&t.id, made[1].seq, 10)
        .await
        .expect("after");
    assert_eq!(after, made[2..].to_vec());

    let stale: Vec<AuditCheckpoint> = store
        .audit_checkpoints_not_under("kek-b", 10_000)
        .await
        .expect("not under")
        .into_iter()
        .filter(|c| c.tenant_id == t.id)
        .collect();
    assert_eq!(stale, made[..3].to_vec());
    let resigned: Vec<AuditCheckpoint> = stale
        .into_iter()
        .map(|c| AuditCheckpoint {
            kek_id: "kek-b".into(),
            signature: vec![0xbb; 64],
            ..c
        })
        .collect();
    store
        .resign_audit_checkpoints(&resigned)
        .await
        .expect("resign");
    assert!(store
        .audit_checkpoints_not_under("kek-b", 10_000)
        .await
        .expect("not under")
        .iter()
        .all(|c| c.tenant_id != t.id));
    let all = store
        .audit_checkpoints_after(&t.id, 0, 10)
        .await
        .expect("after");
    assert_eq!(all[..3], resigned[..]);
}

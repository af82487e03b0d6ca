//! The audit log: per-tenant hash chains that verify, exact round trips,
//! atomic appends, filters and paging, tenancy, and appends racing each
//! other.

use miosa_core::audit::{
    action, AuditCredential, AuditRequest, ChainVerifier, Outcome, GENESIS_HASH,
};
use miosa_core::{
    ApiKeyId, AuditEntry, AuditEvent, AuditId, PageRequest, SandboxId, SecretId, SecretScope,
    TenantId, WorkspaceId,
};
use miosa_store::{AuditFilter, Store};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::fixtures::{all_pages, assert_conflict, assert_missing, audit_entry, new_tenant};

/// The whole audit story (but the race: [`concurrent_audit`]).
pub async fn audit(store: &dyn Store) {
    chains(store).await;
    round_trips(store).await;
    refusals(store).await;
    filters_and_paging(store).await;
}

async fn append(store: &dyn Store, entries: &[AuditEntry]) -> Vec<AuditEvent> {
    let events = store.append_audit(entries).await.expect("append_audit");
    assert_eq!(events.len(), entries.len(), "one event per entry");
    for (ev, entry) in events.iter().zip(entries) {
        assert_eq!(ev.entry.id, entry.id, "events come in the entries' order");
        assert_eq!(ev.hash, ev.entry.chain_hash(ev.seq, &ev.prev_hash));
    }
    events
}

/// The tenant's whole chain, read in pages of 3 by `seq`.
/// Also checks that the stored head is the chain's last row.
pub(crate) async fn chain_of(store: &dyn Store, tenant: &TenantId) -> Vec<AuditEvent> {
    let mut all: Vec<AuditEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq);
        let page = store
            .audit_chain(tenant, after, 3)
            .await
            .expect("audit_chain");
        assert!(page.len() <= 3, "at most `limit` rows");
        if page.is_empty() {
            let head = store.audit_head(tenant).await.expect("audit_head");
            assert_eq!(
                head,
                all.last().map(|e| (e.seq, e.hash.clone())),
                "the head is the last row"
            );
            return all;
        }
        assert!(page.iter().all(|e| e.entry.tenant_id == *tenant));
        all.extend(page);
    }
}

/// Checks a whole chain: gapless from 1, linked, hashes recomputed.
pub(crate) fn verify(chain: &[AuditEvent]) {
    let mut v = ChainVerifier::default();
    for ev in chain {
        if let Err(broken) = v.check(ev) {
            panic!("the chain breaks: {broken:?}");
        }
    }
    assert_eq!(v.checked, chain.len() as u64);
}

async fn list_all(store: &dyn Store, tenant: &TenantId, filter: &AuditFilter) -> Vec<AuditEvent> {
    let page = PageRequest {
        limit: 500,
        after: None,
    };
    let page = store
        .list_audit(tenant, filter, &page)
        .await
        .expect("list_audit");
    assert_eq!(page.next_cursor, None, "everything fits on one page");
    page.items
}

/// Batches mixing two tenants continue each tenant's chain; the rows read
/// back are exactly the events returned, and they verify.
async fn chains(store: &dyn Store) {
    let (a, _) = new_tenant(store).await;
    let (b, _) = new_tenant(store).await;
    let e = |t: &TenantId| audit_entry(t, action::EGRESS_REQUEST);

    let first = append(store, &[e(&a.id), e(&b.id), e(&a.id)]).await;
    let seqs: Vec<i64> = first.iter().map(|ev| ev.seq).collect();
    assert_eq!(seqs, vec![1, 1, 2]);
    assert_eq!(first[0].prev_hash, GENESIS_HASH);
    assert_eq!(first[1].prev_hash, GENESIS_HASH);
    assert_eq!(first[2].prev_hash, first[0].hash);
    assert_eq!(
        store.append_audit(&[]).await.expect("append_audit"),
        Vec::new()
    );
    let second = append(store, &[e(&b.id), e(&b.id)]).await;
    assert_eq!((second[0].seq, second[1].seq), (2, 3));
    assert_eq!(second[0].prev_hash, first[1].hash);
    let third = append(store, &[e(&a.id), e(&b.id), e(&a.id)]).await;
    assert_eq!(
        third.iter().map(|ev| ev.seq).collect::<Vec<_>>(),
        vec![3, 4, 4]
    );

    let chain_a = chain_of(store, &a.id).await;
    assert_eq!(
        chain_a,
        vec![
            first[0].clone(),
            first[2].clone(),
            third[0].clone(),
            third[2].clone()
        ]
    );
    let chain_b = chain_of(store, &b.id).await;
    assert_eq!(
        chain_b,
        vec![
            first[1].clone(),
            second[0].clone(),
            second[1].clone(),
            third[1].clone()
        ]
    );
    verify(&chain_a);
    verify(&chain_b);

    let page = store.audit_chain(&a.id, 1, 2).await.expect("audit_chain");
    assert_eq!(page, chain_a[1..3].to_vec());
    assert_eq!(
        store.audit_chain(&a.id, 4, 10).await.expect("audit_chain"),
        Vec::new()
    );
    assert_eq!(
        store.audit_chain(&a.id, 0, 0).await.expect("audit_chain"),
        Vec::new()
    );
    assert_eq!(
        store
            .audit_chain(&TenantId::generate(), 0, 10)
            .await
            .expect("audit_chain"),
        Vec::new()
    );
}

/// Every field set or empty, odd text, times at other offsets, before 1970
/// and far ahead, come back exactly and still hash the same; a time finer
/// than microseconds is truncated before hashing.
async fn round_trips(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let full = AuditEntry {
        id: AuditId::generate(),
        tenant_id: t.id.clone(),
        time: datetime!(2001-02-03 04:05:06.123_456 +05:30),
        action: action::EGRESS_REQUEST.to_owned(),
        actor: Some("key_01jdq3x5m8v2k7f4c9n6r1w0ab".to_owned()),
        target: Some("sec 'quoted\" Ω".to_owned()),
        sandbox_id: Some(SandboxId::generate()),
        workspace_id: Some(WorkspaceId::generate()),
        owner_user_id: Some("owner Ω 1".to_owned()),
        external_user_id: Some("dr_smith@clinic1.example".to_owned()),
        external_workspace_id: Some("clinic 'one' ✓".to_owned()),
        external_project_id: Some("proj \"x\" \\ 日本語".to_owned()),
        request: Some(AuditRequest {
            method: "POST".to_owned(),
            host: "api.openai.com".to_owned(),
            path: "/v1/chat/completions ✓".to_owned(),
            status: Some(u16::MAX),
            bytes_out: i64::MAX as u64,
            bytes_in: 0,
            duration_ms: 1_234_567,
        }),
        credential: Some(AuditCredential {
            secret_id: SecretId::generate(),
            name: "openai-key_1.v2".to_owned(),
            scope: SecretScope::ExternalUser,
        }),
        outcome: Outcome::Success,
        created_by_key_id: Some(ApiKeyId::generate()),
        deferred: false,
    };
    let mut entries = vec![full.clone()];
    // A denied request without a response, under each scope.
    for scope in SecretScope::PRECEDENCE {
        entries.push(AuditEntry {
            id: AuditId::generate(),
            request: Some(AuditRequest {
                status: None,
                bytes_in: u64::from(u32::MAX) + 1,
                ..full.request.clone().expect("set above")
            }),
            credential: Some(AuditCredential {
                scope,
                ..full.credential.clone().expect("set above")
            }),
            outcome: Outcome::Denied,
            ..full.clone()
        });
    }
    let bare = |time: OffsetDateTime, outcome: Outcome| AuditEntry {
        time,
        outcome,
        ..audit_entry(&t.id, "")
    };
    entries.push(bare(
        datetime!(1969-12-31 23:59:59.999_999 UTC),
        Outcome::Error,
    ));
    entries.push(bare(
        datetime!(9999-12-31 23:59:59.999_999 +08:00),
        Outcome::Success,
    ));
    entries.push(AuditEntry {
        id: AuditId::generate(),
        request: None,
        ..full.clone()
    });
    entries.push(AuditEntry {
        credential: None,
        ..bare(
            datetime!(1900-01-01 00:00:00.000_001 +14:00),
            Outcome::Denied,
        )
    });
    let events = append(store, &entries).await;
    for (ev, entry) in events.iter().zip(&entries) {
        assert_eq!(&ev.entry, entry, "microsecond times are kept as given");
    }
    let chain = chain_of(store, &t.id).await;
    assert_eq!(chain, events);
    verify(&chain);
    let mut listed = list_all(store, &t.id, &AuditFilter::default()).await;
    listed.reverse();
    assert_eq!(listed, events);

    // Nanoseconds are cut to microseconds (towards the past) before hashing,
    // so what is stored verifies.
    let fine = [
        (
            datetime!(2020-01-01 00:00:00.123_456_789 UTC),
            datetime!(2020-01-01 00:00:00.123_456 UTC),
        ),
        (
            datetime!(1969-12-31 23:59:59.999_999_999 UTC),
            datetime!(1969-12-31 23:59:59.999_999 UTC),
        ),
        (
            datetime!(1985-06-07 08:09:10.000_000_5 +02:00),
            datetime!(1985-06-07 08:09:10 +02:00),
        ),
    ];
    let entries: Vec<AuditEntry> = fine
        .iter()
        .map(|(time, _)| bare(*time, Outcome::Success))
        .collect();
    let events = append(store, &entries).await;
    for (ev, (_, cut)) in events.iter().zip(fine) {
        assert_eq!(ev.entry.time, cut);
    }
    let chain = chain_of(store, &t.id).await;
    assert_eq!(&chain[chain.len() - 3..], &events[..]);
    verify(&chain);
}

/// A batch is all or nothing: an unknown tenant or a duplicate ID refuses
/// it and no chain moves.
async fn refusals(store: &dyn Store) {
    let (a, _) = new_tenant(store).await;
    let (b, _) = new_tenant(store).await;
    let e = |t: &TenantId| audit_entry(t, action::SECRET_SET);
    let kept = append(store, &[e(&a.id), e(&b.id)]).await;

    let orphan = e(&TenantId::generate());
    assert_missing(
        store.append_audit(&[e(&a.id), e(&b.id), orphan]).await,
        "tenant_id",
    );
    let dup = AuditEntry {
        tenant_id: a.id.clone(),
        ..kept[1].entry.clone()
    };
    assert_conflict(
        store.append_audit(&[e(&b.id), e(&a.id), dup]).await,
        "audit_event",
        "id",
    );
    let twice = e(&b.id);
    assert_conflict(
        store.append_audit(&[twice.clone(), twice]).await,
        "audit_event",
        "id",
    );
    assert_eq!(chain_of(store, &a.id).await, vec![kept[0].clone()]);
    assert_eq!(chain_of(store, &b.id).await, vec![kept[1].clone()]);

    // The chains go on from where they were.
    let next = append(store, &[e(&a.id), e(&b.id)]).await;
    assert_eq!((next[0].seq, next[1].seq), (2, 2));
    verify(&chain_of(store, &a.id).await);
    verify(&chain_of(store, &b.id).await);
}

/// (external user, external workspace, external project, sandbox, action).
type Spec<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a SandboxId>,
    &'a str,
);

/// Each filter alone and together, `since` inclusive and `until` exclusive
/// on `time` (which here runs against ID order), newest first by ID, paging
/// by cursor, and nothing of another tenant.
async fn filters_and_paging(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let (other, _) = new_tenant(store).await;
    let (sbx1, sbx2) = (SandboxId::generate(), SandboxId::generate());
    let specs: [Spec<'_>; 8] = [
        (
            Some("u1"),
            Some("w1"),
            Some("p1"),
            Some(&sbx1),
            action::EGRESS_REQUEST,
        ),
        (
            Some("u1"),
            Some("w1"),
            Some("p2"),
            Some(&sbx2),
            action::EGRESS_REQUEST,
        ),
        (
            Some("u2"),
            Some("w1"),
            Some("p1"),
            Some(&sbx1),
            action::SECRET_SET,
        ),
        (Some("u2"), Some("w2"), Some("p2"), None, action::SECRET_SET),
        (None, None, None, None, action::SANDBOX_CREATED),
        (
            Some("u1"),
            Some("w2"),
            Some("p1"),
            Some(&sbx2),
            action::EGRESS_REQUEST,
        ),
        (
            Some("U1"),
            Some("w1"),
            Some("p1"),
            Some(&sbx1),
            action::EGRESS_REQUEST,
        ),
        (
            Some("u3"),
            Some("w2"),
            None,
            Some(&sbx1),
            action::SANDBOX_DESTROYED,
        ),
    ];
    let t0 = datetime!(2030-01-01 00:00:00.000_001 UTC);
    // Later entries (larger IDs) happened earlier.
    let time_of = |i: usize| t0 + Duration::minutes(8 - i as i64);
    let make = |t: &TenantId, i: usize| {
        let (user, ws, project, sbx, act) = specs[i];
        AuditEntry {
            time: time_of(i),
            external_user_id: user.map(str::to_owned),
            external_workspace_id: ws.map(str::to_owned),
            external_project_id: project.map(str::to_owned),
            sandbox_id: sbx.cloned(),
            ..audit_entry(t, act)
        }
    };
    let entries: Vec<AuditEntry> = (0..specs.len()).map(|i| make(&t.id, i)).collect();
    let mut all = append(store, &entries[..4]).await;
    all.extend(append(store, &entries[4..]).await);
    let theirs = append(store, &[make(&other.id, 0)]).await;

    let s = |v: &str| Some(v.to_owned());
    let f = AuditFilter::default;
    let cases: Vec<(&str, AuditFilter, Vec<usize>)> = vec![
        ("none", f(), vec![0, 1, 2, 3, 4, 5, 6, 7]),
        (
            "external user",
            AuditFilter {
                external_user_id: s("u1"),
                ..f()
            },
            vec![0, 1, 5],
        ),
        (
            "external workspace",
            AuditFilter {
                external_workspace_id: s("w1"),
                ..f()
            },
            vec![0, 1, 2, 6],
        ),
        (
            "external project",
            AuditFilter {
                external_project_id: s("p1"),
                ..f()
            },
            vec![0, 2, 5, 6],
        ),
        (
            "sandbox",
            AuditFilter {
                sandbox_id: Some(sbx1.clone()),
                ..f()
            },
            vec![0, 2, 6, 7],
        ),
        (
            "action",
            AuditFilter {
                action: s(action::EGRESS_REQUEST),
                ..f()
            },
            vec![0, 1, 5, 6],
        ),
        (
            "action is case-sensitive",
            AuditFilter {
                action: s("EGRESS.request"),
                ..f()
            },
            vec![],
        ),
        (
            "three together",
            AuditFilter {
                external_user_id: s("u1"),
                action: s(action::EGRESS_REQUEST),
                sandbox_id: Some(sbx2.clone()),
                ..f()
            },
            vec![1, 5],
        ),
        (
            "all five",
            AuditFilter {
                external_user_id: s("u1"),
                external_workspace_id: s("w1"),
                external_project_id: s("p1"),
                sandbox_id: Some(sbx1.clone()),
                action: s(action::EGRESS_REQUEST),
                ..f()
            },
            vec![0],
        ),
        (
            "since is inclusive",
            AuditFilter {
                since: Some(time_of(5)),
                ..f()
            },
            vec![0, 1, 2, 3, 4, 5],
        ),
        (
            "until is exclusive",
            AuditFilter {
                until: Some(time_of(2)),
                ..f()
            },
            vec![3, 4, 5, 6, 7],
        ),
        (
            "since and until",
            AuditFilter {
                since: Some(time_of(5)),
                until: Some(time_of(2)),
                ..f()
            },
            vec![3, 4, 5],
        ),
        (
            "an empty window",
            AuditFilter {
                since: Some(time_of(4)),
                until: Some(time_of(4)),
                ..f()
            },
            vec![],
        ),
        (
            "a microsecond after",
            AuditFilter {
                since: Some(time_of(4) + Duration::microseconds(1)),
                ..f()
            },
            vec![0, 1, 2, 3],
        ),
        (
            "user and until",
            AuditFilter {
                external_user_id: s("u1"),
                until: Some(time_of(1)),
                ..f()
            },
            vec![5],
        ),
    ];
    for (label, filter, idx) in cases {
        let want: Vec<AuditEvent> = idx.iter().rev().map(|&i| all[i].clone()).collect();
        assert_eq!(list_all(store, &t.id, &filter).await, want, "{label}");
    }
    let everything = AuditFilter {
        external_user_id: s("u1"),
        external_workspace_id: s("w1"),
        external_project_id: s("p1"),
        sandbox_id: Some(sbx1.clone()),
        action: s(action::EGRESS_REQUEST),
        ..f()
    };
    assert_eq!(list_all(store, &other.id, &everything).await, theirs);
    assert_eq!(
        list_all(store, &other.id, &AuditFilter::default()).await,
        theirs,
        "each tenant lists its own rows"
    );

    let newest_first: Vec<AuditEvent> = all.iter().rev().cloned().collect();
    let pages = all_pages(
        3,
        |e: &AuditEvent| e.entry.id.to_string(),
        async |p| store.list_audit(&t.id, &AuditFilter::default(), p).await,
    )
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 2]
    );
    assert_eq!(pages.concat(), newest_first);
    for (filter, want) in [
        (
            AuditFilter {
                sandbox_id: Some(sbx1.clone()),
                ..f()
            },
            vec![vec![7, 6], vec![2, 0]],
        ),
        (
            AuditFilter {
                since: Some(time_of(5)),
                ..f()
            },
            vec![vec![5, 4], vec![3, 2], vec![1, 0]],
        ),
    ] {
        let pages = all_pages(
            2,
            |e: &AuditEvent| e.entry.id.to_string(),
            async |p| store.list_audit(&t.id, &filter, p).await,
        )
        .await;
        let want: Vec<Vec<AuditEvent>> = want
            .iter()
            .map(|p| p.iter().map(|&i| all[i].clone()).collect())
            .collect();
        assert_eq!(pages, want, "{filter:?}");
    }
}

/// Eight writers append 25 batches each, every batch holding rows of two
/// tenants (in one order for half the writers, the other order for the
/// rest): each chain ends up gapless and verifying, with exactly the rows
/// the writers were given back.
pub async fn concurrent_audit(store: &dyn Store) {
    audit_race(store, store).await;
}

/// [`concurrent_audit`] with the writers split between two stores on the
/// same database, as two replicas (or processes) would be.
pub async fn audit_race(one: &dyn Store, other: &dyn Store) {
    const WRITERS: usize = 8;
    const BATCHES: usize = 25;
    let (a, _) = new_tenant(one).await;
    let (b, _) = new_tenant(one).await;
    let writer = |w: usize| {
        let (x, y) = if w < WRITERS / 2 {
            (&a.id, &b.id)
        } else {
            (&b.id, &a.id)
        };
        let store = [one, other][w % 2];
        async move {
            let mut got = Vec::new();
            for _ in 0..BATCHES {
                let batch = [x, y, x, y].map(|t| audit_entry(t, action::EGRESS_REQUEST));
                let events = append(store, &batch).await;
                assert_eq!(
                    events[2].seq,
                    events[0].seq + 1,
                    "a batch's rows are adjacent"
                );
                assert_eq!(events[2].prev_hash, events[0].hash);
                assert_eq!(events[3].prev_hash, events[1].hash);
                got.extend(events);
            }
            got
        }
    };
    let results = tokio::join!(
        writer(0),
        writer(1),
        writer(2),
        writer(3),
        writer(4),
        writer(5),
        writer(6),
        writer(7)
    );
    let returned: Vec<AuditEvent> = [
        results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
    ]
    .concat();
    for t in [&a.id, &b.id] {
        let chain = chain_of(other, t).await;
        assert_eq!(chain.len(), WRITERS * BATCHES * 2);
        verify(&chain);
        let mut mine: Vec<AuditEvent> = returned
            .iter()
            .filter(|e| e.entry.tenant_id == *t)
            .cloned()
            .collect();
        mine.sort_by_key(|e| e.seq);
        assert_eq!(chain, mine, "the chain holds exactly what was returned");
    }
}

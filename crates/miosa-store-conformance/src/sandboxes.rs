//! Sandboxes: exact round trips, live-name uniqueness, tenancy, filters,
//! paging, patches, compare-and-set transitions, the reconciler's and the
//! reaper's queries.
//!
//! `sandboxes_in_status` and `expired_sandboxes` see every tenant but only
//! one node; areas may share a store, so their checks ask about nodes of
//! their own, with sandboxes on two of them, and get exact answers.

use std::collections::BTreeMap;

use miosa_core::time_util::now;
use miosa_core::{
    ApiKeyId, Labels, OnTimeout, PageRequest, Sandbox, SandboxId, SandboxStatus, TenantId,
    WorkspaceId,
};
use miosa_store::{SandboxFilter, SandboxPatch, Store, StoreError};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::fixtures::{
    all_pages, assert_conflict, assert_missing, new_sandbox, new_tenant, new_workspace, sandbox,
    unique, NODE,
};

/// The whole sandbox story.
pub async fn sandboxes(store: &dyn Store) {
    round_trips(store).await;
    names(store).await;
    isolation(store).await;
    filters_and_paging(store).await;
    updates(store).await;
    transitions(store).await;
    reconciler_queries(store).await;
    reaper_queries(store).await;
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn named(mut s: Sandbox, name: &str) -> Sandbox {
    s.name = Some(name.to_owned());
    s
}

async fn get(store: &dyn Store, s: &Sandbox) -> Option<Sandbox> {
    store
        .get_sandbox(&s.tenant_id, &s.id)
        .await
        .expect("get_sandbox")
}

async fn by_name(
    store: &dyn Store,
    tenant: &TenantId,
    ws: Option<&WorkspaceId>,
    name: &str,
) -> Option<Sandbox> {
    store
        .get_sandbox_by_name(tenant, ws, name)
        .await
        .expect("get_sandbox_by_name")
}

async fn destroy(store: &dyn Store, s: &Sandbox, at: OffsetDateTime) -> Sandbox {
    let changed = store
        .transition_sandbox(
            &s.tenant_id,
            &s.id,
            &SandboxStatus::ALL,
            SandboxStatus::Destroyed,
            at,
        )
        .await
        .expect("transition_sandbox");
    assert!(changed, "destroying {} changes it", s.id);
    Sandbox {
        status: SandboxStatus::Destroyed,
        destroyed_at: Some(at),
        ..s.clone()
    }
}

async fn list_all(store: &dyn Store, tenant: &TenantId, filter: &SandboxFilter) -> Vec<Sandbox> {
    let page = PageRequest {
        limit: 500,
        after: None,
    };
    let page = store
        .list_sandboxes(tenant, filter, &page)
        .await
        .expect("list_sandboxes");
    assert_eq!(page.next_cursor, None, "everything fits on one page");
    page.items
}

/// Every field set, every optional field empty, each status and timeout
/// action, and the references a sandbox makes.
async fn round_trips(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let ws = new_workspace(store, &t.id).await;

    let full = Sandbox {
        id: SandboxId::generate(),
        tenant_id: t.id.clone(),
        workspace_id: Some(ws.id.clone()),
        name: Some("full-1".to_owned()),
        status: SandboxStatus::Destroyed,
        node_id: "node Ω/1 'quoted\"".to_owned(),
        template: "python-3.12 ✓".to_owned(),
        labels: Labels {
            owner_user_id: Some("owner Ω 1".to_owned()),
            external_user_id: Some("User-ÄÖ".to_owned()),
            external_workspace_id: Some("ext ws/1".to_owned()),
            external_project_id: Some("proj.'quoted\"".to_owned()),
        },
        metadata: map(&[
            ("plan", "pro"),
            ("team.name", "Ünïcödé — 日本語 🚀"),
            ("a-b_c.d", ""),
            ("quote", "it's \"fine\" \\ ok"),
            ("number", "42"),
            ("Case", "Sensitive"),
        ]),
        // Not exactly representable: must come back bit for bit.
        cpu: 0.1 + 0.2,
        memory_mb: u32::MAX,
        disk_mb: Some(u32::MAX),
        timeout_seconds: u32::MAX,
        on_timeout: OnTimeout::Pause,
        created_at: datetime!(2001-02-03 04:05:06.123_456 +05:30),
        expires_at: datetime!(2999-12-31 23:59:59.999_999 UTC),
        destroyed_at: Some(datetime!(1969-12-31 23:59:59.999_999 -08:00)),
        created_by_key_id: Some(ApiKeyId::generate()),
        created_by_workspace_key: true,
    };
    let full = new_sandbox(store, full).await;
    assert_eq!(get(store, &full).await, Some(full.clone()));
    assert_eq!(
        by_name(store, &t.id, Some(&ws.id), "full-1").await,
        None,
        "lookup by name sees live sandboxes only"
    );

    let bare = Sandbox {
        id: SandboxId::generate(),
        tenant_id: t.id.clone(),
        workspace_id: None,
        name: None,
        status: SandboxStatus::Creating,
        node_id: String::new(),
        template: String::new(),
        labels: Labels::default(),
        metadata: BTreeMap::new(),
        cpu: 0.5,
        memory_mb: 0,
        disk_mb: None,
        timeout_seconds: 0,
        on_timeout: OnTimeout::Destroy,
        created_at: datetime!(2024-05-06 07:08:09.000_001 UTC),
        expires_at: datetime!(2024-05-06 07:08:09.000_001 UTC),
        destroyed_at: None,
        created_by_key_id: None,
        created_by_workspace_key: false,
    };
    let bare = new_sandbox(store, bare).await;
    assert_eq!(get(store, &bare).await, Some(bare.clone()));

    for status in SandboxStatus::ALL {
        for on_timeout in [OnTimeout::Destroy, OnTimeout::Pause] {
            let s = Sandbox {
                status,
                on_timeout,
                cpu: 2.0,
                ..sandbox(&t.id, Some(&ws.id))
            };
            let s = new_sandbox(store, s).await;
            assert_eq!(get(store, &s).await, Some(s.clone()), "{status:?}");
        }
    }

    assert_eq!(
        store
            .get_sandbox(&t.id, &SandboxId::generate())
            .await
            .expect("get"),
        None
    );
    assert_conflict(
        store
            .create_sandbox(&Sandbox {
                name: None,
                ..bare.clone()
            })
            .await,
        "sandbox",
        "id",
    );

    // A sandbox must name a workspace of its own tenant, and a tenant.
    let (other, _) = new_tenant(store).await;
    let other_ws = new_workspace(store, &other.id).await;
    let foreign = sandbox(&t.id, Some(&other_ws.id));
    assert_missing(store.create_sandbox(&foreign).await, "workspace_id");
    assert_eq!(get(store, &foreign).await, None);
    let dangling = sandbox(&t.id, Some(&WorkspaceId::generate()));
    assert_missing(store.create_sandbox(&dangling).await, "workspace_id");
    let orphan = sandbox(&TenantId::generate(), None);
    assert_missing(store.create_sandbox(&orphan).await, "tenant_id");
}

/// Names are unique among the live sandboxes of a workspace (or of the
/// tenant, without one), and free again once their sandbox is destroyed.
async fn names(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let ws1 = new_workspace(store, &t.id).await;
    let ws2 = new_workspace(store, &t.id).await;
    let (u, _) = new_tenant(store).await;
    let u_ws = new_workspace(store, &u.id).await;

    let web = new_sandbox(store, named(sandbox(&t.id, Some(&ws1.id)), "web")).await;
    let dup = named(sandbox(&t.id, Some(&ws1.id)), "web");
    assert_conflict(store.create_sandbox(&dup).await, "sandbox", "name");
    assert_eq!(
        get(store, &dup).await,
        None,
        "a refused create writes nothing"
    );

    // The same name elsewhere is fine: another workspace, the tenant level,
    // another tenant's workspace and tenant level.
    let web2 = new_sandbox(store, named(sandbox(&t.id, Some(&ws2.id)), "web")).await;
    let web_t = new_sandbox(store, named(sandbox(&t.id, None), "web")).await;
    let web_u = new_sandbox(store, named(sandbox(&u.id, Some(&u_ws.id)), "web")).await;
    let web_ut = new_sandbox(store, named(sandbox(&u.id, None), "web")).await;
    let dup_t = named(sandbox(&t.id, None), "web");
    assert_conflict(store.create_sandbox(&dup_t).await, "sandbox", "name");
    assert_eq!(get(store, &dup_t).await, None);

    assert_eq!(
        by_name(store, &t.id, Some(&ws1.id), "web").await,
        Some(web.clone())
    );
    assert_eq!(
        by_name(store, &t.id, Some(&ws2.id), "web").await,
        Some(web2.clone())
    );
    assert_eq!(
        by_name(store, &t.id, None, "web").await,
        Some(web_t.clone())
    );
    assert_eq!(
        by_name(store, &u.id, Some(&u_ws.id), "web").await,
        Some(web_u.clone())
    );
    assert_eq!(
        by_name(store, &u.id, None, "web").await,
        Some(web_ut.clone())
    );
    assert_eq!(by_name(store, &t.id, Some(&ws1.id), "nope").await, None);

    // Unnamed sandboxes never clash.
    for ws in [Some(&ws1.id), None] {
        for _ in 0..2 {
            let mut s = sandbox(&t.id, ws);
            s.name = None;
            new_sandbox(store, s).await;
        }
    }

    // Destroying frees the name, again and again; the old rows stay.
    let at = now();
    let gone = destroy(store, &web, at).await;
    assert_eq!(by_name(store, &t.id, Some(&ws1.id), "web").await, None);
    let again = new_sandbox(store, named(sandbox(&t.id, Some(&ws1.id)), "web")).await;
    assert_eq!(
        by_name(store, &t.id, Some(&ws1.id), "web").await,
        Some(again.clone())
    );
    let gone_again = destroy(store, &again, now()).await;
    let third = new_sandbox(store, named(sandbox(&t.id, Some(&ws1.id)), "web")).await;
    assert_eq!(
        by_name(store, &t.id, Some(&ws1.id), "web").await,
        Some(third)
    );
    assert_eq!(get(store, &web).await, Some(gone));
    assert_eq!(get(store, &again).await, Some(gone_again));

    destroy(store, &web_t, now()).await;
    let web_t2 = new_sandbox(store, named(sandbox(&t.id, None), "web")).await;
    assert_eq!(by_name(store, &t.id, None, "web").await, Some(web_t2));
    assert_eq!(
        by_name(store, &t.id, Some(&ws2.id), "web").await,
        Some(web2),
        "other workspaces are untouched"
    );
}

/// Nothing of tenant B can be read or changed through tenant A.
async fn isolation(store: &dyn Store) {
    let (a, _) = new_tenant(store).await;
    let a_ws = new_workspace(store, &a.id).await;
    let (b, _) = new_tenant(store).await;
    let b_ws = new_workspace(store, &b.id).await;

    let label = |s: Sandbox| Sandbox {
        labels: Labels {
            owner_user_id: Some("o".to_owned()),
            external_user_id: Some("u".to_owned()),
            external_workspace_id: Some("w".to_owned()),
            external_project_id: Some("p".to_owned()),
        },
        metadata: map(&[("k", "v")]),
        ..s
    };
    let a_ws_box = new_sandbox(store, label(named(sandbox(&a.id, Some(&a_ws.id)), "same"))).await;
    let a_box = new_sandbox(store, label(named(sandbox(&a.id, None), "same"))).await;
    let b_ws_box = new_sandbox(store, label(named(sandbox(&b.id, Some(&b_ws.id)), "same"))).await;
    let b_box = new_sandbox(store, label(named(sandbox(&b.id, None), "same"))).await;
    let b_boxes = [b_ws_box.clone(), b_box.clone()];

    for s in &b_boxes {
        assert_eq!(
            store.get_sandbox(&a.id, &s.id).await.expect("get"),
            None,
            "get reaches no other tenant"
        );
    }
    assert_eq!(by_name(store, &a.id, Some(&b_ws.id), "same").await, None);
    assert_eq!(
        by_name(store, &a.id, None, "same").await,
        Some(a_box.clone())
    );

    let mut own = vec![a_ws_box.clone(), a_box.clone()];
    own.sort_by(|x, y| y.id.cmp(&x.id));
    assert_eq!(list_all(store, &a.id, &SandboxFilter::default()).await, own);
    let same_labels = SandboxFilter {
        external_user_id: Some("u".to_owned()),
        external_workspace_id: Some("w".to_owned()),
        external_project_id: Some("p".to_owned()),
        metadata: vec![("k".to_owned(), "v".to_owned())],
        ..SandboxFilter::default()
    };
    assert_eq!(list_all(store, &a.id, &same_labels).await, own);
    let in_b_ws = SandboxFilter {
        workspace_id: Some(b_ws.id.clone()),
        ..SandboxFilter::default()
    };
    assert_eq!(
        list_all(store, &a.id, &in_b_ws).await,
        Vec::new(),
        "a workspace filter cannot reach into another tenant"
    );

    let rename = SandboxPatch {
        name: Some(Some("stolen".to_owned())),
        metadata: Some(map(&[("owned", "yes")])),
        timeout_seconds: Some(1),
        expires_at: Some(now()),
    };
    for s in &b_boxes {
        assert_eq!(
            store
                .update_sandbox(&a.id, &s.id, &rename)
                .await
                .expect("update"),
            None,
            "update reaches no other tenant"
        );
        let changed = store
            .transition_sandbox(
                &a.id,
                &s.id,
                &SandboxStatus::ALL,
                SandboxStatus::Destroyed,
                now(),
            )
            .await
            .expect("transition");
        assert!(!changed, "transition reaches no other tenant");
        assert_eq!(get(store, s).await, Some(s.clone()), "B is untouched");
    }
}

/// Every filter alone and together, live-only by default, paging newest
/// first.
async fn filters_and_paging(store: &dyn Store) {
    use SandboxStatus::{Creating, Destroyed, Error, Paused, Running};
    let (t, _) = new_tenant(store).await;
    let ws1 = new_workspace(store, &t.id).await;
    let ws2 = new_workspace(store, &t.id).await;

    let make = |ws: Option<&WorkspaceId>,
                user: Option<&str>,
                ext_ws: Option<&str>,
                project: Option<&str>,
                status: SandboxStatus,
                meta: &[(&str, &str)]| Sandbox {
        status,
        labels: Labels {
            owner_user_id: user.map(|u| format!("owner-{u}")),
            external_user_id: user.map(str::to_owned),
            external_workspace_id: ext_ws.map(str::to_owned),
            external_project_id: project.map(str::to_owned),
        },
        metadata: map(meta),
        ..sandbox(&t.id, ws)
    };
    let (w1, w2) = (Some(&ws1.id), Some(&ws2.id));
    let specs = vec![
        // 0
        make(
            w1,
            Some("u1"),
            Some("x1"),
            Some("p1"),
            Running,
            &[("env", "prod"), ("team", "a")],
        ),
        // 1
        make(
            w1,
            Some("u1"),
            Some("x1"),
            Some("p2"),
            Running,
            &[("env", "prod"), ("team", "b")],
        ),
        // 2
        make(
            w2,
            Some("u2"),
            Some("x1"),
            Some("p1"),
            Creating,
            &[("env", "dev"), ("team", "a"), ("mark", "✓ ü")],
        ),
        // 3
        make(
            w2,
            Some("u2"),
            Some("x2"),
            Some("p2"),
            Error,
            &[("env", "prod")],
        ),
        // 4
        make(None, Some("u1"), None, None, Running, &[]),
        // 5
        make(
            w1,
            None,
            None,
            None,
            Running,
            &[("env", "prod"), ("team.name", "x"), ("team", "x")],
        ),
        // 6
        make(
            w1,
            Some("u3"),
            Some("x2"),
            Some("p1"),
            Paused,
            &[("env", "prod"), ("team", "a")],
        ),
        // 7: destroyed below; matches many filters but is listed only
        // when asked for by status.
        make(
            w1,
            Some("u1"),
            Some("x1"),
            Some("p1"),
            Running,
            &[("env", "prod"), ("team", "a")],
        ),
    ];
    let mut all = Vec::new();
    for s in specs {
        all.push(new_sandbox(store, s).await);
    }
    all[7] = destroy(store, &all[7], now()).await;

    // Another tenant with the same labels must never show up.
    let (other, _) = new_tenant(store).await;
    let mut noise = sandbox(&other.id, None);
    noise.labels = all[0].labels.clone();
    noise.metadata = all[0].metadata.clone();
    new_sandbox(store, noise).await;

    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let s = |v: &str| Some(v.to_owned());
    let f = SandboxFilter::default;
    let cases: Vec<(&str, SandboxFilter, Vec<usize>)> = vec![
        ("none: live only", f(), vec![0, 1, 2, 3, 4, 5, 6]),
        (
            "workspace 1",
            SandboxFilter {
                workspace_id: Some(ws1.id.clone()),
                ..f()
            },
            vec![0, 1, 5, 6],
        ),
        (
            "workspace 2",
            SandboxFilter {
                workspace_id: Some(ws2.id.clone()),
                ..f()
            },
            vec![2, 3],
        ),
        (
            "external user",
            SandboxFilter {
                external_user_id: s("u1"),
                ..f()
            },
            vec![0, 1, 4],
        ),
        (
            "external user, case-sensitive",
            SandboxFilter {
                external_user_id: s("U1"),
                ..f()
            },
            vec![],
        ),
        (
            "external workspace",
            SandboxFilter {
                external_workspace_id: s("x2"),
                ..f()
            },
            vec![3, 6],
        ),
        (
            "external project",
            SandboxFilter {
                external_project_id: s("p1"),
                ..f()
            },
            vec![0, 2, 6],
        ),
        (
            "status running",
            SandboxFilter {
                status: Some(Running),
                ..f()
            },
            vec![0, 1, 4, 5],
        ),
        (
            "status paused",
            SandboxFilter {
                status: Some(Paused),
                ..f()
            },
            vec![6],
        ),
        (
            "status creating",
            SandboxFilter {
                status: Some(Creating),
                ..f()
            },
            vec![2],
        ),
        (
            "status error",
            SandboxFilter {
                status: Some(Error),
                ..f()
            },
            vec![3],
        ),
        (
            "status destroyed",
            SandboxFilter {
                status: Some(Destroyed),
                ..f()
            },
            vec![7],
        ),
        (
            "one metadata pair",
            SandboxFilter {
                metadata: pairs(&[("env", "prod")]),
                ..f()
            },
            vec![0, 1, 3, 5, 6],
        ),
        (
            "two metadata pairs",
            SandboxFilter {
                metadata: pairs(&[("env", "prod"), ("team", "a")]),
                ..f()
            },
            vec![0, 6],
        ),
        (
            "two metadata pairs, second decides",
            SandboxFilter {
                metadata: pairs(&[("team", "a"), ("env", "dev")]),
                ..f()
            },
            vec![2],
        ),
        (
            "metadata value mismatch",
            SandboxFilter {
                metadata: pairs(&[("env", "staging")]),
                ..f()
            },
            vec![],
        ),
        (
            "metadata key with a dot",
            SandboxFilter {
                metadata: pairs(&[("team.name", "x")]),
                ..f()
            },
            vec![5],
        ),
        (
            "metadata unicode value",
            SandboxFilter {
                metadata: pairs(&[("mark", "✓ ü")]),
                ..f()
            },
            vec![2],
        ),
        (
            "metadata absent key",
            SandboxFilter {
                metadata: pairs(&[("missing", "")]),
                ..f()
            },
            vec![],
        ),
        (
            "everything at once",
            SandboxFilter {
                workspace_id: Some(ws1.id.clone()),
                external_user_id: s("u1"),
                external_workspace_id: s("x1"),
                external_project_id: s("p1"),
                status: Some(Running),
                metadata: pairs(&[("env", "prod"), ("team", "a")]),
            },
            vec![0],
        ),
        (
            "everything at once, destroyed",
            SandboxFilter {
                workspace_id: Some(ws1.id.clone()),
                external_user_id: s("u1"),
                external_workspace_id: s("x1"),
                external_project_id: s("p1"),
                status: Some(Destroyed),
                metadata: pairs(&[("env", "prod"), ("team", "a")]),
            },
            vec![7],
        ),
    ];
    for (what, filter, expected) in cases {
        let mut want: Vec<Sandbox> = expected.iter().map(|&i| all[i].clone()).collect();
        want.sort_by(|x, y| y.id.cmp(&x.id));
        let pages = all_pages(
            2,
            |s: &Sandbox| s.id.to_string(),
            async |p| store.list_sandboxes(&t.id, &filter, p).await,
        )
        .await;
        assert_eq!(pages.concat(), want, "filter: {what}");
    }

    // The seven live ones in pages of three: 3, 3, 1, newest first.
    let mut live: Vec<Sandbox> = all[..7].to_vec();
    live.sort_by(|x, y| y.id.cmp(&x.id));
    let everything = SandboxFilter::default();
    let pages = all_pages(
        3,
        |s: &Sandbox| s.id.to_string(),
        async |p| store.list_sandboxes(&t.id, &everything, p).await,
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    let ids: Vec<String> = pages.concat().iter().map(|s| s.id.to_string()).collect();
    crate::fixtures::assert_newest_first(&ids);
    assert_eq!(pages.concat(), live);
}

/// Patches: rename, clear the name, replace metadata, new deadline; live
/// sandboxes only; name conflicts as at create.
async fn updates(store: &dyn Store) {
    let (t, _) = new_tenant(store).await;
    let ws = new_workspace(store, &t.id).await;
    let mut alpha = sandbox(&t.id, Some(&ws.id));
    alpha.name = Some("alpha".to_owned());
    alpha.metadata = map(&[("old", "1"), ("keep", "no")]);
    let alpha = new_sandbox(store, alpha).await;
    let beta = new_sandbox(store, named(sandbox(&t.id, Some(&ws.id)), "beta")).await;

    let update = async |s: &Sandbox, patch: SandboxPatch| {
        store
            .update_sandbox(&s.tenant_id, &s.id, &patch)
            .await
            .expect("update_sandbox")
    };

    let same = update(&alpha, SandboxPatch::default()).await;
    assert_eq!(same, Some(alpha.clone()), "an empty patch changes nothing");

    let rename = |name: Option<&str>| SandboxPatch {
        name: Some(name.map(str::to_owned)),
        ..SandboxPatch::default()
    };
    let gamma = update(&alpha, rename(Some("gamma"))).await;
    let want = named(alpha.clone(), "gamma");
    assert_eq!(gamma, Some(want.clone()));
    assert_eq!(get(store, &alpha).await, Some(want.clone()));
    assert_eq!(by_name(store, &t.id, Some(&ws.id), "alpha").await, None);
    assert_eq!(
        by_name(store, &t.id, Some(&ws.id), "gamma").await,
        Some(want.clone())
    );
    assert_eq!(
        update(&alpha, rename(Some("gamma"))).await,
        Some(want.clone()),
        "keeping its own name is no conflict"
    );

    assert_conflict(
        store
            .update_sandbox(&t.id, &alpha.id, &rename(Some("beta")))
            .await,
        "sandbox",
        "name",
    );
    assert_eq!(
        get(store, &alpha).await,
        Some(want.clone()),
        "a refused patch changes nothing"
    );
    assert_eq!(get(store, &beta).await, Some(beta.clone()));

    let cleared = update(&alpha, rename(None)).await;
    let mut want = Sandbox { name: None, ..want };
    assert_eq!(cleared, Some(want.clone()));
    new_sandbox(store, named(sandbox(&t.id, Some(&ws.id)), "gamma")).await;

    let meta = map(&[("new", "2"), ("dotted.key", "ü ✓")]);
    let replaced = update(
        &alpha,
        SandboxPatch {
            metadata: Some(meta.clone()),
            ..SandboxPatch::default()
        },
    )
    .await;
    want.metadata = meta;
    assert_eq!(replaced, Some(want.clone()), "metadata is replaced whole");
    let emptied = update(
        &alpha,
        SandboxPatch {
            metadata: Some(BTreeMap::new()),
            ..SandboxPatch::default()
        },
    )
    .await;
    want.metadata = BTreeMap::new();
    assert_eq!(emptied, Some(want.clone()));

    let deadline = datetime!(2040-01-02 03:04:05.678_901 UTC);
    let extended = update(
        &alpha,
        SandboxPatch {
            name: Some(Some("delta".to_owned())),
            metadata: Some(map(&[("all", "at once")])),
            timeout_seconds: Some(7200),
            expires_at: Some(deadline),
        },
    )
    .await;
    want = Sandbox {
        name: Some("delta".to_owned()),
        metadata: map(&[("all", "at once")]),
        timeout_seconds: 7200,
        expires_at: deadline,
        ..want
    };
    assert_eq!(extended, Some(want.clone()));
    assert_eq!(get(store, &alpha).await, Some(want.clone()));

    // Tenant-level names conflict the same way; a destroyed holder of a
    // name does not.
    let top = new_sandbox(store, named(sandbox(&t.id, None), "top")).await;
    let top2 = new_sandbox(store, named(sandbox(&t.id, None), "top-2")).await;
    assert_conflict(
        store
            .update_sandbox(&t.id, &top2.id, &rename(Some("top")))
            .await,
        "sandbox",
        "name",
    );
    destroy(store, &top, now()).await;
    assert_eq!(
        update(&top2, rename(Some("top"))).await,
        Some(named(top2.clone(), "top"))
    );

    // Only live sandboxes change.
    assert_eq!(
        store
            .update_sandbox(&t.id, &SandboxId::generate(), &rename(Some("x")))
            .await
            .expect("update"),
        None
    );
    let gone = destroy(store, &beta, now()).await;
    assert_eq!(update(&beta, rename(Some("revived"))).await, None);
    assert_eq!(get(store, &beta).await, Some(gone));
}

/// Compare-and-set: a transition happens only from one of the given
/// statuses; reaching `destroyed` stamps `destroyed_at`.
async fn transitions(store: &dyn Store) {
    use SandboxStatus::{Creating, Destroyed, Error, Paused, Running};
    let (t, _) = new_tenant(store).await;
    let s = new_sandbox(
        store,
        Sandbox {
            status: Creating,
            ..sandbox(&t.id, None)
        },
    )
    .await;
    let go = async |from: &[SandboxStatus], to: SandboxStatus, at: OffsetDateTime| {
        store
            .transition_sandbox(&t.id, &s.id, from, to, at)
            .await
            .expect("transition_sandbox")
    };
    let status = async || get(store, &s).await.expect("exists");

    assert!(!go(&[Running, Paused], Error, now()).await);
    assert_eq!(status().await, s, "a refused transition changes nothing");
    assert!(!go(&[], Running, now()).await, "no `from`, no change");
    assert_eq!(status().await, s);

    assert!(go(&[Creating], Running, now()).await);
    let mut want = Sandbox {
        status: Running,
        ..s.clone()
    };
    assert_eq!(status().await, want);
    assert!(!go(&[Creating], Running, now()).await, "only once");
    assert!(go(&[Running, Paused], Paused, now()).await);
    want.status = Paused;
    assert_eq!(status().await, want);
    assert!(
        go(&[Paused], Paused, now()).await,
        "to the same status counts"
    );
    assert!(go(&[Paused], Running, now()).await);
    want.status = Running;
    assert_eq!(status().await, want, "no destroyed_at before destruction");

    let at = datetime!(2031-07-08 09:10:11.121_314 +02:00);
    assert!(go(&[Running, Paused, Error], Destroyed, at).await);
    want.status = Destroyed;
    want.destroyed_at = Some(at);
    assert_eq!(status().await, want);
    assert!(!go(&[Running, Paused, Error, Creating], Destroyed, now()).await);
    assert_eq!(status().await, want, "destroyed_at is not moved");

    assert!(
        !store
            .transition_sandbox(
                &t.id,
                &SandboxId::generate(),
                &SandboxStatus::ALL,
                Running,
                now()
            )
            .await
            .expect("transition"),
        "an unknown sandbox does not change"
    );
}

/// `sandboxes_in_status` sees every tenant but only the asked-for node,
/// oldest first. The nodes are this area's own, so answers are exact.
async fn reconciler_queries(store: &dyn Store) {
    use SandboxStatus::{Creating, Destroyed, Error, Paused, Running};
    let (a, _) = new_tenant(store).await;
    let (b, _) = new_tenant(store).await;
    let n1 = unique("node");
    let n2 = unique("node");
    let mut made = Vec::new();
    // Interleaved between tenants and nodes, created in this order.
    for (tenant, node, status) in [
        (&a, &n1, Creating),
        (&b, &n2, Running),
        (&b, &n1, Running),
        (&a, &n2, Creating),
        (&a, &n1, Running),
        (&b, &n1, Creating),
        (&a, &n2, Paused),
        (&a, &n1, Paused),
        (&a, &n1, Error),
        (&b, &n2, Error),
        (&b, &n1, Destroyed),
        (&a, &n2, Running),
        (&a, &n1, Running),
    ] {
        let s = Sandbox {
            status,
            node_id: node.clone(),
            ..sandbox(&tenant.id, None)
        };
        made.push(new_sandbox(store, s).await);
    }

    for statuses in [
        vec![Creating],
        vec![Running, Creating],
        vec![Running, Paused, Error],
        vec![Destroyed],
        SandboxStatus::ALL.to_vec(),
    ] {
        for node in [&n1, &n2] {
            let found = store
                .sandboxes_in_status(node, &statuses)
                .await
                .expect("sandboxes_in_status");
            let want: Vec<Sandbox> = made
                .iter()
                .filter(|s| &s.node_id == node && statuses.contains(&s.status))
                .cloned()
                .collect();
            assert_eq!(
                found, want,
                "{statuses:?} on {node}: this node's only, oldest first"
            );
        }
        // The fixture's node holds other areas' sandboxes: whatever it has,
        // none of this area's and nothing of another node or status.
        let shared = store
            .sandboxes_in_status(NODE, &statuses)
            .await
            .expect("sandboxes_in_status");
        assert!(
            shared
                .iter()
                .all(|s| s.node_id == NODE && statuses.contains(&s.status)),
            "only {NODE}'s sandboxes in {statuses:?}"
        );
        assert!(shared.iter().all(|s| !made.contains(s)));
        for pair in shared.windows(2) {
            assert!(
                (pair[0].created_at, &pair[0].id) <= (pair[1].created_at, &pair[1].id),
                "oldest first"
            );
        }
    }
    let none = store
        .sandboxes_in_status(&n1, &[])
        .await
        .expect("in status");
    assert_eq!(none, Vec::new());
    let empty = store
        .sandboxes_in_status(&unique("node"), &SandboxStatus::ALL)
        .await
        .expect("in status");
    assert_eq!(empty, Vec::new(), "a node without sandboxes has none");
}

/// `expired_sandboxes`: running or paused, deadline strictly before `now`,
/// every tenant but only the asked-for node, oldest deadline first, at most
/// `limit`. The nodes are this area's own, so answers are exact.
async fn reaper_queries(store: &dyn Store) {
    use SandboxStatus::{Creating, Destroyed, Error, Paused, Running};
    // A fixed `now` long ago, so nothing here is due by the clock.
    let now = datetime!(2000-01-01 00:00:00 UTC);
    let (a, _) = new_tenant(store).await;
    let (b, _) = new_tenant(store).await;
    let n1 = unique("node");
    let n2 = unique("node");
    let due = |tenant: &TenantId, node: &str, status: SandboxStatus, expires_at: OffsetDateTime| {
        Sandbox {
            status,
            node_id: node.to_owned(),
            expires_at,
            ..sandbox(tenant, None)
        }
    };
    let specs = [
        // Expired on n1, in deadline order: 1, 4, 0, 2, 3.
        (
            due(&a.id, &n1, Running, datetime!(1999-06-01 00:00 UTC)),
            true,
        ),
        (
            due(&a.id, &n1, Paused, datetime!(1999-01-01 00:00 UTC)),
            true,
        ),
        (
            due(
                &b.id,
                &n1,
                Running,
                datetime!(1999-12-31 23:59:59.999_998 UTC),
            ),
            true,
        ),
        (
            due(
                &a.id,
                &n1,
                Running,
                datetime!(1999-12-31 23:59:59.999_999 UTC),
            ),
            true,
        ),
        (
            due(&b.id, &n1, Paused, datetime!(1999-03-01 00:00 +01:00)),
            true,
        ),
        // Expired on n2, with deadlines between n1's.
        (
            due(&b.id, &n2, Running, datetime!(1999-02-01 00:00 UTC)),
            true,
        ),
        (
            due(&a.id, &n2, Paused, datetime!(1998-06-01 00:00 UTC)),
            true,
        ),
        // Not expired: at or after `now`, or not running or paused.
        (due(&a.id, &n1, Running, now), false),
        (
            due(&b.id, &n1, Paused, datetime!(2001-01-01 00:00 UTC)),
            false,
        ),
        (
            due(&a.id, &n1, Creating, datetime!(1998-01-01 00:00 UTC)),
            false,
        ),
        (
            due(&a.id, &n1, Error, datetime!(1998-01-01 00:00 UTC)),
            false,
        ),
        (
            due(&b.id, &n1, Destroyed, datetime!(1998-01-01 00:00 UTC)),
            false,
        ),
        (due(&b.id, &n2, Running, now), false),
        (
            due(&a.id, &n2, Error, datetime!(1998-01-01 00:00 UTC)),
            false,
        ),
    ];
    let mut expired = Vec::new();
    for (s, is_expired) in specs {
        let s = new_sandbox(store, s).await;
        if is_expired {
            expired.push(s);
        }
    }
    expired.sort_by_key(|s| s.expires_at);

    for node in [&n1, &n2] {
        let want: Vec<Sandbox> = expired
            .iter()
            .filter(|s| &s.node_id == node)
            .cloned()
            .collect();
        let all = store
            .expired_sandboxes(node, now, 500)
            .await
            .expect("expired_sandboxes");
        assert_eq!(
            all, want,
            "on {node}: this node's only, oldest deadline first"
        );
        for limit in [0, 1, 2, 4] {
            let some = store
                .expired_sandboxes(node, now, limit)
                .await
                .expect("expired_sandboxes");
            assert_eq!(
                some,
                want[..(limit as usize).min(want.len())].to_vec(),
                "limit {limit} on {node}"
            );
        }
    }

    // The fixture's node: other areas' sandboxes expire an hour after they
    // were made, so none is due at this `now`.
    let shared = store
        .expired_sandboxes(NODE, now, 500)
        .await
        .expect("expired_sandboxes");
    assert_eq!(shared, Vec::new());
    let empty = store
        .expired_sandboxes(&unique("node"), now, 500)
        .await
        .expect("expired_sandboxes");
    assert_eq!(empty, Vec::new(), "a node without sandboxes has none due");
}

/// Two creates of one name at once in one workspace (or at the tenant
/// level): exactly one wins, the other is a name conflict.
pub async fn concurrent_sandbox_names(store: &dyn Store) {
    for round in 0..6 {
        let (t, _) = new_tenant(store).await;
        let ws = new_workspace(store, &t.id).await;
        let ws = (round % 2 == 0).then_some(&ws.id);
        let x = named(sandbox(&t.id, ws), "race");
        let y = named(sandbox(&t.id, ws), "race");
        let (rx, ry) = tokio::join!(store.create_sandbox(&x), store.create_sandbox(&y));
        let (winner, loser) = match (rx, ry) {
            (Ok(()), Err(e)) => (&x, (&y, e)),
            (Err(e), Ok(())) => (&y, (&x, e)),
            other => panic!("exactly one create wins: {other:?}"),
        };
        assert!(
            matches!(
                loser.1,
                StoreError::Conflict {
                    entity: "sandbox",
                    field: "name"
                }
            ),
            "the loser gets a name conflict, not {:?}",
            loser.1
        );
        assert_eq!(get(store, loser.0).await, None);
        assert_eq!(
            by_name(store, &t.id, ws, "race").await,
            Some(winner.clone())
        );
    }
}

//! The audit log: following what the server writes, and queries at scale.

use super::*;

// --- the audit log as the server writes it --------------------------------------------

/// Follows a tenant's chain (through a second store handle on the server's
/// database) and counts the `egress.request` rows of one sandbox.
pub(super) struct AuditFollower {
    pub(super) store: Arc<dyn Store>,
    pub(super) tenant: TenantId,
    pub(super) sandbox: SandboxId,
    pub(super) head: i64,
    pub(super) egress_rows: u64,
}

impl AuditFollower {
    pub(super) async fn catch_up(&mut self) -> anyhow::Result<u64> {
        loop {
            let rows = self
                .store
                .audit_chain(&self.tenant, self.head, 5_000)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(self.egress_rows);
            };
            self.head = last.seq;
            self.egress_rows += rows
                .iter()
                .filter(|r| {
                    r.entry.action == action::EGRESS_REQUEST
                        && r.entry.sandbox_id.as_ref() == Some(&self.sandbox)
                })
                .count() as u64;
        }
    }

    /// Waits until `n` rows are in, or until none arrived for two seconds
    /// (rows the writer dropped never come); how long that took.
    pub(super) async fn wait_for(&mut self, n: u64) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let (mut seen, mut progress) = (self.catch_up().await?, Instant::now());
        while seen < n && progress.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = self.catch_up().await?;
            if now > seen {
                (seen, progress) = (now, Instant::now());
            }
        }
        Ok(if seen < n { progress - t } else { t.elapsed() })
    }
}

/// Counts a sandbox's `egress.request` rows through `GET /v1/audit`.
pub(super) async fn count_over_http(
    c: &Client,
    sandbox: &str,
) -> anyhow::Result<(u64, Option<Value>)> {
    let (mut n, mut cursor, mut sample) = (0u64, None::<String>, None);
    loop {
        let mut q = format!("action=egress.request&sandbox_id={sandbox}&limit=500");
        if let Some(cur) = &cursor {
            q.push_str(&format!("&cursor={cur}"));
        }
        let page = c.list_audit(&q).await?;
        if sample.is_none() {
            sample = page.data.first().map(serde_json::to_value).transpose()?;
        }
        n += page.data.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((n, sample)),
        }
    }
}

// --- the audit log at scale -------------------------------------------------------------

pub(super) fn bulk_entry(
    rng: &mut Rng,
    tenant: &TenantId,
    sandboxes: &[SandboxId],
    secret: &SecretId,
) -> AuditEntry {
    let user = rng.below(AUDIT_USERS);
    let sandbox = &sandboxes[rng.below(sandboxes.len() as u64) as usize];
    let kind = rng.below(10);
    let egress = kind < 8;
    AuditEntry {
        id: AuditId::generate(),
        tenant_id: tenant.clone(),
        time: miosa_core::time_util::now(),
        action: match kind {
            0..=7 => action::EGRESS_REQUEST,
            8 => action::SANDBOX_CREATED,
            _ => action::SANDBOX_DESTROYED,
        }
        .to_owned(),
        actor: (!egress).then(|| "system".to_owned()),
        target: None,
        sandbox_id: Some(sandbox.clone()),
        workspace_id: None,
        owner_user_id: None,
        external_user_id: Some(format!("bench-user-{user}")),
        external_workspace_id: Some(format!("bench-workspace-{}", user % 50)),
        external_project_id: None,
        request: egress.then(|| AuditRequest {
            method: "GET".into(),
            host: UPSTREAM_HOST.into(),
            path: UPSTREAM_PATH.into(),
            status: Some(200),
            bytes_out: 0,
            bytes_in: 48,
            duration_ms: 1,
        }),
        credential: egress.then(|| AuditCredential {
            secret_id: secret.clone(),
            name: "bench".into(),
            scope: SecretScope::Tenant,
        }),
        outcome: Outcome::Success,
        created_by_key_id: None,
        deferred: false,
    }
}

pub(super) async fn audit_queries(
    c: &Client,
    store: &dyn Store,
    tenant: &TenantId,
    args: &Args,
    config: &Config,
) -> anyhow::Result<()> {
    let mut rng = Rng::seeded();
    let sandboxes: Vec<SandboxId> = (0..8).map(|_| SandboxId::generate()).collect();
    let secret = SecretId::generate();
    eprintln!("appending {} audit rows…", args.audit_rows);
    let t = Instant::now();
    let mut done = 0;
    while done < args.audit_rows {
        let n = AUDIT_BATCH.min(args.audit_rows - done);
        let batch: Vec<AuditEntry> = (0..n)
            .map(|_| bulk_entry(&mut rng, tenant, &sandboxes, &secret))
            .collect();
        store.append_audit(&batch).await?;
        done += n;
        if done % 100_000 == 0 {
            eprintln!(
                "  {done} rows, {:.0} rows/s",
                done as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    let insert = t.elapsed();

    eprintln!("{} filtered page queries…", args.queries);
    let users: Vec<String> = (0..args.queries)
        .map(|_| format!("bench-user-{}", rng.below(AUDIT_USERS)))
        .collect();
    let (mut http1st, mut http2nd, mut store1st, mut store2nd) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut returned = 0usize;
    let wall = Instant::now();
    for u in &users {
        let q = format!("external_user_id={u}&limit={PAGE}");
        let t = Instant::now();
        let page = c.list_audit(&q).await?;
        http1st.push(t.elapsed());
        ensure!(
            page.data
                .iter()
                .all(|e| e.external_user_id.as_deref() == Some(u.as_str())),
            "the filter returned another user's rows"
        );
        returned += page.data.len();
        if let Some(cursor) = &page.next_cursor {
            let t = Instant::now();
            c.list_audit(&format!("{q}&cursor={cursor}")).await?;
            http2nd.push(t.elapsed());
        }
    }
    let http_wall = wall.elapsed();
    for u in &users {
        let filter = AuditFilter {
            external_user_id: Some(u.clone()),
            ..AuditFilter::default()
        };
        let mut page = PageRequest {
            limit: PAGE,
            after: None,
        };
        let t = Instant::now();
        let first = store.list_audit(tenant, &filter, &page).await?;
        store1st.push(t.elapsed());
        if let Some(cursor) = first.next_cursor {
            page.after = Some(cursor);
            let t = Instant::now();
            store.list_audit(tenant, &filter, &page).await?;
            store2nd.push(t.elapsed());
        }
    }

    println!();
    println!(
        "Audit log: {} rows appended for one tenant over {AUDIT_USERS} external_user_ids, 8 sandboxes, 3 actions ({}; the server's own database)",
        args.audit_rows,
        store.backend()
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| append (Store::append_audit, batches of {AUDIT_BATCH}, hash-chained) | {:.0} rows/s ({:.1} s) |",
        args.audit_rows as f64 / insert.as_secs_f64(),
        insert.as_secs_f64()
    );
    let db_file = config.data_dir.join("miosa.db");
    if store.backend() == "sqlite" {
        if let Ok(meta) = std::fs::metadata(&db_file) {
            println!(
                "| SQLite file size | {:.0} MiB |",
                meta.len() as f64 / (1024.0 * 1024.0)
            );
        }
    }
    println!(
        "| rows per first page (mean) | {:.1} |",
        returned as f64 / users.len() as f64
    );
    println!(
        "| HTTP page requests per second (sequential, both pages) | {:.0} |",
        (http1st.len() + http2nd.len()) as f64 / http_wall.as_secs_f64()
    );
    println!();
    println!("| query (external_user_id = random user, limit {PAGE}) | n | p50 | p99 | target p99 ≤ 20 ms |");
    println!("|---|---|---|---|---|");
    for (name, lat) in [
        ("GET /v1/audit (HTTP, typed client)", http1st),
        ("GET /v1/audit, second page via cursor", http2nd),
        ("Store::list_audit", store1st),
        ("Store::list_audit, second page", store2nd),
    ] {
        let s = Stats::new(lat, Duration::ZERO);
        if s.lat.is_empty() {
            println!("| {name} | 0 (no user had a second page) | – | – | – |");
            continue;
        }
        println!(
            "| {name} | {} | {} | {} | {} |",
            s.lat.len(),
            ms(s.p(50.0)),
            ms(s.p(99.0)),
            verdict(s.p(99.0) <= Duration::from_millis(20))
        );
    }
    Ok(())
}

//! `miosa admin …`: operator commands that talk to the database directly.

use anyhow::{bail, Context};
use miosa_core::{
    audit::{BrokenLink, ChainVerifier},
    issue_key, validate, KeyScope, PageRequest, PlainApiKey, Tenant, TenantId,
};
use miosa_store::{Store, StoreError, StoreResult};
use miosa_vault::{KeyRing, MasterKey, RotateTarget};

use crate::{config::Config, init, storage};

/// Creates a tenant and its first admin key, like `POST /v1/admin/tenants`.
pub async fn create_tenant(
    config: &Config,
    name: &str,
) -> anyhow::Result<(Tenant, PlainApiKey, Option<init::BootstrapReport>)> {
    let name = validate::name("name", name).map_err(|e| anyhow::anyhow!("--name {}", e.reason))?;
    init::ensure_data_dir(&config.data_dir)?;
    let store = storage::open(config.database_url.expose()).await?;
    let (keys, report) = init::prepare(config, store.as_ref()).await?;
    let tenant = Tenant::new(name);
    let (record, plain) = issue_key(
        &tenant.id,
        miosa_api::routes::tenants::FIRST_KEY_NAME.to_owned(),
        KeyScope::Admin,
        &keys.pepper,
    )?;
    match store.create_tenant(&tenant, &record).await {
        Ok(()) => Ok((tenant, plain, report)),
        Err(StoreError::Conflict { .. }) => {
            bail!("a tenant named {:?} already exists", tenant.name)
        }
        Err(e) => Err(e.into()),
    }
}

/// Where the new key of a configured-key rotation comes from. Read from the
/// environment only: a key on the command line would show in `ps`.
pub const NEW_MASTER_KEY_ENV: &str = "MIOSA_NEW_MASTER_KEY";

/// `miosa admin rotate-master-key`: re-wraps every stored secret version
/// under a new master key and prints what the operator must do next.
pub async fn rotate_master_key(config: &Config) -> anyhow::Result<()> {
    init::ensure_data_dir(&config.data_dir)?;
    let store = storage::open(config.database_url.expose()).await?;
    let target = match (std::env::var(NEW_MASTER_KEY_ENV), &config.master_key) {
        (Ok(hex), _) if !hex.is_empty() => {
            RotateTarget::Key(MasterKey::from_hex(&hex, NEW_MASTER_KEY_ENV)?)
        }
        (_, Some(_)) => RotateTarget::Current,
        (_, None) => RotateTarget::NewKeyFile,
    };
    let ring: KeyRing = init::key_ring(config)?;
    let from = store
        .sealing_kek()
        .await?
        .unwrap_or_else(|| ring.current_id());
    let report = miosa_vault::rotate_master_key(store.as_ref(), &ring, target).await?;
    if report.resumed {
        println!("finished an interrupted rotation");
    }
    // A resumed file rotation already seals under the new key.
    let was = if from == report.new_kek_id {
        String::new()
    } else {
        format!(" (was {from})")
    };
    println!(
        "rewrapped {} secret versions under {}{was}",
        report.rewrapped, report.new_kek_id
    );
    if report.resealed > 0 {
        println!(
            "re-sealed {} values stored before values were bound to their secret",
            report.resealed
        );
    }
    match &report.key_file {
        Some(path) => println!(
            "the new master key is in {}; back it up (the old key no longer opens anything)",
            path.display()
        ),
        None if std::env::var(NEW_MASTER_KEY_ENV).is_ok_and(|v| !v.is_empty()) => println!(
            "now set MIOSA_MASTER_KEY to the value of {NEW_MASTER_KEY_ENV} on every replica and \
             restart them: until then, replicas with only the old key cannot read secrets and \
             refuse to set new ones (503 master_key_unavailable)"
        ),
        None => println!(
            "every value is now under the configured MIOSA_MASTER_KEY; \
             MIOSA_PREVIOUS_MASTER_KEYS can be dropped from every replica"
        ),
    }
    Ok(())
}

/// Rows fetched per page when walking a chain.
const CHAIN_PAGE: u32 = 1000;

/// `miosa admin audit verify`: checks the hash chain of one tenant or of
/// all, printing a line per tenant. `Ok(false)` if any chain is broken.
pub async fn audit_verify(config: &Config, tenant: Option<&str>) -> anyhow::Result<bool> {
    init::ensure_data_dir(&config.data_dir)?;
    let store = storage::open(config.database_url.expose()).await?;
    let tenants = match tenant {
        Some(raw) => {
            let id = TenantId::parse(raw).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            if store.get_tenant(&id).await?.is_none() {
                bail!("--tenant: no tenant {id}");
            }
            vec![id]
        }
        None => all_tenants(store.as_ref()).await?,
    };
    let ring = std::sync::Arc::new(init::key_ring(config)?);
    let checkpointer = miosa_audit::Checkpointer::new(store.clone(), ring.clone());
    let mut all_ok = true;
    for id in tenants {
        let v = verify_chain(store.as_ref(), &ring, &id)
            .await
            .with_context(|| format!("cannot read the audit log of {id}"))?;
        match v.broken {
            None => {
                // Anchor what was just verified: sign the head.
                let signed = match store.audit_head(&id).await? {
                    Some((seq, hash)) => {
                        checkpointer.sign(&id, seq, &hash).await?;
                        format!(", head signed at seq {seq}")
                    }
                    None => String::new(),
                };
                let unchecked = if v.unchecked > 0 {
                    format!(
                        " ({} signed by a master key this server no longer holds: not checked)",
                        v.unchecked
                    )
                } else {
                    String::new()
                };
                let plural = if v.checkpoints == 1 { "" } else { "s" };
                println!(
                    "{id} ok: {} rows, {} checkpoint{plural}{unchecked}{signed}",
                    v.rows, v.checkpoints
                );
            }
            Some(b) => {
                all_ok = false;
                let row = b.id.map(|r| format!(" ({r})")).unwrap_or_default();
                println!("{id} BROKEN at seq {}{row}: {}", b.seq, b.reason);
            }
        }
    }
    Ok(all_ok)
}

/// What a tenant's verification found.
struct Verified {
    rows: u64,
    /// Checkpoints whose signature and hash checked out.
    checkpoints: u64,
    /// Checkpoints under a master key this server lacks.
    unchecked: u64,
    broken: Option<BrokenLink>,
}

async fn all_tenants(store: &dyn Store) -> StoreResult<Vec<TenantId>> {
    let mut ids = Vec::new();
    let mut req = PageRequest {
        limit: miosa_core::page::MAX_LIMIT,
        after: None,
    };
    loop {
        let page = store.list_tenants(&req).await?;
        ids.extend(page.items.into_iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => req.after = Some(c),
            None => return Ok(ids),
        }
    }
}

/// Walks a tenant's chain from its first row, checking every link, that the
/// head the appends recorded is the last row, and that every signed
/// checkpoint carries a valid signature and matches the row at its `seq`
/// (so a chain rewritten with fresh hashes, head included, still fails).
async fn verify_chain(
    store: &dyn Store,
    ring: &KeyRing,
    tenant: &TenantId,
) -> anyhow::Result<Verified> {
    let mut checkpoints = std::collections::VecDeque::new();
    let mut after = 0;
    loop {
        let page = store
            .audit_checkpoints_after(tenant, after, CHAIN_PAGE)
            .await?;
        let full = page.len() == CHAIN_PAGE as usize;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        checkpoints.extend(page);
        if !full {
            break;
        }
    }
    let mut out = Verified {
        rows: 0,
        checkpoints: 0,
        unchecked: 0,
        broken: None,
    };
    let broken = |seq: i64, reason: String| BrokenLink {
        seq,
        id: None,
        reason,
    };
    for cp in &checkpoints {
        match ring.verify_checkpoint(cp) {
            Ok(true) => {}
            Ok(false) => {
                out.broken = Some(broken(
                    cp.seq,
                    "the checkpoint's signature does not verify (a forged checkpoint)".into(),
                ));
                return Ok(out);
            }
            Err(miosa_vault::VaultError::UnknownKek { .. }) => out.unchecked += 1,
            Err(e) => return Err(e.into()),
        }
    }
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let rows = store.audit_chain(tenant, after, CHAIN_PAGE).await?;
        for ev in &rows {
            if let Err(b) = verifier.check(ev) {
                out.rows = verifier.checked;
                out.broken = Some(b);
                return Ok(out);
            }
            while checkpoints.front().is_some_and(|c| c.seq <= ev.seq) {
                let Some(cp) = checkpoints.pop_front() else {
                    break;
                };
                if cp.seq == ev.seq && cp.hash == ev.hash {
                    out.checkpoints += 1;
                    continue;
                }
                out.rows = verifier.checked;
                out.broken = Some(BrokenLink {
                    seq: cp.seq,
                    id: Some(ev.entry.id.clone()),
                    reason: "the row differs from the signed checkpoint at this seq: the chain \
                             was rewritten"
                        .into(),
                });
                return Ok(out);
            }
        }
        match rows.last() {
            Some(last) if rows.len() == CHAIN_PAGE as usize => after = last.seq,
            _ => break,
        }
    }
    out.rows = verifier.checked;
    if let Some(cp) = checkpoints.front() {
        out.broken = Some(broken(
            cp.seq,
            format!(
                "a signed checkpoint names seq {} but the chain ends at {}: rows were removed",
                cp.seq, verifier.checked
            ),
        ));
        return Ok(out);
    }
    // The head the appends left must be the last row: otherwise the newest
    // rows were removed.
    let head = store.audit_head(tenant).await?;
    if let Err(b) = verifier.check_head(head.as_ref().map(|(s, h)| (*s, h.as_str()))) {
        out.broken = Some(b);
    }
    Ok(out)
}

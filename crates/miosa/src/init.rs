//! What happens before the API serves: the data dir, the API-key pepper, the
//! root key, and — on an empty database — the `default` tenant.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
};

use anyhow::{bail, Context};
use miosa_api::KeyConfig;
use miosa_core::{issue_key, ApiKeyKind, KeyScope, Pepper, PlainApiKey, Tenant};
use miosa_store::{Bootstrap, Store};

use crate::config::Config;

/// Name of the tenant created on first start.
pub const DEFAULT_TENANT: &str = "default";
/// File in the data dir holding the generated pepper.
pub const PEPPER_FILE: &str = "api-key-pepper";

/// Keys minted on the very first start, to be shown once.
pub struct BootstrapReport {
    /// Present when no root key was configured.
    pub root_key: Option<PlainApiKey>,
    pub tenant: Tenant,
    pub admin_key: PlainApiKey,
}

impl BootstrapReport {
    /// The once-only banner. Printed to stdout, never logged.
    pub fn banner(&self) -> String {
        let mut s = String::from("\nMiosa initialised a new database.\n");
        if let Some(root) = &self.root_key {
            s.push_str(&format!(
                "  operator root key (for /v1/admin/*):  {}\n",
                root.reveal()
            ));
        }
        s.push_str(&format!(
            "  tenant \"{}\" ({}) admin key:  {}\n",
            self.tenant.name,
            self.tenant.id,
            self.admin_key.reveal()
        ));
        s.push_str("Store these now: they are not shown again.\n\n");
        s
    }
}

/// File in the data dir holding this node's generated name.
pub const NODE_ID_FILE: &str = "node-id";

/// This node's name: from config, else `<data_dir>/node-id`, created once.
pub fn node_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.node_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join(NODE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = format!("node-{}", &miosa_core::id::new_body()[16..]);
    fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Creates the data dir (0700) if needed.
pub fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))
}

/// Prepares key checking and bootstraps an empty database.
pub async fn prepare(
    config: &Config,
    store: &dyn Store,
) -> anyhow::Result<(KeyConfig, Option<BootstrapReport>)> {
    let info = store.system_info().await?;
    let pepper = load_pepper(config, info.pepper_fingerprint.is_some())?;
    let configured_root = config
        .root_key
        .as_ref()
        .map(|k| pepper.hash_key(k.expose()));

    let mut report = None;
    let mut stored_root = info.root_key_hash;
    match info.pepper_fingerprint {
        Some(fp) => check_fingerprint(&fp, &pepper)?,
        None => {
            let root_key = match config.root_key {
                Some(_) => None,
                None => Some(PlainApiKey::generate(ApiKeyKind::Root)?),
            };
            let tenant = Tenant::new(DEFAULT_TENANT.to_owned());
            let (admin_record, admin_key) = issue_key(
                &tenant.id,
                miosa_api::routes::tenants::FIRST_KEY_NAME.to_owned(),
                KeyScope::Admin,
                &pepper,
            )?;
            let root_key_hash = root_key.as_ref().map(|k| pepper.hash_key(k.reveal()));
            let won = store
                .bootstrap(&Bootstrap {
                    pepper_fingerprint: pepper.fingerprint(),
                    root_key_hash,
                    tenant: tenant.clone(),
                    admin_key: admin_record,
                })
                .await?;
            if won {
                stored_root = root_key_hash;
                report = Some(BootstrapReport {
                    root_key,
                    tenant,
                    admin_key,
                });
            } else {
                // Another replica initialised the database at the same moment.
                let info = store.system_info().await?;
                if let Some(fp) = &info.pepper_fingerprint {
                    check_fingerprint(fp, &pepper)?;
                }
                stored_root = info.root_key_hash;
            }
        }
    }
    let root_key_hash = configured_root.or(stored_root);
    if root_key_hash.is_none() {
        tracing::warn!("no root key: /v1/admin/* is disabled until MIOSA_ROOT_KEY is set");
    }
    Ok((
        KeyConfig {
            pepper,
            root_key_hash,
        },
        report,
    ))
}

fn check_fingerprint(stored: &str, pepper: &Pepper) -> anyhow::Result<()> {
    if stored != pepper.fingerprint() {
        bail!(
            "this database was initialised with a different API-key pepper; every key would be \
             rejected. Set MIOSA_API_KEY_PEPPER (or `api_key_pepper`) to the value the database \
             was created with — the contents of `{PEPPER_FILE}` in the first server's data dir."
        );
    }
    Ok(())
}

/// The pepper from config, else from the data dir, else (only for a new
/// database) freshly generated into the data dir with mode 0600.
fn load_pepper(config: &Config, database_initialised: bool) -> anyhow::Result<Pepper> {
    if let Some(hex) = &config.api_key_pepper {
        return Pepper::from_hex(hex.expose()).map_err(|e| anyhow::anyhow!("api_key_pepper: {e}"));
    }
    let path = config.data_dir.join(PEPPER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            return Pepper::from_hex(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    if database_initialised {
        bail!(
            "the database was initialised by another Miosa server, and this one has no API-key \
             pepper: set MIOSA_API_KEY_PEPPER to the contents of `{PEPPER_FILE}` in that \
             server's data dir"
        );
    }
    let pepper = Pepper::generate()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(pepper.to_hex().as_bytes())?;
    file.sync_all()?;
    Ok(pepper)
}

/// The key-encryption key for secrets (config, else `<data_dir>/master-key`,
/// created at first start), checked against what the database holds: a
/// replica with the wrong key refuses to start instead of failing every
/// proxied request.
pub async fn vault(config: &Config, store: &dyn Store) -> anyhow::Result<miosa_vault::KeyRing> {
    let ring = key_ring(config)?;
    ring.check_in_use(&store.kek_ids_in_use().await?)?;
    // Every replica seals under the key the database records; the first
    // server to start (or the first after an upgrade) records its own.
    let sealing = store.claim_sealing_kek(&ring.current_id()).await?;
    if !ring.holds(&sealing) {
        anyhow::bail!(
            "new secrets are sealed under master key {sealing}, which this server was not given \
             (it has {}); start it with that key as MIOSA_MASTER_KEY or in \
             MIOSA_PREVIOUS_MASTER_KEYS",
            ring.key_ids().join(", ")
        );
    }
    if sealing != ring.current_id() {
        tracing::info!(
            sealing = %sealing,
            configured = %ring.current_id(),
            "sealing new secrets under the database's master key until `miosa admin rotate-master-key` moves everything to the configured one"
        );
    }
    Ok(ring)
}

/// The master keys this process holds: the configured key (or the key
/// files) plus any previous keys.
pub fn key_ring(config: &Config) -> anyhow::Result<miosa_vault::KeyRing> {
    Ok(miosa_vault::KeyRing::load(
        config.master_key.as_ref().map(|k| k.expose().as_str()),
        &config.data_dir,
    )?
    .with_previous(
        config.previous_master_keys.expose(),
        "MIOSA_PREVIOUS_MASTER_KEYS",
    )?)
}

/// The key placeholders are derived with: from the pepper, so every replica
/// and every restart gives a sandbox the same placeholders.
pub fn placeholder_key(pepper: &Pepper) -> Vec<u8> {
    hex::decode(pepper.hash_key("miosa placeholder key v1").to_hex()).unwrap_or_default()
}

/// Raises this process's soft limit on open files to its hard limit (each
/// sandbox's egress connections and upstream sockets are descriptors);
/// returns the new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok(hard.max(soft))
}

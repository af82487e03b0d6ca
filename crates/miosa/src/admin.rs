//! `miosa admin …`: operator commands that talk to the database directly.

use anyhow::bail;
use miosa_core::{issue_key, validate, KeyScope, PlainApiKey, Tenant};
use miosa_store::StoreError;

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

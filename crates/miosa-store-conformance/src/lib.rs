//! The story every [`Store`] backend must pass, and throwaway PostgreSQL
//! databases to run it on.
//!
//! Each area is a `pub async fn(&dyn Store)` that panics on the first
//! behaviour that differs from the `Store` contract; [`store_tests!`] turns
//! them into one `#[tokio::test]` each, so both backends run the same list.
//! Areas create their own uniquely named tenants and can share a store, except
//! [`system`], which needs an empty one. This is test support: panicking
//! (`expect`, `assert!`) is how it reports.
#![forbid(unsafe_code)]
// Test support: a failed expectation is the report.
#![allow(clippy::expect_used)]

mod api_keys;
mod audit;
mod audit_durability;
pub mod fixtures;
mod isolation;
mod pg;
mod sandboxes;
mod secret_lookup;
mod secret_writes;
mod secrets;
mod settings;
mod system;
mod tenants;
mod timestamps;
mod workspaces;

use miosa_store::Store;

pub use api_keys::{api_keys, concurrent_revoke};
pub use audit::{audit, audit_race, concurrent_audit};
pub use audit_durability::audit_durability;
pub use isolation::tenant_isolation;
pub use pg::PgTestDb;
pub use sandboxes::{concurrent_sandbox_names, sandboxes};
pub use secret_lookup::secret_lookup;
pub use secret_writes::sealing_key;
pub use secrets::secrets;
pub use settings::settings;
pub use system::system;
pub use tenants::tenants;
pub use timestamps::timestamps;
pub use workspaces::workspaces;

/// The whole story on one store, which must be empty (never bootstrapped).
pub async fn run_all(store: &dyn Store) {
    system(store).await;
    tenants(store).await;
    workspaces(store).await;
    api_keys(store).await;
    concurrent_revoke(store).await;
    tenant_isolation(store).await;
    timestamps(store).await;
    sandboxes(store).await;
    concurrent_sandbox_names(store).await;
    secrets(store).await;
    secret_lookup(store).await;
    settings(store).await;
    audit(store).await;
    audit_durability(store).await;
    concurrent_audit(store).await;
}

/// Generates one `#[tokio::test]` per area of the story.
///
/// `$with_store` names an `async fn(impl AsyncFnOnce(&dyn Store))` that
/// makes a fresh, empty store, runs the area on it and tears it down:
///
/// ```ignore
/// async fn with_store(area: impl AsyncFnOnce(&dyn Store)) {
///     let store = MyStore::connect(&fresh_url()).await.unwrap();
///     area(&store).await;
/// }
/// miosa_store_conformance::store_tests!(with_store);
/// ```
#[macro_export]
macro_rules! store_tests {
    ($with_store:path) => {
        $crate::store_tests!(@areas $with_store;
            system, tenants, workspaces, api_keys, concurrent_revoke, tenant_isolation, timestamps,
            sandboxes, concurrent_sandbox_names, secrets, secret_lookup, settings, audit,
            audit_durability, concurrent_audit, sealing_key);
    };
    (@areas $with_store:path; $($area:ident),+) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $area() {
                $with_store(async |store| $crate::$area(store).await).await;
            }
        )+
    };
}

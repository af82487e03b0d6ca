//! The one error type of the secrets service.

use miosa_core::FieldError;
use miosa_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("secret not found")]
    NotFound,
    /// The tenant turned end-user credentials off.
    #[error(
        "this tenant does not allow end-user credentials (settings: allow_end_user_credentials)"
    )]
    EndUserCredentialsDisabled,
    /// A workspace key asked for something only an admin key may do.
    #[error("{0}")]
    WorkspaceKeyForbidden(&'static str),
    /// Other writes to the same secret kept winning the race.
    #[error("the secret changed while it was being written; try again")]
    Contended,
    /// The database seals under a master key this server was not given.
    #[error(
        "this server does not hold the master key new secrets are sealed under ({kek_id}); \
         restart it with that key (MIOSA_MASTER_KEY, or MIOSA_PREVIOUS_MASTER_KEYS during a \
         rotation)"
    )]
    SealingKeyUnavailable { kek_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Vault(#[from] miosa_vault::VaultError),
}

/// The `allowed_hosts` error when the tenant requires them.
pub(crate) fn hosts_required() -> SecretsError {
    SecretsError::Invalid(FieldError::new(
        "allowed_hosts",
        "must name at least one host: this tenant requires it (settings: require_allowed_hosts)",
    ))
}

pub type Result<T> = std::result::Result<T, SecretsError>;

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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Vault(#[from] miosa_vault::VaultError),
}

pub type Result<T> = std::result::Result<T, SecretsError>;

//! What can go wrong, phrased for the operator. No variant carries key
//! bytes or plaintext.

use std::path::PathBuf;

use miosa_store::StoreError;

/// Errors from the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A master key given as text is not 64 hex characters.
    #[error("{origin}: must be 64 hex characters (32 bytes; e.g. `openssl rand -hex 32`)")]
    BadKey { origin: String },

    /// A key file exists but cannot be trusted or used.
    #[error("{}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the operating system's random number generator failed: {0}")]
    Random(String),

    /// The value was sealed under a key-encryption key this ring lacks.
    #[error(
        "this secret is encrypted under key-encryption key {kek_id}, which this server does not \
         have (it has {known}); configure the master key the value was written with"
    )]
    UnknownKek { kek_id: String, known: String },

    /// Stored secrets use a key-encryption key that is not configured.
    #[error(
        "secrets in the database are encrypted under key-encryption key {kek_id}, which is not \
         the configured master key ({current}); every read of them would fail. Start with the \
         master key they were written with (MIOSA_MASTER_KEY, or the `master-key` file of the \
         data dir that wrote them); if a rotation of MIOSA_MASTER_KEY was interrupted, \
         rerun `miosa admin rotate-master-key` with the old key as MIOSA_MASTER_KEY and the \
         new one as MIOSA_NEW_MASTER_KEY"
    )]
    KekNotConfigured { kek_id: String, current: String },

    /// The data key does not unwrap: wrong key-encryption key, or the wrapped
    /// key was changed.
    #[error("the data key of a secret under {kek_id} does not decrypt (wrong master key or tampered data)")]
    Unwrap { kek_id: String },

    /// The value does not decrypt: wrong context (tenant) or tampered data.
    #[error(
        "a secret value does not decrypt (it belongs to another context, or was tampered with)"
    )]
    Decrypt,

    /// A stored field has an impossible shape.
    #[error("malformed sealed value: {0}")]
    Malformed(&'static str),

    /// The rotation cannot proceed as asked.
    #[error("{0}")]
    Rotation(String),

    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Results of this crate.
pub type VaultResult<T> = Result<T, VaultError>;

pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> VaultError {
    let path = path.into();
    move |source| VaultError::Io {
        action,
        path,
        source,
    }
}

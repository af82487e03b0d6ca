//! The one error type of the storage layer.

/// Errors every backend maps its failures into.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken, e.g. a duplicate workspace name.
    #[error("a {entity} with this {field} already exists")]
    Conflict {
        entity: &'static str,
        field: &'static str,
    },
    /// A referenced row does not exist (in this tenant).
    #[error("the referenced {field} does not exist")]
    MissingReference { field: &'static str },
    /// A tenant setting forbids the write (checked inside its transaction).
    #[error("the tenant setting {setting} forbids this")]
    SettingForbids { setting: &'static str },
    /// A value sealed under another key-encryption key than the one the
    /// database records for sealing (a rotation moved on).
    #[error("new values must be sealed under key-encryption key {current}")]
    StaleSealingKey { current: String },
    /// Schema migration failed at start.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// Anything else the database said.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored value could not be read back into a domain type.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

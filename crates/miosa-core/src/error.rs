//! Errors raised by domain validation.

/// A single invalid input field: which one and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The JSON field or query parameter, e.g. `name` or `limit`.
    pub field: String,
    /// A human sentence fragment, e.g. `must not be empty`.
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Errors from this crate.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// Fills `buf` with cryptographically secure random bytes.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CoreError> {
    getrandom::fill(buf).map_err(|e| CoreError::Random(e.to_string()))
}

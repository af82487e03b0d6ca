//! Validation of free-text input shared by every resource.

use crate::FieldError;

/// Longest name accepted for tenants, workspaces and keys.
pub const MAX_NAME_CHARS: usize = 128;

/// A display name: trimmed, 1..=128 characters, no control characters.
pub fn name(field: &str, value: &str) -> Result<String, FieldError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name("name", "  acme ").unwrap(), "acme");
        assert_eq!(name("name", "").unwrap_err().reason, "must not be empty");
        assert_eq!(name("name", "   ").unwrap_err().field, "name");
        assert!(name("name", &"x".repeat(128)).is_ok());
        assert!(name("name", &"x".repeat(129)).is_err());
        assert!(name("name", "a\u{0}b").is_err());
        assert!(name("name", "Clinique Étoile 🏥").is_ok());
    }
}

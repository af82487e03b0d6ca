//! Maps sqlx errors to [`StoreError`]; unique violations by the constraint
//! names the migrations spell out.

use std::fmt::Display;

use miosa_store::StoreError;

/// Unique constraints: (constraint, entity, field).
const UNIQUE: &[(&str, &str, &str)] = &[
    ("tenants_pkey", "tenant", "id"),
    ("tenants_name_key", "tenant", "name"),
    ("workspaces_pkey", "workspace", "id"),
    ("workspaces_tenant_name_key", "workspace", "name"),
    ("api_keys_pkey", "api_key", "id"),
    ("api_keys_key_hash_key", "api_key", "key_hash"),
    ("sandboxes_pkey", "sandbox", "id"),
    // The partial unique indexes on live names, with and without workspace.
    ("sandboxes_workspace_name_key", "sandbox", "name"),
    ("sandboxes_tenant_name_key", "sandbox", "name"),
    ("secrets_pkey", "secret", "id"),
    // Checked before the insert, so not expected: a second value adds a
    // version (or the write is a version conflict).
    ("secrets_scope_name_key", "secret", "version"),
    ("secrets_scope_expose_as_env_key", "secret", "expose_as_env"),
    ("audit_events_pkey", "audit_event", "id"),
    ("audit_events_tenant_seq_key", "audit_event", "seq"),
];

/// Any sqlx error; a known unique violation becomes `Conflict`.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    if let Some(d) = e.as_database_error() {
        if d.is_unique_violation() {
            let constraint = d.constraint().unwrap_or_default();
            if let Some(&(_, entity, field)) = UNIQUE.iter().find(|(c, ..)| *c == constraint) {
                return StoreError::Conflict { entity, field };
            }
        }
    }
    StoreError::Backend(Box::new(e))
}

/// Like [`db`], and a foreign-key violation means `field` names no row of
/// the tenant. Decided by the caller rather than by constraint name so that
/// both backends report the same field (SQLite cannot say which one failed).
pub(crate) fn db_ref(e: sqlx::Error, field: &'static str) -> StoreError {
    if e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
    {
        return StoreError::MissingReference { field };
    }
    db(e)
}

pub(crate) fn corrupt(table: &'static str, reason: impl Display) -> StoreError {
    StoreError::Corrupt {
        table,
        reason: reason.to_string(),
    }
}

//! Maps sqlx errors to [`StoreError`].

use std::fmt::Display;

use miosa_store::StoreError;

/// Unique constraints, by the column list SQLite names in its message
/// (`UNIQUE constraint failed: tenants.name`): (columns, entity, field).
const UNIQUE: &[(&str, &str, &str)] = &[
    ("tenants.id", "tenant", "id"),
    ("tenants.name", "tenant", "name"),
    ("workspaces.id", "workspace", "id"),
    ("workspaces.tenant_id, workspaces.name", "workspace", "name"),
    ("api_keys.id", "api_key", "id"),
    ("api_keys.key_hash", "api_key", "key_hash"),
    ("sandboxes.id", "sandbox", "id"),
    // The partial unique indexes on live names, with and without workspace.
    (
        "sandboxes.tenant_id, sandboxes.workspace_id, sandboxes.name",
        "sandbox",
        "name",
    ),
    ("sandboxes.tenant_id, sandboxes.name", "sandbox", "name"),
    ("secrets.id", "secret", "id"),
    // Checked before the insert, so not expected: a second value adds a
    // version (or the write is a version conflict).
    (
        "secrets.tenant_id, secrets.scope, secrets.scope_key, secrets.workspace_id, secrets.name",
        "secret",
        "version",
    ),
    (
        "secrets.tenant_id, secrets.scope, secrets.scope_key, secrets.workspace_id, \
         secrets.expose_as_env",
        "secret",
        "expose_as_env",
    ),
    ("audit_events.id", "audit_event", "id"),
    (
        "audit_events.tenant_id, audit_events.seq",
        "audit_event",
        "seq",
    ),
];

/// Any sqlx error; a known unique violation becomes `Conflict`.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    if let Some(d) = e.as_database_error() {
        if d.is_unique_violation() {
            let columns = d
                .message()
                .strip_prefix("UNIQUE constraint failed: ")
                .unwrap_or_default();
            if let Some(&(_, entity, field)) = UNIQUE.iter().find(|(c, ..)| *c == columns) {
                return StoreError::Conflict { entity, field };
            }
        }
    }
    StoreError::Backend(Box::new(e))
}

/// Like [`db`], and a foreign-key violation means `field` names no row of
/// the tenant: SQLite does not say which constraint failed, so the caller
/// decides.
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

-- Secrets (metadata, and every sealed version of the value), tenant settings
-- with the secrets epoch, and the hash-chained audit log.

-- A secret is unique by (tenant, scope, scope key, name); a new value for the
-- same four adds a version. `scope_key` is '' where the domain has none (the
-- `tenant` scope), so the unique constraints see one key per scope.
CREATE TABLE secrets (
    id            TEXT    NOT NULL PRIMARY KEY,
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id),
    name          TEXT    NOT NULL,
    scope         TEXT    NOT NULL CHECK (scope IN
        ('sandbox', 'user', 'external_user', 'external_workspace', 'workspace', 'tenant')),
    scope_key     TEXT    NOT NULL,
    expose_as_env TEXT    NOT NULL,
    -- A JSON array of host patterns; empty means any host.
    allowed_hosts TEXT    NOT NULL
        CHECK (json_valid(allowed_hosts) AND json_type(allowed_hosts) = 'array'),
    -- The latest version; secret_versions holds it and every earlier one.
    version       INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    enabled       INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- The upsert's target; its leading columns also serve the candidate
    -- lookup (one probe per scope a sandbox offers).
    UNIQUE (tenant_id, scope, scope_key, name),
    -- One variable per scope key: the resolver picks between scopes, never
    -- within one. The store maps this violation by its column list.
    UNIQUE (tenant_id, scope, scope_key, expose_as_env)
) STRICT;

-- Tenant-filtered lists, newest first.
CREATE INDEX secrets_tenant_id ON secrets (tenant_id, id);

-- Every value ever set, sealed: AES-256-GCM under a data key of its own,
-- the data key wrapped by the key-encryption key `kek_id`.
CREATE TABLE secret_versions (
    secret_id   TEXT    NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    kek_id      TEXT    NOT NULL,
    wrapped_key BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (secret_id, version)
) STRICT;

-- Re-wrapping after a key rotation, and the distinct keys still in use.
CREATE INDEX secret_versions_kek_id ON secret_versions (kek_id);

-- A row appears on a tenant's first secret write or settings update; until
-- then the settings are the defaults and the epoch is 0.
CREATE TABLE tenant_settings (
    tenant_id                  TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    allow_end_user_credentials INTEGER NOT NULL CHECK (allow_end_user_credentials IN (0, 1)),
    -- Incremented in the same transaction as every change to the tenant's
    -- secrets or settings; caches of resolved credentials compare it.
    secrets_epoch              INTEGER NOT NULL CHECK (secrets_epoch >= 1),
    -- When the settings were last updated; NULL if they never were (the row
    -- was made by a secret write).
    updated_at                 INTEGER
) STRICT;

-- The audit log: append-only, one hash chain per tenant ordered by `seq`.
-- The request_* columns are all set or all NULL (a proxied request or not),
-- likewise the credential_* columns.
CREATE TABLE audit_events (
    id                    TEXT    NOT NULL PRIMARY KEY,
    tenant_id             TEXT    NOT NULL REFERENCES tenants (id),
    seq                   INTEGER NOT NULL CHECK (seq >= 1),
    time                  INTEGER NOT NULL,
    action                TEXT    NOT NULL,
    actor                 TEXT,
    target                TEXT,
    sandbox_id            TEXT,
    workspace_id          TEXT,
    owner_user_id         TEXT,
    external_user_id      TEXT,
    external_workspace_id TEXT,
    external_project_id   TEXT,
    request_method        TEXT,
    request_host          TEXT,
    request_path          TEXT,
    request_status        INTEGER CHECK (request_status BETWEEN 0 AND 65535),
    request_bytes_out     INTEGER CHECK (request_bytes_out >= 0),
    request_bytes_in      INTEGER CHECK (request_bytes_in >= 0),
    request_duration_ms   INTEGER CHECK (request_duration_ms >= 0),
    credential_secret_id  TEXT,
    credential_name       TEXT,
    credential_scope      TEXT CHECK (credential_scope IN
        ('sandbox', 'user', 'external_user', 'external_workspace', 'workspace', 'tenant')),
    outcome               TEXT    NOT NULL CHECK (outcome IN ('success', 'denied', 'error')),
    prev_hash             TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash                  TEXT    NOT NULL CHECK (length(hash) = 64),
    -- The chain has one row per position; also the index audit_chain walks.
    UNIQUE (tenant_id, seq),
    CHECK ((request_method IS NULL) = (request_host IS NULL)
        AND (request_method IS NULL) = (request_path IS NULL)
        AND (request_method IS NULL) = (request_bytes_out IS NULL)
        AND (request_method IS NULL) = (request_bytes_in IS NULL)
        AND (request_method IS NULL) = (request_duration_ms IS NULL)
        AND (request_method IS NOT NULL OR request_status IS NULL)),
    CHECK ((credential_secret_id IS NULL) = (credential_name IS NULL)
        AND (credential_secret_id IS NULL) = (credential_scope IS NULL))
) STRICT;

-- Tenant-filtered lists, newest first, unfiltered or by one attribute; the
-- other filters (time, a second attribute) are checked on the rows the index
-- walks.
CREATE INDEX audit_events_tenant_id ON audit_events (tenant_id, id);
CREATE INDEX audit_events_tenant_external_user
    ON audit_events (tenant_id, external_user_id, id);
CREATE INDEX audit_events_tenant_external_workspace
    ON audit_events (tenant_id, external_workspace_id, id);
CREATE INDEX audit_events_tenant_external_project
    ON audit_events (tenant_id, external_project_id, id);
CREATE INDEX audit_events_tenant_sandbox ON audit_events (tenant_id, sandbox_id, id);
CREATE INDEX audit_events_tenant_action ON audit_events (tenant_id, action, id);

-- Each tenant's last row: where the next append links on.
CREATE TABLE audit_heads (
    tenant_id TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    hash      TEXT    NOT NULL CHECK (length(hash) = 64)
) STRICT;

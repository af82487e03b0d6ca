-- Tenants, their workspaces and API keys, and the database's own state.
-- Timestamps are INTEGER Unix microseconds (UTC): exact round trips, and they
-- sort as numbers.

CREATE TABLE tenants (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE workspaces (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant_id  TEXT    NOT NULL REFERENCES tenants (id),
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant_id, name),
    -- Lets api_keys reference (tenant_id, id), so a key can never name
    -- another tenant's workspace; also the index for tenant-filtered lists.
    UNIQUE (tenant_id, id)
) STRICT;

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant_id    TEXT    NOT NULL REFERENCES tenants (id),
    name         TEXT    NOT NULL,
    scope        TEXT    NOT NULL,
    workspace_id TEXT,
    -- Hex HMAC-SHA256 of the key; the key itself is never stored.
    key_hash     TEXT    NOT NULL UNIQUE CHECK (length(key_hash) = 64),
    hint         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces (tenant_id, id),
    CHECK ((scope = 'admin' AND workspace_id IS NULL)
        OR (scope = 'workspace' AND workspace_id IS NOT NULL))
) STRICT;

CREATE INDEX api_keys_tenant_id ON api_keys (tenant_id, id);

CREATE TABLE system_state (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Tenants, their workspaces and API keys, and the database's own state.
-- IDs use the "C" collation so their order is byte order, the order the
-- time-ordered IDs and the cursors are built on. Constraint names are spelled
-- out because the store maps violations to domain errors by name.

CREATE TABLE tenants (
    id         TEXT COLLATE "C" NOT NULL CONSTRAINT tenants_pkey PRIMARY KEY,
    name       TEXT             NOT NULL CONSTRAINT tenants_name_key UNIQUE,
    created_at TIMESTAMPTZ      NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT COLLATE "C" NOT NULL CONSTRAINT workspaces_pkey PRIMARY KEY,
    tenant_id  TEXT COLLATE "C" NOT NULL
        CONSTRAINT workspaces_tenant_fkey REFERENCES tenants (id),
    name       TEXT             NOT NULL,
    created_at TIMESTAMPTZ      NOT NULL,
    CONSTRAINT workspaces_tenant_name_key UNIQUE (tenant_id, name),
    -- Lets api_keys reference (tenant_id, id), so a key can never name
    -- another tenant's workspace; also the index for tenant-filtered lists.
    CONSTRAINT workspaces_tenant_id_key UNIQUE (tenant_id, id)
);

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" NOT NULL CONSTRAINT api_keys_pkey PRIMARY KEY,
    tenant_id    TEXT COLLATE "C" NOT NULL
        CONSTRAINT api_keys_tenant_fkey REFERENCES tenants (id),
    name         TEXT             NOT NULL,
    scope        TEXT             NOT NULL,
    workspace_id TEXT COLLATE "C",
    -- Hex HMAC-SHA256 of the key; the key itself is never stored.
    key_hash     TEXT COLLATE "C" NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE
        CONSTRAINT api_keys_key_hash_check CHECK (length(key_hash) = 64),
    hint         TEXT             NOT NULL,
    created_at   TIMESTAMPTZ      NOT NULL,
    revoked_at   TIMESTAMPTZ,
    CONSTRAINT api_keys_workspace_fkey
        FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces (tenant_id, id),
    CONSTRAINT api_keys_scope_check
        CHECK ((scope = 'admin' AND workspace_id IS NULL)
            OR (scope = 'workspace' AND workspace_id IS NOT NULL))
);

CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id, id);

CREATE TABLE system_state (
    key   TEXT NOT NULL CONSTRAINT system_state_pkey PRIMARY KEY,
    value TEXT NOT NULL
);

-- Secrets (metadata, and every sealed version of the value), tenant settings
-- with the secrets epoch, and the hash-chained audit log. Constraint and
-- index names are spelled out because the store maps violations by name.

-- A secret is unique by (tenant, scope, scope key, name); a new value for the
-- same four adds a version. `scope_key` is '' where the domain has none (the
-- `tenant` scope), so the unique constraints see one key per scope.
CREATE TABLE secrets (
    id            TEXT COLLATE "C" NOT NULL CONSTRAINT secrets_pkey PRIMARY KEY,
    tenant_id     TEXT COLLATE "C" NOT NULL
        CONSTRAINT secrets_tenant_fkey REFERENCES tenants (id),
    name          TEXT             NOT NULL,
    scope         TEXT             NOT NULL
        CONSTRAINT secrets_scope_check CHECK (scope IN
            ('sandbox', 'user', 'external_user', 'external_workspace', 'workspace', 'tenant')),
    scope_key     TEXT             NOT NULL,
    expose_as_env TEXT             NOT NULL,
    -- An array of host patterns; empty means any host.
    allowed_hosts JSONB            NOT NULL
        CONSTRAINT secrets_allowed_hosts_check CHECK (jsonb_typeof(allowed_hosts) = 'array'),
    -- The latest version; secret_versions holds it and every earlier one.
    -- BIGINT: the domain's values are u32, beyond INTEGER's range.
    version       BIGINT           NOT NULL
        CONSTRAINT secrets_version_check CHECK (version BETWEEN 1 AND 4294967295),
    enabled       BOOLEAN          NOT NULL,
    created_at    TIMESTAMPTZ      NOT NULL,
    updated_at    TIMESTAMPTZ      NOT NULL,
    -- The upsert's target; its leading columns also serve the candidate
    -- lookup (one probe per scope a sandbox offers).
    CONSTRAINT secrets_scope_name_key UNIQUE (tenant_id, scope, scope_key, name),
    -- One variable per scope key: the resolver picks between scopes, never
    -- within one.
    CONSTRAINT secrets_scope_expose_as_env_key
        UNIQUE (tenant_id, scope, scope_key, expose_as_env)
);

-- Tenant-filtered lists, newest first.
CREATE INDEX secrets_tenant_id_idx ON secrets (tenant_id, id);

-- Every value ever set, sealed: AES-256-GCM under a data key of its own,
-- the data key wrapped by the key-encryption key `kek_id`.
CREATE TABLE secret_versions (
    secret_id   TEXT COLLATE "C" NOT NULL
        CONSTRAINT secret_versions_secret_fkey REFERENCES secrets (id) ON DELETE CASCADE,
    version     BIGINT           NOT NULL
        CONSTRAINT secret_versions_version_check CHECK (version BETWEEN 1 AND 4294967295),
    kek_id      TEXT COLLATE "C" NOT NULL,
    wrapped_key BYTEA            NOT NULL,
    nonce       BYTEA            NOT NULL,
    ciphertext  BYTEA            NOT NULL,
    created_at  TIMESTAMPTZ      NOT NULL,
    CONSTRAINT secret_versions_pkey PRIMARY KEY (secret_id, version)
);

-- Re-wrapping after a key rotation, and the distinct keys still in use.
CREATE INDEX secret_versions_kek_id_idx ON secret_versions (kek_id);

-- A row appears on a tenant's first secret write or settings update; until
-- then the settings are the defaults and the epoch is 0. Every secret write
-- updates the row first, so it is also the lock that serialises a tenant's
-- secret writes.
CREATE TABLE tenant_settings (
    tenant_id                  TEXT COLLATE "C" NOT NULL
        CONSTRAINT tenant_settings_pkey PRIMARY KEY
        CONSTRAINT tenant_settings_tenant_fkey REFERENCES tenants (id),
    allow_end_user_credentials BOOLEAN          NOT NULL,
    -- Incremented in the same transaction as every change to the tenant's
    -- secrets or settings; caches of resolved credentials compare it.
    secrets_epoch              BIGINT           NOT NULL
        CONSTRAINT tenant_settings_secrets_epoch_check CHECK (secrets_epoch >= 1),
    -- When the settings were last updated; NULL if they never were (the row
    -- was made by a secret write).
    updated_at                 TIMESTAMPTZ
);

-- The audit log: append-only, one hash chain per tenant ordered by `seq`.
-- The request_* columns are all set or all NULL (a proxied request or not),
-- likewise the credential_* columns.
CREATE TABLE audit_events (
    id                    TEXT COLLATE "C" NOT NULL CONSTRAINT audit_events_pkey PRIMARY KEY,
    tenant_id             TEXT COLLATE "C" NOT NULL
        CONSTRAINT audit_events_tenant_fkey REFERENCES tenants (id),
    seq                   BIGINT           NOT NULL
        CONSTRAINT audit_events_seq_check CHECK (seq >= 1),
    time                  TIMESTAMPTZ      NOT NULL,
    action                TEXT COLLATE "C" NOT NULL,
    actor                 TEXT,
    target                TEXT,
    sandbox_id            TEXT COLLATE "C",
    workspace_id          TEXT COLLATE "C",
    owner_user_id         TEXT,
    external_user_id      TEXT,
    external_workspace_id TEXT,
    external_project_id   TEXT,
    request_method        TEXT,
    request_host          TEXT,
    request_path          TEXT,
    request_status        INTEGER
        CONSTRAINT audit_events_request_status_check CHECK (request_status BETWEEN 0 AND 65535),
    request_bytes_out     BIGINT
        CONSTRAINT audit_events_request_bytes_out_check CHECK (request_bytes_out >= 0),
    request_bytes_in      BIGINT
        CONSTRAINT audit_events_request_bytes_in_check CHECK (request_bytes_in >= 0),
    request_duration_ms   BIGINT
        CONSTRAINT audit_events_request_duration_ms_check CHECK (request_duration_ms >= 0),
    credential_secret_id  TEXT COLLATE "C",
    credential_name       TEXT,
    credential_scope      TEXT
        CONSTRAINT audit_events_credential_scope_check CHECK (credential_scope IN
            ('sandbox', 'user', 'external_user', 'external_workspace', 'workspace', 'tenant')),
    outcome               TEXT             NOT NULL
        CONSTRAINT audit_events_outcome_check CHECK (outcome IN ('success', 'denied', 'error')),
    prev_hash             TEXT COLLATE "C" NOT NULL
        CONSTRAINT audit_events_prev_hash_check CHECK (length(prev_hash) = 64),
    hash                  TEXT COLLATE "C" NOT NULL
        CONSTRAINT audit_events_hash_check CHECK (length(hash) = 64),
    -- The chain has one row per position; also the index audit_chain walks.
    CONSTRAINT audit_events_tenant_seq_key UNIQUE (tenant_id, seq),
    CONSTRAINT audit_events_request_check
        CHECK ((request_method IS NULL) = (request_host IS NULL)
            AND (request_method IS NULL) = (request_path IS NULL)
            AND (request_method IS NULL) = (request_bytes_out IS NULL)
            AND (request_method IS NULL) = (request_bytes_in IS NULL)
            AND (request_method IS NULL) = (request_duration_ms IS NULL)
            AND (request_method IS NOT NULL OR request_status IS NULL)),
    CONSTRAINT audit_events_credential_check
        CHECK ((credential_secret_id IS NULL) = (credential_name IS NULL)
            AND (credential_secret_id IS NULL) = (credential_scope IS NULL))
);

-- Tenant-filtered lists, newest first, unfiltered or by one attribute; the
-- other filters (time, a second attribute) are checked on the rows the index
-- walks.
CREATE INDEX audit_events_tenant_id_idx ON audit_events (tenant_id, id);
CREATE INDEX audit_events_tenant_external_user_idx
    ON audit_events (tenant_id, external_user_id, id);
CREATE INDEX audit_events_tenant_external_workspace_idx
    ON audit_events (tenant_id, external_workspace_id, id);
CREATE INDEX audit_events_tenant_external_project_idx
    ON audit_events (tenant_id, external_project_id, id);
CREATE INDEX audit_events_tenant_sandbox_idx ON audit_events (tenant_id, sandbox_id, id);
CREATE INDEX audit_events_tenant_action_idx ON audit_events (tenant_id, action, id);

-- Each tenant's last row: where the next append links on. An append inserts
-- the row if missing (seq 0, the genesis hash) and locks it `FOR UPDATE`, so
-- appends to one tenant's chain run one after the other.
CREATE TABLE audit_heads (
    tenant_id TEXT COLLATE "C" NOT NULL
        CONSTRAINT audit_heads_pkey PRIMARY KEY
        CONSTRAINT audit_heads_tenant_fkey REFERENCES tenants (id),
    seq       BIGINT           NOT NULL CONSTRAINT audit_heads_seq_check CHECK (seq >= 0),
    hash      TEXT COLLATE "C" NOT NULL CONSTRAINT audit_heads_hash_check CHECK (length(hash) = 64)
);

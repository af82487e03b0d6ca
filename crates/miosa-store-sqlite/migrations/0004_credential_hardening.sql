-- Hardening of the credential path:
-- - secrets: where a value may be substituted (`substitute_in`) and the
--   workspace a secret belongs to (`workspace_id`, '' when unbound), which
--   joins the uniqueness rules so two workspaces' bindings never collide;
-- - secret_versions: what each ciphertext's associated data covers
--   (`aad_version`: 1 the tenant only, 2 the secret's metadata);
-- - tenant_settings: `require_allowed_hosts`,
--   `workspace_keys_use_unbound_secrets`;
-- - sandboxes: the API key that created each one.
--
-- Both secret tables are rebuilt (SQLite cannot change a UNIQUE constraint
-- in place). The versions table is rebuilt first against the new secrets
-- table, so the old one is dropped with nothing referencing it and foreign
-- keys stay on throughout; the renames at the end carry the reference over.

CREATE TABLE secrets_new (
    id            TEXT    NOT NULL PRIMARY KEY,
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id),
    name          TEXT    NOT NULL,
    scope         TEXT    NOT NULL CHECK (scope IN
        ('sandbox', 'user', 'external_user', 'external_workspace', 'workspace', 'tenant')),
    scope_key     TEXT    NOT NULL,
    -- The workspace the secret belongs to; '' for none.
    workspace_id  TEXT    NOT NULL,
    expose_as_env TEXT    NOT NULL,
    -- A JSON array of host patterns (`host` or `host:port`); empty means any host.
    allowed_hosts TEXT    NOT NULL
        CHECK (json_valid(allowed_hosts) AND json_type(allowed_hosts) = 'array'),
    -- A JSON array of `headers`, `query`, `body`.
    substitute_in TEXT    NOT NULL
        CHECK (json_valid(substitute_in) AND json_type(substitute_in) = 'array'),
    version       INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    enabled       INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    -- A `workspace` secret belongs to the workspace it is for.
    CHECK (scope <> 'workspace' OR workspace_id = scope_key),
    UNIQUE (tenant_id, scope, scope_key, workspace_id, name),
    UNIQUE (tenant_id, scope, scope_key, workspace_id, expose_as_env)
) STRICT;

-- Values stored before this migration were substituted everywhere; they
-- now follow the new default, headers only.
INSERT INTO secrets_new
    (id, tenant_id, name, scope, scope_key, workspace_id, expose_as_env, allowed_hosts,
     substitute_in, version, enabled, created_at, updated_at)
SELECT id, tenant_id, name, scope, scope_key,
       CASE scope WHEN 'workspace' THEN scope_key ELSE '' END,
       expose_as_env, allowed_hosts, '["headers"]', version, enabled, created_at, updated_at
FROM secrets;

CREATE TABLE secret_versions_new (
    secret_id   TEXT    NOT NULL REFERENCES secrets_new (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    kek_id      TEXT    NOT NULL,
    wrapped_key BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    aad_version INTEGER NOT NULL CHECK (aad_version IN (1, 2)),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (secret_id, version)
) STRICT;

INSERT INTO secret_versions_new
    (secret_id, version, kek_id, wrapped_key, nonce, ciphertext, aad_version, created_at)
SELECT secret_id, version, kek_id, wrapped_key, nonce, ciphertext, 1, created_at
FROM secret_versions;

DROP TABLE secret_versions;
DROP TABLE secrets;
ALTER TABLE secrets_new RENAME TO secrets;
ALTER TABLE secret_versions_new RENAME TO secret_versions;

CREATE INDEX secrets_tenant_id ON secrets (tenant_id, id);
-- A workspace key's list of its workspace's secrets.
CREATE INDEX secrets_tenant_workspace ON secrets (tenant_id, workspace_id, id);
CREATE INDEX secret_versions_kek_id ON secret_versions (kek_id);
-- Legacy values left to re-seal.
CREATE INDEX secret_versions_aad_version ON secret_versions (aad_version) WHERE aad_version = 1;

ALTER TABLE tenant_settings ADD COLUMN require_allowed_hosts INTEGER NOT NULL DEFAULT 0
    CHECK (require_allowed_hosts IN (0, 1));
ALTER TABLE tenant_settings ADD COLUMN workspace_keys_use_unbound_secrets INTEGER NOT NULL DEFAULT 0
    CHECK (workspace_keys_use_unbound_secrets IN (0, 1));

ALTER TABLE sandboxes ADD COLUMN created_by_key_id TEXT;
ALTER TABLE sandboxes ADD COLUMN created_by_workspace_key INTEGER NOT NULL DEFAULT 0
    CHECK (created_by_workspace_key IN (0, 1));

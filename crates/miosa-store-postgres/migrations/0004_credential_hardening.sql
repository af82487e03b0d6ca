-- Hardening of the credential path:
-- - secrets: where a value may be substituted (`substitute_in`) and the
--   workspace a secret belongs to (`workspace_id`, '' when unbound), which
--   joins the uniqueness rules so two workspaces' bindings never collide;
-- - secret_versions: what each ciphertext's associated data covers
--   (`aad_version`: 1 the tenant only, 2 the secret's metadata);
-- - tenant_settings: `require_allowed_hosts`,
--   `workspace_keys_use_unbound_secrets`;
-- - sandboxes: the API key that created each one.

-- Values stored before this migration were substituted everywhere; they
-- now follow the new default, headers only.
ALTER TABLE secrets
    ADD COLUMN workspace_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN substitute_in JSONB NOT NULL DEFAULT '["headers"]'
        CONSTRAINT secrets_substitute_in_check CHECK (jsonb_typeof(substitute_in) = 'array');
UPDATE secrets SET workspace_id = scope_key WHERE scope = 'workspace';
ALTER TABLE secrets
    ALTER COLUMN workspace_id DROP DEFAULT,
    ALTER COLUMN substitute_in DROP DEFAULT,
    DROP CONSTRAINT secrets_scope_name_key,
    DROP CONSTRAINT secrets_scope_expose_as_env_key,
    -- A `workspace` secret belongs to the workspace it is for.
    ADD CONSTRAINT secrets_workspace_check CHECK (scope <> 'workspace' OR workspace_id = scope_key),
    ADD CONSTRAINT secrets_scope_name_key
        UNIQUE (tenant_id, scope, scope_key, workspace_id, name),
    ADD CONSTRAINT secrets_scope_expose_as_env_key
        UNIQUE (tenant_id, scope, scope_key, workspace_id, expose_as_env);

-- A workspace key's list of its workspace's secrets.
CREATE INDEX secrets_tenant_workspace_idx ON secrets (tenant_id, workspace_id, id);

ALTER TABLE secret_versions
    ADD COLUMN aad_version SMALLINT NOT NULL DEFAULT 1
        CONSTRAINT secret_versions_aad_version_check CHECK (aad_version IN (1, 2));
ALTER TABLE secret_versions ALTER COLUMN aad_version DROP DEFAULT;
-- Legacy values left to re-seal.
CREATE INDEX secret_versions_aad_version_idx ON secret_versions (aad_version)
    WHERE aad_version = 1;

ALTER TABLE tenant_settings
    ADD COLUMN require_allowed_hosts BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN workspace_keys_use_unbound_secrets BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE sandboxes
    ADD COLUMN created_by_key_id TEXT COLLATE "C",
    ADD COLUMN created_by_workspace_key BOOLEAN NOT NULL DEFAULT FALSE;

-- Sandboxes. Rows are kept after destruction (status 'destroyed') for
-- attribution, so names are unique among live sandboxes only. Constraint and
-- index names are spelled out because the store maps violations by name.

CREATE TABLE sandboxes (
    id                    TEXT COLLATE "C" NOT NULL CONSTRAINT sandboxes_pkey PRIMARY KEY,
    tenant_id             TEXT COLLATE "C" NOT NULL
        CONSTRAINT sandboxes_tenant_fkey REFERENCES tenants (id),
    -- NULL for sandboxes created by an admin key without a workspace.
    workspace_id          TEXT COLLATE "C",
    name                  TEXT,
    status                TEXT             NOT NULL
        CONSTRAINT sandboxes_status_check
        CHECK (status IN ('creating', 'running', 'paused', 'error', 'destroyed')),
    -- The Miosa node whose host runs the sandbox's container; each node's
    -- reconciler and reaper look only at their own rows.
    node_id               TEXT             NOT NULL,
    template              TEXT             NOT NULL,
    owner_user_id         TEXT,
    external_user_id      TEXT,
    external_workspace_id TEXT,
    external_project_id   TEXT,
    -- An object of string values.
    metadata              JSONB            NOT NULL
        CONSTRAINT sandboxes_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    cpu                   DOUBLE PRECISION NOT NULL,
    -- BIGINT: the domain's values are u32, beyond INTEGER's range.
    memory_mb             BIGINT           NOT NULL
        CONSTRAINT sandboxes_memory_mb_check CHECK (memory_mb BETWEEN 0 AND 4294967295),
    timeout_seconds       BIGINT           NOT NULL
        CONSTRAINT sandboxes_timeout_seconds_check
        CHECK (timeout_seconds BETWEEN 0 AND 4294967295),
    on_timeout            TEXT             NOT NULL
        CONSTRAINT sandboxes_on_timeout_check CHECK (on_timeout IN ('destroy', 'pause')),
    created_at            TIMESTAMPTZ      NOT NULL,
    expires_at            TIMESTAMPTZ      NOT NULL,
    destroyed_at          TIMESTAMPTZ,
    -- A sandbox can never name another tenant's workspace.
    CONSTRAINT sandboxes_workspace_fkey
        FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces (tenant_id, id)
);

-- Names are unique among the live sandboxes of a workspace, or of the tenant
-- for sandboxes without one (NULLs are distinct in a unique index, hence
-- two indexes).
CREATE UNIQUE INDEX sandboxes_workspace_name_key ON sandboxes (tenant_id, workspace_id, name)
    WHERE name IS NOT NULL AND status <> 'destroyed' AND workspace_id IS NOT NULL;
CREATE UNIQUE INDEX sandboxes_tenant_name_key ON sandboxes (tenant_id, name)
    WHERE name IS NOT NULL AND status <> 'destroyed' AND workspace_id IS NULL;

-- Tenant-filtered lists, newest first, with or without one label filter.
CREATE INDEX sandboxes_tenant_id_idx ON sandboxes (tenant_id, id);
CREATE INDEX sandboxes_tenant_workspace_idx ON sandboxes (tenant_id, workspace_id, id);
CREATE INDEX sandboxes_tenant_external_user_idx
    ON sandboxes (tenant_id, external_user_id, id);
CREATE INDEX sandboxes_tenant_external_workspace_idx
    ON sandboxes (tenant_id, external_workspace_id, id);
CREATE INDEX sandboxes_tenant_external_project_idx
    ON sandboxes (tenant_id, external_project_id, id);

-- Each node's reaper (by node, status and deadline); its leading columns
-- also serve each node's reconciler (by node and status).
CREATE INDEX sandboxes_node_status_expires_at_idx
    ON sandboxes (node_id, status, expires_at);

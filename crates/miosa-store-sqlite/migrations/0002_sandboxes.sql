-- Sandboxes. Rows are kept after destruction (status 'destroyed') for
-- attribution, so names are unique among live sandboxes only.

CREATE TABLE sandboxes (
    id                    TEXT    NOT NULL PRIMARY KEY,
    tenant_id             TEXT    NOT NULL REFERENCES tenants (id),
    -- NULL for sandboxes created by an admin key without a workspace.
    workspace_id          TEXT,
    name                  TEXT,
    status                TEXT    NOT NULL
        CHECK (status IN ('creating', 'running', 'paused', 'error', 'destroyed')),
    -- The Miosa node whose host runs the sandbox's container; each node's
    -- reconciler and reaper look only at their own rows.
    node_id               TEXT    NOT NULL,
    template              TEXT    NOT NULL,
    owner_user_id         TEXT,
    external_user_id      TEXT,
    external_workspace_id TEXT,
    external_project_id   TEXT,
    -- A JSON object of string values.
    metadata              TEXT    NOT NULL
        CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    cpu                   REAL    NOT NULL,
    memory_mb             INTEGER NOT NULL CHECK (memory_mb BETWEEN 0 AND 4294967295),
    timeout_seconds       INTEGER NOT NULL CHECK (timeout_seconds BETWEEN 0 AND 4294967295),
    on_timeout            TEXT    NOT NULL CHECK (on_timeout IN ('destroy', 'pause')),
    created_at            INTEGER NOT NULL,
    expires_at            INTEGER NOT NULL,
    destroyed_at          INTEGER,
    -- A sandbox can never name another tenant's workspace.
    FOREIGN KEY (tenant_id, workspace_id) REFERENCES workspaces (tenant_id, id)
) STRICT;

-- Names are unique among the live sandboxes of a workspace, or of the tenant
-- for sandboxes without one (NULLs are distinct in a unique index, hence
-- two indexes). The store maps both violations by their column lists.
CREATE UNIQUE INDEX sandboxes_workspace_name ON sandboxes (tenant_id, workspace_id, name)
    WHERE name IS NOT NULL AND status <> 'destroyed' AND workspace_id IS NOT NULL;
CREATE UNIQUE INDEX sandboxes_tenant_name ON sandboxes (tenant_id, name)
    WHERE name IS NOT NULL AND status <> 'destroyed' AND workspace_id IS NULL;

-- Tenant-filtered lists, newest first, with or without one label filter.
CREATE INDEX sandboxes_tenant_id ON sandboxes (tenant_id, id);
CREATE INDEX sandboxes_tenant_workspace ON sandboxes (tenant_id, workspace_id, id);
CREATE INDEX sandboxes_tenant_external_user ON sandboxes (tenant_id, external_user_id, id);
CREATE INDEX sandboxes_tenant_external_workspace
    ON sandboxes (tenant_id, external_workspace_id, id);
CREATE INDEX sandboxes_tenant_external_project
    ON sandboxes (tenant_id, external_project_id, id);

-- Each node's reaper (by node, status and deadline); its leading columns
-- also serve each node's reconciler (by node and status).
CREATE INDEX sandboxes_node_status_expires_at ON sandboxes (node_id, status, expires_at);

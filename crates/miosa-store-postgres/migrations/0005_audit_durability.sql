-- Audit rows that are durable before their request is sent, and signed
-- checkpoints of each tenant's chain.
--
-- A deferred row (`deferred`) is appended before the request carrying a
-- secret is forwarded; its hash covers everything known then. The status,
-- byte counts, duration and outcome complete it later (`pending` goes
-- false), outside the hash.
ALTER TABLE audit_events
    ADD COLUMN deferred BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN pending BOOLEAN NOT NULL DEFAULT FALSE,
    -- The API key that created the row's sandbox.
    ADD COLUMN created_by_key_id TEXT COLLATE "C",
    ADD CONSTRAINT audit_events_pending_check CHECK (NOT pending OR deferred);

-- A tenant's chain head (`seq`, `hash`) signed with an Ed25519 key derived
-- from the master key `kek_id`, which is not in the database: rewriting
-- every row and the head without it no longer matches the checkpoints.
CREATE TABLE audit_checkpoints (
    tenant_id TEXT COLLATE "C" NOT NULL
        CONSTRAINT audit_checkpoints_tenant_fkey REFERENCES tenants (id),
    seq       BIGINT           NOT NULL CONSTRAINT audit_checkpoints_seq_check CHECK (seq >= 1),
    hash      TEXT COLLATE "C" NOT NULL
        CONSTRAINT audit_checkpoints_hash_check CHECK (length(hash) = 64),
    time      TIMESTAMPTZ      NOT NULL,
    kek_id    TEXT COLLATE "C" NOT NULL,
    signature BYTEA            NOT NULL,
    CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (tenant_id, seq)
);

-- Re-signing after a master-key rotation.
CREATE INDEX audit_checkpoints_kek_id_idx ON audit_checkpoints (kek_id);

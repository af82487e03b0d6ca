-- Audit rows that are durable before their request is sent, and signed
-- checkpoints of each tenant's chain.
--
-- A deferred row (`deferred` = 1) is appended before the request carrying a
-- secret is forwarded; its hash covers everything known then. The status,
-- byte counts, duration and outcome complete it later (`pending` goes to
-- 0), outside the hash.
ALTER TABLE audit_events ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0
    CHECK (deferred IN (0, 1));
ALTER TABLE audit_events ADD COLUMN pending INTEGER NOT NULL DEFAULT 0
    CHECK (pending IN (0, 1) AND (pending = 0 OR deferred = 1));
-- The API key that created the row's sandbox.
ALTER TABLE audit_events ADD COLUMN created_by_key_id TEXT;

-- A tenant's chain head (`seq`, `hash`) signed with an Ed25519 key derived
-- from the master key `kek_id`, which is not in the database: rewriting
-- every row and the head without it no longer matches the checkpoints.
CREATE TABLE audit_checkpoints (
    tenant_id TEXT    NOT NULL REFERENCES tenants (id),
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    hash      TEXT    NOT NULL CHECK (length(hash) = 64),
    time      INTEGER NOT NULL,
    kek_id    TEXT    NOT NULL,
    signature BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) STRICT;

-- Re-signing after a master-key rotation.
CREATE INDEX audit_checkpoints_kek_id ON audit_checkpoints (kek_id);

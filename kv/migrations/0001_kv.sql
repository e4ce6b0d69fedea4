-- Key-value settings per tenant: binary-safe values with a content type, an optional
-- description (for configuration entries) and an optional expiry. Keys sort bytewise
-- (COLLATE "C") so a prefix is an index range.
--
-- Versions come from one sequence, so a key's version only ever grows, even across a
-- delete and a re-create: an If-Match on a version that was deleted can never match the
-- key's next life.

CREATE SEQUENCE kv_version;

CREATE TABLE kv (
    tenant_id    uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    key          text        COLLATE "C" NOT NULL CHECK (length(key) BETWEEN 1 AND 1024),
    value        bytea       NOT NULL,
    content_type text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    version      bigint      NOT NULL,
    expires_at   timestamptz,            -- invisible from then on; swept later
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;

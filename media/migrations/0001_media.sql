-- Content-addressed media per tenant. A hash row exists only with its blob stored: the
-- blob is written (atomically) to the store first, then the row. Identifiers (store paths)
-- are unique per write, so deleting an old blob can never remove a newer one of the same
-- bytes. Every child table cascades from its parent, and cleanup also deletes children
-- explicitly first, so no step of it can fail on a foreign key another step left behind.

CREATE TABLE media_hashes (
    tenant_id  uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    hash       bytea       NOT NULL CHECK (length(hash) = 32),   -- SHA-256 of the bytes
    size       bigint      NOT NULL CHECK (size > 0),
    format     text        NOT NULL,
    identifier text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, hash),
    CONSTRAINT media_hashes_identifier_key UNIQUE (identifier)
);
-- Newest-first listing with a total order (created_at, hash).
CREATE INDEX media_hashes_created ON media_hashes (tenant_id, created_at DESC, hash DESC);

-- Details of a stored original, extracted once at upload; re-relating overwrites.
CREATE TABLE media_details (
    tenant_id uuid  NOT NULL,
    hash      bytea NOT NULL,
    details   jsonb NOT NULL,
    PRIMARY KEY (tenant_id, hash),
    FOREIGN KEY (tenant_id, hash) REFERENCES media_hashes ON DELETE CASCADE
);

-- Public names of uploads; the delete token is kept as its SHA-256 only.
CREATE TABLE media_aliases (
    tenant_id  uuid        NOT NULL,
    alias      text        NOT NULL CHECK (length(alias) BETWEEN 1 AND 80),
    hash       bytea       NOT NULL,
    token_hash bytea       NOT NULL CHECK (length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, alias),
    FOREIGN KEY (tenant_id, hash) REFERENCES media_hashes ON DELETE CASCADE
);
CREATE INDEX media_aliases_hash ON media_aliases (tenant_id, hash, created_at, alias);

-- Processed versions of a hash, one per (hash, spec); accessed_at drives eviction.
CREATE TABLE media_variants (
    tenant_id   uuid        NOT NULL,
    hash        bytea       NOT NULL,
    spec        text        NOT NULL CHECK (length(spec) BETWEEN 1 AND 500),
    identifier  text        NOT NULL,
    details     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    accessed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, hash, spec),
    FOREIGN KEY (tenant_id, hash) REFERENCES media_hashes ON DELETE CASCADE,
    CONSTRAINT media_variants_identifier_key UNIQUE (identifier)
);
CREATE INDEX media_variants_accessed ON media_variants (tenant_id, accessed_at, hash, spec);

-- Remote URLs (normalized) kept under an alias; accessed_at drives eviction.
CREATE TABLE media_proxies (
    tenant_id   uuid        NOT NULL,
    url         text        NOT NULL CHECK (length(url) BETWEEN 1 AND 4096),
    alias       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    accessed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, url),
    FOREIGN KEY (tenant_id, alias) REFERENCES media_aliases ON DELETE CASCADE
);
CREATE INDEX media_proxies_alias ON media_proxies (tenant_id, alias);
CREATE INDEX media_proxies_accessed ON media_proxies (tenant_id, accessed_at, url);

-- Blobs whose rows are gone, recorded in the transaction that removed them and deleted
-- from the store after it commits (again by the periodic prune after a crash).
CREATE TABLE media_gone (
    identifier text        PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Backgrounded uploads: the received bytes wait in the store (incoming_identifier) for a
-- queue job to check and keep them; the result (or the refusal) waits here until claimed
-- or until it expires, when an unclaimed result's alias is removed.
CREATE TABLE media_uploads (
    tenant_id           uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    id                  uuid        NOT NULL,
    incoming_identifier text        NOT NULL,
    content_type        text        NOT NULL DEFAULT '',
    status              text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    result              jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX media_uploads_expires ON media_uploads (expires_at);

-- Store migration bookkeeping: blobs already copied to the new store (identifiers stay
-- the same across stores), so a resumed migration skips them without reading the old
-- store. Cleared when a migration completes.
CREATE TABLE media_store_moves (
    identifier text        PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    to_store   text        NOT NULL,
    moved_at   timestamptz NOT NULL DEFAULT now()
);

-- Small per-tenant media settings (the not-found image's alias).
CREATE TABLE media_settings (
    tenant_id uuid NOT NULL REFERENCES tenants ON DELETE CASCADE,
    key       text NOT NULL CHECK (length(key) BETWEEN 1 AND 80),
    value     text NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Documents: schema-less JSON in collections, every write versioned.
--
-- documents holds each document's current body (NULL once deleted: a tombstone).
-- document_versions holds one row per write. The current version's row carries no body
-- (the body is in documents); every older row carries either a reverse delta (an RFC 6902
-- patch from the next version's body to its own) or a full snapshot (the first version,
-- every 32nd, and whenever a delta would not be much smaller). So a create writes its body
-- once, and reading version N walks down from the nearest newer snapshot in at most 31
-- steps; pruning old versions never breaks newer ones.

CREATE TABLE collections (
    id            uuid        PRIMARY KEY,
    tenant_id     uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name          text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    description   text        NOT NULL DEFAULT '',
    schema        jsonb,
    max_doc_bytes integer     NOT NULL DEFAULT 1048576 CHECK (max_doc_bytes BETWEEN 64 AND 16777216),
    keep_versions integer     CHECK (keep_versions >= 1),
    keep_days     integer     CHECK (keep_days >= 1),
    metadata      jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Declared indexed paths: expression indexes built CONCURRENTLY in the background.
CREATE TABLE collection_indexes (
    collection_id uuid        NOT NULL REFERENCES collections ON DELETE CASCADE,
    path          text        NOT NULL,
    name          text        NOT NULL UNIQUE,
    status        text        NOT NULL DEFAULT 'building' CHECK (status IN ('building', 'ready', 'failed')),
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    ready_at      timestamptz,
    PRIMARY KEY (collection_id, path)
);

-- Indexes whose collection or declaration is gone, dropped CONCURRENTLY in the background.
CREATE TABLE collection_index_drops (
    name       text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- documents and document_versions carry no foreign key to collections: a per-row check
-- would cost bulk imports dearly. Deleting a collection (or its tenant) deletes them
-- explicitly, in the same transaction.
CREATE TABLE documents (
    collection_id uuid        NOT NULL,
    id            text        NOT NULL,
    tenant_id     uuid        NOT NULL,
    version       bigint      NOT NULL,
    body          jsonb,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (collection_id, id)
);

CREATE TABLE document_versions (
    collection_id uuid        NOT NULL,
    id            text        NOT NULL,
    version       bigint      NOT NULL,
    op            text        NOT NULL,
    at            timestamptz NOT NULL,
    actor         text        NOT NULL DEFAULT '',
    snapshot      jsonb,
    delta         jsonb,
    PRIMARY KEY (collection_id, id, version)
);

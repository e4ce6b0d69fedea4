-- Search: full-text and vector indexes derived from documents.
--
-- search_settings says, per collection, which fields are searched (with weights and a
-- text-search language), which vector fields exist and where their vectors come from, and
-- the partition field. Each settings change bumps the generation: rows computed under an
-- older generation are recomputed by a rebuild job.
--
-- search_text holds each document's tsvector, written in the same transaction as the
-- document (no indexing lag); one GIN index over (collection, tsvector) serves every
-- collection. search_words is each collection's vocabulary (lexemes), indexed by trigrams,
-- for typo tolerance. search_vectors holds the vectors (the truth; the in-memory HNSW
-- indexes of every node are derived from it). search_indexes reports each index's state.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE search_settings (
    collection_id uuid        PRIMARY KEY REFERENCES collections ON DELETE CASCADE,
    tenant_id     uuid        NOT NULL,
    settings      jsonb       NOT NULL,
    generation    bigint      NOT NULL DEFAULT 1,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- No foreign keys below: document writes and imports maintain these rows, and deletions
-- (document, collection, tenant) remove them explicitly in their transaction.
CREATE TABLE search_text (
    collection_id uuid     NOT NULL,
    doc_id        text     NOT NULL,
    version       bigint   NOT NULL, -- the document version the row was computed from
    generation    bigint   NOT NULL, -- the settings generation it was computed under
    tsv           tsvector NOT NULL,
    PRIMARY KEY (collection_id, doc_id)
);
CREATE INDEX search_text_tsv ON search_text USING gin (collection_id, tsv);

CREATE TABLE search_words (
    collection_id uuid NOT NULL,
    word          text NOT NULL,
    PRIMARY KEY (collection_id, word)
);
CREATE INDEX search_words_trgm ON search_words USING gin (collection_id, word gin_trgm_ops);

CREATE TABLE search_vectors (
    collection_id uuid   NOT NULL,
    field         text   NOT NULL,
    doc_id        text   NOT NULL,
    version       bigint NOT NULL, -- the document version the vector belongs to
    part          text   NOT NULL DEFAULT '', -- the document's partition ('' when unpartitioned)
    vec           bytea  NOT NULL, -- little-endian float32s
    PRIMARY KEY (collection_id, field, doc_id)
);

CREATE TABLE search_indexes (
    collection_id uuid        NOT NULL,
    name          text        NOT NULL, -- "text", or a vector field's name
    status        text        NOT NULL CHECK (status IN ('building', 'ready', 'failed')),
    generation    bigint      NOT NULL,
    rows_done     bigint      NOT NULL DEFAULT 0,
    rows_total    bigint      NOT NULL DEFAULT 0,
    error         text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (collection_id, name)
);

CREATE TABLE search_queries (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid        NOT NULL,
    collection_id uuid        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    mode          text        NOT NULL,
    query         text        NOT NULL DEFAULT '',
    k             integer     NOT NULL,
    results       integer     NOT NULL,
    took_us       bigint      NOT NULL,
    path          text        NOT NULL DEFAULT ''
);
CREATE INDEX search_queries_collection ON search_queries (collection_id, at);
CREATE INDEX search_queries_at ON search_queries USING brin (at);

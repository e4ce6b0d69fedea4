-- The change feed: one row per committed write of a module (documents, key-value, edges…),
-- inserted in the writer's transaction without a position. A single sequencer (elected
-- by an advisory lock) numbers committed rows in batches, so positions only ever grow in
-- the order rows became visible: a consumer reading "after position p" can never miss a
-- change that commits later, however out of order concurrent writers commit, and never
-- sees an uncommitted one.

CREATE TABLE changes (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    position   bigint,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text        NOT NULL,            -- module: doc, kv, edge, …
    scope      text        NOT NULL DEFAULT '', -- a collection, a queue…; '' when none
    key        text        NOT NULL,            -- the document id, the kv key…
    op         text        NOT NULL,            -- create, update, delete, …
    version    bigint,
    actor      text        NOT NULL DEFAULT ''
);

CREATE UNIQUE INDEX changes_position ON changes (position) WHERE position IS NOT NULL;
CREATE INDEX changes_tenant_position ON changes (tenant_id, position) WHERE position IS NOT NULL;
CREATE INDEX changes_unsequenced ON changes (id) WHERE position IS NULL;
CREATE INDEX changes_at ON changes (at);

CREATE TABLE change_sequence (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last           bigint  NOT NULL, -- the newest position given
    pruned_through bigint  NOT NULL  -- positions up to here may have been pruned
);
INSERT INTO change_sequence (last, pruned_through) VALUES (0, 0);

ALTER TABLE changes SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);

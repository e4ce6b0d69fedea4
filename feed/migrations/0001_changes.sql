-- The change feed: one row per write of a module (documents, key-value, edges…), or one
-- row for a bulk write of many keys, inserted in the writer's transaction without a
-- position. A single sequencer (elected by an advisory lock) numbers committed rows in
-- batches, so positions only ever grow in the order rows became visible: a consumer reading
-- "after position p" can never miss a change that commits later, however out of order
-- concurrent writers commit, and never sees an uncommitted one. (Ordering by transaction
-- id under the snapshot horizon would avoid the numbering, but the horizon is
-- cluster-wide: any long writing transaction, in any database, would stall the feed.)

CREATE TABLE changes (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid        NOT NULL, -- tenant deletion removes its rows (no per-row FK check)
    position   bigint,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text        NOT NULL,            -- module: doc, kv, edge, …
    scope      text        NOT NULL DEFAULT '', -- a collection, a queue…; '' when none
    key        text        NOT NULL DEFAULT '', -- the document id, the kv key…
    keys       text[],                          -- a bulk write: one change per key
    op         text        NOT NULL,            -- create, update, delete, import, …
    version    bigint,
    actor      text        NOT NULL DEFAULT ''
);

CREATE UNIQUE INDEX changes_position ON changes (position) WHERE position IS NOT NULL;
CREATE INDEX changes_tenant_position ON changes (tenant_id, position) WHERE position IS NOT NULL;
CREATE INDEX changes_unsequenced ON changes (id) WHERE position IS NULL;
CREATE INDEX changes_at ON changes USING brin (at);

CREATE TABLE change_sequence (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last           bigint  NOT NULL, -- the newest position given
    pruned_through bigint  NOT NULL  -- positions up to here may have been pruned
);
INSERT INTO change_sequence (last, pruned_through) VALUES (0, 0);

ALTER TABLE changes SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);

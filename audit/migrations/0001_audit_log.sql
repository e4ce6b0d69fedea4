-- The audit log: one row per mutating request or security event, written in the same
-- transaction as the change it records, append-only, and hash-chained per tenant.
--
-- Rows are inserted unsealed (seq, prev_hash and hash NULL), so concurrent writers never
-- wait on each other; a single sealer (elected by an advisory lock) assigns each chain's
-- next seq and hash in order, within milliseconds. The chain of a tenant is its id; the
-- platform's chain (users, sign-ins) is the nil uuid.

CREATE TABLE audit_log (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain         uuid        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    actor_user_id uuid,
    actor_key_id  uuid,
    actor_name    text        NOT NULL DEFAULT '',
    action        text        NOT NULL,
    resource_type text        NOT NULL DEFAULT '',
    resource_id   text        NOT NULL DEFAULT '',
    details       jsonb       NOT NULL DEFAULT '{}',
    ip            inet,
    user_agent    text        NOT NULL DEFAULT '',
    request_id    text        NOT NULL DEFAULT '',
    seq           bigint,
    prev_hash     bytea,
    hash          bytea
);

CREATE INDEX audit_log_chain_id ON audit_log (chain, id DESC);
CREATE UNIQUE INDEX audit_log_chain_seq ON audit_log (chain, seq) WHERE seq IS NOT NULL;
CREATE INDEX audit_log_unsealed ON audit_log (id) WHERE hash IS NULL;

-- The last sealed link of each chain.
CREATE TABLE audit_heads (
    chain uuid   PRIMARY KEY,
    seq   bigint NOT NULL,
    hash  bytea  NOT NULL
);

-- What a retention purge removed: the last purged link of a chain, so verification can
-- check that the first remaining row follows it.
CREATE TABLE audit_anchors (
    chain     uuid        PRIMARY KEY,
    seq       bigint      NOT NULL,
    hash      bytea       NOT NULL,
    purged_at timestamptz NOT NULL DEFAULT now()
);

-- Rows are append-only: the database rejects UPDATE, DELETE and TRUNCATE, except the
-- sealer's one-time setting of seq/prev_hash/hash on an unsealed row, and a retention purge
-- (which sets strata.audit_purge for its own transaction and is itself audited).
CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('strata.audit_purge', true) = 'on' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.hash IS NULL AND NEW.hash IS NOT NULL
       AND (NEW.id, NEW.chain, NEW.at, NEW.actor_user_id, NEW.actor_key_id, NEW.actor_name, NEW.action,
            NEW.resource_type, NEW.resource_id, NEW.details, NEW.ip, NEW.user_agent, NEW.request_id)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.chain, OLD.at, OLD.actor_user_id, OLD.actor_key_id, OLD.actor_name, OLD.action,
            OLD.resource_type, OLD.resource_id, OLD.details, OLD.ip, OLD.user_agent, OLD.request_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit log rows are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_guard BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();

CREATE FUNCTION audit_log_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log rows are append-only (TRUNCATE refused)' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_no_truncate();

-- An insert-heavy, never-updated table: vacuum for visibility only.
ALTER TABLE audit_log SET (autovacuum_vacuum_insert_scale_factor = 0.05);

-- Device readings: devices with their credentials and Fernet keys, time-partitioned history,
-- per-minute and per-hour rollups, the latest value of every series, rejected messages and
-- ingest counters.
--
-- The history and rollup tables are partitioned twice: by LIST on keep (the retention in
-- days the row was written under, so each tenant's retention is honoured by dropping whole
-- partitions), then by RANGE on time. The Go partition manager creates the sub-partitions
-- ahead of time and drops expired ones; rows are never bulk-deleted for retention.
--
-- Metric names are ASCII identifiers: their columns use the "C" collation, so indexes on them
-- compare bytes whatever the database's default collation.
--
-- Tables written by the ingest pipeline (readings*, reading_rejects, series_counters) carry
-- tenant_id without a foreign key: a per-row check would cost as much as the insert, and a
-- tenant or device deleted mid-batch must not make a batch fail. Their rows are removed by
-- series_purges (devices) and an orphan sweep (tenants) instead.

CREATE TABLE devices (
    id                 uuid        PRIMARY KEY,
    tenant_id          uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name               text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind               text        NOT NULL DEFAULT '' CHECK (length(kind) <= 100),
    -- The id the device writes in its payloads ("sensor_id"); NULL means the device id.
    sensor_id          text        CHECK (length(sensor_id) BETWEEN 1 AND 200),
    metadata           jsonb       NOT NULL DEFAULT '{}',
    -- {"temperature": {"min": -40, "max": 85, "unit": "°C"}, …}: the metrics the device may
    -- send and their ranges. Empty: none, so every reading is rejected.
    metrics            jsonb       NOT NULL DEFAULT '{}',
    allow_plaintext    boolean     NOT NULL DEFAULT false,
    disabled           boolean     NOT NULL DEFAULT false,
    -- MQTT password: SHA-256 of a 256-bit random secret. The previous one keeps working
    -- until previous_expires_at, so a device can be rotated without downtime.
    secret_hash        bytea       NOT NULL,
    previous_hash      bytea,
    previous_expires_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_tenant ON devices (tenant_id, id);
CREATE UNIQUE INDEX devices_sensor ON devices (tenant_id, sensor_id) WHERE sensor_id IS NOT NULL;

-- Fernet keys: per device (device_id set) or for every device of the tenant that has none
-- of its own. Every unexpired key of the scope decrypts, so keys rotate without a gap.
CREATE TABLE device_keys (
    id         uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants ON DELETE CASCADE,
    device_id  uuid        REFERENCES devices ON DELETE CASCADE,
    name       text        NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    secret     bytea       NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);
CREATE INDEX device_keys_scope ON device_keys (tenant_id, device_id);

-- Per-tenant settings; a tenant without a row uses the server's defaults.
CREATE TABLE series_settings (
    tenant_id          uuid        PRIMARY KEY REFERENCES tenants ON DELETE CASCADE,
    raw_keep_days      integer     NOT NULL CHECK (raw_keep_days > 0),
    minute_keep_days   integer     NOT NULL CHECK (minute_keep_days > 0),
    hour_keep_days     integer     NOT NULL CHECK (hour_keep_days > 0),
    fernet_ttl_seconds integer     NOT NULL CHECK (fernet_ttl_seconds >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE readings (
    tenant_id uuid             NOT NULL,
    device_id uuid             NOT NULL,
    ts        timestamptz      NOT NULL,
    value     double precision NOT NULL,
    keep      smallint         NOT NULL,
    metric    text COLLATE "C" NOT NULL
) PARTITION BY LIST (keep);
CREATE INDEX readings_ts ON readings USING brin (ts);
CREATE INDEX readings_series ON readings (device_id, metric, ts);

CREATE TABLE readings_minute (
    tenant_id uuid             NOT NULL,
    device_id uuid             NOT NULL,
    bucket    timestamptz      NOT NULL,
    keep      smallint         NOT NULL,
    metric    text COLLATE "C" NOT NULL,
    count     bigint           NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    sum       double precision NOT NULL,
    last      double precision NOT NULL,
    last_ts   timestamptz      NOT NULL,
    PRIMARY KEY (device_id, metric, bucket, keep)
) PARTITION BY LIST (keep);

CREATE TABLE readings_hour (
    tenant_id uuid             NOT NULL,
    device_id uuid             NOT NULL,
    bucket    timestamptz      NOT NULL,
    keep      smallint         NOT NULL,
    metric    text COLLATE "C" NOT NULL,
    count     bigint           NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    sum       double precision NOT NULL,
    last      double precision NOT NULL,
    last_ts   timestamptz      NOT NULL,
    PRIMARY KEY (device_id, metric, bucket, keep)
) PARTITION BY LIST (keep);

-- The newest reading of every series: the durable truth behind the latest-value caches.
CREATE TABLE readings_latest (
    tenant_id  uuid             NOT NULL,
    device_id  uuid             NOT NULL,
    metric     text COLLATE "C" NOT NULL,
    ts         timestamptz      NOT NULL,
    value      double precision NOT NULL,
    updated_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, device_id, metric)
);

-- Rejected messages, for inspection: a ring of a bounded number of slots per tenant, the
-- oldest overwritten first. Payloads are kept as received (ciphertext stays ciphertext).
CREATE TABLE reading_rejects (
    tenant_id   uuid        NOT NULL,
    slot        integer     NOT NULL,
    seq         bigint      NOT NULL,
    device_id   uuid,
    source      text        NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    topic       text        NOT NULL DEFAULT '',
    payload     bytea,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, slot)
);
CREATE INDEX reading_rejects_seq ON reading_rejects (tenant_id, seq);

-- Ingest counters per tenant: "accepted", "rejected:<reason>", and "reject_seq" (the ring's
-- next sequence number). Updated once per tenant per committed batch.
CREATE TABLE series_counters (
    tenant_id  uuid        NOT NULL,
    name       text        NOT NULL,
    value      bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Devices whose readings remain to be removed (filled by a trigger on delete, so tenant
-- deletion, which cascades to devices, is covered too).
CREATE TABLE series_purges (
    device_id  uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION series_device_deleted() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO series_purges (device_id, tenant_id) VALUES (OLD.id, OLD.tenant_id) ON CONFLICT DO NOTHING;
    RETURN OLD;
END $$;

CREATE TRIGGER devices_purge AFTER DELETE ON devices FOR EACH ROW EXECUTE FUNCTION series_device_deleted();

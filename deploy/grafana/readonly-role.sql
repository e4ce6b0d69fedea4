-- The read-only role Grafana connects as. Run once as a role that may create roles
-- (psql -f readonly-role.sql), then give it a password: ALTER ROLE strata_grafana PASSWORD '…'.
-- Re-running it is harmless.
-- It reads readings, rollups, latest values, device names and ingest counters; never
-- credentials, keys or payloads of rejected messages. Every statement it runs is
-- read-only and bounded by a timeout.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'strata_grafana') THEN
        CREATE ROLE strata_grafana LOGIN;
    END IF;
END $$;
ALTER ROLE strata_grafana SET default_transaction_read_only = on;
ALTER ROLE strata_grafana SET statement_timeout = '30s';
ALTER ROLE strata_grafana SET search_path = strata;
GRANT USAGE ON SCHEMA strata TO strata_grafana;
GRANT SELECT ON strata.readings, strata.readings_minute, strata.readings_hour, strata.readings_latest, strata.series_counters
    TO strata_grafana;
GRANT SELECT (id, tenant_id, name, kind, sensor_id, metadata, metrics, disabled, created_at) ON strata.devices TO strata_grafana;
GRANT SELECT (id, name) ON strata.tenants TO strata_grafana;

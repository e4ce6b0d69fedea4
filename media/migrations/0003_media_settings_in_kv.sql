-- Media settings live in the tenants' key-value settings (kv, key "media/not-found", a
-- JSON string), like every other small setting: this moves any kept here and drops the
-- table. kv's migrations run before media's.
INSERT INTO kv (tenant_id, key, value, content_type, description, version)
SELECT tenant_id, 'media/not-found', convert_to(to_jsonb(value)::text, 'UTF8'), 'application/json',
       'The alias of the image media answers, with status 404, for an alias the tenant does not have.',
       nextval('kv_version')
  FROM media_settings WHERE key = 'not_found_alias'
ON CONFLICT (tenant_id, key) DO NOTHING;

DROP TABLE media_settings;

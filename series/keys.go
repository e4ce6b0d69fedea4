package series

import (
	"context"
	"errors"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Key is a Fernet key that devices encrypt their payloads with. Its secret is shown only
// when created.
type Key struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	// DeviceID is the device the key belongs to; absent for a tenant-wide key, which serves
	// every device of the tenant that has no key of its own.
	DeviceID  string     `json:"device_id,omitempty"`
	Name      string     `json:"name,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty" doc:"When the key stops decrypting; absent: never."`
}

// KeyInput adds a key. Every unexpired key of a scope decrypts, so a rotation is: add the
// new key (with RetireOthersAfter), move the devices to it, and the old keys expire.
type KeyInput struct {
	// DeviceID scopes the key to one device; empty makes it tenant-wide.
	DeviceID string `json:"device_id,omitempty"`
	Name     string `json:"name,omitempty" maxLength:"200"`
	// Key imports an existing Fernet key (URL-safe base64 of 32 bytes, as Python's
	// Fernet.generate_key() makes); empty generates one.
	Key string `json:"key,omitempty" maxLength:"64" doc:"A Fernet key to import; omitted: one is generated and returned once."`
	// RetireOthersAfter makes the scope's other keys expire this long from now (seconds).
	// Nil leaves them alone; 0 retires them at once.
	RetireOthersAfter *int `json:"retire_others_after_seconds,omitempty" minimum:"0" maximum:"2592000"`
}

func keyScopeResource(deviceID string) string {
	if deviceID == "" {
		return resourceDevices
	}
	return deviceResource(deviceID)
}

// KeyCreate adds a Fernet key (admin on the device, or on device:* for a tenant-wide key)
// and returns it with the key itself, in the form Fernet libraries take (only now).
func (s *Service) KeyCreate(ctx context.Context, tenant string, in KeyInput) (Key, string, error) {
	if _, err := s.auth.Authorize(ctx, tenant, keyScopeResource(in.DeviceID), auth.PermAdmin); err != nil {
		return Key{}, "", err
	}
	if in.DeviceID != "" {
		if _, err := uuid.Parse(in.DeviceID); err != nil {
			return Key{}, "", errDeviceNotFound()
		}
	}
	var k fernet.Key
	if in.Key != "" {
		dk, err := fernet.DecodeKey(in.Key)
		if err != nil {
			return Key{}, "", problem.Unprocessable("invalid_key", "a Fernet key is the URL-safe base64 of 32 bytes").WithField("body.key", "invalid")
		}
		k = *dk
	} else if err := k.Generate(); err != nil {
		return Key{}, "", err
	}
	if len(in.Name) > 200 {
		return Key{}, "", problem.Unprocessable("invalid_name", "a key name has at most 200 characters").WithField("body.name", "too long")
	}
	if in.RetireOthersAfter != nil && (*in.RetireOthersAfter < 0 || *in.RetireOthersAfter > 30*24*3600) {
		return Key{}, "", problem.Unprocessable("invalid_grace", "retire_others_after_seconds is between 0 and 30 days").
			WithField("body.retire_others_after_seconds", "out of range")
	}
	id := uuid.Must(uuid.NewV7()).String()
	var out Key
	err := s.inTx(ctx, "key", func(tx pgx.Tx) error {
		if in.DeviceID != "" {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE tenant_id = $1 AND id = $2)`, tenant, in.DeviceID).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				return errDeviceNotFound()
			}
		}
		if in.RetireOthersAfter != nil {
			if _, err := tx.Exec(ctx, `UPDATE device_keys SET expires_at = least(COALESCE(expires_at, 'infinity'), now() + make_interval(secs => $3))
				WHERE tenant_id = $1 AND device_id IS NOT DISTINCT FROM $2`, tenant, nullableText(in.DeviceID), *in.RetireOthersAfter); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO device_keys (id, tenant_id, device_id, name, secret) VALUES ($1, $2, $3, $4, $5)`,
			id, tenant, nullableText(in.DeviceID), in.Name, k[:]); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "device_key.create", ResourceType: "device_key", ResourceID: id,
			Details: map[string]any{"device_id": in.DeviceID, "imported": in.Key != "", "retire_others_after": in.RetireOthersAfter}}); err != nil {
			return err
		}
		if err := s.notifyTx(ctx, tx, keyNotice(tenant, in.DeviceID)); err != nil {
			return err
		}
		var err error
		out, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM device_keys WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return Key{}, "", err
	}
	return out, k.Encode(), nil
}

func keyNotice(tenant, deviceID string) string {
	if deviceID == "" {
		return "tenant:" + tenant
	}
	return "device:" + deviceID
}

const keyColumns = `id, tenant_id, COALESCE(device_id::text, ''), name, created_at, expires_at`

func scanKey(r pgx.Row) (Key, error) {
	var k Key
	err := r.Scan(&k.ID, &k.TenantID, &k.DeviceID, &k.Name, &k.CreatedAt, &k.ExpiresAt)
	return k, err
}

// KeyList lists the tenant's keys, without their secrets (read on device:*). deviceID
// narrows it to one device's keys; "-" to the tenant-wide ones.
func (s *Service) KeyList(ctx context.Context, tenant, deviceID string) ([]Key, error) {
	resource := resourceDevices
	if deviceID != "" && deviceID != "-" {
		if _, err := uuid.Parse(deviceID); err != nil {
			return nil, errDeviceNotFound()
		}
		resource = deviceResource(deviceID)
	}
	if _, err := s.auth.Authorize(ctx, tenant, resource, auth.PermRead); err != nil {
		return nil, err
	}
	if resource != resourceDevices {
		if _, err := s.deviceGet(ctx, s.pool, tenant, deviceID); err != nil {
			return nil, db.Translate(err, "device")
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM device_keys WHERE tenant_id = $1
		AND ($2 = '' OR ($2 = '-' AND device_id IS NULL) OR device_id::text = $2) ORDER BY id`, tenant, deviceID)
	if err != nil {
		return nil, db.Translate(err, "keys")
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
	if keys == nil {
		keys = []Key{}
	}
	return keys, db.Translate(err, "keys")
}

// KeyRetire makes a key stop decrypting after the given delay (0: at once), and deletes
// it once expired (admin on its device, or on device:*).
func (s *Service) KeyRetire(ctx context.Context, tenant, id string, after time.Duration) error {
	if _, err := uuid.Parse(id); err != nil {
		return problem.NotFound("key_not_found", "key not found")
	}
	if after < 0 || after > 30*24*time.Hour {
		return problem.Unprocessable("invalid_grace", "a key is retired within 0 to 30 days").WithField("query.after", "out of range")
	}
	var deviceID string
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(device_id::text, '') FROM device_keys WHERE tenant_id = $1 AND id = $2`, tenant, id).Scan(&deviceID)
	if errors.Is(err, pgx.ErrNoRows) {
		// Authorize first, so an outsider learns nothing from the difference.
		if _, aerr := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); aerr != nil {
			return aerr
		}
		return problem.NotFound("key_not_found", "key not found")
	}
	if err != nil {
		return db.Translate(err, "key")
	}
	if _, err := s.auth.Authorize(ctx, tenant, keyScopeResource(deviceID), auth.PermAdmin); err != nil {
		return err
	}
	return s.inTx(ctx, "key", func(tx pgx.Tx) error {
		var err error
		if after == 0 {
			_, err = tx.Exec(ctx, `DELETE FROM device_keys WHERE tenant_id = $1 AND id = $2`, tenant, id)
		} else {
			_, err = tx.Exec(ctx, `UPDATE device_keys SET expires_at = now() + make_interval(secs => $3) WHERE tenant_id = $1 AND id = $2`,
				tenant, id, after.Seconds())
		}
		if err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "device_key.retire", ResourceType: "device_key", ResourceID: id,
			Details: map[string]any{"after_seconds": int(after.Seconds())}}); err != nil {
			return err
		}
		return s.notifyTx(ctx, tx, keyNotice(tenant, deviceID))
	})
}

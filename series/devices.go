package series

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Metric declares one metric a device may send, with its allowed range.
type Metric struct {
	// Min and Max bound the values accepted (inclusive); nil leaves that side open.
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
	// Unit is informational ("°C", "%").
	Unit string `json:"unit,omitempty" maxLength:"32"`
}

// Device is a sensor or appliance that sends readings.
type Device struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
	Kind     string `json:"kind,omitempty" example:"thermostat"`
	// SensorID is the id the device writes in its payloads' sensor_id; absent means its id.
	SensorID string          `json:"sensor_id,omitempty"`
	Metadata json.RawMessage `json:"metadata"`
	// Metrics are the metrics the device may send and their ranges; a reading of any other
	// metric, or out of range, is rejected.
	Metrics map[string]Metric `json:"metrics"`
	// AllowPlaintext accepts unencrypted JSON payloads over MQTT and Redis; otherwise only
	// Fernet tokens are accepted.
	AllowPlaintext bool `json:"allow_plaintext"`
	// Disabled devices cannot connect and their messages are rejected.
	Disabled bool `json:"disabled"`
	// Topic is where the device publishes over MQTT.
	Topic string `json:"topic" example:"strata/0190…/0190…"`
	// PreviousPasswordExpiresAt is when the password replaced by the last rotation stops
	// working; absent when it already has.
	PreviousPasswordExpiresAt *time.Time `json:"previous_password_expires_at,omitempty"`
	CreatedAt                 time.Time  `json:"created_at"`
	UpdatedAt                 time.Time  `json:"updated_at"`
}

// DeviceInput registers a device.
type DeviceInput struct {
	Name           string            `json:"name" minLength:"1" maxLength:"200"`
	Kind           string            `json:"kind,omitempty" maxLength:"100"`
	SensorID       string            `json:"sensor_id,omitempty" maxLength:"200" doc:"The id the device writes in payloads; default its own id."`
	Metadata       json.RawMessage   `json:"metadata,omitempty" doc:"Any JSON object (location, model…), up to 16 KiB."`
	Metrics        map[string]Metric `json:"metrics,omitempty" doc:"Allowed metrics by name, with optional min/max."`
	AllowPlaintext bool              `json:"allow_plaintext,omitempty"`
	Disabled       bool              `json:"disabled,omitempty"`
}

// DeviceUpdate changes the fields it sets. Metrics, when set, is the new full list.
type DeviceUpdate struct {
	Name           *string            `json:"name,omitempty" minLength:"1" maxLength:"200"`
	Kind           *string            `json:"kind,omitempty" maxLength:"100"`
	SensorID       *string            `json:"sensor_id,omitempty" maxLength:"200" doc:"Empty string: the device's own id."`
	Metadata       json.RawMessage    `json:"metadata,omitempty"`
	Metrics        *map[string]Metric `json:"metrics,omitempty"`
	AllowPlaintext *bool              `json:"allow_plaintext,omitempty"`
	Disabled       *bool              `json:"disabled,omitempty"`
}

// Credentials are what a device connects to the embedded MQTT broker with. The password
// is shown only when created or rotated; only its hash is kept.
type Credentials struct {
	Username string `json:"username" doc:"The device id."`
	Password string `json:"password" doc:"Shown only now."`
	Topic    string `json:"topic" doc:"Publish readings here (or below it)."`
}

// DeviceList is a page of devices.
type DeviceList struct {
	Items      []Device `json:"items"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

const (
	maxMetadata      = 16 << 10
	maxMetrics       = 100
	resourceDevices  = "device:*"
	notifyRegistry   = "strata_series"
	passwordPrefix   = "dsk_"
	defaultPageLimit = 50
)

var metricName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func deviceResource(id string) string { return "device:" + id }

func (s *Service) checkDevice(name, kind, sensorID string, metadata json.RawMessage, metrics map[string]Metric) error {
	if n := len([]rune(strings.TrimSpace(name))); n == 0 || n > 200 {
		return problem.Unprocessable("invalid_name", "a device name has 1 to 200 characters").WithField("body.name", "invalid")
	}
	if len(kind) > 100 {
		return problem.Unprocessable("invalid_kind", "a kind has at most 100 characters").WithField("body.kind", "too long")
	}
	if len(sensorID) > 200 {
		return problem.Unprocessable("invalid_sensor_id", "a sensor id has at most 200 characters").WithField("body.sensor_id", "too long")
	}
	if len(metadata) > 0 {
		if len(metadata) > maxMetadata {
			return problem.Unprocessable("invalid_metadata", "metadata is at most 16 KiB").WithField("body.metadata", "too large")
		}
		var obj map[string]any
		if err := json.Unmarshal(metadata, &obj); err != nil || obj == nil {
			return problem.Unprocessable("invalid_metadata", "metadata must be a JSON object").WithField("body.metadata", "not an object")
		}
	}
	if len(metrics) > maxMetrics {
		return problem.Unprocessable("invalid_metrics", "a device has at most %d metrics", maxMetrics).WithField("body.metrics", "too many")
	}
	for name, m := range metrics {
		if !metricName.MatchString(name) {
			return problem.Unprocessable("invalid_metrics", "metric names have 1 to 64 letters, digits, '_', '.' or '-'").
				WithField("body.metrics", "invalid name")
		}
		for _, v := range []*float64{m.Min, m.Max} {
			if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
				return problem.Unprocessable("invalid_metrics", "metric bounds must be finite numbers").WithField("body.metrics."+name, "not finite")
			}
		}
		if m.Min != nil && m.Max != nil && *m.Min > *m.Max {
			return problem.Unprocessable("invalid_metrics", "metric %q has min above max", name).WithField("body.metrics."+name, "min > max")
		}
		if len(m.Unit) > 32 {
			return problem.Unprocessable("invalid_metrics", "a unit has at most 32 characters").WithField("body.metrics."+name, "unit too long")
		}
	}
	return nil
}

// newPassword returns a device password (256 random bits) and its hash.
func newPassword() (string, []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	pw := passwordPrefix + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(pw))
	return pw, h[:]
}

func nullableText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func jsonObject(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return "{}"
	}
	return string(raw)
}

// DeviceCreate registers a device (write on device:*) and returns it with its MQTT
// credentials, shown only now.
func (s *Service) DeviceCreate(ctx context.Context, tenant string, in DeviceInput) (Device, Credentials, error) {
	var d Device
	var c Credentials
	err := s.inTx(ctx, "device", func(tx pgx.Tx) error {
		var err error
		d, c, err = s.DeviceCreateTx(ctx, tx, tenant, in)
		return err
	})
	return d, c, err
}

// DeviceCreateTx is DeviceCreate in the caller's transaction.
func (s *Service) DeviceCreateTx(ctx context.Context, tx pgx.Tx, tenant string, in DeviceInput) (Device, Credentials, error) {
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermWrite); err != nil {
		return Device{}, Credentials{}, err
	}
	if err := s.checkDevice(in.Name, in.Kind, in.SensorID, in.Metadata, in.Metrics); err != nil {
		return Device{}, Credentials{}, err
	}
	id := uuid.Must(uuid.NewV7()).String()
	pw, hash := newPassword()
	metrics, _ := json.Marshal(nonNilMetrics(in.Metrics))
	_, err := tx.Exec(ctx, `INSERT INTO devices (id, tenant_id, name, kind, sensor_id, metadata, metrics, allow_plaintext, disabled, secret_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, id, tenant, strings.TrimSpace(in.Name), in.Kind, nullableText(in.SensorID),
		jsonObject(in.Metadata), string(metrics), in.AllowPlaintext, in.Disabled, hash)
	if err != nil {
		if problem.HasCode(db.Translate(err, ""), "already_exists") {
			return Device{}, Credentials{}, problem.Conflict("sensor_id_taken", "another device of this tenant has sensor id %q", in.SensorID)
		}
		return Device{}, Credentials{}, err
	}
	if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "device.create", ResourceType: "device", ResourceID: id,
		Details: map[string]any{"name": in.Name, "kind": in.Kind}}); err != nil {
		return Device{}, Credentials{}, err
	}
	if err := s.notifyTx(ctx, tx, "device:"+id); err != nil {
		return Device{}, Credentials{}, err
	}
	d, err := s.deviceGet(ctx, tx, tenant, id)
	return d, Credentials{Username: id, Password: pw, Topic: d.Topic}, err
}

func nonNilMetrics(m map[string]Metric) map[string]Metric {
	if m == nil {
		return map[string]Metric{}
	}
	return m
}

// DeviceGet returns a device (read on device:<id>).
func (s *Service) DeviceGet(ctx context.Context, tenant, id string) (Device, error) {
	if _, err := s.authorizeDevice(ctx, tenant, id, auth.PermRead); err != nil {
		return Device{}, err
	}
	d, err := s.deviceGet(ctx, s.pool, tenant, id)
	return d, db.Translate(err, "device")
}

// authorizeDevice checks perm on device:<id> and that the id is well formed; a malformed
// id answers 404 like a missing device.
func (s *Service) authorizeDevice(ctx context.Context, tenant, id string, perm auth.Permission) (*auth.Access, error) {
	a, err := s.auth.Authorize(ctx, tenant, deviceResource(id), perm)
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return nil, errDeviceNotFound()
	}
	return a, nil
}

func errDeviceNotFound() *problem.Error {
	return problem.NotFound("device_not_found", "device not found")
}

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

const deviceColumns = `id, tenant_id, name, kind, COALESCE(sensor_id, ''), metadata, metrics, allow_plaintext, disabled,
	CASE WHEN previous_expires_at > now() THEN previous_expires_at END, created_at, updated_at`

func (s *Service) scanDevice(r pgx.Row) (Device, error) {
	var d Device
	var metrics []byte
	err := r.Scan(&d.ID, &d.TenantID, &d.Name, &d.Kind, &d.SensorID, &d.Metadata, &metrics, &d.AllowPlaintext, &d.Disabled,
		&d.PreviousPasswordExpiresAt, &d.CreatedAt, &d.UpdatedAt)
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(metrics, &d.Metrics); err != nil {
		return d, err
	}
	d.Metrics = nonNilMetrics(d.Metrics)
	d.Topic = s.Topic(d.TenantID, d.ID)
	return d, nil
}

func (s *Service) deviceGet(ctx context.Context, q rowQuerier, tenant, id string) (Device, error) {
	d, err := s.scanDevice(q.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE tenant_id = $1 AND id = $2`, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, errDeviceNotFound()
	}
	return d, err
}

// DeviceListOptions filters and pages DeviceList. Nil means the first page of every device.
type DeviceListOptions struct {
	// Kind keeps only devices of this kind.
	Kind string
	// Limit is the page size: default 50, at most 1000.
	Limit int
	// Cursor continues from a previous page's NextCursor.
	Cursor string
}

// DeviceList lists the tenant's devices in the order they were created (read on device:*).
func (s *Service) DeviceList(ctx context.Context, tenant string, o *DeviceListOptions) (DeviceList, error) {
	if o == nil {
		o = &DeviceListOptions{}
	}
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); err != nil {
		return DeviceList{}, err
	}
	limit := o.Limit
	if limit <= 0 || limit > 1000 {
		limit = defaultPageLimit
	}
	after := uuid.Nil.String()
	if o.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(o.Cursor)
		if _, perr := uuid.Parse(string(raw)); err != nil || perr != nil {
			return DeviceList{}, problem.Invalid("invalid_cursor", "the cursor does not belong to this listing").WithField("query.cursor", "invalid")
		}
		after = string(raw)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+deviceColumns+` FROM devices WHERE tenant_id = $1 AND id > $2 AND ($3 = '' OR kind = $3)
		ORDER BY id LIMIT $4`, tenant, after, o.Kind, limit+1)
	if err != nil {
		return DeviceList{}, db.Translate(err, "devices")
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Device, error) { return s.scanDevice(r) })
	if err != nil {
		return DeviceList{}, db.Translate(err, "devices")
	}
	out := DeviceList{Items: items}
	if len(items) > limit {
		out.Items = items[:limit]
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(items[limit-1].ID))
	}
	if out.Items == nil {
		out.Items = []Device{}
	}
	return out, nil
}

// DeviceUpdate changes a device (write on device:<id>).
func (s *Service) DeviceUpdate(ctx context.Context, tenant, id string, in DeviceUpdate) (Device, error) {
	var d Device
	err := s.inTx(ctx, "device", func(tx pgx.Tx) error {
		var err error
		d, err = s.DeviceUpdateTx(ctx, tx, tenant, id, in)
		return err
	})
	return d, err
}

// DeviceUpdateTx is DeviceUpdate in the caller's transaction.
func (s *Service) DeviceUpdateTx(ctx context.Context, tx pgx.Tx, tenant, id string, in DeviceUpdate) (Device, error) {
	if _, err := s.authorizeDevice(ctx, tenant, id, auth.PermWrite); err != nil {
		return Device{}, err
	}
	cur, err := s.deviceGet(ctx, tx, tenant, id)
	if err != nil {
		return Device{}, err
	}
	next := cur
	changed := []string{}
	if in.Name != nil {
		next.Name, changed = strings.TrimSpace(*in.Name), append(changed, "name")
	}
	if in.Kind != nil {
		next.Kind, changed = *in.Kind, append(changed, "kind")
	}
	if in.SensorID != nil {
		next.SensorID, changed = *in.SensorID, append(changed, "sensor_id")
	}
	if len(in.Metadata) > 0 {
		next.Metadata, changed = in.Metadata, append(changed, "metadata")
	}
	if in.Metrics != nil {
		next.Metrics, changed = *in.Metrics, append(changed, "metrics")
	}
	if in.AllowPlaintext != nil {
		next.AllowPlaintext, changed = *in.AllowPlaintext, append(changed, "allow_plaintext")
	}
	if in.Disabled != nil {
		next.Disabled, changed = *in.Disabled, append(changed, "disabled")
	}
	if err := s.checkDevice(next.Name, next.Kind, next.SensorID, next.Metadata, next.Metrics); err != nil {
		return Device{}, err
	}
	metrics, _ := json.Marshal(nonNilMetrics(next.Metrics))
	_, err = tx.Exec(ctx, `UPDATE devices SET name = $3, kind = $4, sensor_id = $5, metadata = $6, metrics = $7, allow_plaintext = $8,
		disabled = $9, updated_at = now() WHERE tenant_id = $1 AND id = $2`, tenant, id, next.Name, next.Kind, nullableText(next.SensorID),
		jsonObject(next.Metadata), string(metrics), next.AllowPlaintext, next.Disabled)
	if err != nil {
		if problem.HasCode(db.Translate(err, ""), "already_exists") {
			return Device{}, problem.Conflict("sensor_id_taken", "another device of this tenant has sensor id %q", next.SensorID)
		}
		return Device{}, err
	}
	sort.Strings(changed)
	if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "device.update", ResourceType: "device", ResourceID: id,
		Details: map[string]any{"changed": changed}}); err != nil {
		return Device{}, err
	}
	if err := s.notifyTx(ctx, tx, "device:"+id); err != nil {
		return Device{}, err
	}
	return s.deviceGet(ctx, tx, tenant, id)
}

// DeviceDelete removes a device, its keys and its latest values at once, and its history
// and rollups within minutes (write on device:<id>).
func (s *Service) DeviceDelete(ctx context.Context, tenant, id string) error {
	err := s.inTx(ctx, "device", func(tx pgx.Tx) error { return s.DeviceDeleteTx(ctx, tx, tenant, id) })
	if err == nil {
		s.latest.forgetDevice(uuid.MustParse(id))
	}
	return err
}

// DeviceDeleteTx is DeviceDelete in the caller's transaction.
func (s *Service) DeviceDeleteTx(ctx context.Context, tx pgx.Tx, tenant, id string) error {
	if _, err := s.authorizeDevice(ctx, tenant, id, auth.PermWrite); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM devices WHERE tenant_id = $1 AND id = $2`, tenant, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errDeviceNotFound()
	}
	if _, err := tx.Exec(ctx, `DELETE FROM readings_latest WHERE tenant_id = $1 AND device_id = $2`, tenant, id); err != nil {
		return err
	}
	if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "device.delete", ResourceType: "device", ResourceID: id}); err != nil {
		return err
	}
	return s.notifyTx(ctx, tx, "device:"+id)
}

// CredentialRotateOptions tunes DeviceCredentialsRotate. Nil means defaults.
type CredentialRotateOptions struct {
	// Grace is how long the current password keeps working beside the new one, so the
	// device can be updated without losing its connection. Default 0: it stops at once.
	Grace time.Duration
}

// DeviceCredentialsRotate gives the device a new MQTT password (admin on device:<id>). The
// old one works for o.Grace more; connections made with it stay up until they close.
func (s *Service) DeviceCredentialsRotate(ctx context.Context, tenant, id string, o *CredentialRotateOptions) (Credentials, error) {
	if o == nil {
		o = &CredentialRotateOptions{}
	}
	if o.Grace < 0 || o.Grace > 30*24*time.Hour {
		return Credentials{}, problem.Unprocessable("invalid_grace", "grace is between 0 and 30 days").WithField("body.grace", "out of range")
	}
	if _, err := s.authorizeDevice(ctx, tenant, id, auth.PermAdmin); err != nil {
		return Credentials{}, err
	}
	pw, hash := newPassword()
	err := s.inTx(ctx, "device", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE devices SET previous_hash = CASE WHEN $3 > 0 THEN secret_hash END,
			previous_expires_at = CASE WHEN $3 > 0 THEN now() + make_interval(secs => $3) END,
			secret_hash = $4, updated_at = now() WHERE tenant_id = $1 AND id = $2`, tenant, id, o.Grace.Seconds(), hash)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errDeviceNotFound()
		}
		if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "device.rotate_credentials", ResourceType: "device", ResourceID: id,
			Details: map[string]any{"grace_seconds": int(o.Grace.Seconds())}}); err != nil {
			return err
		}
		return s.notifyTx(ctx, tx, "device:"+id)
	})
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Username: id, Password: pw, Topic: s.Topic(tenant, id)}, nil
}

// notifyTx tells every node (at commit) and this one (now) that cached device state changed.
func (s *Service) notifyTx(ctx context.Context, tx pgx.Tx, payload string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", notifyRegistry, payload); err != nil {
		return err
	}
	s.registry.invalidate(payload)
	return nil
}

// inTx runs fn in a transaction and translates its error, naming what for problems.
func (s *Service) inTx(ctx context.Context, what string, fn func(pgx.Tx) error) error {
	return db.Translate(pgx.BeginFunc(ctx, s.pool, fn), what)
}

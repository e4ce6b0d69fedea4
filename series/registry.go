package series

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// deviceState is what ingest needs to know about a device, cached per node and
// invalidated through LISTEN/NOTIFY when the device, its keys or its tenant's settings
// change.
type deviceState struct {
	exists   bool
	id       uuid.UUID
	tenant   uuid.UUID
	idStr    string
	tenStr   string
	sensorID string // what payloads must carry as sensor_id
	metrics  map[string]metricRange

	allowPlaintext bool
	disabled       bool
	secret         []byte
	previous       []byte
	previousUntil  time.Time
	keys           []*fernet.Key
	open           []*openKey // keys, prepared for decryption

	keep, minuteKeep, hourKeep int16
	ttl                        time.Duration

	validUntil time.Time
}

type metricRange struct {
	name     string // the declared name, shared by every reading of the metric
	min, max float64
}

// checkPassword reports whether pw is the device's password (or its previous one, before
// that expires), in constant time.
func (d *deviceState) checkPassword(pw []byte, now time.Time) bool {
	h := sha256.Sum256(pw)
	ok := subtle.ConstantTimeCompare(h[:], d.secret) == 1
	if len(d.previous) == sha256.Size && now.Before(d.previousUntil) {
		ok = subtle.ConstantTimeCompare(h[:], d.previous) == 1 || ok
	}
	return ok
}

type registryEntry struct {
	st      *deviceState
	loading chan struct{} // closed when st is set
	err     error
}

// registry caches device states. While the notification listener is down, entries live
// only a second, so a change made meanwhile is seen within a second.
type registry struct {
	s  *Service
	mu sync.Mutex
	m  map[string]*registryEntry
}

func newRegistry(s *Service) *registry { return &registry{s: s, m: map[string]*registryEntry{}} }

const (
	registryTTL     = 30 * time.Second
	registryMissTTL = 5 * time.Second
	registryMax     = 200000
)

// get returns the device's state; a device that does not exist has exists == false.
func (r *registry) get(ctx context.Context, id string) (*deviceState, error) {
	now := r.s.now()
	r.mu.Lock()
	e, ok := r.m[id]
	var stale *deviceState
	if ok && e.loading == nil && now.After(e.st.validUntil) {
		ok, stale = false, e.st
	}
	if !ok {
		if len(r.m) >= registryMax {
			clear(r.m)
		}
		e = &registryEntry{loading: make(chan struct{})}
		r.m[id] = e
		r.mu.Unlock()
		st, err := r.load(ctx, id, now)
		if err != nil && stale != nil && stale.exists {
			// PostgreSQL cannot be read: keep using what was known, so ingest goes on
			// (into the bounded queue) through an outage.
			cp := *stale
			cp.validUntil = now.Add(5 * time.Second)
			st, err = &cp, nil
		}
		r.mu.Lock()
		e.st, e.err = st, err
		close(e.loading)
		e.loading = nil
		if err != nil && r.m[id] == e {
			delete(r.m, id)
		}
		r.mu.Unlock()
		return st, err
	}
	loading := e.loading
	r.mu.Unlock()
	if loading != nil {
		select {
		case <-loading:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return e.st, e.err
	}
	return e.st, nil
}

func (r *registry) invalidate(payload string) {
	kind, id, _ := strings.Cut(payload, ":")
	r.mu.Lock()
	defer r.mu.Unlock()
	switch kind {
	case "device":
		delete(r.m, id)
		if u, err := uuid.Parse(id); err == nil {
			r.s.latest.forgetLocal(u)
		}
	case "tenant":
		for k, e := range r.m {
			if e.loading != nil || e.st == nil || e.st.tenStr == id || !e.st.exists {
				delete(r.m, k)
			}
		}
	default:
		clear(r.m)
	}
}

func (r *registry) purge() { r.invalidate("*") }

func (r *registry) load(ctx context.Context, id string, now time.Time) (*deviceState, error) {
	ttl := registryTTL
	if !r.s.listener.Healthy() {
		ttl = time.Second
	}
	st := &deviceState{validUntil: now.Add(registryMissTTL)}
	u, perr := uuid.Parse(id)
	if perr != nil { // not a device id: a device that does not exist
		st.validUntil = now.Add(time.Hour)
		return st, nil //nolint:nilerr // a malformed id names no device; that is an answer, not an error
	}
	def := r.s.defaultSettings()
	var err error
	var metrics []byte
	var keys [][]byte
	var keyExp []*time.Time
	var prevUntil *time.Time
	var tenant uuid.UUID
	var ttlSeconds int
	var keep, minuteKeep, hourKeep int
	err = r.s.pool.QueryRow(ctx, `SELECT d.tenant_id, COALESCE(d.sensor_id, ''), d.metrics, d.allow_plaintext, d.disabled,
			d.secret_hash, d.previous_hash, d.previous_expires_at,
			COALESCE(st.raw_keep_days, $2), COALESCE(st.minute_keep_days, $3), COALESCE(st.hour_keep_days, $4), COALESCE(st.fernet_ttl_seconds, $5),
			COALESCE(NULLIF(ARRAY(SELECT k.secret FROM device_keys k WHERE k.tenant_id = d.tenant_id AND k.device_id = d.id
				AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.id DESC), '{}'),
				ARRAY(SELECT k.secret FROM device_keys k WHERE k.tenant_id = d.tenant_id AND k.device_id IS NULL
				AND (k.expires_at IS NULL OR k.expires_at > now()) ORDER BY k.id DESC)),
			ARRAY(SELECT k.expires_at FROM device_keys k WHERE k.tenant_id = d.tenant_id AND (k.device_id = d.id OR k.device_id IS NULL)
				AND k.expires_at > now())
		FROM devices d LEFT JOIN series_settings st ON st.tenant_id = d.tenant_id WHERE d.id = $1`,
		u, def.RawKeepDays, def.MinuteKeepDays, def.HourKeepDays, def.FernetTTLSeconds).Scan(
		&tenant, &st.sensorID, &metrics, &st.allowPlaintext, &st.disabled, &st.secret, &st.previous, &prevUntil,
		&keep, &minuteKeep, &hourKeep, &ttlSeconds, &keys, &keyExp)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	st.exists, st.id, st.tenant, st.idStr, st.tenStr = true, u, tenant, id, tenant.String()
	if st.sensorID == "" {
		st.sensorID = id
	}
	st.keep, st.minuteKeep, st.hourKeep = int16(keep), int16(minuteKeep), int16(hourKeep)
	st.ttl = time.Duration(ttlSeconds) * time.Second
	var decl map[string]Metric
	if err := json.Unmarshal(metrics, &decl); err != nil {
		return nil, err
	}
	st.metrics = make(map[string]metricRange, len(decl))
	for name, m := range decl {
		mr := metricRange{name: name, min: math.Inf(-1), max: math.Inf(1)}
		if m.Min != nil {
			mr.min = *m.Min
		}
		if m.Max != nil {
			mr.max = *m.Max
		}
		st.metrics[name] = mr
	}
	for _, k := range keys {
		if len(k) == 32 {
			var fk fernet.Key
			copy(fk[:], k)
			st.keys = append(st.keys, &fk)
			st.open = append(st.open, prepareKey(&fk))
		}
	}
	st.validUntil = now.Add(ttl)
	if prevUntil != nil {
		st.previousUntil = *prevUntil
		if prevUntil.After(now) && prevUntil.Before(st.validUntil) {
			st.validUntil = *prevUntil
		}
	}
	for _, e := range keyExp {
		if e != nil && e.Before(st.validUntil) {
			st.validUntil = *e
		}
	}
	return st, nil
}

// Package kv is Strata's key-value store for tenant settings: values of any content type
// (JSON or bytes, binary-safe) under string keys, with compare-and-set on a version,
// optional expiry (an expired key is invisible at once and swept later), prefix listing
// with cursors, and a description for configuration entries. Every write is audited and
// published on the change feed (kind "kv") in its transaction.
//
// Every operation authorizes the principal in its context against "kv:<key>" (read to
// read; write to put and delete); listings against "kv:*".
package kv

import (
	"cmp"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/problem"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the kv module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "kv", FS: migrate.Dir(migrations, "migrations"),
	Requires: []*migrate.Module{auth.Schema, feed.Schema}}

// Config tunes the store. Zero values mean the defaults.
type Config struct {
	// MaxValueBytes bounds a value. Default 1 MiB.
	MaxValueBytes int
	// SweepInterval is how often the elected node deletes expired keys (which are
	// invisible from their expiry on regardless). Default 10s.
	SweepInterval time.Duration
	// Logger receives background-work warnings. Nil is quiet.
	Logger *slog.Logger
}

// Store is the key-value store.
type Store struct {
	pool *pgxpool.Pool
	auth *auth.Service
	feed *feed.Feed
	cfg  Config
	log  *slog.Logger
}

// New returns the store. Run sweeps expired keys.
func New(pool *pgxpool.Pool, a *auth.Service, f *feed.Feed, cfg Config) *Store {
	cfg.MaxValueBytes = cmp.Or(cfg.MaxValueBytes, 1<<20)
	cfg.SweepInterval = cmp.Or(cfg.SweepInterval, 10*time.Second)
	return &Store{pool: pool, auth: a, feed: f, cfg: cfg, log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))}
}

// JSON is the content type of JSON values; values of any other type are bytes.
const JSON = "application/json"

// Entry is a key with its value and metadata.
type Entry struct {
	Key         string     `json:"key"`
	Version     int64      `json:"version" doc:"Grows with every write of the key (also across a delete and re-create); the ETag."`
	ContentType string     `json:"content_type"`
	Description string     `json:"description,omitempty"`
	Size        int        `json:"size" doc:"The value's length in bytes."`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	// Value is the value's bytes (in JSON: "value" for JSON values, "value_base64" for others).
	Value []byte `json:"-"`
}

// MarshalJSON writes a JSON value as itself and other values in base64, when present.
func (e Entry) MarshalJSON() ([]byte, error) {
	type plain Entry
	out := struct {
		plain
		Value       json.RawMessage `json:"value,omitempty"`
		ValueBase64 string          `json:"value_base64,omitempty"`
	}{plain: plain(e)}
	if e.Value != nil {
		if isJSON(e.ContentType) {
			out.Value = e.Value
		} else {
			out.ValueBase64 = base64.StdEncoding.EncodeToString(e.Value)
		}
	}
	return json.Marshal(out)
}

// isJSON reports whether a content type is JSON (application/json, or +json).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == JSON || strings.HasSuffix(mt, "+json"))
}

func resource(key string) string { return "kv:" + key }

func keyNotFound(key string) error {
	return problem.NotFound("key_not_found", "key %q not found", key)
}

// checkKey validates a key: 1 to 1024 bytes of UTF-8 without control characters.
func checkKey(key string) error {
	bad := len(key) == 0 || len(key) > 1024 || !utf8.ValidString(key)
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			bad = true
		}
	}
	if bad {
		return problem.Unprocessable("invalid_key", "a key is 1 to 1024 bytes of UTF-8 without control characters").WithField("key", "invalid")
	}
	return nil
}

// authorize checks perm on key for the principal in ctx, the tenant wall first.
func (s *Store) authorize(ctx context.Context, tenant, key string, perm auth.Permission) error {
	if err := checkKey(key); err != nil {
		if _, aerr := s.auth.Access(ctx, tenant); aerr != nil {
			return aerr
		}
		return err
	}
	_, err := s.auth.Authorize(ctx, tenant, resource(key), perm)
	return err
}

const entryColumns = `key, version, content_type, description, length(value), expires_at, created_at, updated_at`

const live = `(expires_at IS NULL OR expires_at > now())`

func scanEntry(withValue bool) pgx.RowToFunc[Entry] {
	return func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		dst := []any{&e.Key, &e.Version, &e.ContentType, &e.Description, &e.Size, &e.ExpiresAt, &e.CreatedAt, &e.UpdatedAt}
		if withValue {
			dst = append(dst, &e.Value)
		}
		err := r.Scan(dst...)
		if withValue && e.Value == nil {
			e.Value = []byte{}
		}
		return e, err
	}
}

// KeyGet returns a key's value and metadata (read on the key). An expired key answers
// 404 key_not_found from its expiry on.
func (s *Store) KeyGet(ctx context.Context, tenant, key string) (Entry, error) {
	if err := s.authorize(ctx, tenant, key, auth.PermRead); err != nil {
		return Entry{}, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+entryColumns+`, value FROM kv WHERE tenant_id = $1 AND key = $2 AND `+live, tenant, key)
	if err != nil {
		return Entry{}, db.Translate(err, "key")
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanEntry(true))
	if errors.Is(err, pgx.ErrNoRows) {
		return Entry{}, keyNotFound(key)
	}
	return e, db.Translate(err, "key")
}

// PutInput is a value to write.
type PutInput struct {
	// Value is the value's bytes; JSON values must be valid JSON.
	Value []byte
	// ContentType is the value's media type. Empty means application/json when Value is
	// valid JSON, application/octet-stream otherwise.
	ContentType string
	// Description describes the entry (a configuration setting's meaning). Nil keeps the
	// current one (empty for a new key). At most 1000 characters.
	Description *string
	// TTL makes the key expire this long after the write; zero means never.
	TTL time.Duration
	// IfMatch, when not zero, is the version the key must be at (412 otherwise).
	IfMatch int64
	// IfNoneMatch makes the write create the key only: 412 when it exists.
	IfNoneMatch bool
}

// KeyPut writes a key (write on the key), creating or replacing it, and reports whether
// it was created. With IfMatch or IfNoneMatch it is a compare-and-set: 412
// version_mismatch (with the current version, if any) and nothing written otherwise.
func (s *Store) KeyPut(ctx context.Context, tenant, key string, in PutInput) (Entry, bool, error) {
	var e Entry
	var created bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		e, created, err = s.KeyPutTx(ctx, tx, tenant, key, in)
		return err
	})
	if err != nil {
		return Entry{}, false, db.Translate(err, "key")
	}
	s.feed.Kick()
	return e, created, nil
}

// KeyPutTx is KeyPut in the caller's transaction; the caller kicks the feed
// ((*feed.Feed).Kick) after committing.
func (s *Store) KeyPutTx(ctx context.Context, tx pgx.Tx, tenant, key string, in PutInput) (Entry, bool, error) {
	if err := s.authorize(ctx, tenant, key, auth.PermWrite); err != nil {
		return Entry{}, false, err
	}
	if len(in.Value) > s.cfg.MaxValueBytes {
		return Entry{}, false, problem.TooLarge("value_too_large", "a value is at most %d bytes", s.cfg.MaxValueBytes)
	}
	ct := in.ContentType
	if ct == "" {
		ct = "application/octet-stream"
		if json.Valid(in.Value) {
			ct = JSON
		}
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil || len(ct) > 200 {
		return Entry{}, false, problem.Unprocessable("invalid_content_type", "%q is not a media type", ct).WithField("content_type", "invalid")
	}
	if isJSON(ct) && !json.Valid(in.Value) {
		return Entry{}, false, problem.Unprocessable("invalid_json", "the value is not valid JSON").WithField("value", "invalid")
	}
	if in.Description != nil && utf8.RuneCountInString(*in.Description) > 1000 {
		return Entry{}, false, problem.Unprocessable("invalid_description", "a description is at most 1000 characters").WithField("description", "too long")
	}
	if in.TTL < 0 {
		return Entry{}, false, problem.Unprocessable("invalid_ttl", "a TTL cannot be negative").WithField("ttl", "negative")
	}
	if in.IfMatch != 0 && in.IfNoneMatch {
		return Entry{}, false, problem.Invalid("invalid_precondition", "If-Match and If-None-Match exclude each other")
	}
	var expires *time.Time
	if in.TTL > 0 {
		t := time.Now().Add(in.TTL)
		expires = &t
	}
	value := in.Value
	if value == nil {
		value = []byte{}
	}
	var sql string
	args := []any{tenant, key, value, ct, in.Description, expires}
	if in.IfMatch != 0 {
		sql = `UPDATE kv SET value = $3, content_type = $4, description = coalesce($5, description), version = nextval('kv_version'),
				expires_at = $6, updated_at = now()
			WHERE tenant_id = $1 AND key = $2 AND version = $7 AND ` + live + `
			RETURNING ` + entryColumns + `, false`
		args = append(args, in.IfMatch)
	} else {
		// An expired key is replaced as if absent.
		sql = `INSERT INTO kv AS k (tenant_id, key, value, content_type, description, version, expires_at)
			VALUES ($1, $2, $3, $4, coalesce($5, ''), nextval('kv_version'), $6)
			ON CONFLICT (tenant_id, key) DO UPDATE SET value = $3, content_type = $4, version = EXCLUDED.version, expires_at = $6,
				description = CASE WHEN k.expires_at <= now() THEN coalesce($5, '') ELSE coalesce($5, k.description) END,
				created_at = CASE WHEN k.expires_at <= now() THEN now() ELSE k.created_at END, updated_at = now()
			WHERE NOT $7 OR k.expires_at <= now()
			RETURNING ` + entryColumns + `, k.xmax = 0 OR k.created_at = now()`
		args = append(args, in.IfNoneMatch)
	}
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return Entry{}, false, db.Translate(err, "key")
	}
	var created bool
	e, err := pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (Entry, error) {
		var e Entry
		err := r.Scan(&e.Key, &e.Version, &e.ContentType, &e.Description, &e.Size, &e.ExpiresAt, &e.CreatedAt, &e.UpdatedAt, &created)
		return e, err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Entry{}, false, s.mismatch(ctx, tx, tenant, key)
	}
	if err != nil {
		return Entry{}, false, db.Translate(err, "key")
	}
	op := "update"
	if created {
		op = "create"
	}
	if err := feed.Append(ctx, tx, feed.Entry{Tenant: tenant, Kind: "kv", Key: key, Op: op, Version: e.Version}); err != nil {
		return Entry{}, false, db.Translate(err, "key")
	}
	details := map[string]any{"version": e.Version, "content_type": ct, "size": len(value)}
	if expires != nil {
		details["expires_at"] = expires.UTC()
	}
	if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "kv.put", ResourceType: "kv", ResourceID: key, Details: details}); err != nil {
		return Entry{}, false, db.Translate(err, "key")
	}
	return e, created, nil
}

// mismatch is the 412 of a failed precondition, naming the key's current version.
func (s *Store) mismatch(ctx context.Context, tx pgx.Tx, tenant, key string) error {
	var v int64
	err := tx.QueryRow(ctx, `SELECT version FROM kv WHERE tenant_id = $1 AND key = $2 AND `+live, tenant, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return problem.PreconditionFailed("version_mismatch", "key %q does not exist", key)
	}
	if err != nil {
		return db.Translate(err, "key")
	}
	return problem.PreconditionFailed("version_mismatch", "key %q is at version %d", key, v).WithExtension("current_version", v)
}

// KeyDelete deletes a key (write on the key); with ifMatch (not zero) only at that
// version, else 412 version_mismatch. A missing or expired key answers 404.
func (s *Store) KeyDelete(ctx context.Context, tenant, key string, ifMatch int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.KeyDeleteTx(ctx, tx, tenant, key, ifMatch) })
	if err != nil {
		return db.Translate(err, "key")
	}
	s.feed.Kick()
	return nil
}

// KeyDeleteTx is KeyDelete in the caller's transaction; the caller kicks the feed after
// committing.
func (s *Store) KeyDeleteTx(ctx context.Context, tx pgx.Tx, tenant, key string, ifMatch int64) error {
	if err := s.authorize(ctx, tenant, key, auth.PermWrite); err != nil {
		return err
	}
	var v int64
	var alive bool
	err := tx.QueryRow(ctx, `DELETE FROM kv WHERE tenant_id = $1 AND key = $2 AND ($3 = 0 OR version = $3 OR expires_at <= now())
		RETURNING version, `+live, tenant, key, ifMatch).Scan(&v, &alive)
	if errors.Is(err, pgx.ErrNoRows) {
		if ifMatch != 0 {
			return s.mismatch(ctx, tx, tenant, key)
		}
		return keyNotFound(key)
	}
	if err != nil {
		return db.Translate(err, "key")
	}
	if !alive { // it had expired: gone already, as far as anyone could see
		return keyNotFound(key)
	}
	if err := feed.Append(ctx, tx, feed.Entry{Tenant: tenant, Kind: "kv", Key: key, Op: "delete", Version: v}); err != nil {
		return db.Translate(err, "key")
	}
	return db.Translate(audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "kv.delete", ResourceType: "kv", ResourceID: key,
		Details: map[string]any{"version": v}}), "key")
}

// ListOptions narrow KeyList. Nil means every key, 100 a page, without values.
type ListOptions struct {
	// Prefix keeps keys starting with it.
	Prefix string
	// Limit is the page size: 1 to 1000. Default 100.
	Limit int
	// Cursor is the NextCursor of the previous page.
	Cursor string
	// Values includes each entry's value.
	Values bool
}

// KeyPage is a page of entries, by key.
type KeyPage struct {
	Items      []Entry `json:"items"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// KeyList lists live keys by key, bytewise (read on kv:*).
func (s *Store) KeyList(ctx context.Context, tenant string, o *ListOptions) (KeyPage, error) {
	if o == nil {
		o = &ListOptions{}
	}
	if _, err := s.auth.Authorize(ctx, tenant, "kv:*", auth.PermRead); err != nil {
		return KeyPage{}, err
	}
	limit := o.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	after := ""
	if o.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(o.Cursor)
		if err != nil || len(b) == 0 {
			return KeyPage{}, problem.Invalid("invalid_cursor", "this cursor was not returned by this listing").WithField("query.cursor", "invalid")
		}
		after = string(b)
	}
	cols := entryColumns
	if o.Values {
		cols += ", value"
	}
	like := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(o.Prefix) + "%"
	rows, err := s.pool.Query(ctx, `SELECT `+cols+` FROM kv WHERE tenant_id = $1 AND key LIKE $2 AND key > $3 AND `+live+`
		ORDER BY key LIMIT $4`, tenant, like, after, limit+1)
	if err != nil {
		return KeyPage{}, db.Translate(err, "keys")
	}
	items, err := pgx.CollectRows(rows, scanEntry(o.Values))
	if err != nil {
		return KeyPage{}, db.Translate(err, "keys")
	}
	p := KeyPage{Items: items}
	if len(items) > limit {
		p.Items = items[:limit]
		p.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(items[limit-1].Key))
	}
	if p.Items == nil {
		p.Items = []Entry{}
	}
	return p, nil
}

// sweepLock elects one sweeper at a time across all nodes: "StrataKV".
const sweepLock int64 = 0x5374726174614b56

// Run deletes expired keys every SweepInterval until ctx ends, publishing each as an
// "expire" change. Every node runs it; an advisory lock elects one at a time.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweeping expired keys failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes expired keys now and returns how many.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	total := 0
	for {
		n := 0
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var got bool
			if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, sweepLock).Scan(&got); err != nil || !got {
				return err
			}
			rows, err := tx.Query(ctx, `DELETE FROM kv WHERE ctid = ANY(ARRAY(
					SELECT ctid FROM kv WHERE expires_at <= now() ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED))
				RETURNING tenant_id, key`)
			if err != nil {
				return err
			}
			byTenant := map[string][]string{}
			var tenant, key string
			if _, err := pgx.ForEachRow(rows, []any{&tenant, &key}, func() error {
				byTenant[tenant] = append(byTenant[tenant], key)
				n++
				return nil
			}); err != nil {
				return err
			}
			for t, keys := range byTenant {
				if err := feed.AppendMany(ctx, tx, t, "kv", "", "expire", keys, 0); err != nil {
					return err
				}
			}
			return nil
		})
		total += n
		if err != nil || n < 1000 {
			if total > 0 {
				s.feed.Kick()
			}
			return total, err
		}
	}
}

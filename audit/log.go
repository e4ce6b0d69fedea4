package audit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Log reads, verifies, seals and purges the audit log.
type Log struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

// New returns the audit log on pool. logger may be nil.
func New(pool *pgxpool.Pool, logger *slog.Logger) *Log {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Log{pool: pool, log: logger}
}

// Record writes e in a transaction of its own, for events that change nothing else
// (denied requests, failed sign-ins).
func (l *Log) Record(ctx context.Context, e Entry) error {
	return db.Translate(Record(ctx, l.pool, e), "audit entry")
}

// Row is one audit entry as read back.
type Row struct {
	ID           string          `json:"id"`
	Tenant       string          `json:"tenant,omitempty" doc:"Tenant id; empty for platform events."`
	At           time.Time       `json:"at"`
	ActorUserID  string          `json:"actor_user_id,omitempty"`
	ActorKeyID   string          `json:"actor_key_id,omitempty"`
	ActorName    string          `json:"actor_name,omitempty"`
	Action       string          `json:"action" example:"tenant.create"`
	ResourceType string          `json:"resource_type,omitempty"`
	ResourceID   string          `json:"resource_id,omitempty"`
	Details      json.RawMessage `json:"details"`
	IP           string          `json:"ip,omitempty"`
	UserAgent    string          `json:"user_agent,omitempty"`
	RequestID    string          `json:"request_id,omitempty"`
	Seq          *int64          `json:"seq,omitempty" doc:"Position in the tenant's hash chain; absent until sealed (milliseconds after commit)."`
}

// Filter narrows a listing. Zero fields do not filter.
type Filter struct {
	// Actor matches the acting user's or API key's id.
	Actor string
	// Action matches exactly, or by prefix when it ends in ".*" ("member.*").
	Action       string
	ResourceType string
	ResourceID   string
	// From and To bound the time, From inclusive, To exclusive.
	From, To time.Time
	// Limit caps the page; default 50, at most 1000.
	Limit int
	// Cursor continues a previous page.
	Cursor string
}

// List returns the tenant's entries newest first ("" lists the platform chain), and the
// cursor of the next page ("" at the end).
func (l *Log) List(ctx context.Context, tenant string, f Filter) ([]Row, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	where := []string{"chain = $1"}
	args := []any{chainOf(tenant)}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.Cursor != "" {
		id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		add("id < ?", id)
	}
	if f.Actor != "" {
		add("(actor_user_id::text = ? OR actor_key_id::text = ?)", f.Actor)
	}
	if prefix, ok := strings.CutSuffix(f.Action, ".*"); ok {
		add("starts_with(action, ?)", prefix+".")
	} else if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.ResourceType != "" {
		add("resource_type = ?", f.ResourceType)
	}
	if f.ResourceID != "" {
		add("resource_id = ?", f.ResourceID)
	}
	if !f.From.IsZero() {
		add("at >= ?", f.From)
	}
	if !f.To.IsZero() {
		add("at < ?", f.To)
	}
	args = append(args, limit+1)
	q := `SELECT id, at, COALESCE(actor_user_id::text, ''), COALESCE(actor_key_id::text, ''), actor_name, action,
		resource_type, resource_id, details, COALESCE(host(ip), ''), user_agent, request_id, seq
		FROM audit_log WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := l.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", db.Translate(err, "audit log")
	}
	var out []Row
	var ids []int64
	for rows.Next() {
		var r Row
		var id int64
		if err := rows.Scan(&id, &r.At, &r.ActorUserID, &r.ActorKeyID, &r.ActorName, &r.Action, &r.ResourceType,
			&r.ResourceID, &r.Details, &r.IP, &r.UserAgent, &r.RequestID, &r.Seq); err != nil {
			rows.Close()
			return nil, "", db.Translate(err, "audit log")
		}
		r.ID, r.Tenant = strconv.FormatInt(id, 10), tenant
		out = append(out, r)
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, "", db.Translate(err, "audit log")
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = encodeCursor(ids[limit-1])
	}
	return out, next, nil
}

func encodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("a1:" + strconv.FormatInt(id, 10)))
}

func decodeCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if s, ok := strings.CutPrefix(string(b), "a1:"); ok {
			if id, err := strconv.ParseInt(s, 10, 64); err == nil && id > 0 {
				return id, nil
			}
		}
	}
	return 0, problem.Invalid("invalid_cursor", "the cursor is not one this listing returned").WithField("query.cursor", "malformed")
}

// Purge deletes the tenant's sealed entries older than before ("" purges the platform
// chain), keeping the chain verifiable from the first remaining entry, and records the
// purge itself. It returns the number of entries removed.
func (l *Log) Purge(ctx context.Context, tenant string, before time.Time) (int64, error) {
	chain := chainOf(tenant)
	var removed int64
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL strata.audit_purge = 'on'"); err != nil {
			return err
		}
		// Everything up to the last seq before the first entry at or after `before`, so a
		// purge never leaves a hole inside the chain.
		var upTo *int64
		err := tx.QueryRow(ctx, `SELECT CASE WHEN EXISTS (SELECT 1 FROM audit_log WHERE chain = $1 AND seq IS NOT NULL AND at >= $2)
				THEN (SELECT min(seq) - 1 FROM audit_log WHERE chain = $1 AND seq IS NOT NULL AND at >= $2)
				ELSE (SELECT max(seq) FROM audit_log WHERE chain = $1 AND seq IS NOT NULL) END`, chain, before).Scan(&upTo)
		if err != nil || upTo == nil || *upTo < 1 {
			return err
		}
		var lastHash []byte
		if err := tx.QueryRow(ctx, `SELECT hash FROM audit_log WHERE chain = $1 AND seq = $2`, chain, *upTo).Scan(&lastHash); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM audit_log WHERE chain = $1 AND seq <= $2`, chain, *upTo)
		if err != nil {
			return err
		}
		removed = tag.RowsAffected()
		if _, err := tx.Exec(ctx, `INSERT INTO audit_anchors (chain, seq, hash) VALUES ($1, $2, $3)
			ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, purged_at = now()`, chain, *upTo, lastHash); err != nil {
			return err
		}
		return Record(ctx, tx, Entry{Tenant: tenant, Action: "audit.purge", ResourceType: "audit",
			Details: map[string]any{"before": before.UTC(), "removed": removed, "through_seq": *upTo}})
	})
	return removed, db.Translate(err, "audit log")
}

// DeleteChain removes every entry of a tenant's chain, inside tx. Tenant deletion uses it;
// the deletion itself is recorded on the platform chain.
func DeleteChain(ctx context.Context, tx pgx.Tx, tenant string) error {
	if tenant == "" {
		return fmt.Errorf("the platform chain cannot be deleted")
	}
	if _, err := tx.Exec(ctx, "SET LOCAL strata.audit_purge = 'on'"); err != nil {
		return err
	}
	for _, q := range []string{`DELETE FROM audit_log WHERE chain = $1`, `DELETE FROM audit_heads WHERE chain = $1`,
		`DELETE FROM audit_anchors WHERE chain = $1`} {
		if _, err := tx.Exec(ctx, q, tenant); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, "SET LOCAL strata.audit_purge = 'off'")
	return err
}

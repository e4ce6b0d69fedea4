// Package feed is Strata's change feed: every committed write of a module gets a position
// in its tenant's feed, and consumers resume from a position without ever missing a
// committed change or seeing an uncommitted one, however out of order concurrent writers
// commit.
//
// Writers call Append (or AppendMany for a bulk write of many keys) inside their
// transaction; the entry has no position yet. One sequencer at a time across all nodes
// (an advisory lock elects it) numbers committed entries in batches, in the order they
// became visible, then notifies every node (LISTEN/NOTIFY) so waiting readers wake within
// milliseconds. A bulk entry holds many keys under one position; readers see one change
// per key, at sub-positions, so they may stop and resume inside it.
package feed

import (
	"context"
	"embed"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/problem"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the feed's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "feed", FS: migrate.Dir(migrations, "migrations"), Requires: []*migrate.Module{auth.Schema}}

func init() {
	// A tenant's feed goes with it.
	auth.OnTenantDelete(func(ctx context.Context, tx pgx.Tx, tenant string) error {
		_, err := tx.Exec(ctx, `DELETE FROM changes WHERE tenant_id = $1`, tenant)
		return err
	})
}

// Entry is a write to record.
type Entry struct {
	// Tenant is the tenant's id.
	Tenant string
	// Kind is the module: "doc", "kv", "edge".
	Kind string
	// Scope narrows the kind: a collection's name for documents; "" when none.
	Scope string
	// Key identifies what changed within the scope: a document id, a kv key.
	Key string
	// Op is what happened: "create", "update", "delete", "restore"…
	Op string
	// Version is the thing's version after the change, when it has one.
	Version int64
}

// Change is an entry with its position, as consumers read it.
type Change struct {
	// Position is where this change is in the feed ("p", or "p.k" inside a bulk write).
	Position string `json:"position" example:"1042" doc:"Resume after this position to see only later changes."`
	pos      Position
	At       time.Time `json:"at"`
	Kind     string    `json:"kind" example:"doc"`
	Scope    string    `json:"scope,omitempty" example:"notes"`
	Key      string    `json:"key"`
	Op       string    `json:"op" example:"update"`
	Version  *int64    `json:"version,omitempty"`
	Actor    string    `json:"actor,omitempty"`
	// Tenant is the change's tenant (set by ReadAll; the tenant's own feed does not repeat it).
	Tenant string `json:"-"`
}

// Position is a place in the feed: a sequenced entry's number, and — inside a bulk entry
// — the index of a key. Written as "p" or "p.k"; the zero Position is the start.
type Position struct {
	Pos int64
	// Sub is the index of a key within a bulk entry, or -1 for the whole entry.
	Sub int
}

// Start is the position before every entry.
var Start = Position{Sub: -1}

// String writes the position.
func (p Position) String() string {
	if p.Sub < 0 {
		return strconv.FormatInt(p.Pos, 10)
	}
	return strconv.FormatInt(p.Pos, 10) + "." + strconv.Itoa(p.Sub)
}

// Pos returns the change's position, parsed.
func (c Change) Pos() Position { return c.pos }

// ParsePosition reads "p" or "p.k"; "" is the start.
func ParsePosition(s string) (Position, error) {
	if s == "" {
		return Start, nil
	}
	bad := problem.Invalid("invalid_position", "%q is not a feed position", s).WithField("query.after", "invalid")
	ps, ks, sub := strings.Cut(s, ".")
	p, err := strconv.ParseInt(ps, 10, 64)
	if err != nil || p < 0 {
		return Position{}, bad
	}
	out := Position{Pos: p, Sub: -1}
	if sub {
		k, err := strconv.Atoi(ks)
		if err != nil || k < 0 {
			return Position{}, bad
		}
		out.Sub = k
	}
	return out, nil
}

// Less orders positions.
func (p Position) Less(q Position) bool {
	if p.Pos != q.Pos {
		return p.Pos < q.Pos
	}
	// Within one entry, a key index comes before the whole entry.
	ps, qs := p.Sub, q.Sub
	if ps < 0 {
		ps = 1 << 30
	}
	if qs < 0 {
		qs = 1 << 30
	}
	return ps < qs
}

// Execer is what Append writes through: the writer's transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Append records e through q, to commit with the write it describes.
func Append(ctx context.Context, q Execer, e Entry) error {
	var version any
	if e.Version > 0 {
		version = e.Version
	}
	_, err := q.Exec(ctx, `INSERT INTO changes (tenant_id, kind, scope, key, op, version, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		e.Tenant, e.Kind, e.Scope, e.Key, e.Op, version, audit.ActorFrom(ctx).Name)
	return err
}

// AppendMany records a bulk write of many keys of one tenant, kind and scope as one entry
// (readers see one change per key). version applies to every key (0: none).
func AppendMany(ctx context.Context, q Execer, tenant, kind, scope, op string, keys []string, version int64) error {
	var v any
	if version > 0 {
		v = version
	}
	_, err := q.Exec(ctx, `INSERT INTO changes (tenant_id, kind, scope, keys, op, version, actor) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		tenant, kind, scope, keys, op, v, audit.ActorFrom(ctx).Name)
	return err
}

// InsertManySQL begins an INSERT … SELECT that records bulk entries, for a write that
// learns its keys in SQL (a cascade) and records them in the same statement. The SELECT
// yields (tenant_id uuid, kind text, scope text, keys text[], op text, version bigint,
// actor text) rows; the writer must call Kick after committing, as with AppendMany.
const InsertManySQL = `INSERT INTO changes (tenant_id, kind, scope, keys, op, version, actor) `

// channel carries the last sequenced position to every node.
const channel = "strata_changes"

// Feed sequences, reads and waits on the change feed.
type Feed struct {
	pool      *pgxpool.Pool
	listener  *db.Listener
	log       *slog.Logger
	retention time.Duration

	last atomic.Int64 // highest position this node knows is sequenced
	mu   sync.Mutex
	wake chan struct{} // closed and replaced whenever last grows
	kick chan struct{}
}

// New returns the feed. listener wakes readers when another node sequences; it must be
// started by the caller. retention is how long entries are kept (default 7 days).
func New(pool *pgxpool.Pool, listener *db.Listener, logger *slog.Logger, retention time.Duration) *Feed {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if retention <= 0 {
		retention = 7 * 24 * time.Hour
	}
	f := &Feed{pool: pool, listener: listener, log: logger, retention: retention, wake: make(chan struct{}), kick: make(chan struct{}, 1)}
	listener.Handle(channel, func(payload string) {
		if p, err := strconv.ParseInt(payload, 10, 64); err == nil {
			f.advance(p)
		}
	})
	listener.OnReset(f.broadcast)
	return f
}

func (f *Feed) advance(p int64) {
	for {
		cur := f.last.Load()
		if p <= cur {
			return
		}
		if f.last.CompareAndSwap(cur, p) {
			f.broadcast()
			return
		}
	}
}

func (f *Feed) broadcast() {
	f.mu.Lock()
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// Kick asks this node's sequencer to run now: a writer calls it after committing, so a
// change is numbered at once rather than at the next poll.
func (f *Feed) Kick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// sequenceLock elects one sequencer at a time across all nodes.
const sequenceLock int64 = 0x5374726174614368 // "StrataCh"

// Sequence numbers up to batch committed entries and returns how many. It returns 0 when
// there are none, or when another node is sequencing.
func (f *Feed) Sequence(ctx context.Context, batch int) (int, error) {
	var n int
	var last int64
	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", sequenceLock).Scan(&got); err != nil || !got {
			return err
		}
		err := tx.QueryRow(ctx, `WITH batch AS (
				SELECT id FROM changes WHERE position IS NULL ORDER BY id LIMIT $1
			), numbered AS (
				SELECT id, (SELECT last FROM change_sequence) + row_number() OVER (ORDER BY id) AS pos FROM batch
			), upd AS (
				UPDATE changes c SET position = n.pos FROM numbered n WHERE c.id = n.id RETURNING n.pos
			)
			UPDATE change_sequence SET last = last + (SELECT count(*) FROM upd) RETURNING last, (SELECT count(*) FROM upd)`, batch).Scan(&last, &n)
		if err != nil || n == 0 {
			return err
		}
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, $2)", channel, strconv.FormatInt(last, 10))
		return err
	})
	if err == nil && last > 0 {
		// This node learns at once — after the commit, or a woken reader would find the
		// positions not yet visible and wait past them; other nodes learn by notification.
		f.advance(last)
	}
	return n, err
}

// Run sequences until ctx ends: soon after a kick (a millisecond later, so a burst of
// writes is numbered together), every 20ms otherwise (the bound on how long a change
// written through another node waits), and without pause while a backlog lasts. It also
// prunes entries past the retention hourly. Every node runs one.
func (f *Feed) Run(ctx context.Context) {
	const batch = 5000
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
			time.Sleep(time.Millisecond)
		case <-poll.C:
		case <-prune.C:
			if _, err := f.Prune(ctx); err != nil && ctx.Err() == nil {
				f.log.Warn("pruning the change feed failed", "err", err)
			}
			continue
		}
		for {
			var pending bool
			if err := f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM changes WHERE position IS NULL)`).Scan(&pending); err != nil || !pending {
				break
			}
			n, err := f.Sequence(ctx, batch)
			if err != nil {
				if ctx.Err() == nil {
					f.log.Warn("sequencing the change feed failed; retrying", "err", err)
				}
				break
			}
			if n < batch {
				break
			}
		}
	}
}

// Prune deletes sequenced entries older than the retention, and raises the watermark
// below which positions can no longer be resumed from.
func (f *Feed) Prune(ctx context.Context) (int64, error) {
	var n int64
	err := f.pool.QueryRow(ctx, `WITH gone AS (
			DELETE FROM changes WHERE position IS NOT NULL AND at < now() - $1::interval RETURNING position
		)
		UPDATE change_sequence SET pruned_through = greatest(pruned_through, COALESCE((SELECT max(position) FROM gone), 0))
		RETURNING (SELECT count(*) FROM gone)`, f.retention.String()).Scan(&n)
	return n, err
}

// Read returns up to limit (default 1000, at most 10000) of the tenant's changes after
// position after, oldest first, and the position to resume from (after itself when there
// is nothing new). A position older than the feed keeps answers 410 position_expired; one
// beyond the newest answers 400 invalid_position.
func (f *Feed) Read(ctx context.Context, tenant string, after Position, limit int) ([]Change, Position, error) {
	return f.read(ctx, &tenant, after, limit)
}

// ReadAll is Read across every tenant, for the platform's own consumers (such as the
// search indexes of every node); each change carries its Tenant. It checks no permission.
func (f *Feed) ReadAll(ctx context.Context, after Position, limit int) ([]Change, Position, error) {
	return f.read(ctx, nil, after, limit)
}

func (f *Feed) read(ctx context.Context, tenant *string, after Position, limit int) ([]Change, Position, error) {
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	if after != Start {
		var last, prunedThrough int64
		if err := f.pool.QueryRow(ctx, `SELECT last, pruned_through FROM change_sequence`).Scan(&last, &prunedThrough); err != nil {
			return nil, after, db.Translate(err, "change feed")
		}
		if after.Pos > last {
			return nil, after, problem.Invalid("invalid_position", "position %s is ahead of the feed (newest %d)", after, last).
				WithField("query.after", "ahead of the feed")
		}
		if after.Less(Position{Pos: prunedThrough, Sub: -1}) {
			return nil, after, problem.New(410, "position_expired", "changes after position %s are no longer kept (retention %s); "+
				"resynchronize, then resume from the newest position", after, f.retention)
		}
	}
	cmp := ">"
	if after.Sub >= 0 {
		cmp = ">=" // the bulk entry that was partly read comes back, minus its read keys
	}
	// Two statements, not one with "$1 IS NULL OR …": a cached plan must use the tenant's index.
	sql := `SELECT tenant_id, position, at, kind, scope, key, keys, op, version, actor FROM changes
		WHERE tenant_id = $1 AND position ` + cmp + ` $2 ORDER BY position LIMIT $3`
	args := []any{tenant, after.Pos, limit}
	if tenant == nil {
		sql = `SELECT tenant_id, position, at, kind, scope, key, keys, op, version, actor FROM changes
			WHERE position ` + cmp + ` $1 ORDER BY position LIMIT $2`
		args = args[1:]
	}
	rows, err := f.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, after, db.Translate(err, "change feed")
	}
	defer rows.Close()
	var out []Change
	next := after
	for rows.Next() && len(out) < limit {
		var pos int64
		var keys []string
		c := Change{}
		if err := rows.Scan(&c.Tenant, &pos, &c.At, &c.Kind, &c.Scope, &c.Key, &keys, &c.Op, &c.Version, &c.Actor); err != nil {
			return nil, after, db.Translate(err, "change feed")
		}
		if keys == nil {
			c.pos = Position{Pos: pos, Sub: -1}
			c.Position = c.pos.String()
			out = append(out, c)
			next = c.pos
			continue
		}
		first := 0
		if pos == after.Pos && after.Sub >= 0 {
			first = after.Sub + 1
		}
		for k := first; k < len(keys) && len(out) < limit; k++ {
			e := c
			e.Key = keys[k]
			e.pos = Position{Pos: pos, Sub: k}
			if k == len(keys)-1 {
				e.pos.Sub = -1 // the last key completes the entry
			}
			e.Position = e.pos.String()
			out = append(out, e)
			next = e.pos
		}
	}
	if err := rows.Err(); err != nil {
		return nil, after, db.Translate(err, "change feed")
	}
	return out, next, nil
}

// Known returns the newest position this node knows to be sequenced. A reader takes it
// before reading and passes it to Wait, so a change sequenced after the read wakes it.
func (f *Feed) Known() int64 { return f.last.Load() }

// Head returns the newest sequenced position (of any tenant), which a consumer may start
// after to see only future changes.
func (f *Feed) Head(ctx context.Context) (Position, error) {
	var last int64
	err := f.pool.QueryRow(ctx, `SELECT last FROM change_sequence`).Scan(&last)
	if err == nil {
		f.advance(last)
	}
	return Position{Pos: last, Sub: -1}, db.Translate(err, "change feed")
}

// Wait blocks until a position newer than known is sequenced (on any node), ctx ends, or
// max passes; it reports whether something new may be there. Readers call it between
// reads instead of polling the database.
func (f *Feed) Wait(ctx context.Context, known int64, max time.Duration) bool {
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		f.mu.Lock()
		wake := f.wake
		f.mu.Unlock()
		if f.last.Load() > known {
			return true
		}
		if !f.listener.Healthy() { // notifications may be lost: fall back to polling
			if head, err := f.Head(ctx); err == nil && head.Pos > known {
				return true
			}
			select {
			case <-ctx.Done():
				return false
			case <-timer.C:
				return false
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		case <-wake:
		}
	}
}

// Package feed is Strata's change feed: every committed write of a module gets a position
// in its tenant's feed, and consumers resume from a position without ever missing a
// committed change or seeing an uncommitted one, however out of order concurrent writers
// commit.
//
// Writers call Append inside their transaction; the entry has no position yet. One
// sequencer at a time across all nodes (an advisory lock elects it) numbers committed
// entries in batches, in the order they became visible, then notifies every node
// (LISTEN/NOTIFY) so waiting readers wake within milliseconds.
package feed

import (
	"context"
	"embed"
	"io/fs"
	"log/slog"
	"strconv"
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
var Schema = &migrate.Module{Name: "feed", FS: mustSub(migrations, "migrations"), Requires: []*migrate.Module{auth.Schema}}

func mustSub(f embed.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
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
	Position int64     `json:"position,string" doc:"Resume after this position to see only later changes."`
	At       time.Time `json:"at"`
	Kind     string    `json:"kind" example:"doc"`
	Scope    string    `json:"scope,omitempty" example:"notes"`
	Key      string    `json:"key"`
	Op       string    `json:"op" example:"update"`
	Version  *int64    `json:"version,omitempty"`
	Actor    string    `json:"actor,omitempty"`
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

// AppendMany records entries of one tenant, kind and scope in one statement (bulk writes).
func AppendMany(ctx context.Context, q Execer, tenant, kind, scope, op string, keys []string, versions []int64) error {
	_, err := q.Exec(ctx, `INSERT INTO changes (tenant_id, kind, scope, key, op, version, actor)
		SELECT $1, $2, $3, k, $4, NULLIF(v, 0), $7 FROM unnest($5::text[], $6::bigint[]) AS u(k, v)`,
		tenant, kind, scope, op, keys, versions, audit.ActorFrom(ctx).Name)
	return err
}

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
	listener.OnReset(func() { f.broadcast() })
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
	err := pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", sequenceLock).Scan(&got); err != nil || !got {
			return err
		}
		var last int64
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
		if err == nil {
			defer f.advance(last) // this node learns at once; others by the notification
		}
		return err
	})
	return n, err
}

// Run sequences until ctx ends: at once when kicked, every poll interval otherwise (20ms:
// the bound on how long a change from another node waits), and without pause while a
// backlog lasts. It also prunes entries past the retention hourly. Every node runs one.
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
// position after, oldest first. A position older than what the feed still keeps answers
// 410 position_expired: the consumer must resynchronize; one beyond the newest answers
// 400 invalid_position.
func (f *Feed) Read(ctx context.Context, tenant string, after int64, limit int) ([]Change, error) {
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	if after > 0 {
		var last, prunedThrough int64
		if err := f.pool.QueryRow(ctx, `SELECT last, pruned_through FROM change_sequence`).Scan(&last, &prunedThrough); err != nil {
			return nil, db.Translate(err, "change feed")
		}
		if after > last {
			return nil, problem.Invalid("invalid_position", "position %d is ahead of the feed (newest %d)", after, last).
				WithField("query.after", "ahead of the feed")
		}
		if after < prunedThrough {
			return nil, problem.New(410, "position_expired", "changes after position %d are no longer kept (retention %s); "+
				"resynchronize, then resume from the newest position", after, f.retention)
		}
	}
	rows, err := f.pool.Query(ctx, `SELECT position, at, kind, scope, key, op, version, actor FROM changes
		WHERE tenant_id = $1 AND position > $2 ORDER BY position LIMIT $3`, tenant, after, limit)
	if err != nil {
		return nil, db.Translate(err, "change feed")
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Change, error) {
		var c Change
		err := r.Scan(&c.Position, &c.At, &c.Kind, &c.Scope, &c.Key, &c.Op, &c.Version, &c.Actor)
		return c, err
	})
	return out, db.Translate(err, "change feed")
}

// Head returns the newest sequenced position (of any tenant), which a consumer may start
// after to see only future changes.
func (f *Feed) Head(ctx context.Context) (int64, error) {
	var last int64
	err := f.pool.QueryRow(ctx, `SELECT last FROM change_sequence`).Scan(&last)
	if err == nil {
		f.advance(last)
	}
	return last, db.Translate(err, "change feed")
}

// Wait blocks until a position newer than after is sequenced (on any node), ctx ends, or
// max passes; it reports whether something new may be there. Readers call it between
// reads instead of polling the database.
func (f *Feed) Wait(ctx context.Context, after int64, max time.Duration) bool {
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		f.mu.Lock()
		wake := f.wake
		f.mu.Unlock()
		if f.last.Load() > after {
			return true
		}
		if !f.listener.Healthy() { // notifications may be lost: fall back to polling
			if head, err := f.Head(ctx); err == nil && head > after {
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

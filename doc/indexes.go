package doc

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/idem"
)

// buildIndexes drops retired indexes and builds declared ones, each CONCURRENTLY (writes
// continue meanwhile) under a per-index advisory lock, so one node works on each. An
// index left invalid by a crash mid-build is dropped and built again.
func (s *Store) buildIndexes(ctx context.Context) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return
	}
	defer conn.Release()
	drops, err := collect[string](ctx, conn, `SELECT name FROM collection_index_drops ORDER BY created_at`)
	if err != nil {
		s.log.Warn("listing indexes to drop", "err", err)
		return
	}
	for _, name := range drops {
		s.withIndexLock(ctx, conn, name, func() error {
			if _, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+pgx.Identifier{"strata", name}.Sanitize()); err != nil {
				return err
			}
			_, err := conn.Exec(ctx, `DELETE FROM collection_index_drops WHERE name = $1`, name)
			return err
		})
	}
	type pending struct{ coll, tenant, collName, path, name string }
	rows, err := conn.Query(ctx, `SELECT i.collection_id, c.tenant_id, c.name, i.path, i.name FROM collection_indexes i
		JOIN collections c ON c.id = i.collection_id WHERE i.status = 'building' ORDER BY i.created_at`)
	if err != nil {
		return
	}
	todo, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pending, error) {
		var p pending
		err := r.Scan(&p.coll, &p.tenant, &p.collName, &p.path, &p.name)
		return p, err
	})
	if err != nil {
		return
	}
	for _, p := range todo {
		if ctx.Err() != nil {
			return
		}
		s.withIndexLock(ctx, conn, p.name, func() error {
			status, msg := "ready", ""
			if err := s.build(ctx, conn, p.coll, p.path, p.name); err != nil {
				if ctx.Err() != nil {
					return err
				}
				status, msg = "failed", err.Error()
				s.log.Warn("building a declared index failed", "collection", p.collName, "path", p.path, "err", err)
			}
			_, err := conn.Exec(ctx, `UPDATE collection_indexes SET status = $3, error = $4,
				ready_at = CASE WHEN $3 = 'ready' THEN now() END WHERE collection_id = $1 AND name = $2`, p.coll, p.name, status, nullString(msg))
			if err == nil {
				_, err = conn.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, cacheKey(p.tenant, p.collName))
				s.forget(cacheKey(p.tenant, p.collName))
			}
			return err
		})
	}
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// build creates one index, replacing an invalid leftover of an interrupted build.
func (s *Store) build(ctx context.Context, conn *pgxpool.Conn, collID, path, name string) error {
	var valid *bool
	if err := conn.QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)`, "strata."+name).Scan(&valid); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	ident := pgx.Identifier{"strata", name}.Sanitize()
	if valid != nil && *valid {
		return nil
	}
	if valid != nil {
		if _, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+ident); err != nil {
			return err
		}
	}
	p, _, err := canonicalPath(path)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, fmt.Sprintf(`CREATE INDEX CONCURRENTLY %s ON strata.documents (%s, id) WHERE collection_id = %s::uuid AND body IS NOT NULL`,
		pgx.Identifier{name}.Sanitize(), filter.PathSQL("body", p), sqlLiteral(collID)))
	return err
}

// withIndexLock runs fn while holding a session advisory lock named after the index, or
// skips it when another node holds it.
func (s *Store) withIndexLock(ctx context.Context, conn *pgxpool.Conn, name string, fn func() error) {
	h := fnv.New64a()
	h.Write([]byte("strata.doc.index." + name))
	key := int64(h.Sum64())
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil || !got {
		return
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key)
	}()
	if err := fn(); err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "canceling") {
		s.log.Warn("index maintenance failed", "index", name, "err", err)
	}
}

func collect[T any](ctx context.Context, conn *pgxpool.Conn, sql string, args ...any) ([]T, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[T])
}

// prune applies each collection's retention and expires idempotency keys. One node at a
// time does it (an advisory lock), in bounded batches.
func (s *Store) prune(ctx context.Context) {
	if _, err := idem.Prune(ctx, s.pool); err != nil && ctx.Err() == nil {
		s.log.Warn("expiring idempotency keys", "err", err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return
	}
	defer conn.Release()
	const lock int64 = 0x5374726174614472 // "StrataDr"
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lock).Scan(&got); err != nil || !got {
		return
	}
	defer func() { _, _ = conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, lock) }()
	type policy struct {
		id    string
		keepV *int
		keepD *int
	}
	rows, err := conn.Query(ctx, `SELECT id, keep_versions, keep_days FROM collections WHERE keep_versions IS NOT NULL OR keep_days IS NOT NULL`)
	if err != nil {
		return
	}
	policies, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (policy, error) {
		var p policy
		err := r.Scan(&p.id, &p.keepV, &p.keepD)
		return p, err
	})
	if err != nil {
		return
	}
	for _, p := range policies {
		if _, err := s.PruneCollection(ctx, p.id, p.keepV, p.keepD); err != nil && ctx.Err() == nil {
			s.log.Warn("pruning document history", "collection", p.id, "err", err)
		}
	}
}

// PruneCollection deletes the history a retention policy no longer keeps from one
// collection (by id), in batches, and returns how many versions it deleted. The current
// version of every document is always kept. Exported for operators' tools and tests.
func (s *Store) PruneCollection(ctx context.Context, collID string, keepVersions, keepDays *int) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM document_versions WHERE ctid IN (
			SELECT v.ctid FROM document_versions v JOIN documents d ON d.collection_id = v.collection_id AND d.id = v.id
			WHERE v.collection_id = $1 AND v.version < d.version
				AND (($2::int IS NOT NULL AND v.version <= d.version - $2) OR ($3::int IS NOT NULL AND v.at < now() - make_interval(days => $3)))
			LIMIT 5000)`, collID, keepVersions, keepDays)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 5000 {
			return total, nil
		}
	}
}

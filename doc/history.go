package doc

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/history"
	"github.com/stratadb/strata/internal/jsonx"
	"github.com/stratadb/strata/problem"
)

// Version describes one write of a document.
type Version struct {
	Version int64     `json:"version"`
	Op      string    `json:"op" enum:"create,replace,patch,delete,restore,revert,import"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor,omitempty"`
}

// DocVersions lists a document's versions, newest first, before version `before` (0: from
// the newest), at most limit (read on the collection).
func (s *Store) DocVersions(ctx context.Context, tenant, coll, id string, before int64, limit int) ([]Version, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	if before <= 0 {
		before = 1 << 62
	}
	rows, err := s.pool.Query(ctx, `SELECT version, op, at, actor FROM document_versions WHERE collection_id = $1 AND id = $2 AND version < $3
		ORDER BY version DESC LIMIT $4`, c.id, id, before, limit)
	if err != nil {
		return nil, db.Translate(err, "versions")
	}
	vs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Version, error) {
		var v Version
		err := r.Scan(&v.Version, &v.Op, &v.At, &v.Actor)
		return v, err
	})
	if err != nil {
		return nil, db.Translate(err, "versions")
	}
	if len(vs) == 0 && before == 1<<62 {
		return nil, docNotFound(id)
	}
	return vs, nil
}

// At picks a past version: by number, or the version current at a time.
type At struct {
	// Version, when not zero, is the version wanted.
	Version int64
	// AsOf, when not zero, wants the version that was current at that time.
	AsOf time.Time
}

// DocGetAt returns a document as it was at a version or a time (read on the collection).
// A version that is a deletion answers with Deleted set and no data.
func (s *Store) DocGetAt(ctx context.Context, tenant, coll, id string, at At) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return Document{}, err
	}
	return s.getAt(ctx, s.pool, c, id, at)
}

type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func (s *Store) getAt(ctx context.Context, q rowQuerier, c *collection, id string, at At) (Document, error) {
	version := at.Version
	if version == 0 {
		err := q.QueryRow(ctx, `SELECT version FROM document_versions WHERE collection_id = $1 AND id = $2 AND at <= $3
			ORDER BY version DESC LIMIT 1`, c.id, id, at.AsOf).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return Document{}, problem.NotFound("document_not_found", "document %q did not exist at %s", id, at.AsOf.UTC().Format(time.RFC3339Nano))
		}
		if err != nil {
			return Document{}, db.Translate(err, "document")
		}
	}
	body, v, err := s.reconstruct(ctx, q, c, id, version)
	if err != nil {
		return Document{}, err
	}
	d := Document{ID: id, Collection: c.name, Version: version, UpdatedAt: v.At, Deleted: body == nil, Data: body}
	if err := q.QueryRow(ctx, `SELECT at FROM document_versions WHERE collection_id = $1 AND id = $2 ORDER BY version LIMIT 1`,
		c.id, id).Scan(&d.CreatedAt); err != nil {
		d.CreatedAt = v.At // history older than this version was pruned
	}
	return d, nil
}

// reconstruct returns the body of version n (nil for a tombstone): the nearest newer
// snapshot, or the current body, with the reverse deltas of the versions in between
// applied, newest first.
func (s *Store) reconstruct(ctx context.Context, q rowQuerier, c *collection, id string, n int64) ([]byte, Version, error) {
	rows, err := q.Query(ctx, `SELECT version, op, at, actor, snapshot, delta FROM document_versions
		WHERE collection_id = $1 AND id = $2 AND version >= $3 ORDER BY version LIMIT $4`, c.id, id, n, 4*s.cfg.SnapshotEvery+2)
	if err != nil {
		return nil, Version{}, db.Translate(err, "version")
	}
	type step struct {
		Version
		snapshot, delta []byte
	}
	steps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (step, error) {
		var st step
		err := r.Scan(&st.Version.Version, &st.Op, &st.At, &st.Actor, &st.snapshot, &st.delta)
		return st, err
	})
	if err != nil {
		return nil, Version{}, db.Translate(err, "version")
	}
	if len(steps) == 0 || steps[0].Version.Version != n {
		return nil, Version{}, problem.NotFound("version_not_found", "document %q has no version %d (it may be pruned by retention)", id, n)
	}
	target := steps[0]
	if target.Op == "delete" {
		return nil, target.Version, nil
	}
	hs := make([]history.Step, len(steps))
	for i, st := range steps {
		hs[i] = history.Step{Snapshot: st.snapshot, Delta: st.delta}
	}
	body, err := history.Rebuild(hs, func() ([]byte, error) {
		var body []byte
		err := q.QueryRow(ctx, `SELECT body FROM documents WHERE collection_id = $1 AND id = $2`, c.id, id).Scan(&body)
		return body, db.Translate(err, "document")
	})
	if err != nil {
		return nil, Version{}, err
	}
	return body, target.Version, nil
}

// DocDiff returns the RFC 6902 patch that turns version from into version to (read).
func (s *Store) DocDiff(ctx context.Context, tenant, coll, id string, from, to int64) (json.RawMessage, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return nil, err
	}
	a, _, err := s.reconstruct(ctx, s.pool, c, id, from)
	if err != nil {
		return nil, err
	}
	b, _, err := s.reconstruct(ctx, s.pool, c, id, to)
	if err != nil {
		return nil, err
	}
	if a == nil {
		a = []byte("{}")
	}
	if b == nil {
		b = []byte("{}")
	}
	return jsonx.Diff(a, b)
}

// DocRevert writes a new version equal to version n (write on the collection). Reverting
// to a deletion deletes.
func (s *Store) DocRevert(ctx context.Context, tenant, coll, id string, n int64, o *WriteOptions) (Document, error) {
	return s.inTx(ctx, func(tx pgx.Tx) (Document, error) { return s.DocRevertTx(ctx, tx, tenant, coll, id, n, o) })
}

// DocRevertTx is DocRevert in the caller's transaction.
func (s *Store) DocRevertTx(ctx context.Context, tx pgx.Tx, tenant, coll, id string, n int64, o *WriteOptions) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return Document{}, err
	}
	d, err := s.write(ctx, tx, c, id, "revert", o, func(cur *current) ([]byte, error) {
		if n >= cur.version || n < 1 {
			return nil, problem.Unprocessable("invalid_version", "revert to an earlier version (1 to %d)", cur.version-1)
		}
		body, _, err := s.reconstruct(ctx, tx, c, id, n)
		if err != nil {
			return nil, err
		}
		if body == nil {
			return nil, problem.Unprocessable("invalid_version", "version %d is a deletion; delete the document instead", n)
		}
		return body, nil
	})
	if errors.Is(err, errMissing) {
		return Document{}, docNotFound(id)
	}
	return d, s.writeErr(err, id)
}

// DocRestore brings a deleted document back as it was before its deletion (write).
func (s *Store) DocRestore(ctx context.Context, tenant, coll, id string, o *WriteOptions) (Document, error) {
	return s.inTx(ctx, func(tx pgx.Tx) (Document, error) { return s.DocRestoreTx(ctx, tx, tenant, coll, id, o) })
}

// DocRestoreTx is DocRestore in the caller's transaction.
func (s *Store) DocRestoreTx(ctx context.Context, tx pgx.Tx, tenant, coll, id string, o *WriteOptions) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return Document{}, err
	}
	d, err := s.write(ctx, tx, c, id, "restore", o, func(cur *current) ([]byte, error) {
		if cur.body != nil {
			return nil, problem.Conflict("not_deleted", "document %q is not deleted", id)
		}
		var prev int64
		err := tx.QueryRow(ctx, `SELECT max(version) FROM document_versions WHERE collection_id = $1 AND id = $2 AND op <> 'delete'
			AND version < $3`, c.id, id, cur.version).Scan(&prev)
		if err != nil || prev == 0 {
			return nil, problem.Unprocessable("nothing_to_restore", "no earlier version of %q is kept", id)
		}
		body, _, err := s.reconstruct(ctx, tx, c, id, prev)
		if err != nil {
			return nil, err
		}
		if body == nil {
			return nil, problem.Unprocessable("nothing_to_restore", "no earlier version of %q is kept", id)
		}
		return body, nil
	})
	if errors.Is(err, errMissing) {
		return Document{}, docNotFound(id)
	}
	return d, s.writeErr(err, id)
}

package search

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// buildChunk is how many documents one step of a rebuild handles.
const buildChunk = 2000

// settleDelay is how long a rebuild waits before its final pass, so that writes made with
// settings cached before the change (nodes learn of it within milliseconds) are caught.
var settleDelay = 2 * time.Second

// buildOne builds one index under a session advisory lock (another node building it is
// left alone), in chunks, recording progress.
func (s *Store) buildOne(ctx context.Context, collID, name string, gen int64) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	key := lockKey(collID + "/" + name)
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(1735550001, $1)`, key).Scan(&got); err != nil || !got {
		return err
	}
	defer func() { _, _ = conn.Exec(context.Background(), `SELECT pg_advisory_unlock(1735550001, $1)`, key) }()
	s.forget(collID)
	st, err := s.settingsOf(ctx, collID)
	if err != nil || st == nil || st.generation != gen {
		return err // the settings moved on; the newer build takes over
	}
	started := time.Now()
	var total int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM documents WHERE collection_id = $1 AND body IS NOT NULL`, collID).Scan(&total); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `UPDATE search_indexes SET rows_total = $4 WHERE collection_id = $1 AND name = $2 AND generation = $3`,
		collID, name, gen, total); err != nil {
		return err
	}
	step := func(ids []string) error {
		if name == "text" {
			_, err := s.pool.Exec(ctx, textUpsert(st, true), collID, ids, gen)
			return err
		}
		v := st.vector(name)
		if v == nil {
			return fmt.Errorf("no vector field %q", name)
		}
		if v.Embed != nil {
			return s.embedDocs(ctx, st, v, ids)
		}
		return s.backfillVectors(ctx, st, v, ids)
	}
	// A first pass over every document, then, once writes made with older settings have
	// committed, a pass over what is still missing or stale.
	done := int64(0)
	if err := s.eachChunk(ctx, collID, false, st, name, func(ids []string) error {
		if err := step(ids); err != nil {
			return err
		}
		done += int64(len(ids))
		_, err := s.pool.Exec(ctx, `UPDATE search_indexes SET rows_done = $4 WHERE collection_id = $1 AND name = $2 AND generation = $3`,
			collID, name, gen, min(done, total))
		return err
	}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(started.Add(settleDelay))):
	}
	if err := s.eachChunk(ctx, collID, true, st, name, step); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE search_indexes SET status = 'ready', rows_done = rows_total, finished_at = now()
		WHERE collection_id = $1 AND name = $2 AND generation = $3 AND status = 'building'`, collID, name, gen)
	if err == nil && tag.RowsAffected() > 0 {
		s.log.Info("search: index built", "collection", collID, "index", name, "documents", total, "elapsed", time.Since(started).Round(time.Millisecond))
	}
	return err
}

// eachChunk calls fn with the ids of the collection's documents in id order, buildChunk at
// a time; with stale, only those whose index row is missing or older than the document or
// the settings.
func (s *Store) eachChunk(ctx context.Context, collID string, stale bool, st *settings, name string, fn func(ids []string) error) error {
	cond, extra := "", []any{}
	switch {
	case stale && name == "text":
		cond = ` AND NOT EXISTS (SELECT 1 FROM search_text t WHERE t.collection_id = d.collection_id AND t.doc_id = d.id
			AND t.generation >= $4 AND t.version >= d.version)`
		extra = append(extra, st.generation)
	case stale:
		cond = ` AND NOT EXISTS (SELECT 1 FROM search_vectors v WHERE v.collection_id = d.collection_id AND v.field = $4 AND v.doc_id = d.id
			AND v.version >= d.version)`
		extra = append(extra, name)
	}
	sql := `SELECT d.id FROM documents d WHERE d.collection_id = $1 AND d.body IS NOT NULL AND d.id > $2` + cond + ` ORDER BY d.id LIMIT $3`
	after := ""
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rows, err := s.pool.Query(ctx, sql, append([]any{collID, after, buildChunk}, extra...)...)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			if err := fn(ids); err != nil {
				return err
			}
		}
		if len(ids) < buildChunk {
			return nil
		}
		after = ids[len(ids)-1]
	}
}

// backfillVectors reads the client-given vectors of documents into search_vectors.
func (s *Store) backfillVectors(ctx context.Context, st *settings, v *VectorField, ids []string) error {
	rows, err := s.pool.Query(ctx, `SELECT id, version, body FROM documents WHERE collection_id = $1 AND id = ANY($2) AND body IS NOT NULL`,
		st.collID, ids)
	if err != nil {
		return err
	}
	type one struct {
		id      string
		version int64
		body    []byte
	}
	docs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (one, error) {
		var o one
		err := r.Scan(&o.id, &o.version, &o.body)
		return o, err
	})
	if err != nil {
		return err
	}
	// Each document keeps its own version: rows are written one version at a time.
	byVersion := map[int64][]one{}
	for _, d := range docs {
		byVersion[d.version] = append(byVersion[d.version], d)
	}
	for version, group := range byVersion {
		gids, bodies := make([]string, len(group)), make([][]byte, len(group))
		for i, d := range group {
			gids[i], bodies[i] = d.id, d.body
		}
		vr, err := extractVectors(st, v, gids, bodies)
		if err != nil {
			// A document stored before the field existed may not fit it: leave it out.
			vr = s.extractEach(st, v, gids, bodies)
		}
		if err := vr.write(ctx, s.pool, st.collID, v.Name, version); err != nil {
			return err
		}
	}
	return nil
}

// extractEach extracts vectors one document at a time, leaving out those that do not fit.
func (s *Store) extractEach(st *settings, v *VectorField, ids []string, bodies [][]byte) vectorRows {
	var out vectorRows
	for i := range ids {
		vr, err := extractVectors(st, v, ids[i:i+1], bodies[i:i+1])
		if err != nil {
			out.absent = append(out.absent, ids[i])
			continue
		}
		out.ids = append(out.ids, vr.ids...)
		out.parts = append(out.parts, vr.parts...)
		out.vecs = append(out.vecs, vr.vecs...)
		out.absent = append(out.absent, vr.absent...)
	}
	return out
}

func lockKey(s string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return int32(h.Sum32())
}

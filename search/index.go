package search

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// textUpsert writes the tsvectors (and the vocabulary) of a collection's documents in
// ids; $1 collection, $2 ids, $3 generation. A write's hook always wins (it is the newest
// version); a rebuild (onlyOlder) replaces only rows of an older version or generation,
// so it never undoes a concurrent write.
func textUpsert(st *settings, onlyOlder bool) string {
	cond := ""
	if onlyOlder {
		cond = ` WHERE search_text.generation < EXCLUDED.generation OR search_text.version < EXCLUDED.version`
	}
	sql := `WITH t AS (
		INSERT INTO search_text (collection_id, doc_id, version, generation, tsv)
		SELECT d.collection_id, d.id, d.version, $3, ` + st.textSQL + `
		FROM documents d WHERE d.collection_id = $1 AND d.id = ANY($2::text[]) AND d.body IS NOT NULL
		ON CONFLICT (collection_id, doc_id) DO UPDATE SET version = EXCLUDED.version, generation = EXCLUDED.generation, tsv = EXCLUDED.tsv` + cond + `
		RETURNING tsv)`
	if !st.typos {
		return sql + ` SELECT count(*) FROM t`
	}
	return sql + `, w AS (INSERT INTO search_words (collection_id, word)
		SELECT DISTINCT $1::uuid, word FROM t, unnest(tsvector_to_array(t.tsv)) word ON CONFLICT DO NOTHING)
		SELECT count(*) FROM t`
}

// onWrite indexes written documents in their transaction: their tsvectors, and the vectors
// they carry at the vector fields' paths.
func (s *Store) onWrite(ctx context.Context, q doc.Execer, w doc.Written) error {
	st, err := s.settingsOf(ctx, w.CollectionID)
	if err != nil || st == nil {
		return err
	}
	if st.textSQL != "" {
		if _, err := q.Exec(ctx, textUpsert(st, false), w.CollectionID, w.IDs, st.generation); err != nil {
			return err
		}
	}
	for i := range st.Vectors {
		v := &st.Vectors[i]
		if v.Embed != nil {
			// Computed by the embedder, in a job (see jobs.go).
			if err := queueEmbeds(ctx, q, w.Tenant, w.CollectionID, v.Name, w.IDs); err != nil {
				return err
			}
			continue
		}
		rows, err := extractVectors(st, v, w.IDs, w.Bodies)
		if err != nil {
			return err
		}
		if err := rows.write(ctx, q, w.CollectionID, v.Name, w.Version); err != nil {
			return err
		}
	}
	return nil
}

// onDelete removes the search rows of deleted documents (or of a deleted collection) in
// the deletion's transaction.
func (s *Store) onDelete(ctx context.Context, q doc.Execer, d doc.Deletion) error {
	if d.IDs == nil {
		if _, err := q.Exec(ctx, "SELECT pg_notify($1, $2)", settingsChannel, d.CollectionID); err != nil {
			return err
		}
	}
	return dropRows(ctx, q, d.CollectionID, d.IDs)
}

// vectorRows are the vectors of some documents for one field; absent lists the
// documents that have none (their rows are removed).
type vectorRows struct {
	ids, parts []string
	vecs       [][]byte
	absent     []string
}

// extractVectors reads a field's vectors from document bodies, checking each is an array
// of dimension numbers (422 invalid_vector, naming the document and the pointer).
func extractVectors(st *settings, v *VectorField, ids []string, bodies [][]byte) (vectorRows, error) {
	var out vectorRows
	path := st.paths[v.Name]
	for i, body := range bodies {
		var data any
		if err := json.Unmarshal(body, &data); err != nil {
			return out, err
		}
		raw, ok := lookup(data, path)
		if !ok || raw == nil {
			out.absent = append(out.absent, ids[i])
			continue
		}
		arr, ok := raw.([]any)
		if !ok || len(arr) != v.Dimension {
			return out, problem.Unprocessable("invalid_vector", "document %q: %s must be an array of %d numbers", ids[i], v.Path, v.Dimension).
				WithField(pointer(path), "invalid vector")
		}
		vec := make([]float32, len(arr))
		for j, x := range arr {
			f, ok := x.(float64)
			if !ok || math.IsNaN(f) || math.IsInf(float64(float32(f)), 0) {
				return out, problem.Unprocessable("invalid_vector", "document %q: %s[%d] is not a number a float32 holds", ids[i], v.Path, j).
					WithField(pointer(path), "invalid vector")
			}
			vec[j] = float32(f)
		}
		if v.Metric == "cosine" && norm(vec) == 0 {
			return out, problem.Unprocessable("invalid_vector", "document %q: %s is all zeros, which has no direction (cosine)", ids[i], v.Path).
				WithField(pointer(path), "zero vector")
		}
		out.ids = append(out.ids, ids[i])
		out.parts = append(out.parts, partitionOf(st, data))
		out.vecs = append(out.vecs, encodeVector(vec))
	}
	return out, nil
}

// write upserts the vectors (a newer version replaces an older) and deletes the absent.
func (r vectorRows) write(ctx context.Context, q doc.Execer, collID, field string, version int64) error {
	if len(r.ids) > 0 {
		if _, err := q.Exec(ctx, `INSERT INTO search_vectors (collection_id, field, doc_id, version, part, vec)
			SELECT $1, $2, u.id, $3, u.part, u.vec FROM unnest($4::text[], $5::text[], $6::bytea[]) AS u(id, part, vec)
			ON CONFLICT (collection_id, field, doc_id) DO UPDATE SET version = EXCLUDED.version, part = EXCLUDED.part, vec = EXCLUDED.vec
			WHERE search_vectors.version <= EXCLUDED.version`, collID, field, version, r.ids, r.parts, r.vecs); err != nil {
			return err
		}
	}
	if len(r.absent) > 0 {
		if _, err := q.Exec(ctx, `DELETE FROM search_vectors WHERE collection_id = $1 AND field = $2 AND doc_id = ANY($3)`,
			collID, field, r.absent); err != nil {
			return err
		}
	}
	return nil
}

// partitionOf is a document's partition: its value at the partition path as text ("" when
// unpartitioned or absent).
func partitionOf(st *settings, data any) string {
	if st.partition == nil {
		return ""
	}
	v, ok := lookup(data, *st.partition)
	if !ok || v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// lookup follows a path of keys and indexes through decoded JSON.
func lookup(v any, p filter.Path) (any, bool) {
	for _, e := range p.Elems {
		switch x := v.(type) {
		case map[string]any:
			key := e.Key
			if e.IsIndex {
				key = fmt.Sprint(e.Index)
			}
			var ok bool
			if v, ok = x[key]; !ok {
				return nil, false
			}
		case []any:
			if !e.IsIndex || e.Index < 0 || e.Index >= len(x) {
				return nil, false
			}
			v = x[e.Index]
		default:
			return nil, false
		}
	}
	return v, true
}

// pointer writes a path as a JSON pointer.
func pointer(p filter.Path) string {
	out := ""
	for _, e := range p.Elems {
		if e.IsIndex {
			out += fmt.Sprintf("/%d", e.Index)
		} else {
			out += "/" + e.Key
		}
	}
	return out
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// encodeVector writes float32s little-endian, as search_vectors stores them.
func encodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// decodeVector reads what encodeVector wrote.
func decodeVector(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// IndexState is the state of one of a collection's indexes.
type IndexState struct {
	Name string `json:"name" example:"text" doc:"text, or a vector field's name."`
	Kind string `json:"kind" enum:"text,vector"`
	// Status is building (a rebuild runs; searches still answer from what is indexed),
	// ready, or failed (see Error).
	Status     string     `json:"status" enum:"building,ready,failed"`
	RowsDone   int64      `json:"rows_done"`
	RowsTotal  int64      `json:"rows_total"`
	Progress   float64    `json:"progress" doc:"rows_done / rows_total, 0 to 1."`
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	BuildMS    int64      `json:"build_ms,omitempty" doc:"How long the last build took."`
	// Memory is, for vector fields, this node's in-memory index: vectors held and partitions.
	Memory *MemoryState `json:"memory,omitempty"`
}

// MemoryState describes a node's in-memory vector index.
type MemoryState struct {
	Vectors    int    `json:"vectors"`
	Partitions int    `json:"partitions"`
	Status     string `json:"status" enum:"loading,ready"`
}

// startBuilds records that the collection's indexes are (re)building for generation gen,
// and pushes the jobs that build them.
func (s *Store) startBuilds(ctx context.Context, tx pgx.Tx, tenant, collID string, gen int64, st *settings) error {
	names := []string{}
	if st.textSQL != "" {
		names = append(names, "text")
	}
	for _, v := range st.Vectors {
		names = append(names, v.Name)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM search_indexes WHERE collection_id = $1 AND NOT name = ANY($2)`, collID, names); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO search_indexes (collection_id, name, status, generation)
		SELECT $1, unnest($2::text[]), 'building', $3
		ON CONFLICT (collection_id, name) DO UPDATE SET status = 'building', generation = EXCLUDED.generation, rows_done = 0,
			rows_total = 0, error = NULL, started_at = now(), finished_at = NULL`, collID, names, gen)
	if err != nil {
		return err
	}
	return s.pushBuilds(ctx, tx, tenant, collID, gen, names)
}

// Indexes reports the state of a collection's indexes (read on the collection): each in
// PostgreSQL, and — for vector fields — this node's in-memory index.
func (s *Store) Indexes(ctx context.Context, tenant, coll string) ([]IndexState, error) {
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT name, status, rows_done, rows_total, coalesce(error, ''), started_at, finished_at
		FROM search_indexes WHERE collection_id = $1 ORDER BY name = 'text' DESC, name`, collID)
	if err != nil {
		return nil, db.Translate(err, "search indexes")
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (IndexState, error) {
		var x IndexState
		err := r.Scan(&x.Name, &x.Status, &x.RowsDone, &x.RowsTotal, &x.Error, &x.StartedAt, &x.FinishedAt)
		x.Kind = "vector"
		if x.Name == "text" {
			x.Kind = "text"
		}
		if x.RowsTotal > 0 {
			x.Progress = float64(x.RowsDone) / float64(x.RowsTotal)
		} else if x.Status == "ready" {
			x.Progress = 1
		}
		if x.FinishedAt != nil {
			x.BuildMS = x.FinishedAt.Sub(x.StartedAt).Milliseconds()
		}
		return x, err
	})
	if err != nil {
		return nil, db.Translate(err, "search indexes")
	}
	for i := range out {
		if out[i].Kind != "vector" {
			continue
		}
		m := &MemoryState{Status: "loading"}
		if v := s.vectors.index(collID, out[i].Name); v != nil {
			live, _, parts := v.size()
			m.Vectors, m.Partitions, m.Status = live, parts, "ready"
		}
		out[i].Memory = m
	}
	return out, nil
}

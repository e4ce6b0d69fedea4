package search

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/problem"
)

// queryVector is the vector a search looks near: given, or the query text embedded.
func (s *Store) queryVector(ctx context.Context, p *plan) ([]float32, error) {
	if p.Mode == "vector" {
		return p.Vector, nil
	}
	e, err := s.embedder(p.field)
	if err != nil {
		return nil, err
	}
	vecs, err := e.Embed(ctx, []string{p.Q})
	if err != nil {
		return nil, err
	}
	if len(vecs) != 1 || len(vecs[0]) != p.field.Dimension {
		return nil, problem.Unavailable("embedder_failed", "the embedder %s did not return one %d-dimensional vector", e.Name(), p.field.Dimension)
	}
	return vecs[0], nil
}

// scored is a document and its distance to the query (smaller is nearer).
type scored struct {
	id   string
	dist float32
}

// vectorSearch finds the k nearest documents: by scanning the matching vectors exactly
// when a filter leaves few of them (or the index is not loaded), otherwise through the
// HNSW index — widening the search until k of its results pass the filter, and falling
// back to the exact scan if widening does not get there. Always k results when at least k
// documents match.
func (s *Store) vectorSearch(ctx context.Context, st *settings, p *plan) (Results, error) {
	q, err := s.queryVector(ctx, p)
	if err != nil {
		return Results{}, err
	}
	want := p.offset + p.k + 1 // one more tells whether there is a next page
	idx := s.vectors.index(st.collID, p.field.Name)
	narrowed := p.filter != nil || len(p.Partitions) > 0
	path := p.Plan
	var ids []string // the matching documents, when a filter leaves few
	if path == "" || path == "auto" {
		switch {
		case idx == nil:
			path = "exact"
		case !narrowed:
			path = "index"
		default:
			// If few documents match (at most ExactBelow, and at most 5% of the vectors:
			// beyond that the index finds k of them faster than the filter lists them), one
			// pass lists them, ids only, and they are scanned exactly. PostgreSQL's estimate
			// comes first: when it expects more, the listing (which may have to read every
			// document) is skipped.
			live, _, _ := idx.size()
			limit := min(s.cfg.ExactBelow, max(live/20, 100))
			est, err := s.estimateMatches(ctx, st, p)
			if err != nil {
				return Results{}, err
			}
			if est <= 1.5*float64(limit) {
				if ids, err = s.matchIDs(ctx, st, p, limit+1); err != nil {
					return Results{}, err
				}
			}
			path = "index"
			if est <= 1.5*float64(limit) && len(ids) <= limit {
				path = "exact"
			} else {
				ids = nil
			}
		}
	}
	if path == "index" && idx == nil {
		return Results{}, problem.Unavailable("index_not_ready", "the vector index of %q is not loaded on this node yet; retry, or search with plan exact", p.field.Name)
	}
	var found []scored
	if path == "index" {
		found, path, err = s.indexSearch(ctx, st, p, idx, q, want)
		if err != nil {
			return Results{}, err
		}
	}
	if path == "exact" || path == "exact:fallback" {
		if found, err = s.exactSearch(ctx, st, p, q, want, ids); err != nil {
			return Results{}, err
		}
	}
	return s.page(p, found, path, func(d float32) float64 { return scoreOf(p.field.Metric, d) }), nil
}

// scoreOf turns a distance into the score results report: cosine similarity, inner
// product, or minus the Euclidean distance (larger is always better).
func scoreOf(metric string, d float32) float64 {
	if metric == "l2" {
		return -math.Sqrt(float64(d))
	}
	return float64(-d)
}

// page cuts the found list at the page's offset and k, with a cursor for the next page.
func (s *Store) page(p *plan, found []scored, path string, score func(float32) float64) Results {
	res := Results{Items: []Hit{}, Path: path}
	end := min(len(found), p.offset+p.k)
	for _, f := range found[min(p.offset, len(found)):end] {
		res.Items = append(res.Items, Hit{ID: f.id, Score: score(f.dist)})
	}
	if len(found) > p.offset+p.k {
		res.NextCursor = textCursor{Fingerprint: fingerprintHash(p.fingerprint()), Offset: p.offset + p.k}.encode()
	}
	return res
}

// matchIDs lists up to limit documents with a vector of the field that pass the filter
// and partitions.
func (s *Store) matchIDs(ctx context.Context, st *settings, p *plan, limit int) ([]string, error) {
	var args sqlArgs
	from := vectorFrom(st, p, &args)
	extra, err := s.narrow(st, p, &args)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT v.doc_id`+from+extra+` LIMIT `+args.add(limit), args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// estimateMatches is PostgreSQL's estimate of how many documents pass the filter and
// partitions (a plan, not a scan).
func (s *Store) estimateMatches(ctx context.Context, st *settings, p *plan) (float64, error) {
	// Over documents alone: PostgreSQL estimates one table's filter better than a join's.
	var args sqlArgs
	from := ` FROM documents d WHERE d.collection_id = ` + doc.CollectionLiteral(st.collID) + ` AND d.body IS NOT NULL`
	extra, err := s.narrow(st, p, &args)
	if err != nil {
		return 0, err
	}
	var out []struct {
		Plan struct {
			Rows float64 `json:"Plan Rows"`
		} `json:"Plan"`
	}
	var raw []byte
	if err := s.pool.QueryRow(ctx, `EXPLAIN (FORMAT JSON) SELECT 1`+from+extra, args...).Scan(&raw); err != nil {
		return 0, err
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) == 0 {
		return 0, err
	}
	return out[0].Plan.Rows, nil
}

func vectorFrom(st *settings, p *plan, args *sqlArgs) string {
	lit := doc.CollectionLiteral(st.collID) // so a declared index serves the filter
	return ` FROM search_vectors v JOIN documents d ON d.collection_id = v.collection_id AND d.id = v.doc_id
		WHERE v.collection_id = ` + lit + ` AND d.collection_id = ` + lit + ` AND v.field = ` + args.add(p.field.Name) + ` AND d.body IS NOT NULL`
}

// topK keeps the want nearest of what it is given.
type topK struct {
	want int
	h    farthest
}

func (t *topK) add(id string, d float32) {
	switch {
	case len(t.h) < t.want:
		heap.Push(&t.h, scored{id, d})
	case d < t.h[0].dist:
		t.h[0] = scored{id, d}
		heap.Fix(&t.h, 0)
	}
}

func (t *topK) sorted() []scored {
	out := []scored(t.h)
	slices.SortFunc(out, func(a, b scored) int { return cmp.Or(cmp.Compare(a.dist, b.dist), cmp.Compare(a.id, b.id)) })
	return out
}

// exactSearch computes the distance to every matching vector (those of ids, or all that
// pass the filter when ids is nil) and keeps the want nearest. The vectors come from
// PostgreSQL, the truth: this node's in-memory index may lag a write by the time the
// change feed takes to bring it, and an exact answer must not.
func (s *Store) exactSearch(ctx context.Context, st *settings, p *plan, q []float32, want int, ids []string) ([]scored, error) {
	g := newHNSW(p.field.Dimension, p.field.Metric) // for its distance and normalization
	pq := g.prepare(q)
	top := &topK{want: want}
	var args sqlArgs
	sql := `SELECT v.doc_id, v.vec` + vectorFrom(st, p, &args)
	if ids != nil {
		sql += ` AND v.doc_id = ANY(` + args.add(ids) + `)`
	} else {
		extra, err := s.narrow(st, p, &args)
		if err != nil {
			return nil, err
		}
		sql += extra
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	var id string
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &raw}, func() error {
		if len(raw) == 4*p.field.Dimension {
			top.add(id, g.distFunc(pq, g.prepare(decodeVector(raw))))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return top.sorted(), nil
}

// farthest is a max-heap by distance: the top is the worst kept.
type farthest []scored

func (h farthest) Len() int           { return len(h) }
func (h farthest) Less(i, j int) bool { return h[i].dist > h[j].dist }
func (h farthest) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *farthest) Push(x any)        { *h = append(*h, x.(scored)) }
func (h *farthest) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// indexSearch asks the field's graphs (of the chosen partitions) for candidates, keeps
// those that exist and pass the filter, and widens until want are kept or the widening
// would cost more than scanning; then it asks for the exact scan instead.
func (s *Store) indexSearch(ctx context.Context, st *settings, p *plan, idx *vindex, q []float32, want int) ([]scored, string, error) {
	graphs := idx.graphs(partsOrNil(p.Partitions))
	live, _, _ := idx.size()
	if live == 0 {
		return nil, "index", nil
	}
	ask := want
	if p.filter != nil || len(p.Partitions) > 0 {
		ask = want * 2
	}
	path := "index"
	for round := 0; ; round++ {
		var cands []hit
		for _, g := range graphs {
			cands = append(cands, g.search(q, ask, max(64, ask), nil)...)
		}
		slices.SortFunc(cands, func(a, b hit) int { return cmp.Or(cmp.Compare(a.dist, b.dist), cmp.Compare(a.key, b.key)) })
		kept, err := s.keep(ctx, st, p, cands)
		if err != nil {
			return nil, "", err
		}
		if len(kept) >= want || len(cands) < ask {
			// Enough, or the graphs hold nothing more.
			return kept[:min(len(kept), want)], path, nil
		}
		if ask >= live || ask*4 > 2*s.cfg.ExactBelow {
			return nil, "exact:fallback", nil
		}
		ask *= 4
		path = "index+widened"
	}
}

func partsOrNil(p []string) []string {
	if len(p) == 0 {
		return nil
	}
	return p
}

// keep returns the candidates whose documents exist and pass the filter, in order.
func (s *Store) keep(ctx context.Context, st *settings, p *plan, cands []hit) ([]scored, error) {
	if len(cands) == 0 {
		return nil, nil
	}
	ids := make([]string, len(cands))
	for i, c := range cands {
		ids[i] = c.key
	}
	var args sqlArgs
	sql := `SELECT d.id FROM documents d WHERE d.collection_id = ` + doc.CollectionLiteral(st.collID) + ` AND d.id = ANY(` + args.add(ids) + `) AND d.body IS NOT NULL`
	extra, err := s.narrow(st, p, &args)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, sql+extra, args...)
	if err != nil {
		return nil, err
	}
	ok, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	pass := make(map[string]bool, len(ok))
	for _, id := range ok {
		pass[id] = true
	}
	out := make([]scored, 0, len(ok))
	seen := map[string]bool{}
	for _, c := range cands {
		if pass[c.key] && !seen[c.key] {
			seen[c.key] = true
			out = append(out, scored{c.key, c.dist})
		}
	}
	return out, nil
}

// hybrid fuses the text ranking and the vector ranking by reciprocal rank:
// score = (1-w)/(60+rank_text) + w/(60+rank_vector).
func (s *Store) hybrid(ctx context.Context, st *settings, p *plan) (Results, error) {
	depth := min(s.cfg.MaxK, max(50, 2*(p.offset+p.k+1)))
	tp := *p
	tp.k, tp.offset, tp.Cursor, tp.Mode, tp.sortPath = depth, 0, "", "text", nil
	text, err := s.textSearch(ctx, st, &tp)
	if err != nil {
		return Results{}, err
	}
	vp := *p
	vp.k, vp.offset, vp.Cursor, vp.Mode = depth, 0, "", "semantic"
	vec, err := s.vectorSearch(ctx, st, &vp)
	if err != nil {
		return Results{}, err
	}
	const k0 = 60
	fused := map[string]float64{}
	for i, h := range text.Items {
		fused[h.ID] += (1 - p.weight) / float64(k0+i+1)
	}
	for i, h := range vec.Items {
		fused[h.ID] += p.weight / float64(k0+i+1)
	}
	found := make([]scored, 0, len(fused))
	for id, sc := range fused {
		found = append(found, scored{id, float32(-sc)})
	}
	slices.SortFunc(found, func(a, b scored) int { return cmp.Or(cmp.Compare(a.dist, b.dist), cmp.Compare(a.id, b.id)) })
	res := s.page(p, found, "hybrid:text+"+vec.Path, func(d float32) float64 { return round3(float64(-d)) })
	res.Facets = text.Facets
	return res, nil
}

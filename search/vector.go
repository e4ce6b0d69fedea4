package search

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/problem"
)

// registry holds this node's in-memory vector indexes: one HNSW graph per vector field and
// partition. It loads each field from search_vectors once its build is ready (and at
// start), then follows the change feed from the position it loaded at, so every node's
// indexes converge on PostgreSQL's vectors.
type registry struct {
	s *Store

	mu      sync.RWMutex
	indexes map[fieldKey]*vindex
	colls   map[string]string // tenant|collection name → id, for feed changes
	after   feed.Position     // the feed position applied up to
	started bool
}

type fieldKey struct{ coll, field string }

// vindex is one vector field's graphs, by partition.
type vindex struct {
	dim        int
	metric     string
	generation int64
	ready      bool
	loadedAt   time.Time

	mu    sync.RWMutex
	parts map[string]*hnsw
}

func newRegistry(s *Store) *registry {
	return &registry{s: s, indexes: map[fieldKey]*vindex{}, colls: map[string]string{}}
}

// graph returns a field's graph for a partition, creating it.
func (v *vindex) graph(part string) *hnsw {
	v.mu.RLock()
	g := v.parts[part]
	v.mu.RUnlock()
	if g != nil {
		return g
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if g = v.parts[part]; g == nil {
		g = newHNSW(v.dim, v.metric)
		v.parts[part] = g
	}
	return g
}

// graphs returns the graphs of some partitions (all when parts is nil).
func (v *vindex) graphs(parts []string) []*hnsw {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []*hnsw
	if parts == nil {
		for _, g := range v.parts {
			out = append(out, g)
		}
		return out
	}
	for _, p := range parts {
		if g := v.parts[p]; g != nil {
			out = append(out, g)
		}
	}
	return out
}

// remove deletes a key from whichever partition holds it.
func (v *vindex) remove(key string) {
	for _, g := range v.graphs(nil) {
		g.remove(key)
	}
}

func (v *vindex) size() (live, dead, parts int) {
	gs := v.graphs(nil)
	for _, g := range gs {
		l, d := g.size()
		live += l
		dead += d
	}
	return live, dead, len(gs)
}

// index returns a ready in-memory index of a field, or nil.
func (r *registry) index(collID, field string) *vindex {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v := r.indexes[fieldKey{collID, field}]
	if v == nil || !v.ready {
		return nil
	}
	return v
}

// drop forgets a collection's indexes (its settings or the collection went away).
func (s *Store) dropIndexes(collID string) {
	r := s.vectors
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.indexes {
		if k.coll == collID {
			delete(r.indexes, k)
		}
	}
}

// run loads the ready vector fields, then applies the feed, until ctx ends.
func (r *registry) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := r.sync(ctx); err != nil && ctx.Err() == nil {
			r.s.log.Warn("search: vector index sync", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		known := r.s.feed.Known()
		r.s.feed.Wait(ctx, known, 2*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// sync loads what is ready and not loaded (or loaded at an older generation), drops what
// is gone, and applies the feed.
func (r *registry) sync(ctx context.Context) error {
	if !r.started {
		// Start after the feed's head: every change after it is applied on top of the load.
		head, err := r.s.feed.Head(ctx)
		if err != nil {
			return err
		}
		r.after, r.started = head, true
	}
	rows, err := r.s.pool.Query(ctx, `SELECT i.collection_id::text, i.name, i.generation FROM search_indexes i
		WHERE i.name <> 'text' AND i.status = 'ready'`)
	if err != nil {
		return err
	}
	type ready struct {
		coll, field string
		gen         int64
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ready, error) {
		var x ready
		err := row.Scan(&x.coll, &x.field, &x.gen)
		return x, err
	})
	if err != nil {
		return err
	}
	want := map[fieldKey]bool{}
	for _, x := range list {
		k := fieldKey{x.coll, x.field}
		want[k] = true
		r.mu.RLock()
		cur := r.indexes[k]
		r.mu.RUnlock()
		if cur != nil && cur.generation >= x.gen {
			// Reload a graph that deletions and updates have filled with tombstones.
			if live, dead, _ := cur.size(); dead < 1000 || dead < live/4 {
				continue
			}
		}
		if err := r.load(ctx, x.coll, x.field, x.gen); err != nil {
			return err
		}
	}
	r.mu.Lock()
	for k := range r.indexes {
		if !want[k] {
			delete(r.indexes, k)
		}
	}
	r.mu.Unlock()
	return r.follow(ctx)
}

// load builds a field's graphs from search_vectors.
func (r *registry) load(ctx context.Context, collID, field string, gen int64) error {
	st, err := r.s.settingsOf(ctx, collID)
	if err != nil || st == nil {
		return err
	}
	vf := st.vector(field)
	if vf == nil {
		return nil
	}
	v := &vindex{dim: vf.Dimension, metric: vf.Metric, generation: gen, parts: map[string]*hnsw{}}
	started := time.Now()
	rows, err := r.s.pool.Query(ctx, `SELECT doc_id, part, vec FROM search_vectors WHERE collection_id = $1 AND field = $2`, collID, field)
	if err != nil {
		return err
	}
	var id, part string
	var vec []byte
	n := 0
	_, err = pgx.ForEachRow(rows, []any{&id, &part, &vec}, func() error {
		if len(vec) != 4*v.dim {
			return nil // written under an older dimension: the rebuild replaces it
		}
		v.graph(part).add(id, decodeVector(vec))
		n++
		return nil
	})
	if err != nil {
		return err
	}
	v.ready, v.loadedAt = true, time.Now()
	r.mu.Lock()
	r.indexes[fieldKey{collID, field}] = v
	r.mu.Unlock()
	r.s.log.Info("search: vector index loaded", "collection", collID, "field", field, "vectors", n,
		"elapsed", time.Since(started).Round(time.Millisecond))
	return nil
}

// follow applies the feed's document and vector changes to the loaded indexes.
func (r *registry) follow(ctx context.Context) error {
	for {
		changes, next, err := r.s.feed.ReadAll(ctx, r.after, 1000)
		if problem.HasCode(err, "position_expired") {
			// Fell behind the feed's retention: reload everything.
			r.mu.Lock()
			clear(r.indexes)
			r.started = false
			r.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			return nil
		}
		touched := map[string]map[string]bool{} // collection id → doc ids
		for _, c := range changes {
			if c.Kind != "doc" && c.Kind != "search" {
				continue
			}
			collID, err := r.collectionID(ctx, c.Tenant, c.Scope)
			if err != nil {
				return err
			}
			if collID == "" || !r.hasIndexes(collID) {
				continue
			}
			if touched[collID] == nil {
				touched[collID] = map[string]bool{}
			}
			touched[collID][c.Key] = true
		}
		for collID, ids := range touched {
			if err := r.refresh(ctx, collID, ids); err != nil {
				return err
			}
		}
		r.after = next
	}
}

func (r *registry) hasIndexes(collID string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for k := range r.indexes {
		if k.coll == collID {
			return true
		}
	}
	return false
}

// collectionID resolves a feed change's collection, cached (names are never reused for
// another id while the collection exists; a deleted one resolves to "").
func (r *registry) collectionID(ctx context.Context, tenant, name string) (string, error) {
	key := tenant + "|" + name
	r.mu.RLock()
	id, ok := r.colls[key]
	r.mu.RUnlock()
	if ok {
		return id, nil
	}
	err := r.s.pool.QueryRow(ctx, `SELECT id::text FROM collections WHERE tenant_id = $1 AND name = $2`, tenant, name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.colls[key] = id
	r.mu.Unlock()
	return id, nil
}

// refresh reloads some documents' vectors of a collection from search_vectors.
func (r *registry) refresh(ctx context.Context, collID string, ids map[string]bool) error {
	list := make([]string, 0, len(ids))
	for id := range ids {
		list = append(list, id)
	}
	rows, err := r.s.pool.Query(ctx, `SELECT field, doc_id, part, vec FROM search_vectors WHERE collection_id = $1 AND doc_id = ANY($2)`,
		collID, list)
	if err != nil {
		return err
	}
	present := map[fieldKey]map[string]bool{}
	var field, id, part string
	var vec []byte
	if _, err := pgx.ForEachRow(rows, []any{&field, &id, &part, &vec}, func() error {
		k := fieldKey{collID, field}
		r.mu.RLock()
		v := r.indexes[k]
		r.mu.RUnlock()
		if v == nil || len(vec) != 4*v.dim {
			return nil
		}
		v.remove(id) // it may have moved partition
		v.graph(part).add(id, decodeVector(vec))
		if present[k] == nil {
			present[k] = map[string]bool{}
		}
		present[k][id] = true
		return nil
	}); err != nil {
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for k, v := range r.indexes {
		if k.coll != collID {
			continue
		}
		for id := range ids {
			if !present[k][id] {
				v.remove(id)
			}
		}
	}
	return nil
}

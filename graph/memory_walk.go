package graph

import (
	"cmp"
	"context"
	"math/bits"
	"slices"

	"github.com/stratadb/strata/problem"
)

// The traversals over the in-memory index. Each mirrors its SQL twin (walk.go, paths.go)
// step for step — the same levels, the same row caps, the same first-found parents, the
// same sorting of each level by node number — with hops met in the order of the SQL
// adjacency indexes, so both answer alike; the property tests run every query on both.

// visitSet is what a traversal knows of the nodes it reached, by dense index: a bitmap of
// the nodes reached (an eighth of a megabyte per million nodes, so checking a hop stays in
// the processor's cache) and a record per node, written once when it is reached.
type visitSet struct {
	seenBits []uint64
	v        []visitRec
	count    int
	bits     []uint64 // scratch for sorting, all zero between uses
}

// visitRec is what a traversal knows of one node it reached.
type visitRec struct {
	depth  int32
	parent int32
	typ    uint16
	denied bool
	edge   int64
}

func (vs *visitSet) reset(n int) {
	if len(vs.v) < n {
		n += n / 8 // room for the nodes catch-ups add
		*vs = visitSet{seenBits: make([]uint64, (n+63)/64), v: make([]visitRec, n), bits: make([]uint64, (n+63)/64)}
	} else {
		clear(vs.seenBits)
	}
	vs.count = 0
}

func (vs *visitSet) seen(u int32) bool { return vs.seenBits[u>>6]&(1<<(u&63)) != 0 }

func (vs *visitSet) mark(u int32, depth int, parent int32, edge int64, typ uint16) {
	vs.seenBits[u>>6] |= 1 << (u & 63)
	vs.v[u] = visitRec{depth: int32(depth), parent: parent, edge: edge, typ: typ}
	vs.count++
}

func (vs *visitSet) markSeen(u int32) {
	vs.seenBits[u>>6] |= 1 << (u & 63)
	vs.count++
}

func (vs *visitSet) unmark(u int32) {
	vs.seenBits[u>>6] &^= 1 << (u & 63)
	vs.count--
}

// set returns a visit set for n nodes, reusing an idle one.
func (idx *tenantIndex) set(n int) *visitSet {
	idx.setsMu.Lock()
	var vs *visitSet
	if k := len(idx.sets); k > 0 {
		vs, idx.sets = idx.sets[k-1], idx.sets[:k-1]
	}
	idx.setsMu.Unlock()
	if vs == nil {
		vs = &visitSet{}
	}
	vs.reset(n)
	return vs
}

// putSet keeps a visit set for reuse (two at most: a shortest path uses two).
func (idx *tenantIndex) putSet(vs *visitSet) {
	idx.setsMu.Lock()
	defer idx.setsMu.Unlock()
	if len(idx.sets) < 2 {
		idx.sets = append(idx.sets, vs)
	}
}

// memWalk is a traversal over a read-locked index: the types it follows and the
// collections it may enter, by the index's numbering.
type memWalk struct {
	idx   *tenantIndex
	g     *adjacency
	types []bool // by type index; nil: every type
	colls []bool // by collection index; nil: every collection
	names []string
	buf   []mhop
}

// memWalkOf returns an in-memory walk for v when v can be answered from memory — the
// graph as it is now (no as_of), without document or edge filters — and the tenant's
// index is loaded, caught up and can be read-locked within memory.lockWait; nil otherwise
// (the traversal uses SQL: memWalkOf never fails one). The caller calls release when done
// with the walk and everything it returned.
func (s *Store) memWalkOf(ctx context.Context, v *view) (w *memWalk, release func()) {
	if !v.o.AsOf.IsZero() || v.nodeExpr != nil || v.edgeExpr != nil {
		return nil, nil
	}
	m := s.mem
	idx := m.acquire(ctx, v.tenant)
	if idx == nil {
		return nil, nil
	}
	// The collections' names are read before the lock is taken (collection ids are never
	// renamed nor reused); should a catch-up number another collection meanwhile, again.
	for range 3 {
		colls := *idx.colls.Load()
		ids := make(map[int64]string, len(colls))
		for i, id := range colls {
			ids[int64(i)] = id
		}
		names, err := s.collectionNames(ctx, v.tenant, ids)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("graph: naming the in-memory index's collections failed; traversing in SQL", "tenant", v.tenant, "err", err)
			}
			break
		}
		if !m.lockWithin(ctx, idx.mu.TryRLock) {
			break
		}
		if g := idx.g; len(g.colls) == len(colls) {
			m.traversals.Add(1)
			return idx.walk(v, names), idx.mu.RUnlock
		}
		idx.mu.RUnlock()
	}
	m.fallbacks.Add(1)
	return nil, nil
}

// walk returns a walk for v over the read-locked index, with the names of its collections.
func (idx *tenantIndex) walk(v *view, names map[string]string) *memWalk {
	g := idx.g
	w := &memWalk{idx: idx, g: g}
	if v.w.types != nil {
		w.types = make([]bool, len(g.types))
		for i, id := range g.types {
			w.types[i] = slices.Contains(v.w.types, id)
		}
	}
	if v.restricted {
		w.colls = make([]bool, len(g.colls))
		for i, id := range g.colls {
			w.colls[i] = slices.Contains(v.allowed, id)
		}
	}
	w.names = make([]string, len(g.colls))
	for i, id := range g.colls {
		w.names[i] = names[id]
	}
	return w
}

// sortNodes sorts dense indexes by node number. A large set of nodes numbered in order is
// sorted by marking them in a bitmap and reading it back: linear, where sorting is not.
func (w *memWalk) sortNodes(vs *visitSet, ds []int32) {
	if !w.g.monotone || len(ds) < 64 || len(ds) < len(vs.bits)/16 {
		w.g.sortNodes(ds)
		return
	}
	lo, hi := ds[0], ds[0]
	for _, d := range ds {
		vs.bits[d>>6] |= 1 << (d & 63)
		lo, hi = min(lo, d), max(hi, d)
	}
	k := 0
	for i := lo >> 6; i <= hi>>6; i++ {
		for word := vs.bits[i]; word != 0; word &= word - 1 {
			ds[k] = i<<6 | int32(bits.TrailingZeros64(word))
			k++
		}
		vs.bits[i] = 0
	}
}

// memWalkWhile runs lookup (the start nodes') while memWalkOf catches the index up, so
// their round trips overlap, and returns the walk (nil: use SQL) once both are done. With
// use false it only runs lookup. On an error nothing stays locked.
func (s *Store) memWalkWhile(ctx context.Context, v *view, use bool, lookup func() error) (*memWalk, func(), error) {
	if !use || s.mem.budget <= 0 || !v.o.AsOf.IsZero() || v.nodeExpr != nil || v.edgeExpr != nil {
		return nil, nil, lookup()
	}
	type walked struct {
		w       *memWalk
		release func()
	}
	done := make(chan walked, 1)
	go func() {
		w, release := s.memWalkOf(ctx, v)
		done <- walked{w, release}
	}()
	err := lookup()
	m := <-done
	if err != nil {
		if m.release != nil {
			m.release()
		}
		return nil, nil, err
	}
	return m.w, m.release, nil
}

func (w *memWalk) admits(u int32) bool { return w.colls == nil || w.colls[w.g.nodes[u].coll] }

// ref names a node.
func (w *memWalk) ref(u int32) NodeRef {
	return NodeRef{Collection: w.names[w.g.nodes[u].coll], ID: w.g.docID(u)}
}

// each calls fn with every live hop out of frontier going dir along the types followed,
// in the SQL walker's order: node by node (the frontier is sorted by node number), each
// node's hops in index order, and for Both every out hop before every in hop. fn returns
// false to stop. The time budget is checked on entry (as each SQL query would) and every
// 4096 hops.
func (w *memWalk) each(ctx context.Context, frontier []int32, dir Direction, fn func(u int32, h *mhop) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	phases := []Direction{dir}
	if dir == Both {
		phases = []Direction{Out, In}
	}
	n := 0
	for _, ph := range phases {
		for _, u := range frontier {
			hops := w.g.hopsOf(u, ph, w.buf)
			w.buf = hops[:0]
			for k := range hops {
				h := &hops[k]
				if h.dead || (w.types != nil && !w.types[h.typ]) {
					continue
				}
				if n++; n&4095 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				if !fn(u, h) {
					return nil
				}
			}
		}
	}
	return nil
}

// memBFS is a breadth-first traversal in memory: the nodes entered, in order, and where
// each level ends in that order (the nodes at depth d are order[ends[d-2]:ends[d-1]]).
type memBFS struct {
	order     []int32
	ends      []int
	vs        *visitSet
	truncated bool
}

// bfs is walker.bfs in memory. The SQL walker reads a level's hops up to a row cap and
// reads again with a larger one when the cap cut the level short of the nodes it still
// needs; reading in memory is sequential, so the same prefixes are simply read on.
func (w *memWalk) bfs(ctx context.Context, start int32, dir Direction, maxDepth, limit int, paths bool) (*memBFS, error) {
	vs := w.idx.set(len(w.g.num))
	r := &memBFS{vs: vs}
	vs.mark(start, 0, -1, 0, 0)
	frontier := []int32{start}
	phases := []Direction{dir}
	if dir == Both {
		phases = []Direction{Out, In}
	}
	for depth := 1; depth <= maxDepth && len(frontier) > 0; depth++ {
		remaining := limit - len(r.order)
		rowCap := max(4*remaining, 1024)
		var cand []int32
		read, capped := 0, false
		// The loop of each, written out: this is the hot path, and a call per hop costs.
		if err := ctx.Err(); err != nil {
			return r, err
		}
	level:
		for _, ph := range phases {
			c := &w.g.out
			if ph == In {
				c = &w.g.in
			}
			plain := c.deadN == 0 && w.types == nil
			for _, u := range frontier {
				var hops []mhop
				lo, hi := c.span(u)
				if w.g.overlaid(u, ph) {
					hops = w.g.hopsOf(u, ph, w.buf)
					w.buf = hops[:0]
					lo, hi = 0, uint32(len(hops))
				}
				for k := lo; k < hi; k++ {
					var nbr int32
					switch {
					case hops != nil:
						if h := &hops[k]; h.dead || (w.types != nil && !w.types[h.typ]) {
							continue
						}
						nbr = hops[k].nbr
					case plain:
						nbr = c.nbr[k]
					default:
						if c.dead[k] || (w.types != nil && !w.types[c.typ[k]]) {
							continue
						}
						nbr = c.nbr[k]
					}
					if read == rowCap {
						if len(cand) >= remaining {
							capped = true
							break level
						}
						rowCap *= 4
					}
					if read++; read&4095 == 0 {
						if err := ctx.Err(); err != nil {
							return r, err
						}
					}
					if vs.seen(nbr) {
						continue
					}
					// Only paths need the way a node was reached (a denied node is never
					// asked about again: the bit says it was seen); without them, the bit
					// is all.
					if paths {
						if hops != nil {
							vs.mark(nbr, depth, u, hops[k].eid, hops[k].typ)
						} else {
							vs.mark(nbr, depth, u, c.eid[k], c.typ[k])
						}
					} else {
						vs.markSeen(nbr)
					}
					if w.admits(nbr) {
						cand = append(cand, nbr)
					}
				}
			}
		}
		if read == rowCap && len(cand) >= remaining {
			capped = true
		}
		w.sortNodes(vs, cand)
		for _, n := range cand {
			if len(r.order) == limit {
				vs.unmark(n)
				r.truncated = true
				continue
			}
			r.order = append(r.order, n)
		}
		r.ends = append(r.ends, len(r.order))
		if capped {
			r.truncated = true
		}
		frontier = cand[:min(len(cand), remaining)]
		if len(r.order) == limit {
			r.truncated = r.truncated || (depth < maxDepth && len(frontier) > 0)
			break
		}
	}
	return r, nil
}

// pathOf follows parents from u back to the start: node numbers, edges and type ids, as
// the SQL walker's walks have them.
func (w *memWalk) pathOf(vs *visitSet, u int32) (nodes []int64, edges []int64, types []int32) {
	for {
		nodes = append(nodes, w.g.num[u])
		if vs.v[u].parent < 0 {
			break
		}
		edges = append(edges, vs.v[u].edge)
		types = append(types, w.g.types[vs.v[u].typ])
		u = vs.v[u].parent
	}
	slices.Reverse(nodes)
	slices.Reverse(edges)
	slices.Reverse(types)
	return nodes, edges, types
}

// pathDense is pathOf in dense indexes (for naming without a lookup).
func (w *memWalk) pathDense(vs *visitSet, u int32) (nodes []int32) {
	for {
		nodes = append(nodes, u)
		if vs.v[u].parent < 0 {
			break
		}
		u = vs.v[u].parent
	}
	slices.Reverse(nodes)
	return nodes
}

// path names a path to u.
func (w *memWalk) path(v *view, vs *visitSet, u int32) *Path {
	nodes := w.pathDense(vs, u)
	p := &Path{Nodes: make([]NodeRef, len(nodes)), Edges: make([]EdgeRef, len(nodes)-1)}
	for i, n := range nodes {
		p.Nodes[i] = w.ref(n)
		if i > 0 {
			p.Edges[i-1] = EdgeRef{ID: vs.v[n].edge, Type: v.types.name(w.g.types[vs.v[n].typ])}
		}
	}
	return p
}

// refs names the nodes of walks (by number), for the code shared with the SQL walker. A
// node the index does not hold (a path from a node without edges to itself) is named in
// SQL.
func (s *Store) memRefs(ctx context.Context, tenant string, w *memWalk, walks ...*walk) (map[int64]NodeRef, error) {
	out := map[int64]NodeRef{}
	var missing []int64
	for _, wk := range walks {
		for _, n := range wk.nodes {
			if _, ok := out[n]; !ok {
				if d, ok := w.g.dense(n); ok {
					out[n] = w.ref(d)
				} else {
					missing = append(missing, n)
				}
			}
		}
	}
	if len(missing) > 0 {
		more, err := s.refs(ctx, s.pool, tenant, missing)
		if err != nil {
			return nil, err
		}
		for n, r := range more {
			out[n] = r
		}
	}
	return out, nil
}

// nodesOf names the nodes a breadth-first traversal entered, with their depths (by the
// level ends), their ids cut from one string (one allocation, not one per node).
func (w *memWalk) nodesOf(order []int32, ends []int) []Node {
	// One pass reads each node's record (the one memory access per node that cannot be
	// avoided), the next ones only what it wrote.
	type named struct {
		coll uint16
		end  uint32 // where its id ends in buf
	}
	buf := make([]byte, 0, 8*len(order))
	names := make([]named, len(order))
	for i, n := range order {
		buf = w.g.appendDocID(buf, n)
		names[i] = named{coll: w.g.nodes[n].coll, end: uint32(len(buf))}
	}
	all := string(buf)
	out := make([]Node, len(order))
	at, depth := uint32(0), 0
	for i, nm := range names {
		for depth < len(ends) && i >= ends[depth] {
			depth++
		}
		out[i] = Node{NodeRef: NodeRef{Collection: w.names[nm.coll], ID: all[at:nm.end]}, Depth: depth + 1}
		at = nm.end
	}
	return out
}

// shortest is walker.shortest in memory: bidirectional breadth-first search, the smaller
// frontier first, stopping at the first level where the searches meet.
func (w *memWalk) shortest(ctx context.Context, a, b int32, dir Direction, maxDepth int) (*walk, error) {
	if a == b {
		return &walk{nodes: []int64{w.g.num[a]}}, nil
	}
	fw, bw := w.idx.set(len(w.g.num)), w.idx.set(len(w.g.num))
	defer w.idx.putSet(fw)
	defer w.idx.putSet(bw)
	fw.mark(a, 0, -1, 0, 0)
	bw.mark(b, 0, -1, 0, 0)
	ff, bf := []int32{a}, []int32{b}
	df, db := 0, 0
	for df+db < maxDepth && len(ff) > 0 && len(bf) > 0 {
		forward := len(ff) <= len(bf)
		front, seen, other, d, depth := ff, fw, bw, dir, df+1
		if !forward {
			front, seen, other, d, depth = bf, bw, fw, dir.reverse(), db+1
		}
		// The far end is admitted however the collections read: it was named.
		var meet, next []int32
		err := w.each(ctx, front, d, func(u int32, h *mhop) bool {
			x := h.nbr
			if seen.seen(x) {
				return true
			}
			seen.mark(x, depth, u, h.eid, h.typ)
			switch {
			case other.seen(x) && !other.v[x].denied:
				meet = append(meet, x)
			case w.admits(x):
				next = append(next, x)
			default:
				seen.v[x].denied = true
			}
			return true
		})
		if err != nil {
			return nil, err
		}
		if len(meet) > 0 {
			best := meet[0]
			for _, m := range meet[1:] {
				if other.v[m].depth < other.v[best].depth || (other.v[m].depth == other.v[best].depth && w.g.num[m] < w.g.num[best]) {
					best = m
				}
			}
			fpath, fedges, ftypes := w.pathOf(fw, best)
			bpath, bedges, btypes := w.pathOf(bw, best)
			slices.Reverse(bpath)
			slices.Reverse(bedges)
			slices.Reverse(btypes)
			return &walk{nodes: append(fpath, bpath[1:]...), edges: append(fedges, bedges...), types: append(ftypes, btypes...),
				weight: float64(len(fedges) + len(bedges))}, nil
		}
		w.sortNodes(seen, next)
		if forward {
			ff, df = next, depth
		} else {
			bf, db = next, depth
		}
	}
	return nil, nil
}

// allPaths is walker.allPaths in memory: backward breadth-first from b for the distance
// of every node that reaches it in time, then depth-first from a, once per length, over
// the hops into nodes that search expanded, each node's in order of node and edge.
func (w *memWalk) allPaths(ctx context.Context, a, b int32, dir Direction, maxDepth, limit, maxNodes int) ([]walk, bool, error) {
	g := w.g
	if a == b {
		return []walk{{nodes: []int64{g.num[a]}}}, false, nil
	}
	dist := w.idx.set(len(g.num))
	defer w.idx.putSet(dist)
	dist.mark(b, 0, -1, 0, 0)
	frontier := []int32{b}
	for depth := 1; depth <= maxDepth && len(frontier) > 0; depth++ {
		var next []int32
		err := w.each(ctx, frontier, dir.reverse(), func(u int32, h *mhop) bool {
			x := h.nbr
			if x == a || depth == maxDepth {
				if !dist.seen(a) {
					dist.mark(a, depth, -1, 0, 0)
				}
				return true
			}
			if dist.seen(x) {
				return true
			}
			dist.mark(x, depth, u, h.eid, h.typ)
			if w.admits(x) {
				next = append(next, x)
			} else {
				dist.v[x].denied = true
			}
			return true
		})
		if err != nil {
			return nil, false, err
		}
		w.sortNodes(dist, next)
		if dist.count > maxNodes {
			return nil, false, problem.Unprocessable("traversal_too_large", "the search reached more than %d nodes; lower the depth or narrow it", maxNodes)
		}
		frontier = next
	}
	if !dist.seen(a) {
		return nil, false, nil
	}
	// A node's way on: its hops into nodes the search expanded (b, and every node it
	// entered but a), by node number then edge, as the SQL walker sorts them.
	adj := map[int32][]pathStep[int32]{}
	stepsOf := func(u int32) ([]pathStep[int32], error) {
		if st, ok := adj[u]; ok {
			return st, nil
		}
		st := []pathStep[int32]{}
		err := w.each(ctx, []int32{u}, dir, func(_ int32, h *mhop) bool {
			if x := h.nbr; x != a && dist.seen(x) && !dist.v[x].denied {
				st = append(st, pathStep[int32]{to: x, edge: h.eid, typ: g.types[h.typ]})
			}
			return true
		})
		slices.SortFunc(st, func(x, y pathStep[int32]) int {
			if x.to != y.to {
				return cmp.Compare(g.num[x.to], g.num[y.to])
			}
			return cmp.Compare(x.edge, y.edge)
		})
		adj[u] = st
		return st, err
	}
	return simplePaths(ctx, a, b, int(dist.v[a].depth), maxDepth, limit, stepsOf,
		func(x int32) (int, bool) { return int(dist.v[x].depth), dist.seen(x) && !dist.v[x].denied },
		func(x int32) int64 { return g.num[x] })
}

// degree is Degree in memory: u's live edges by type and direction, those to nodes of the
// collections the walk may enter.
func (w *memWalk) degree(ctx context.Context, v *view, u int32, d *Degree) error {
	for _, dir := range []Direction{Out, In} {
		counts, total := d.Out, &d.OutTotal
		if dir == In {
			counts, total = d.In, &d.InTotal
		}
		err := w.each(ctx, []int32{u}, dir, func(_ int32, h *mhop) bool {
			if w.admits(h.nbr) {
				counts[v.types.name(w.g.types[h.typ])]++
				*total++
			}
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// shortestOf is shortest by node number: a node the index does not hold has no live
// edges, so reaches nothing.
func (w *memWalk) shortestOf(ctx context.Context, a, b int64, dir Direction, maxDepth int) (*walk, error) {
	da, ok1 := w.g.dense(a)
	db, ok2 := w.g.dense(b)
	switch {
	case a == b:
		return &walk{nodes: []int64{a}}, nil
	case !ok1 || !ok2:
		return nil, nil
	}
	return w.shortest(ctx, da, db, dir, maxDepth)
}

// allPathsOf is allPaths by node number.
func (w *memWalk) allPathsOf(ctx context.Context, a, b int64, dir Direction, maxDepth, limit, maxNodes int) ([]walk, bool, error) {
	da, ok1 := w.g.dense(a)
	db, ok2 := w.g.dense(b)
	switch {
	case a == b:
		return []walk{{nodes: []int64{a}}}, false, nil
	case !ok1 || !ok2:
		return nil, false, nil
	}
	return w.allPaths(ctx, da, db, dir, maxDepth, limit, maxNodes)
}

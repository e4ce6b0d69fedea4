package graph

import (
	"cmp"
	"container/heap"
	"context"
	"slices"

	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/problem"
)

// PathResult is the answer of a shortest-path query.
type PathResult struct {
	Found bool `json:"found"`
	// Length is the number of edges on the path.
	Length int `json:"length"`
	// Weight is the path's total weight, for a weighted query.
	Weight *float64 `json:"weight,omitempty"`
	Path   *Path    `json:"path,omitempty"`
	// Partial says the time budget ran out before a path was found (only with Partial):
	// there may be one.
	Partial bool `json:"partial,omitempty"`
}

// PathsResult is the answer of an all-paths query.
type PathsResult struct {
	Paths []Path `json:"paths"`
	// Truncated says the limit cut the list short.
	Truncated bool `json:"truncated"`
	// Partial says the time budget ran out and the list is what was found by then.
	Partial bool `json:"partial,omitempty"`
}

// ShortestPath finds a path from one node to another with the fewest edges, searching
// breadth-first from both ends at once and stopping where the searches meet, up to
// o.MaxDepth edges (default: the configured maximum). With weight (a path into edge
// properties, such as "cost"), it finds the path of least total weight instead (Dijkstra);
// edges without a number there weigh 1, and a negative weight is an error.
func (s *Store) ShortestPath(ctx context.Context, tenant string, from, to NodeRef, weight string, o Options) (PathResult, error) {
	v, err := s.prepare(ctx, tenant, &o, s.pool, s.cfg.MaxDepth)
	if err != nil {
		return PathResult{}, err
	}
	if weight != "" {
		if !o.AsOf.IsZero() {
			return PathResult{}, problem.Invalid("as_of_unsupported", "a weighted path sees current weights; it cannot be combined with as_of")
		}
		p, err := filter.ParsePath(weight)
		if err != nil || p.Meta != "" || len(p.Elems) == 0 {
			return PathResult{}, problem.Invalid("invalid_weight", "weight is a path into the edges' properties, such as cost or costs.time").
				WithField("query.weight", weight)
		}
		w := filter.PathSQL("e.props", p)
		v.w.weight = "CASE WHEN jsonb_typeof(" + w + ") = 'number' THEN (" + w + ")::float8 ELSE 1 END"
	}
	var a, b int64
	mw, release, err := s.memWalkWhile(ctx, v, weight == "", func() (err error) {
		if a, err = s.start(ctx, tenant, from, "query.from", o.AsOf); err != nil {
			return err
		}
		b, err = s.start(ctx, tenant, to, "query.to", o.AsOf)
		return err
	})
	if err != nil {
		return PathResult{}, err
	}
	if mw != nil {
		defer release()
	}
	if a == 0 || b == 0 {
		if from == to {
			return PathResult{Found: true, Path: &Path{Nodes: []NodeRef{from}, Edges: []EdgeRef{}}}, nil
		}
		return PathResult{}, nil
	}
	var found *walk
	partial, err := s.traverse(ctx, o, func(ctx context.Context) error {
		var err error
		switch {
		case weight != "":
			found, err = v.w.cheapest(ctx, a, b, o.Direction, s.cfg.MaxResults)
		case mw != nil:
			found, err = mw.shortestOf(ctx, a, b, o.Direction, o.MaxDepth)
		default:
			found, err = v.w.shortest(ctx, a, b, o.Direction, o.MaxDepth)
		}
		return err
	})
	if err != nil || partial || found == nil {
		return PathResult{Partial: partial}, err
	}
	var refs map[int64]NodeRef
	if mw != nil {
		refs, err = s.memRefs(ctx, tenant, mw, found)
	} else {
		refs, err = s.refs(ctx, s.pool, tenant, found.nodes)
	}
	if err != nil {
		return PathResult{}, err
	}
	res := PathResult{Found: true, Length: len(found.edges), Path: v.path(refs, found.nodes, found.edges, found.types)}
	if weight != "" {
		res.Weight = &found.weight
	}
	return res, nil
}

// walk is a path found: its nodes, and the edges (and their types) between them.
type walk struct {
	nodes  []int64
	edges  []int64
	types  []int32
	weight float64
}

// shortest is bidirectional breadth-first search: it expands the smaller frontier one
// level at a time and stops at the first level where the two searches meet, taking the
// meeting node that makes the path shortest.
func (w *walker) shortest(ctx context.Context, a, b int64, dir Direction, maxDepth int) (*walk, error) {
	if a == b {
		return &walk{nodes: []int64{a}}, nil
	}
	fw := map[int64]visit{a: {parent: -1}}
	bw := map[int64]visit{b: {parent: -1}}
	ff, bf := []int64{a}, []int64{b}
	df, db := 0, 0
	for df+db < maxDepth && len(ff) > 0 && len(bf) > 0 {
		forward := len(ff) <= len(bf)
		front, seen, other, d, depth := ff, fw, bw, dir, df+1
		if !forward {
			front, seen, other, d, depth = bf, bw, fw, dir.reverse(), db+1
		}
		hops, err := w.expand(ctx, front, d, 0)
		if err != nil {
			return nil, err
		}
		// The far end is admitted however the filters read: it was named.
		var meet []int64
		for _, h := range hops {
			if o, ok := other[h.to]; ok && !o.denied {
				if _, ok := seen[h.to]; !ok {
					seen[h.to] = visit{depth: depth, parent: h.from, edge: h.edge, typ: h.typ}
					meet = append(meet, h.to)
				}
			}
		}
		next, err := w.discover(ctx, seen, hops, depth)
		if err != nil {
			return nil, err
		}
		if len(meet) > 0 {
			best := meet[0]
			for _, m := range meet[1:] {
				if other[m].depth < other[best].depth || (other[m].depth == other[best].depth && m < best) {
					best = m
				}
			}
			fpath, fedges, ftypes := pathTo(fw, best)
			bpath, bedges, btypes := pathTo(bw, best)
			slices.Reverse(bpath)
			slices.Reverse(bedges)
			slices.Reverse(btypes)
			return &walk{nodes: append(fpath, bpath[1:]...), edges: append(fedges, bedges...), types: append(ftypes, btypes...),
				weight: float64(len(fedges) + len(bedges))}, nil
		}
		if forward {
			ff, df = next, depth
		} else {
			bf, db = next, depth
		}
	}
	return nil, nil
}

// cheapest is Dijkstra's algorithm from a to b over non-negative weights. Adjacency is
// read in batches: when the nearest unsettled node has not been expanded, it is expanded
// together with the next nearest ones, so a search costs one query per batch rather than
// one per node. At most maxNodes nodes are reached.
func (w *walker) cheapest(ctx context.Context, a, b int64, dir Direction, maxNodes int) (*walk, error) {
	if a == b {
		return &walk{nodes: []int64{a}}, nil
	}
	const batch = 64
	dist := map[int64]float64{a: 0}
	visits := map[int64]visit{a: {parent: -1}}
	settled := map[int64]bool{}
	adj := map[int64][]hop{}
	h := &distHeap{{node: a}}
	for h.Len() > 0 {
		top := heap.Pop(h).(distItem)
		u := top.node
		if settled[u] || top.dist > dist[u] {
			continue
		}
		if u == b {
			nodes, edges, types := pathTo(visits, b)
			return &walk{nodes: nodes, edges: edges, types: types, weight: dist[b]}, nil
		}
		if _, ok := adj[u]; !ok {
			// Expand u and the next nearest unexpanded nodes in one query.
			load := []int64{u}
			var held []distItem
			for h.Len() > 0 && len(load) < batch {
				it := heap.Pop(h).(distItem)
				held = append(held, it)
				if _, ok := adj[it.node]; !ok && !settled[it.node] && it.dist <= dist[it.node] && !slices.Contains(load, it.node) {
					load = append(load, it.node)
				}
			}
			for _, it := range held {
				heap.Push(h, it)
			}
			hops, err := w.expand(ctx, load, dir, 0)
			if err != nil {
				return nil, err
			}
			for _, n := range load {
				adj[n] = []hop{}
			}
			var fresh []hop
			for _, hp := range hops {
				if hp.weight < 0 {
					return nil, problem.Unprocessable("negative_weight", "edge %d has a negative weight (%g); shortest paths need weights of 0 or more", hp.edge, hp.weight)
				}
				adj[hp.from] = append(adj[hp.from], hp)
				if _, seen := visits[hp.to]; !seen && hp.to != b {
					fresh = append(fresh, hp)
				}
			}
			// Ask once which new nodes may be entered; the end is admitted: it was named.
			if _, err := w.discover(ctx, visits, fresh, 0); err != nil {
				return nil, err
			}
			if len(visits) > maxNodes {
				return nil, problem.Unprocessable("traversal_too_large", "the search reached more than %d nodes; narrow it (types, collections, filters)", maxNodes)
			}
		}
		settled[u] = true
		for _, hp := range adj[u] {
			if v, ok := visits[hp.to]; ok && v.denied {
				continue
			}
			nd := dist[u] + hp.weight
			if old, ok := dist[hp.to]; ok && old <= nd {
				continue
			}
			dist[hp.to] = nd
			visits[hp.to] = visit{depth: visits[u].depth + 1, parent: u, edge: hp.edge, typ: hp.typ}
			heap.Push(h, distItem{node: hp.to, dist: nd})
		}
	}
	return nil, nil
}

type distItem struct {
	node int64
	dist float64
}

type distHeap []distItem

func (h distHeap) Len() int { return len(h) }
func (h distHeap) Less(i, j int) bool {
	if h[i].dist != h[j].dist {
		return h[i].dist < h[j].dist
	}
	return h[i].node < h[j].node
}
func (h distHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *distHeap) Push(x any)   { *h = append(*h, x.(distItem)) }
func (h *distHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// AllPaths lists the simple paths (no node twice) from one node to another with at most
// o.MaxDepth edges (default 4), up to o.Limit paths (default 100), shortest first. It
// first searches backward from the end for the nodes that can reach it in time, then
// walks depth-first from the start through those only.
func (s *Store) AllPaths(ctx context.Context, tenant string, from, to NodeRef, o Options) (PathsResult, error) {
	if o.Limit == 0 {
		o.Limit = min(100, s.cfg.MaxResults)
	}
	v, err := s.prepare(ctx, tenant, &o, s.pool, 4)
	if err != nil {
		return PathsResult{}, err
	}
	var a, b int64
	mw, release, err := s.memWalkWhile(ctx, v, true, func() (err error) {
		if a, err = s.start(ctx, tenant, from, "query.from", o.AsOf); err != nil {
			return err
		}
		b, err = s.start(ctx, tenant, to, "query.to", o.AsOf)
		return err
	})
	if err != nil {
		return PathsResult{}, err
	}
	if mw != nil {
		defer release()
	}
	res := PathsResult{Paths: []Path{}}
	if a == 0 || b == 0 {
		return res, nil
	}
	var walks []walk
	res.Partial, err = s.traverse(ctx, o, func(ctx context.Context) error {
		var err error
		if mw != nil {
			walks, res.Truncated, err = mw.allPathsOf(ctx, a, b, o.Direction, o.MaxDepth, o.Limit, s.cfg.MaxResults)
		} else {
			walks, res.Truncated, err = v.w.allPaths(ctx, a, b, o.Direction, o.MaxDepth, o.Limit, s.cfg.MaxResults)
		}
		return err
	})
	if err != nil {
		return PathsResult{}, err
	}
	var refs map[int64]NodeRef
	if mw != nil {
		ws := make([]*walk, len(walks))
		for i := range walks {
			ws[i] = &walks[i]
		}
		if refs, err = s.memRefs(ctx, tenant, mw, ws...); err != nil {
			return PathsResult{}, err
		}
	} else {
		var need []int64
		for _, w := range walks {
			need = append(need, w.nodes...)
		}
		if refs, err = s.refs(ctx, s.pool, tenant, need); err != nil {
			return PathsResult{}, err
		}
	}
	for _, w := range walks {
		res.Paths = append(res.Paths, *v.path(refs, w.nodes, w.edges, w.types))
	}
	return res, nil
}

func (w *walker) allPaths(ctx context.Context, a, b int64, dir Direction, maxDepth, limit, maxNodes int) ([]walk, bool, error) {
	if a == b {
		return []walk{{nodes: []int64{a}}}, false, nil
	}
	// Backward breadth-first from b: the distance of every node that reaches b within
	// maxDepth-1 hops, and every edge into such a node (the only edges a path can use).
	dist := map[int64]visit{b: {parent: -1}}
	adj := map[int64][]pathStep[int64]{}
	frontier := []int64{b}
	for depth := 1; depth <= maxDepth && len(frontier) > 0; depth++ {
		hops, err := w.expand(ctx, frontier, dir.reverse(), 0)
		if err != nil {
			return nil, false, err
		}
		var fresh []hop
		for _, h := range hops {
			// h goes from a node nearer b (h.from) to one farther (h.to); forward it is
			// h.to → h.from. Nodes first found at maxDepth cannot be on a path (but a).
			adj[h.to] = append(adj[h.to], pathStep[int64]{to: h.from, edge: h.edge, typ: h.typ})
			if h.to != a && depth < maxDepth {
				fresh = append(fresh, h)
			} else if _, ok := dist[a]; !ok {
				dist[a] = visit{depth: depth}
			}
		}
		next, err := w.discover(ctx, dist, fresh, depth)
		if err != nil {
			return nil, false, err
		}
		if len(dist) > maxNodes {
			return nil, false, problem.Unprocessable("traversal_too_large", "the search reached more than %d nodes; lower the depth or narrow it", maxNodes)
		}
		frontier = next
	}
	if _, ok := dist[a]; !ok {
		return nil, false, nil
	}
	for n := range adj {
		slices.SortFunc(adj[n], func(x, y pathStep[int64]) int {
			if x.to != y.to {
				return cmp.Compare(x.to, y.to)
			}
			return cmp.Compare(x.edge, y.edge)
		})
	}
	return simplePaths(ctx, a, b, dist[a].depth, maxDepth, limit,
		func(u int64) ([]pathStep[int64], error) { return adj[u], nil },
		func(n int64) (int, bool) { d, ok := dist[n]; return d.depth, ok && !d.denied },
		func(n int64) int64 { return n })
}

// pathStep is a way on from a node in the all-paths search: the node it leads to, by the
// edge (and its type id).
type pathStep[N comparable] struct {
	to   N
	edge int64
	typ  int32
}

// simplePaths is the depth-first half of an all-paths search from a to b, shared by the
// SQL walker and the in-memory one, which differ only in how nodes are named (N; num
// gives the node number) and held. steps lists a node's ways on, in the order paths are
// to come; left tells how many hops a node is at least from b (ok false: not on any
// path). It runs once per length from the shortest (start) up, so paths come shortest
// first and a limit cuts the longest; one path beyond the limit tells that some were cut.
func simplePaths[N comparable](ctx context.Context, a, b N, start, maxDepth, limit int,
	steps func(N) ([]pathStep[N], error), left func(N) (int, bool), num func(N) int64) ([]walk, bool, error) {
	var out []walk
	onPath := map[N]bool{a: true}
	path := walk{nodes: []int64{num(a)}}
	var dfs func(u N, length int) error
	dfs = func(u N, length int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := steps(u)
		if err != nil {
			return err
		}
		for _, h := range st {
			d, ok := left(h.to)
			if !ok || onPath[h.to] || len(path.edges)+1+d > length {
				continue
			}
			path.nodes = append(path.nodes, num(h.to))
			path.edges = append(path.edges, h.edge)
			path.types = append(path.types, h.typ)
			if h.to == b {
				if len(path.edges) == length {
					out = append(out, walk{nodes: slices.Clone(path.nodes), edges: slices.Clone(path.edges), types: slices.Clone(path.types)})
				}
			} else {
				onPath[h.to] = true
				err := dfs(h.to, length)
				delete(onPath, h.to)
				if err != nil {
					return err
				}
			}
			path.nodes = path.nodes[:len(path.nodes)-1]
			path.edges = path.edges[:len(path.edges)-1]
			path.types = path.types[:len(path.types)-1]
			if len(out) > limit {
				return nil
			}
		}
		return nil
	}
	for length := max(1, start); length <= maxDepth && len(out) <= limit; length++ {
		if err := dfs(a, length); err != nil {
			return nil, false, err
		}
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

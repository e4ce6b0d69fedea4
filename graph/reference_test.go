package graph_test

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/graph"
)

// refEdge is an edge of the in-memory reference graph.
type refEdge struct {
	id       int64
	from, to int
	typ      string
	w        float64
}

// refGraph answers every query the simple way, for comparison.
type refGraph struct{ edges []refEdge }

// step is one way out of a node: the neighbour and the edge.
type step struct {
	to int
	e  refEdge
}

func (g *refGraph) out(u int, dir graph.Direction, types []string) []step {
	var s []step
	for _, e := range g.edges {
		if len(types) > 0 && !slices.Contains(types, e.typ) {
			continue
		}
		if (dir == graph.Out || dir == graph.Both) && e.from == u {
			s = append(s, step{e.to, e})
		}
		if (dir == graph.In || dir == graph.Both) && e.to == u {
			s = append(s, step{e.from, e})
		}
	}
	return s
}

func (g *refGraph) bfs(start int, dir graph.Direction, types []string, maxDepth int) map[int]int {
	depth := map[int]int{start: 0}
	frontier := []int{start}
	for d := 1; d <= maxDepth && len(frontier) > 0; d++ {
		var next []int
		for _, u := range frontier {
			for _, s := range g.out(u, dir, types) {
				if _, ok := depth[s.to]; !ok {
					depth[s.to] = d
					next = append(next, s.to)
				}
			}
		}
		frontier = next
	}
	delete(depth, start)
	return depth
}

func (g *refGraph) allPaths(a, b int, dir graph.Direction, types []string, maxDepth int) []string {
	var out []string
	on := map[int]bool{a: true}
	var path []string
	var dfs func(u int)
	dfs = func(u int) {
		if len(path) == maxDepth {
			return
		}
		for _, s := range g.out(u, dir, types) {
			if on[s.to] {
				continue
			}
			path = append(path, strconv.FormatInt(s.e.id, 10))
			if s.to == b {
				out = append(out, strings.Join(path, ","))
			} else {
				on[s.to] = true
				dfs(s.to)
				delete(on, s.to)
			}
			path = path[:len(path)-1]
		}
	}
	if a == b {
		return []string{""}
	}
	dfs(a)
	slices.Sort(out)
	return out
}

func (g *refGraph) dijkstra(a, b int, dir graph.Direction) float64 {
	dist := map[int]float64{a: 0}
	h := &refHeap{{a, 0}}
	done := map[int]bool{}
	for h.Len() > 0 {
		it := heap.Pop(h).(refItem)
		if done[it.n] {
			continue
		}
		done[it.n] = true
		if it.n == b {
			return it.d
		}
		for _, s := range g.out(it.n, dir, nil) {
			nd := it.d + s.e.w
			if old, ok := dist[s.to]; !ok || nd < old {
				dist[s.to] = nd
				heap.Push(h, refItem{s.to, nd})
			}
		}
	}
	return math.Inf(1)
}

type refItem struct {
	n int
	d float64
}
type refHeap []refItem

func (h refHeap) Len() int           { return len(h) }
func (h refHeap) Less(i, j int) bool { return h[i].d < h[j].d }
func (h refHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *refHeap) Push(x any)        { *h = append(*h, x.(refItem)) }
func (h *refHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// TestAgainstReference builds random graphs (cycles, self-loops, parallel edges, two
// types, deleted edges) and checks every query against the reference implementation, on
// the SQL walker and on the in-memory index.
func TestAgainstReference(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"sql", "memory"} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprint(mode, seed), func(t *testing.T) {
				t.Parallel()
				checkRandomGraph(t, seed, mode == "memory")
			})
		}
	}
}

// setupMode is setup with the traversals on the SQL walker only, or on the in-memory index
// (whose load every traversal waits for).
func setupMode(t testing.TB, cfg graph.Config, memory bool) *env {
	t.Helper()
	if !memory {
		cfg.MemoryEdges = -1
	}
	e := setup(t, cfg)
	if memory {
		graph.SetIndexWait(e.g, time.Minute)
	}
	return e
}

// wantMemory checks that every traversal of g ran in memory, and some did.
func wantMemory(t testing.TB, g *graph.Store) {
	t.Helper()
	if st := g.IndexStats(); st.Traversals == 0 || st.Fallbacks > 0 {
		t.Errorf("in-memory index: %d traversals, %d fallbacks to SQL", st.Traversals, st.Fallbacks)
	}
}

func checkRandomGraph(t *testing.T, seed uint64, memory bool) {
	rng := rand.New(rand.NewPCG(seed, 42))
	e := setupMode(t, graph.Config{}, memory)
	if memory {
		defer wantMemory(t, e.g)
	}
	const nodes, edges = 30, 75
	e.nodes(t, "n", nodes)
	ctx := e.ctx
	var lines strings.Builder
	type spec struct {
		from, to int
		typ      string
		w        int
	}
	var specs []spec
	for range edges {
		s := spec{from: rng.IntN(nodes), to: rng.IntN(nodes), typ: []string{"a", "b"}[rng.IntN(2)], w: rng.IntN(6)}
		specs = append(specs, s)
		fmt.Fprintf(&lines, `{"type": %q, "from": "n/%d", "to": {"collection": "n", "id": "%d"}, "props": {"w": %d}}`+"\n", s.typ, s.from, s.to, s.w)
	}
	// Two imports, with a traversal between them that loads the in-memory index: the
	// second import and the deletions reach it through the feed (its overlay).
	all := strings.SplitAfter(strings.TrimSuffix(lines.String(), "\n"), "\n")
	for i, part := range [][]string{all[:edges/2], all[edges/2:]} {
		rep, err := e.g.EdgeImport(ctx, e.Tenant, strings.NewReader(strings.Join(part, "")), graph.ImportOptions{})
		if err != nil || rep.Imported != int64(len(part)) {
			t.Fatalf("import: %+v %v", rep, err)
		}
		if i == 0 {
			if _, err := e.g.Neighbourhood(ctx, e.Tenant, graph.NodeRef{Collection: "n", ID: strconv.Itoa(specs[0].from)}, graph.Options{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Edge ids follow the lines.
	rows, err := e.Pool.Query(ctx, `SELECT id FROM graph_edges ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	ref := &refGraph{}
	for i, s := range specs {
		if rng.IntN(10) == 0 {
			if _, err := e.g.EdgeDelete(ctx, e.Tenant, ids[i], nil); err != nil {
				t.Fatal(err)
			}
			continue
		}
		ref.edges = append(ref.edges, refEdge{id: ids[i], from: s.from, to: s.to, typ: s.typ, w: float64(s.w)})
	}
	byID := map[int64]refEdge{}
	for _, re := range ref.edges {
		byID[re.id] = re
	}
	dirs := []graph.Direction{graph.Out, graph.In, graph.Both}
	typeSets := [][]string{nil, {"a"}, {"b"}}
	node := func(i int) graph.NodeRef { return graph.NodeRef{Collection: "n", ID: strconv.Itoa(i)} }
	var nonEmpty, found, manyPaths int // the queries must not all be trivial
	defer func() {
		if nonEmpty < 5 || found < 5 || manyPaths < 2 {
			t.Errorf("trivial queries: %d neighbourhoods, %d paths found, %d with several paths", nonEmpty, found, manyPaths)
		}
	}()
	for q := range 40 {
		a, b := rng.IntN(nodes), rng.IntN(nodes)
		dir, types := dirs[rng.IntN(3)], typeSets[rng.IntN(3)]
		depth := 1 + rng.IntN(4)
		what := fmt.Sprintf("query %d: %d→%d %s %v depth %d", q, a, b, dir, types, depth)

		r, err := e.g.Neighbourhood(ctx, e.Tenant, node(a), graph.Options{Direction: dir, Types: types, MaxDepth: depth, Paths: true})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got, want := depths(t, r), ref.bfs(a, dir, types, depth); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: neighbourhood %v, want %v", what, got, want)
		}
		for _, n := range r.Nodes {
			checkPath(t, what, byID, n.Path, a, n.ID, dir)
		}
		if len(r.Nodes) > 2 {
			nonEmpty++
		}

		sp, err := e.g.ShortestPath(ctx, e.Tenant, node(a), node(b), "", graph.Options{Direction: dir, Types: types})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		want, reachable := ref.bfs(a, dir, types, 100)[b]
		if a == b {
			want, reachable = 0, true
		}
		if sp.Found != reachable || (reachable && sp.Length != want) {
			t.Fatalf("%s: shortest path %+v, want found=%v length %d", what, sp, reachable, want)
		}
		if sp.Found && a != b {
			found++
			checkPath(t, what, byID, sp.Path, a, strconv.Itoa(b), dir)
		}

		ps, err := e.g.AllPaths(ctx, e.Tenant, node(a), node(b), graph.Options{Direction: dir, Types: types, MaxDepth: depth, Limit: 10000})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var got []string
		for i, p := range ps.Paths {
			checkPath(t, what, byID, &ps.Paths[i], a, strconv.Itoa(b), dir)
			var es []string
			for _, ed := range p.Edges {
				es = append(es, strconv.FormatInt(ed.ID, 10))
			}
			got = append(got, strings.Join(es, ","))
		}
		slices.Sort(got)
		if len(got) > 1 {
			manyPaths++
		}
		if wantPaths := ref.allPaths(a, b, dir, types, depth); fmt.Sprint(got) != fmt.Sprint(wantPaths) {
			t.Fatalf("%s: all paths\n got %v\nwant %v", what, got, wantPaths)
		}

		deps, err := e.g.Dependents(ctx, e.Tenant, node(a), graph.Options{Types: types})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := depths(t, deps), ref.bfs(a, graph.In, types, 100); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: dependents %v, want %v", what, got, want)
		}

		wp, err := e.g.ShortestPath(ctx, e.Tenant, node(a), node(b), "w", graph.Options{Direction: dir})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		wantW := ref.dijkstra(a, b, dir)
		if wp.Found != !math.IsInf(wantW, 1) || (wp.Found && *wp.Weight != wantW) {
			t.Fatalf("%s: weighted %+v, want %v", what, wp, wantW)
		}

		deg, err := e.g.Degree(ctx, e.Tenant, node(a), graph.Options{Types: types})
		if err != nil {
			t.Fatal(err)
		}
		if int(deg.OutTotal) != len(ref.out(a, graph.Out, types)) || int(deg.InTotal) != len(ref.out(a, graph.In, types)) {
			t.Fatalf("%s: degree %+v", what, deg)
		}
	}
}

// checkPath verifies a path starts at a, ends at end, and that each edge joins its two
// nodes in a direction dir allows.
func checkPath(t *testing.T, what string, byID map[int64]refEdge, p *graph.Path, a int, end string, dir graph.Direction) {
	t.Helper()
	if p == nil || len(p.Nodes) != len(p.Edges)+1 || p.Nodes[0].ID != strconv.Itoa(a) || p.Nodes[len(p.Nodes)-1].ID != end {
		t.Fatalf("%s: bad path %+v to %s", what, p, end)
	}
	for i, ed := range p.Edges {
		re, ok := byID[ed.ID]
		if !ok || re.typ != ed.Type {
			t.Fatalf("%s: path uses edge %+v, not a live edge", what, ed)
		}
		u, v := p.Nodes[i].ID, p.Nodes[i+1].ID
		fwd := strconv.Itoa(re.from) == u && strconv.Itoa(re.to) == v
		back := strconv.Itoa(re.to) == u && strconv.Itoa(re.from) == v
		allowed := dir == graph.Out && fwd || dir == graph.In && back || dir == graph.Both && (fwd || back)
		if !allowed {
			t.Fatalf("%s: edge %d does not join %s and %s going %s", what, ed.ID, u, v, dir)
		}
	}
}

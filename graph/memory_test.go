package graph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/graph"
	"github.com/stratadb/strata/internal/testworld"
)

// memEnv is a world with two graph nodes (Stores) on one database: mem traverses in
// memory, sql on the SQL walker only; other is a third node, with its own documents
// store, whose writes the others must see.
type memEnv struct {
	*env
	sql   *graph.Store
	other *graph.Store
	odocs *doc.Store
}

// importChain imports edges n/from → n/from+1 → … → n/to (type e) through s.
func importChain(t *testing.T, s *graph.Store, ctx context.Context, tenant string, from, to int) {
	t.Helper()
	var lines strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&lines, `{"type": "e", "from": "n/%d", "to": "n/%d"}`+"\n", i, i+1)
	}
	if rep, err := s.EdgeImport(ctx, tenant, strings.NewReader(lines.String()), graph.ImportOptions{}); err != nil || rep.Failed > 0 {
		t.Fatalf("import %+v %v", rep, err)
	}
}

func memSetup(t *testing.T, cfg graph.Config) *memEnv {
	t.Helper()
	e := setupMode(t, cfg, true)
	sqlCfg := cfg
	sqlCfg.MemoryEdges, sqlCfg.TimeBudget = -1, 20*time.Second
	m := &memEnv{env: e, sql: graph.New(e.Pool, e.Auth, e.docs, e.Feed, e.Listener, sqlCfg)}
	m.odocs = doc.New(e.Pool, e.Auth, e.Feed, e.Listener, doc.Config{})
	m.other = graph.New(e.Pool, e.Auth, m.odocs, e.Feed, e.Listener, cfg)
	graph.SetIndexWait(m.other, time.Minute)
	return m
}

// neighbourhood is a Neighbourhood on g, answered without paths (which may take another
// of several shortest ways) but with their lengths checked against the depths.
func neighbourhood(t *testing.T, g *graph.Store, ctx context.Context, tenant string, from graph.NodeRef, o graph.Options) string {
	t.Helper()
	o.Paths = true
	r, err := g.Neighbourhood(ctx, tenant, from, o)
	if err != nil {
		t.Fatalf("neighbourhood of %s %+v: %v", from, o, err)
	}
	var b strings.Builder
	for _, n := range r.Nodes {
		if n.Path == nil || len(n.Path.Edges) != n.Depth || n.Path.Nodes[0] != from || n.Path.Nodes[n.Depth] != n.NodeRef {
			t.Fatalf("neighbourhood of %s: node %s at depth %d has path %+v", from, n.NodeRef, n.Depth, n.Path)
		}
		fmt.Fprintf(&b, "%s:%d ", n.NodeRef, n.Depth)
	}
	fmt.Fprintf(&b, "truncated=%v partial=%v", r.Truncated, r.Partial)
	return b.String()
}

// TestMemoryMatchesSQL runs the same random queries — directions, types, collections,
// depths and limits small enough to truncate, row caps included — on the in-memory index
// and on the SQL walker, over one database, and wants the same answers: the same nodes in
// the same order with the same depths and truncation, paths of the same lengths, the same
// lists of all paths, the same degrees.
func TestMemoryMatchesSQL(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx := m.ctx
	m.nodes(t, "n", 200)
	m.nodes(t, "m", 20)
	rng := rand.New(rand.NewPCG(7, 8))
	var lines strings.Builder
	end := func() string {
		if rng.IntN(4) == 0 {
			return fmt.Sprintf("m/%d", rng.IntN(20))
		}
		return fmt.Sprintf("n/%d", rng.IntN(200))
	}
	for range 700 {
		fmt.Fprintf(&lines, `{"type": %q, "from": %q, "to": %q}`+"\n", []string{"a", "b"}[rng.IntN(2)], end(), end())
	}
	// A hub whose out edges pass the SQL walker's first row cap (1024) under a small limit,
	// and whose level is large enough to be sorted through a bitmap.
	for range 1500 {
		fmt.Fprintf(&lines, `{"type": "a", "from": "n/0", "to": "n/%d"}`+"\n", 1+rng.IntN(199))
	}
	if rep, err := m.g.EdgeImport(ctx, m.Tenant, strings.NewReader(lines.String()), graph.ImportOptions{}); err != nil || rep.Failed > 0 {
		t.Fatalf("import: %+v %v", rep, err)
	}
	dirs := []graph.Direction{graph.Out, graph.In, graph.Both}
	typeSets := [][]string{nil, {"a"}, {"b"}}
	collSets := [][]string{nil, {"n"}, {"m"}}
	node := func() graph.NodeRef {
		if rng.IntN(5) == 0 {
			return ref("m", rng.IntN(20))
		}
		return ref("n", rng.IntN(200))
	}
	for q := range 60 {
		o := graph.Options{Direction: dirs[rng.IntN(3)], Types: typeSets[rng.IntN(3)], Collections: collSets[rng.IntN(3)],
			MaxDepth: 1 + rng.IntN(4), Limit: []int{1, 3, 10, 1000}[rng.IntN(4)]}
		a, b := node(), node()
		if q%7 == 0 {
			a = ref("n", 0)
		}
		what := fmt.Sprintf("query %d: %s→%s %+v", q, a, b, o)
		if got, want := neighbourhood(t, m.g, ctx, m.Tenant, a, o), neighbourhood(t, m.sql, ctx, m.Tenant, a, o); got != want {
			t.Fatalf("%s: neighbourhood\n in memory %s\n    in SQL %s", what, got, want)
		}
		for name, run := range map[string]func(*graph.Store) (graph.Result, error){
			"dependents":   func(g *graph.Store) (graph.Result, error) { return g.Dependents(ctx, m.Tenant, a, o) },
			"dependencies": func(g *graph.Store) (graph.Result, error) { return g.Dependencies(ctx, m.Tenant, a, o) },
		} {
			got, err1 := run(m.g)
			want, err2 := run(m.sql)
			if err1 != nil || err2 != nil || !sameNodes(got, want) {
				t.Fatalf("%s: %s\n in memory %+v %v\n    in SQL %+v %v", what, name, got, err1, want, err2)
			}
		}
		sp1, err1 := m.g.ShortestPath(ctx, m.Tenant, a, b, "", o)
		sp2, err2 := m.sql.ShortestPath(ctx, m.Tenant, a, b, "", o)
		if err1 != nil || err2 != nil || sp1.Found != sp2.Found || sp1.Length != sp2.Length {
			t.Fatalf("%s: shortest path\n in memory %+v %v\n    in SQL %+v %v", what, sp1, err1, sp2, err2)
		}
		po := o
		po.Limit = []int{1, 5, 100}[rng.IntN(3)]
		ap1, err1 := m.g.AllPaths(ctx, m.Tenant, a, b, po)
		ap2, err2 := m.sql.AllPaths(ctx, m.Tenant, a, b, po)
		if j1, j2 := jsonOf(t, ap1), jsonOf(t, ap2); err1 != nil || err2 != nil || j1 != j2 {
			t.Fatalf("%s: all paths\n in memory %s %v\n    in SQL %s %v", what, j1, err1, j2, err2)
		}
		do := graph.Options{Types: o.Types, Collections: o.Collections}
		d1, err1 := m.g.Degree(ctx, m.Tenant, a, do)
		d2, err2 := m.sql.Degree(ctx, m.Tenant, a, do)
		if j1, j2 := jsonOf(t, d1), jsonOf(t, d2); err1 != nil || err2 != nil || j1 != j2 {
			t.Fatalf("%s: degree\n in memory %s %v\n    in SQL %s %v", what, j1, err1, j2, err2)
		}
	}
	wantMemory(t, m.g)
}

// sameNodes compares results without their paths.
func sameNodes(a, b graph.Result) bool {
	if len(a.Nodes) != len(b.Nodes) || a.Truncated != b.Truncated || a.Partial != b.Partial {
		return false
	}
	for i := range a.Nodes {
		if a.Nodes[i].NodeRef != b.Nodes[i].NodeRef || a.Nodes[i].Depth != b.Nodes[i].Depth {
			return false
		}
	}
	return true
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// reached is the ids of the nodes a traversal from coll/0 reaches (out edges, any depth),
// as a string.
func reached(t *testing.T, g *graph.Store, ctx context.Context, tenant string, from graph.NodeRef) string {
	t.Helper()
	r, err := g.Neighbourhood(ctx, tenant, from, graph.Options{MaxDepth: 100, Limit: 10000})
	if err != nil {
		t.Fatalf("neighbourhood of %s: %v", from, err)
	}
	var ids []string
	for _, n := range r.Nodes {
		ids = append(ids, n.String())
	}
	return strings.Join(ids, " ")
}

func chain(coll string, from, to int) string {
	var ids []string
	for i := from; i <= to; i++ {
		ids = append(ids, coll+"/"+strconv.Itoa(i))
	}
	return strings.Join(ids, " ")
}

// TestMemoryIndexSeesEveryCommittedWrite writes edges and traverses at once, through the
// node that wrote and through another: every write committed before a traversal started
// is in its answer — created edges, deleted edges, a deleted document's edges, imports,
// and a deleted collection's edges.
func TestMemoryIndexSeesEveryCommittedWrite(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx := m.ctx
	m.nodes(t, "n", 30)
	m.edge(t, "e", 0, 1, "")
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != "n/1" {
		t.Fatalf("reached %q", got)
	}
	for i := 1; i < 15; i++ {
		writer := m.g
		if i%2 == 0 {
			writer = m.other
		}
		if _, err := writer.EdgeCreate(ctx, m.Tenant, graph.EdgeInput{Type: "e", From: ref("n", i), To: ref("n", i+1)}); err != nil {
			t.Fatal(err)
		}
		want := chain("n", 1, i+1)
		for _, g := range []*graph.Store{m.g, m.other} {
			if got := reached(t, g, ctx, m.Tenant, ref("n", 0)); got != want {
				t.Fatalf("after edge %d→%d: reached %q, want %q", i, i+1, got, want)
			}
		}
	}
	sp, err := m.g.ShortestPath(ctx, m.Tenant, ref("n", 0), ref("n", 15), "", graph.Options{})
	if err != nil || !sp.Found || sp.Length != 15 {
		t.Fatalf("shortest path %+v %v", sp, err)
	}

	// An edge deleted through the other node.
	r, err := m.other.Neighbours(ctx, m.Tenant, ref("n", 10), graph.Options{Direction: graph.Out}, "")
	if err != nil || len(r.Items) != 1 {
		t.Fatalf("neighbours %+v %v", r, err)
	}
	if _, err := m.other.EdgeDelete(ctx, m.Tenant, r.Items[0].Edge.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 10) {
		t.Fatalf("after the deletion: reached %q", got)
	}
	if d, err := m.g.Degree(ctx, m.Tenant, ref("n", 10), graph.Options{}); err != nil || d.OutTotal != 0 || d.InTotal != 1 {
		t.Fatalf("degree %+v %v", d, err)
	}

	// A document deleted: its edges go.
	if _, err := m.odocs.DocDelete(ctx, m.Tenant, "n", "5", nil); err != nil {
		t.Fatal(err)
	}
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 4) {
		t.Fatalf("after deleting n/5: reached %q", got)
	}

	// An import through the other node.
	importChain(t, m.other, ctx, m.Tenant, 20, 29)
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 20)); got != chain("n", 21, 29) {
		t.Fatalf("after the import: reached %q", got)
	}

	// A collection deleted: its edges and nodes go with their history.
	m.nodes(t, "c", 3)
	for i := range 3 {
		if _, err := m.g.EdgeCreate(ctx, m.Tenant, graph.EdgeInput{Type: "e", From: ref("n", 0), To: ref("c", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != "c/0 c/1 c/2 n/1 "+chain("n", 2, 4) && got != "n/1 c/0 c/1 c/2 "+chain("n", 2, 4) {
		t.Fatalf("with the collection: reached %q", got)
	}
	if err := m.odocs.CollectionDelete(ctx, m.Tenant, "c"); err != nil {
		t.Fatal(err)
	}
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 4) {
		t.Fatalf("after deleting the collection: reached %q", got)
	}
	wantMemory(t, m.g)
	wantMemory(t, m.other)
}

// TestMemoryIndexConcurrent runs writers and readers together (go test -race): each writer
// grows and cuts its own chain and checks, after every write, that a traversal sees it;
// readers traverse the whole graph meanwhile. At the end, memory and SQL agree.
func TestMemoryIndexConcurrent(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx := m.ctx
	const writers, length = 4, 12
	m.nodes(t, "n", writers*length)
	m.edge(t, "e", 0, 1, "") // something to load the index with
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != "n/1" {
		t.Fatalf("reached %q", got)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	stop := make(chan struct{})
	for w := range writers {
		base := w * length
		g := []*graph.Store{m.g, m.other}[w%2]
		wg.Go(func() {
			var last int64
			top := base // the chain's last node
			if w == 0 {
				top = base + 1 // n/0 → n/1 exists already
			}
			for i := range 3 * length {
				if i%3 == 2 && last != 0 {
					if _, err := g.EdgeDelete(ctx, m.Tenant, last, nil); err != nil {
						errs <- err
						return
					}
					top--
					last = 0
				} else if top < base+length-1 {
					e, err := g.EdgeCreate(ctx, m.Tenant, graph.EdgeInput{Type: "e", From: ref("n", top), To: ref("n", top+1)})
					if err != nil {
						errs <- err
						return
					}
					top++
					last = e.ID
				}
				r, err := m.g.Neighbourhood(ctx, m.Tenant, ref("n", base), graph.Options{MaxDepth: 100})
				if err != nil {
					errs <- err
					return
				}
				if len(r.Nodes) != top-base {
					errs <- fmt.Errorf("writer %d, step %d: %d nodes reached from n/%d, want %d", w, i, len(r.Nodes), base, top-base)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := m.other.Neighbourhood(ctx, m.Tenant, ref("n", i%(writers*length)), graph.Options{Direction: graph.Both, MaxDepth: 100}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case err := <-errs:
		close(stop)
		<-done
		t.Fatal(err)
	case <-done:
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 0; i < writers*length; i += length {
		o := graph.Options{Direction: graph.Both, MaxDepth: 100}
		if got, want := neighbourhood(t, m.g, ctx, m.Tenant, ref("n", i), o), neighbourhood(t, m.sql, ctx, m.Tenant, ref("n", i), o); got != want {
			t.Fatalf("from n/%d: in memory %s, in SQL %s", i, got, want)
		}
	}
	wantMemory(t, m.g)
}

// TestMemoryIndexReloads covers the ways an index gives way to SQL and reloads: more
// changes than a catch-up applies, and a feed pruned past its watermark. Every answer is
// right throughout.
func TestMemoryIndexReloads(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx := m.ctx
	graph.SetMaxCatchUp(m.g, 5)
	graph.SetReloadWait(m.g, 0)
	m.nodes(t, "n", 30)
	m.edge(t, "e", 0, 1, "")
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != "n/1" {
		t.Fatalf("reached %q", got)
	}
	importChain(t, m.g, ctx, m.Tenant, 1, 20)
	// Too many changes: this traversal runs in SQL and starts a reload.
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 20) {
		t.Fatalf("after the import: reached %q", got)
	}
	st := waitLoads(t, m.g, 2)
	if st.Fallbacks != 1 || len(st.Tenants) != 1 || st.Tenants[0].Edges != 20 || st.Tenants[0].Overlay != 0 {
		t.Fatalf("after the reload: %+v", st)
	}
	// The feed pruned past the index's watermark (as retention would, long after).
	m.edge(t, "e", 20, 21, "")
	m.waitSequenced(t)
	if _, err := m.Pool.Exec(context.Background(), `UPDATE change_sequence SET pruned_through = last`); err != nil {
		t.Fatal(err)
	}
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 21) {
		t.Fatalf("after pruning: reached %q", got)
	}
	st = waitLoads(t, m.g, 3)
	if st.Fallbacks != 2 {
		t.Fatalf("after the second reload: %+v", st)
	}
	before := st.Traversals
	m.edge(t, "e", 21, 22, "")
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 22) {
		t.Fatalf("reloaded: reached %q", got)
	}
	if st := m.g.IndexStats(); st.Traversals != before+1 || st.Fallbacks != 2 {
		t.Fatalf("after the reloads: %+v", st)
	}
}

// waitSequenced waits until the feed has numbered every committed change.
func (e *env) waitSequenced(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var pending bool
		if err := e.Pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM changes WHERE position IS NULL)`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if !pending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the feed never numbered its changes")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLoads waits until g has completed n loads.
func waitLoads(t *testing.T, g *graph.Store, n int64) graph.IndexStats {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := g.IndexStats()
		if st.Loads >= n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d loads, want %d: %+v", st.Loads, n, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMemoryIndexBudget: a tenant with more edges than the budget is traversed in SQL; a
// tenant's index that does not fit beside another evicts the least recently used one; a
// disabled index never loads. Each tenant has its own index.
func TestMemoryIndexBudget(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx, octx := m.ctx, m.As(testworld.Outsider)
	m.nodes(t, "n", 10)
	for i := range 4 {
		m.edge(t, "e", i, i+1, "")
	}
	m.nodesIn(t, octx, m.Other, "n", 3)
	for i := range 2 {
		if _, err := m.g.EdgeCreate(octx, m.Other, graph.EdgeInput{Type: "e", From: ref("n", i), To: ref("n", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	tenants := func(g *graph.Store) string {
		var out []string
		for _, ts := range g.IndexStats().Tenants {
			name := "tenant"
			if ts.Tenant == m.Other {
				name = "other"
			}
			out = append(out, fmt.Sprintf("%s:%d", name, ts.Edges))
		}
		return strings.Join(out, " ")
	}

	// The budget counts nodes and edges: the tenant holds 5 + 4, the other 3 + 2.
	over := graph.New(m.Pool, m.Auth, m.docs, m.Feed, m.Listener, graph.Config{MemoryEdges: 6})
	graph.SetIndexWait(over, time.Minute)
	if got := reached(t, over, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 4) {
		t.Fatalf("over the budget: reached %q", got)
	}
	if got := reached(t, over, octx, m.Other, ref("n", 0)); got != chain("n", 1, 2) {
		t.Fatalf("the other tenant: reached %q", got)
	}
	if st := over.IndexStats(); st.LoadFailures != 1 || st.Fallbacks != 1 || st.Traversals != 1 || tenants(over) != "other:2" {
		t.Fatalf("over the budget: %+v", st)
	}

	five := graph.New(m.Pool, m.Auth, m.docs, m.Feed, m.Listener, graph.Config{MemoryEdges: 10})
	graph.SetIndexWait(five, time.Minute)
	for _, step := range []struct {
		ctx          context.Context
		tenant, want string
		loaded       string
	}{
		{ctx, m.Tenant, chain("n", 1, 4), "tenant:4"},
		{octx, m.Other, chain("n", 1, 2), "other:2"},
		{ctx, m.Tenant, chain("n", 1, 4), "tenant:4"},
	} {
		if got := reached(t, five, step.ctx, step.tenant, ref("n", 0)); got != step.want {
			t.Fatalf("reached %q, want %q", got, step.want)
		}
		if got := tenants(five); got != step.loaded {
			t.Fatalf("loaded %q, want %q", got, step.loaded)
		}
	}
	wantMemory(t, five)

	if got := reached(t, m.sql, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 4) {
		t.Fatalf("disabled: reached %q", got)
	}
	if st := m.sql.IndexStats(); st.Enabled || st.Traversals != 0 || st.Fallbacks != 0 || st.Loads != 0 {
		t.Fatalf("disabled: %+v", st)
	}
}

// TestMemoryIndexBudgetCountsNodes: nodes count in the budget, edges or none — a tenant
// whose nodes alone exceed it (every edge deleted) is traversed in SQL, not loaded.
func TestMemoryIndexBudgetCountsNodes(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx := m.ctx
	m.nodes(t, "n", 20)
	for i := range 19 {
		ed := m.edge(t, "e", i, i+1, "")
		if _, err := m.g.EdgeDelete(ctx, m.Tenant, ed.ID, nil); err != nil {
			t.Fatal(err)
		}
	}
	m.edge(t, "e", 0, 1, "")
	small := graph.New(m.Pool, m.Auth, m.docs, m.Feed, m.Listener, graph.Config{MemoryEdges: 10})
	graph.SetIndexWait(small, time.Minute)
	if got := reached(t, small, ctx, m.Tenant, ref("n", 0)); got != "n/1" {
		t.Fatalf("reached %q", got)
	}
	if st := small.IndexStats(); st.Loads != 0 || st.LoadFailures != 1 || len(st.Tenants) != 0 || st.Fallbacks != 1 {
		t.Fatalf("20 nodes and 1 edge over a budget of 10: %+v", st)
	}
}

// within waits for f to return, failing the test when it has not within a (generous)
// bound: what it checks is that f does not wait on a lock held elsewhere.
func within[T any](t *testing.T, what string, f func() T) T {
	t.Helper()
	done := make(chan T, 1)
	go func() { done <- f() }()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	select {
	case v := <-done:
		return v
	case <-timer.C:
		t.Fatalf("%s did not answer while a traversal held its tenant's index", what)
		panic("unreachable")
	}
}

// TestMemoryIndexHeldDoesNotBlock: while a long traversal holds a tenant's index and an
// edge write awaits applying, the same tenant's traversals answer (in SQL, the write
// seen), another tenant's index loads (evicting the held one) and answers, and the
// stats answer.
func TestMemoryIndexHeldDoesNotBlock(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx, octx := m.ctx, m.As(testworld.Outsider)
	m.nodes(t, "n", 10)
	for i := range 4 {
		m.edge(t, "e", i, i+1, "")
	}
	m.nodesIn(t, octx, m.Other, "n", 2)
	if _, err := m.g.EdgeCreate(octx, m.Other, graph.EdgeInput{Type: "e", From: ref("n", 0), To: ref("n", 1)}); err != nil {
		t.Fatal(err)
	}
	g := graph.New(m.Pool, m.Auth, m.docs, m.Feed, m.Listener, graph.Config{MemoryEdges: 11})
	graph.SetIndexWait(g, time.Minute)
	if got := reached(t, g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 4) {
		t.Fatalf("reached %q", got)
	}
	wantMemory(t, g)
	release, ok := graph.HoldIndexRead(g, m.Tenant)
	if !ok {
		t.Fatal("the tenant's index is not loaded")
	}
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	m.edge(t, "e", 4, 5, "")
	for range 3 {
		if got := within(t, "the same tenant's traversal", func() string { return reached(t, g, ctx, m.Tenant, ref("n", 0)) }); got != chain("n", 1, 5) {
			t.Fatalf("while held: reached %q", got)
		}
	}
	if got := within(t, "another tenant's traversal", func() string { return reached(t, g, octx, m.Other, ref("n", 0)) }); got != "n/1" {
		t.Fatalf("the other tenant: reached %q", got)
	}
	st := within(t, "IndexStats", g.IndexStats)
	if st.Fallbacks != 3 || st.Loads != 2 {
		t.Fatalf("while held: %+v", st)
	}
	release()
	held = false
	if got := reached(t, g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 5) {
		t.Fatalf("released: reached %q", got)
	}
}

// TestMemoryIndexReloadBackoff: an index that goes stale soon after a reload is not
// reloaded again at once: its traversals use SQL (rightly) until the pause has passed.
func TestMemoryIndexReloadBackoff(t *testing.T) {
	t.Parallel()
	m := memSetup(t, graph.Config{})
	ctx := m.ctx
	graph.SetMaxCatchUp(m.g, 5)
	graph.SetReloadWait(m.g, time.Hour)
	m.nodes(t, "n", 60)
	m.edge(t, "e", 0, 1, "")
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != "n/1" {
		t.Fatalf("reached %q", got)
	}
	imp := func(from, to int) { importChain(t, m.g, ctx, m.Tenant, from, to) }
	imp(1, 20)
	if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 20) {
		t.Fatalf("after the import: reached %q", got)
	}
	waitLoads(t, m.g, 2) // the first reload is not held back
	imp(20, 50)
	for range 3 {
		if got := reached(t, m.g, ctx, m.Tenant, ref("n", 0)); got != chain("n", 1, 50) {
			t.Fatalf("after the second import: reached %q", got)
		}
		if st := m.g.IndexStats(); graph.Loading(m.g, m.Tenant) || st.Loads != 2 {
			t.Fatalf("reloading again at once: %+v", st)
		}
	}
}

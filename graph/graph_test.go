package graph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/graph"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type env struct {
	*testworld.World
	docs *doc.Store
	g    *graph.Store
	ctx  context.Context // the tenant's owner
}

func setup(t testing.TB, cfg graph.Config) *env {
	t.Helper()
	w := testworld.New(t, graph.Schema)
	docs := doc.New(w.Pool, w.Auth, w.Feed, w.Listener, doc.Config{SnapshotEvery: 4})
	if cfg.TimeBudget == 0 {
		cfg.TimeBudget = 20 * time.Second
	}
	cfg.SnapshotEvery = 4
	return &env{World: w, docs: docs, g: graph.New(w.Pool, w.Auth, docs, w.Feed, w.Listener, cfg), ctx: w.As(testworld.Owner)}
}

// nodes creates collection coll with documents "0" … "n-1", each {"i": i, "even": bool}.
func (e *env) nodes(t testing.TB, coll string, n int) {
	t.Helper()
	e.nodesIn(t, e.ctx, e.Tenant, coll, n)
}

// nodesIn is nodes in another tenant, as the principal in ctx.
func (e *env) nodesIn(t testing.TB, ctx context.Context, tenant, coll string, n int) {
	t.Helper()
	if _, err := e.docs.CollectionCreate(ctx, tenant, doc.CollectionInput{Name: coll}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id": "%d", "data": {"i": %d, "even": %t}}`+"\n", i, i, i%2 == 0)
	}
	rep, err := e.docs.DocImport(ctx, tenant, coll, strings.NewReader(b.String()), doc.ImportOptions{Envelopes: true})
	if err != nil || rep.Imported != int64(n) {
		t.Fatalf("import: %+v %v", rep, err)
	}
}

func ref(coll string, i int) graph.NodeRef {
	return graph.NodeRef{Collection: coll, ID: strconv.Itoa(i)}
}

func (e *env) edge(t testing.TB, typ string, from, to int, props string) graph.Edge {
	t.Helper()
	in := graph.EdgeInput{Type: typ, From: ref("n", from), To: ref("n", to)}
	if props != "" {
		in.Props = json.RawMessage(props)
	}
	ed, err := e.g.EdgeCreate(e.ctx, e.Tenant, in)
	if err != nil {
		t.Fatalf("edge %d -%s-> %d: %v", from, typ, to, err)
	}
	return ed
}

var wantProblem = testworld.WantProblem

// depths maps each node of a result (by number) to its depth.
func depths(t *testing.T, r graph.Result) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, n := range r.Nodes {
		i, err := strconv.Atoi(n.ID)
		if err != nil {
			t.Fatalf("node %v", n)
		}
		if _, dup := out[i]; dup {
			t.Fatalf("node %d returned twice", i)
		}
		out[i] = n.Depth
	}
	return out
}

// edgeChanges returns the tenant's edge changes on the feed once there are at least n
// (the sequencer numbers committed entries in the background).
func (e *env) edgeChanges(t *testing.T, n int) []feed.Change {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var out []feed.Change
		for after := feed.Start; ; {
			changes, next, err := e.Feed.Read(context.Background(), e.Tenant, after, 5000)
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) == 0 {
				break
			}
			for _, c := range changes {
				if c.Kind == "edge" {
					out = append(out, c)
				}
			}
			after = next
		}
		if len(out) >= n || time.Now().After(deadline) {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) countLive(t *testing.T) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM graph_edges WHERE deleted_at IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEdgeLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 3)
	ctx := e.ctx
	ed := e.edge(t, "likes", 0, 1, `{"w": 1, "note": "first"}`)
	if ed.ID == 0 || ed.Version != 1 || ed.Type != "likes" || ed.From != ref("n", 0) || ed.To != ref("n", 1) {
		t.Fatalf("created %+v", ed)
	}
	got, err := e.g.EdgeGet(ctx, e.Tenant, ed.ID)
	if err != nil || string(got.Props) != `{"w": 1, "note": "first"}` {
		t.Fatalf("get %+v %v", got, err)
	}
	before := time.Now()
	time.Sleep(5 * time.Millisecond)

	// A stale If-Match changes nothing.
	_, err = e.g.EdgeUpdate(ctx, e.Tenant, ed.ID, json.RawMessage(`{"w": 9}`), false, &graph.WriteOptions{IfMatch: 5})
	if p := wantProblem(t, err, 412, "version_mismatch"); p.Extensions["current_version"] != int64(1) {
		t.Fatalf("current_version %v", p.Extensions)
	}
	up, err := e.g.EdgeUpdate(ctx, e.Tenant, ed.ID, json.RawMessage(`{"w": 2, "note": null}`), true, &graph.WriteOptions{IfMatch: 1})
	if err != nil || up.Version != 2 || string(up.Props) != `{"w":2}` {
		t.Fatalf("merge %s %v", up.Props, err)
	}
	for i := 3; i <= 10; i++ { // past a snapshot interval
		if _, err := e.g.EdgeUpdate(ctx, e.Tenant, ed.ID, json.RawMessage(fmt.Sprintf(`{"w": %d, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`, i)), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for v := int64(1); v <= 10; v++ {
		old, err := e.g.EdgeGetAt(ctx, e.Tenant, ed.ID, v, time.Time{})
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		var p struct{ W int }
		if err := json.Unmarshal(old.Props, &p); err != nil || p.W != max(int(v), 1) {
			t.Fatalf("version %d props %s", v, old.Props)
		}
	}
	old, err := e.g.EdgeGetAt(ctx, e.Tenant, ed.ID, 0, before)
	if err != nil || old.Version != 1 || string(old.Props) != `{"w": 1, "note": "first"}` {
		t.Fatalf("as of before the updates: %+v %v", old, err)
	}
	del, err := e.g.EdgeDelete(ctx, e.Tenant, ed.ID, nil)
	if err != nil || !del.Deleted || del.Version != 11 {
		t.Fatalf("delete %+v %v", del, err)
	}
	_, err = e.g.EdgeGet(ctx, e.Tenant, ed.ID)
	wantProblem(t, err, 404, "edge_deleted")
	_, err = e.g.EdgeUpdate(ctx, e.Tenant, ed.ID, json.RawMessage(`{}`), false, nil)
	wantProblem(t, err, 404, "edge_deleted")
	if again, err := e.g.EdgeDelete(ctx, e.Tenant, ed.ID, nil); err != nil || again.Version != 11 {
		t.Fatalf("deleting again: %+v %v", again, err)
	}
	vs, err := e.g.EdgeVersions(ctx, e.Tenant, ed.ID)
	if err != nil || len(vs) != 11 || vs[0].Op != "delete" || vs[10].Op != "create" || vs[1].Op != "update" {
		t.Fatalf("versions %+v %v", vs, err)
	}
	last, err := e.g.EdgeGetAt(ctx, e.Tenant, ed.ID, 10, time.Time{})
	if err != nil || last.Deleted || !strings.Contains(string(last.Props), `"w": 10`) && !strings.Contains(string(last.Props), `"w":10`) {
		t.Fatalf("version 10 after the deletion: %+v %v", last, err)
	}
	_, err = e.g.EdgeGet(ctx, e.Tenant, 999999)
	wantProblem(t, err, 404, "edge_not_found")

	// Every write is on the feed, in order.
	var ops []string
	for _, c := range e.edgeChanges(t, 11) {
		ops = append(ops, c.Op)
		if c.Scope != "likes" || c.Key != strconv.FormatInt(ed.ID, 10) {
			t.Fatalf("change %+v", c)
		}
	}
	if len(ops) != 11 || ops[0] != "create" || ops[10] != "delete" {
		t.Fatalf("feed ops %v", ops)
	}
}

func TestEdgeBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{MaxPropsBytes: 100})
	e.nodes(t, "n", 3)
	ctx := e.ctx
	create := func(in graph.EdgeInput) error {
		_, err := e.g.EdgeCreate(ctx, e.Tenant, in)
		return err
	}
	p := wantProblem(t, create(graph.EdgeInput{Type: "t", From: ref("n", 0), To: ref("n", 7)}), 404, "document_not_found")
	if len(p.Errors) != 1 || p.Errors[0].Location != "body.to" {
		t.Fatalf("errors %+v", p.Errors)
	}
	wantProblem(t, create(graph.EdgeInput{Type: "t", From: ref("nope", 0), To: ref("n", 1)}), 404, "collection_not_found")
	wantProblem(t, create(graph.EdgeInput{Type: "bad type!", From: ref("n", 0), To: ref("n", 1)}), 422, "invalid_type")
	wantProblem(t, create(graph.EdgeInput{Type: "t", From: ref("n", 0), To: ref("n", 1), Props: json.RawMessage(`[1]`)}), 422, "not_an_object")
	wantProblem(t, create(graph.EdgeInput{Type: "t", From: ref("n", 0), To: ref("n", 1), Props: json.RawMessage(`{"a":1,"a":2}`)}), 422, "duplicate_key")
	wantProblem(t, create(graph.EdgeInput{Type: "t", From: ref("n", 0), To: ref("n", 1), Props: json.RawMessage(`{"a": "` + strings.Repeat("x", 200) + `"}`)}), 413, "props_too_large")
	wantProblem(t, create(graph.EdgeInput{Type: "t", From: graph.NodeRef{Collection: "n"}, To: ref("n", 1)}), 400, "invalid_node")

	// Deleted documents cannot gain edges.
	if _, err := e.docs.DocDelete(ctx, e.Tenant, "n", "2", nil); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, create(graph.EdgeInput{Type: "t", From: ref("n", 2), To: ref("n", 1)}), 404, "document_not_found")

	// Once a type is declared, undeclared ones are refused.
	if _, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "depends_on"}); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, create(graph.EdgeInput{Type: "t", From: ref("n", 0), To: ref("n", 1)}), 422, "unknown_edge_type")
	if _, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "depends_on"}); err == nil {
		t.Fatal("declared twice")
	} else {
		wantProblem(t, err, 409, "type_exists")
	}
	if n := e.countLive(t); n != 0 {
		t.Fatalf("%d edges after refused writes", n)
	}
}

func TestAcyclicAndUniqueTypes(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 5)
	ctx := e.ctx
	yes := true
	if _, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "dep", Acyclic: &yes, Unique: &yes}); err != nil {
		t.Fatal(err)
	}
	e.edge(t, "dep", 0, 1, "")
	e.edge(t, "dep", 1, 2, "")
	e.edge(t, "dep", 2, 3, "")
	e.edge(t, "dep", 0, 3, "") // a diamond is not a cycle
	_, err := e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "dep", From: ref("n", 3), To: ref("n", 0)})
	p := wantProblem(t, err, 409, "cycle")
	cycle, _ := p.Extensions["cycle"].([]graph.NodeRef)
	if len(cycle) != 3 || cycle[0] != ref("n", 3) || cycle[1] != ref("n", 0) || cycle[2] != ref("n", 3) {
		t.Fatalf("cycle %v (%s)", p.Extensions["cycle"], p.Detail)
	}
	_, err = e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "dep", From: ref("n", 4), To: ref("n", 4)})
	wantProblem(t, err, 409, "cycle")
	_, err = e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "dep", From: ref("n", 0), To: ref("n", 1)})
	if p := wantProblem(t, err, 409, "edge_exists"); p.Extensions["existing_edge"] == nil {
		t.Fatal("no existing_edge")
	}
	if n := e.countLive(t); n != 4 {
		t.Fatalf("%d edges", n)
	}

	// Concurrent writers cannot close a cycle between them: a ring of n edges written at once
	// ends with at most n-1 of them.
	e.edge(t, "dep", 3, 4, "")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, pair := range [][2]int{{4, 0}, {4, 1}} {
		wg.Go(func() {
			_, errs[i] = e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "dep", From: ref("n", pair[0]), To: ref("n", pair[1])})
		})
	}
	wg.Wait()
	for _, err := range errs {
		wantProblem(t, err, 409, "cycle")
	}

	// A type with a cycle cannot become acyclic; one with duplicates cannot become unique.
	if _, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "loose"}); err != nil {
		t.Fatal(err)
	}
	e.edge(t, "loose", 0, 1, "")
	e.edge(t, "loose", 1, 0, "")
	e.edge(t, "loose", 1, 0, "")
	_, err = e.g.TypeUpdate(ctx, e.Tenant, graph.TypeInput{Name: "loose", Acyclic: &yes})
	wantProblem(t, err, 409, "cycle")
	_, err = e.g.TypeUpdate(ctx, e.Tenant, graph.TypeInput{Name: "loose", Unique: &yes})
	wantProblem(t, err, 409, "duplicate_edges")
	err = e.g.TypeDelete(ctx, e.Tenant, "loose")
	wantProblem(t, err, 409, "type_in_use")
	tp, err := e.g.Type(ctx, e.Tenant, "loose")
	if err != nil || tp.Acyclic || tp.Unique || !tp.Declared {
		t.Fatalf("loose changed: %+v %v", tp, err)
	}
}

// The graph used by TestHandBuiltGraphs (type "e" unless noted):
//
//	0 → 1 → 2 → 3 → 4 → 5 → 6 → 7 → 8 → 9     a deep chain
//	10 → 11, 10 → 12, 11 → 13, 12 → 13, 13 → 14  a diamond
//	15 → 16 → 17 → 15                          a cycle
//	18 → 18                                    a self-loop
//	19                                         alone
//	0 -x-> 10                                  another type
func TestHandBuiltGraphs(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 20)
	for i := range 9 {
		e.edge(t, "e", i, i+1, "")
	}
	for _, p := range [][2]int{{10, 11}, {10, 12}, {11, 13}, {12, 13}, {13, 14}, {15, 16}, {16, 17}, {17, 15}, {18, 18}} {
		e.edge(t, "e", p[0], p[1], "")
	}
	e.edge(t, "x", 0, 10, "")
	ctx := e.ctx
	hood := func(from int, o graph.Options) map[int]int {
		t.Helper()
		r, err := e.g.Neighbourhood(ctx, e.Tenant, ref("n", from), o)
		if err != nil {
			t.Fatal(err)
		}
		return depths(t, r)
	}
	eq := func(what string, got, want map[int]int) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
	eq("chain depth 3", hood(0, graph.Options{MaxDepth: 3, Types: []string{"e"}}), map[int]int{1: 1, 2: 2, 3: 3})
	eq("chain both types", hood(0, graph.Options{MaxDepth: 2}), map[int]int{1: 1, 2: 2, 10: 1, 11: 2, 12: 2})
	eq("diamond", hood(10, graph.Options{MaxDepth: 10}), map[int]int{11: 1, 12: 1, 13: 2, 14: 3})
	eq("diamond in", hood(13, graph.Options{MaxDepth: 10, Direction: graph.In}), map[int]int{11: 1, 12: 1, 10: 2, 0: 3})
	eq("cycle", hood(15, graph.Options{MaxDepth: 10}), map[int]int{16: 1, 17: 2})
	eq("cycle both", hood(15, graph.Options{MaxDepth: 10, Direction: graph.Both}), map[int]int{16: 1, 17: 1})
	eq("self-loop", hood(18, graph.Options{MaxDepth: 5}), map[int]int{})
	eq("alone", hood(19, graph.Options{MaxDepth: 5}), map[int]int{})

	r, err := e.g.Dependents(ctx, e.Tenant, ref("n", 9), graph.Options{Types: []string{"e"}, Paths: true})
	if err != nil || len(r.Nodes) != 9 || r.Truncated {
		t.Fatalf("dependents of the chain's end: %+v %v", r, err)
	}
	if last := r.Nodes[8]; last.ID != "0" || last.Depth != 9 || len(last.Path.Edges) != 9 || last.Path.Nodes[0] != ref("n", 9) {
		t.Fatalf("farthest dependent %+v", last)
	}
	r, err = e.g.Dependencies(ctx, e.Tenant, ref("n", 0), graph.Options{Limit: 4})
	if err != nil || len(r.Nodes) != 4 || !r.Truncated {
		t.Fatalf("limited dependencies: %+v %v", r, err)
	}

	sp := func(a, b int, o graph.Options) graph.PathResult {
		t.Helper()
		res, err := e.g.ShortestPath(ctx, e.Tenant, ref("n", a), ref("n", b), "", o)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := sp(0, 9, graph.Options{}); !res.Found || res.Length != 9 || len(res.Path.Nodes) != 10 {
		t.Fatalf("chain path %+v", res)
	}
	if res := sp(9, 0, graph.Options{}); res.Found {
		t.Fatalf("against the edges %+v", res)
	}
	if res := sp(9, 0, graph.Options{Direction: graph.Both}); !res.Found || res.Length != 9 {
		t.Fatalf("undirected %+v", res)
	}
	if res := sp(0, 14, graph.Options{}); !res.Found || res.Length != 4 || res.Path.Edges[0].Type != "x" {
		t.Fatalf("across types %+v", res)
	}
	if res := sp(0, 9, graph.Options{MaxDepth: 8}); res.Found {
		t.Fatalf("beyond max depth %+v", res)
	}
	if res := sp(15, 15, graph.Options{}); !res.Found || res.Length != 0 {
		t.Fatalf("to itself %+v", res)
	}
	if res := sp(0, 19, graph.Options{}); res.Found {
		t.Fatalf("to a disconnected node %+v", res)
	}

	paths, err := e.g.AllPaths(ctx, e.Tenant, ref("n", 10), ref("n", 14), graph.Options{})
	if err != nil || len(paths.Paths) != 2 || len(paths.Paths[0].Edges) != 3 {
		t.Fatalf("diamond paths %+v %v", paths, err)
	}
	paths, err = e.g.AllPaths(ctx, e.Tenant, ref("n", 15), ref("n", 17), graph.Options{Direction: graph.Both})
	if err != nil || len(paths.Paths) != 2 || len(paths.Paths[0].Edges) != 1 || len(paths.Paths[1].Edges) != 2 {
		t.Fatalf("cycle paths %+v %v", paths, err)
	}

	deg, err := e.g.Degree(ctx, e.Tenant, ref("n", 0), graph.Options{})
	if err != nil || deg.OutTotal != 2 || deg.Out["e"] != 1 || deg.Out["x"] != 1 || deg.InTotal != 0 {
		t.Fatalf("degree %+v %v", deg, err)
	}
	deg, err = e.g.Degree(ctx, e.Tenant, ref("n", 18), graph.Options{})
	if err != nil || deg.OutTotal != 1 || deg.InTotal != 1 {
		t.Fatalf("self-loop degree %+v %v", deg, err)
	}
}

func TestLimitsAndBudget(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{MaxDepth: 5, MaxResults: 50})
	e.nodes(t, "n", 3)
	e.edge(t, "e", 0, 1, "")
	ctx := e.ctx
	_, err := e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{MaxDepth: 6})
	wantProblem(t, err, 400, "depth_out_of_range")
	_, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{Limit: 51})
	wantProblem(t, err, 400, "limit_out_of_range")
	_, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{Direction: "sideways"})
	wantProblem(t, err, 400, "invalid_direction")
	_, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{Filter: "i >"})
	wantProblem(t, err, 400, "invalid_filter")
	_, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{Filter: "i > 0", AsOf: time.Now()})
	wantProblem(t, err, 400, "as_of_unsupported")
	_, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{Types: []string{"nope"}})
	wantProblem(t, err, 422, "unknown_edge_type")
	_, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 9), graph.Options{})
	wantProblem(t, err, 404, "document_not_found")
	if r, err := e.g.Neighbourhood(ctx, e.Tenant, ref("n", 2), graph.Options{}); err != nil || len(r.Nodes) != 0 {
		t.Fatalf("a document without edges: %+v %v", r, err)
	}

	// A traversal past its time budget is a 422, or with Partial what was found in time.
	tight := graph.New(e.Pool, e.Auth, e.docs, e.Feed, e.Listener, graph.Config{TimeBudget: time.Nanosecond})
	_, err = tight.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{})
	wantProblem(t, err, 422, "traversal_budget_exceeded")
	r, err := tight.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{Partial: true})
	if err != nil || !r.Partial {
		t.Fatalf("partial: %+v %v", r, err)
	}
	sp, err := tight.ShortestPath(ctx, e.Tenant, ref("n", 0), ref("n", 1), "", graph.Options{Partial: true})
	if err != nil || !sp.Partial || sp.Found {
		t.Fatalf("partial path: %+v %v", sp, err)
	}
}

func TestWeightedShortestPath(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 5)
	// 0 → 4 directly costs 10; 0 → 1 → 2 → 3 → 4 costs 4; 0 → 2 costs 1.5.
	e.edge(t, "road", 0, 4, `{"km": 10}`)
	e.edge(t, "road", 0, 1, `{"km": 1}`)
	e.edge(t, "road", 1, 2, `{"km": 1}`)
	e.edge(t, "road", 2, 3, `{"km": 1}`)
	e.edge(t, "road", 3, 4, `{"km": 1}`)
	e.edge(t, "road", 0, 2, `{"km": 1.5}`)
	ctx := e.ctx
	res, err := e.g.ShortestPath(ctx, e.Tenant, ref("n", 0), ref("n", 4), "km", graph.Options{})
	if err != nil || !res.Found || *res.Weight != 3.5 || res.Length != 3 {
		t.Fatalf("weighted %+v %v", res, err)
	}
	res, err = e.g.ShortestPath(ctx, e.Tenant, ref("n", 0), ref("n", 4), "", graph.Options{})
	if err != nil || res.Length != 1 {
		t.Fatalf("unweighted %+v %v", res, err)
	}
	// An edge without the property weighs 1.
	res, err = e.g.ShortestPath(ctx, e.Tenant, ref("n", 0), ref("n", 4), "minutes", graph.Options{})
	if err != nil || *res.Weight != 1 {
		t.Fatalf("missing weights %+v %v", res, err)
	}
	_, err = e.g.ShortestPath(ctx, e.Tenant, ref("n", 0), ref("n", 4), "km[", graph.Options{})
	wantProblem(t, err, 400, "invalid_weight")
	e.edge(t, "road", 1, 3, `{"km": -5}`)
	_, err = e.g.ShortestPath(ctx, e.Tenant, ref("n", 0), ref("n", 4), "km", graph.Options{})
	wantProblem(t, err, 422, "negative_weight")
}

func TestFiltersAndCollections(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 6)
	e.nodes(t, "m", 2)
	ctx := e.ctx
	// 0 → 1 → 2 → 3 and 0 → 4 (heavy) and 0 → m/0 → 5
	e.edge(t, "e", 0, 1, `{"w": 1}`)
	e.edge(t, "e", 1, 2, `{"w": 1}`)
	e.edge(t, "e", 2, 3, `{"w": 1}`)
	e.edge(t, "e", 0, 4, `{"w": 9}`)
	if _, err := e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "e", From: ref("n", 0), To: ref("m", 0)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "e", From: ref("m", 0), To: ref("n", 5)}); err != nil {
		t.Fatal(err)
	}
	names := func(r graph.Result, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range r.Nodes {
			out = append(out, n.String())
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	if got := names(e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{MaxDepth: 5})); got != "m/0 n/1 n/2 n/3 n/4 n/5" {
		t.Fatalf("all: %s", got)
	}
	// Nodes outside the collections are neither returned nor passed through.
	if got := names(e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{MaxDepth: 5, Collections: []string{"n"}})); got != "n/1 n/2 n/3 n/4" {
		t.Fatalf("collection n: %s", got)
	}
	// Odd nodes are not entered, so 2 and 3 (behind 1) and 5 (odd) are not reached.
	if got := names(e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{MaxDepth: 5, Filter: "even = true"})); got != "m/0 n/4" {
		t.Fatalf("even only: %s", got)
	}
	if got := names(e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{MaxDepth: 5, EdgeFilter: "w < 5"})); got != "n/1 n/2 n/3" {
		t.Fatalf("light edges: %s", got)
	}
	res, err := e.g.ShortestPath(ctx, e.Tenant, ref("n", 0), ref("n", 5), "", graph.Options{Collections: []string{"n"}})
	if err != nil || res.Found {
		t.Fatalf("path through a collection left out: %+v %v", res, err)
	}
	_, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{Collections: []string{"zzz"}})
	wantProblem(t, err, 404, "collection_not_found")
}

func TestNeighboursPaging(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 8)
	ctx := e.ctx
	for i := 1; i <= 4; i++ {
		e.edge(t, "a", 0, i, "")
	}
	e.edge(t, "b", 0, 1, "")
	e.edge(t, "a", 5, 0, "")
	e.edge(t, "a", 6, 0, "")
	var seen []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		page, err := e.g.Neighbours(ctx, e.Tenant, ref("n", 0), graph.Options{Direction: graph.Both, Limit: 2}, cursor)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			seen = append(seen, fmt.Sprintf("%s:%s:%s", it.Direction, it.Edge.Type, it.Node.ID))
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	want := "out:a:1 out:a:2 out:a:3 out:a:4 out:b:1 in:a:5 in:a:6"
	if strings.Join(seen, " ") != want {
		t.Fatalf("pages: %v\nwant:  %s", seen, want)
	}
	_, err := e.g.Neighbours(ctx, e.Tenant, ref("n", 0), graph.Options{}, "garbage")
	wantProblem(t, err, 400, "invalid_cursor")
}

func TestSubgraph(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 6)
	ctx := e.ctx
	e.edge(t, "e", 0, 1, "")
	e.edge(t, "e", 1, 2, "")
	e.edge(t, "e", 2, 0, "")
	e.edge(t, "e", 2, 3, "")
	e.edge(t, "e", 4, 5, "")
	around := ref("n", 0)
	sg, err := e.g.Subgraph(ctx, e.Tenant, graph.SubgraphQuery{Around: &around, IncludeData: true})
	if err != nil {
		t.Fatal(err)
	}
	// 0 and its neighbours both ways (1, 2); edges among them: 0→1, 1→2, 2→0.
	if len(sg.Nodes) != 3 || len(sg.Edges) != 3 || sg.Nodes[0].Data == nil {
		t.Fatalf("around 0: %+v", sg)
	}
	// A whole "board": the even documents and the edges between them.
	sg, err = e.g.Subgraph(ctx, e.Tenant, graph.SubgraphQuery{Collection: "n", Filter: "i < 3"})
	if err != nil || len(sg.Nodes) != 3 || len(sg.Edges) != 3 {
		t.Fatalf("board: %+v %v", sg, err)
	}
	sg, err = e.g.Subgraph(ctx, e.Tenant, graph.SubgraphQuery{Collection: "n", Filter: "i >= 3"})
	if err != nil || len(sg.Nodes) != 3 || len(sg.Edges) != 1 || sg.Edges[0].From != ref("n", 4) {
		t.Fatalf("board 2: %+v %v", sg, err)
	}
	_, err = e.g.Subgraph(ctx, e.Tenant, graph.SubgraphQuery{})
	wantProblem(t, err, 400, "invalid_request")
}

func TestDocumentDeletionTakesItsEdges(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 4)
	ctx := e.ctx
	e.edge(t, "e", 0, 1, `{"k": 1}`)
	e.edge(t, "e", 1, 2, "")
	e.edge(t, "e", 3, 1, "")
	before := time.Now()
	time.Sleep(5 * time.Millisecond)
	if _, err := e.docs.DocDelete(ctx, e.Tenant, "n", "1", nil); err != nil {
		t.Fatal(err)
	}
	if n := e.countLive(t); n != 0 {
		t.Fatalf("%d live edges after deleting their document", n)
	}
	r, err := e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{MaxDepth: 3})
	if err != nil || len(r.Nodes) != 0 {
		t.Fatalf("now: %+v %v", r, err)
	}
	// The graph as it was still has them.
	r, err = e.g.Neighbourhood(ctx, e.Tenant, ref("n", 0), graph.Options{MaxDepth: 3, AsOf: before})
	if got := depths(t, r); err != nil || fmt.Sprint(got) != "map[1:1 2:2]" {
		t.Fatalf("as of before: %v %v", got, err)
	}
	page, err := e.g.Neighbours(ctx, e.Tenant, ref("n", 1), graph.Options{Direction: graph.Both, AsOf: before}, "")
	if err != nil || len(page.Items) != 3 {
		t.Fatalf("neighbours as of before: %+v %v", page, err)
	}
	// The feed has one delete per edge.
	deletes := 0
	for _, c := range e.edgeChanges(t, 6) {
		if c.Op == "delete" {
			deletes++
		}
	}
	if deletes != 3 {
		t.Fatalf("%d edge deletions on the feed", deletes)
	}
	// Restoring the document does not bring its edges back.
	if _, err := e.docs.DocRestore(ctx, e.Tenant, "n", "1", nil); err != nil {
		t.Fatal(err)
	}
	if n := e.countLive(t); n != 0 {
		t.Fatalf("restore revived %d edges", n)
	}
	// Deleting a collection deletes every edge touching it, history and all.
	e.edge(t, "e", 0, 2, "")
	if err := e.docs.CollectionDelete(ctx, e.Tenant, "n"); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := e.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM graph_edges) + (SELECT count(*) FROM graph_edge_versions) + (SELECT count(*) FROM graph_nodes)`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d graph rows left after the collection went (%v)", left, err)
	}
}

// A document deleted while an edge to it is being created never ends up with a live edge:
// the edge's writer locks the document, so one of them waits for the other.
func TestDeleteRacesEdgeCreate(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	const n = 20
	e.nodes(t, "n", n+1)
	ctx := e.ctx
	for i := 1; i <= n; i++ {
		var wg sync.WaitGroup
		wg.Go(func() {
			_, _ = e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "e", From: ref("n", 0), To: ref("n", i)})
		})
		wg.Go(func() {
			if _, err := e.docs.DocDelete(ctx, e.Tenant, "n", strconv.Itoa(i), nil); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
	}
	if live := e.countLive(t); live != 0 {
		t.Fatalf("%d live edges to deleted documents", live)
	}
}

// TestTenantWalls runs every operation as every identity: another tenant's owner sees 404
// everywhere, the anonymous 401, readers may read but not write (403), and nothing of one
// tenant is reachable from another.
func TestTenantWalls(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 4)
	ed := e.edge(t, "e", 0, 1, `{"v": 1}`)
	e.edge(t, "e", 1, 2, "")
	n0, n1 := ref("n", 0), ref("n", 1)
	type op struct {
		name  string
		write bool
		run   func(ctx context.Context, role string) error
	}
	ops := []op{
		{"edge create", true, func(ctx context.Context, role string) error {
			_, err := e.g.EdgeCreate(ctx, e.Tenant, graph.EdgeInput{Type: "e", From: n0, To: ref("n", 3)})
			return err
		}},
		{"edge update", true, func(ctx context.Context, role string) error {
			_, err := e.g.EdgeUpdate(ctx, e.Tenant, ed.ID, json.RawMessage(`{"v": 2}`), true, nil)
			return err
		}},
		{"edge import", true, func(ctx context.Context, role string) error {
			_, err := e.g.EdgeImport(ctx, e.Tenant, strings.NewReader(`{"type": "e", "from": "n/2", "to": "n/3"}`), graph.ImportOptions{})
			return err
		}},
		{"type declare", true, func(ctx context.Context, role string) error {
			_, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "t_" + strings.ReplaceAll(role, "_", "")})
			return err
		}},
		{"edge get", false, func(ctx context.Context, role string) error { _, err := e.g.EdgeGet(ctx, e.Tenant, ed.ID); return err }},
		{"edge versions", false, func(ctx context.Context, role string) error {
			_, err := e.g.EdgeVersions(ctx, e.Tenant, ed.ID)
			return err
		}},
		{"edge at", false, func(ctx context.Context, role string) error {
			_, err := e.g.EdgeGetAt(ctx, e.Tenant, ed.ID, 1, time.Time{})
			return err
		}},
		{"types", false, func(ctx context.Context, role string) error { _, err := e.g.Types(ctx, e.Tenant); return err }},
		{"type", false, func(ctx context.Context, role string) error { _, err := e.g.Type(ctx, e.Tenant, "e"); return err }},
		{"neighbours", false, func(ctx context.Context, role string) error {
			_, err := e.g.Neighbours(ctx, e.Tenant, n0, graph.Options{}, "")
			return err
		}},
		{"neighbourhood", false, func(ctx context.Context, role string) error {
			_, err := e.g.Neighbourhood(ctx, e.Tenant, n0, graph.Options{})
			return err
		}},
		{"dependents", false, func(ctx context.Context, role string) error {
			_, err := e.g.Dependents(ctx, e.Tenant, n1, graph.Options{})
			return err
		}},
		{"dependencies", false, func(ctx context.Context, role string) error {
			_, err := e.g.Dependencies(ctx, e.Tenant, n0, graph.Options{})
			return err
		}},
		{"shortest path", false, func(ctx context.Context, role string) error {
			_, err := e.g.ShortestPath(ctx, e.Tenant, n0, n1, "", graph.Options{})
			return err
		}},
		{"all paths", false, func(ctx context.Context, role string) error {
			_, err := e.g.AllPaths(ctx, e.Tenant, n0, n1, graph.Options{})
			return err
		}},
		{"degree", false, func(ctx context.Context, role string) error {
			_, err := e.g.Degree(ctx, e.Tenant, n0, graph.Options{})
			return err
		}},
		{"subgraph", false, func(ctx context.Context, role string) error {
			_, err := e.g.Subgraph(ctx, e.Tenant, graph.SubgraphQuery{Around: &n0})
			return err
		}},
		{"board", false, func(ctx context.Context, role string) error {
			_, err := e.g.Subgraph(ctx, e.Tenant, graph.SubgraphQuery{Collection: "n"})
			return err
		}},
		{"edge delete", true, func(ctx context.Context, role string) error {
			_, err := e.g.EdgeDelete(ctx, e.Tenant, ed.ID, nil)
			return err
		}},
	}
	for _, o := range ops {
		for _, role := range testworld.Roles() {
			err := o.run(e.As(role), role)
			var want int
			switch {
			case role == "":
				want = 401
			case role == testworld.Outsider:
				want = 404
			case o.write && (role == testworld.Member || role == testworld.Viewer || role == testworld.APIKey):
				want = 403
			}
			got := 0
			if err != nil {
				p, ok := problem.As(err)
				if !ok {
					t.Fatalf("%s as %q: %v", o.name, role, err)
				}
				got = p.Status
			}
			if got != want {
				t.Errorf("%s as %q: status %d (%v), want %d", o.name, role, got, err, want)
			}
		}
	}

	// The other tenant has a collection of the same name: its graph is its own.
	out := e.As(testworld.Outsider)
	if _, err := e.docs.CollectionCreate(out, e.Other, doc.CollectionInput{Name: "n"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"0", "1"} {
		if _, err := e.docs.DocCreate(out, e.Other, "n", doc.DocInput{ID: id, Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := e.g.Neighbourhood(out, e.Other, n0, graph.Options{MaxDepth: 5}); err != nil || len(r.Nodes) != 0 {
		t.Fatalf("the other tenant's n/0 reached %+v (%v)", r, err)
	}
	_, err := e.g.EdgeGet(out, e.Other, ed.ID)
	wantProblem(t, err, 404, "edge_not_found")
	_, err = e.g.EdgeUpdate(out, e.Other, ed.ID, json.RawMessage(`{}`), false, nil)
	wantProblem(t, err, 404, "edge_not_found")
	before, err := e.g.Neighbourhood(e.ctx, e.Tenant, n0, graph.Options{MaxDepth: 5, Direction: graph.Both})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.g.EdgeCreate(out, e.Other, graph.EdgeInput{Type: "e", From: n0, To: n1}); err != nil {
		t.Fatal(err)
	}
	if r, err := e.g.Neighbourhood(e.ctx, e.Tenant, n0, graph.Options{MaxDepth: 5, Direction: graph.Both}); err != nil || fmt.Sprint(r) != fmt.Sprint(before) {
		t.Fatalf("the tenant's graph changed with the other's write: %+v, was %+v (%v)", r, before, err)
	}
	if r, err := e.g.Neighbourhood(out, e.Other, n0, graph.Options{MaxDepth: 5, Direction: graph.Both}); err != nil || len(r.Nodes) != 1 || r.Nodes[0].NodeRef != n1 {
		t.Fatalf("the other tenant's graph: %+v %v", r, err)
	}
	if types, err := e.g.Types(out, e.Other); err != nil || len(types) != 1 {
		t.Fatalf("the other tenant's types: %+v %v", types, err)
	}
}

func TestEdgeImport(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 5)
	ctx := e.ctx
	yes := true
	if _, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "dep", Acyclic: &yes}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "one", Unique: &yes}); err != nil {
		t.Fatal(err)
	}
	bad := strings.Join([]string{
		`{"type": "dep", "from": "n/0", "to": "n/1"}`,
		`not json`,
		`{"type": "dep", "from": "n/0", "to": "n/9"}`,
		`{"type": "other", "from": "n/0", "to": "n/1"}`,
		`{"type": "dep", "from": "x/0", "to": "n/1"}`,
		``,
		`{"type": "one", "from": "n/0", "to": "n/1", "props": [1]}`,
		`{"type": "dep", "from": "n0", "to": "n/1"}`,
	}, "\n")
	rep, err := e.g.EdgeImport(ctx, e.Tenant, strings.NewReader(bad), graph.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, le := range rep.Errors {
		codes = append(codes, fmt.Sprintf("%d:%s", le.Line, le.Code))
	}
	if rep.Imported != 0 || rep.Lines != 7 || strings.Join(codes, " ") != "2:invalid_edge 4:unknown_edge_type 5:collection_not_found 7:not_an_object 8:invalid_node 3:document_not_found" {
		t.Fatalf("report %+v: %v", rep, codes)
	}
	if n := e.countLive(t); n != 0 {
		t.Fatalf("a failed import left %d edges", n)
	}

	// Duplicates of a unique type, and a cycle in an acyclic one, fail the import too.
	rep, err = e.g.EdgeImport(ctx, e.Tenant, strings.NewReader(`{"type": "one", "from": "n/0", "to": "n/1"}
{"type": "one", "from": "n/0", "to": "n/1"}`), graph.ImportOptions{})
	if err != nil || rep.Imported != 0 || len(rep.Errors) != 1 || rep.Errors[0].Line != 2 || rep.Errors[0].Code != "edge_exists" {
		t.Fatalf("duplicates: %+v %v", rep, err)
	}
	rep, err = e.g.EdgeImport(ctx, e.Tenant, strings.NewReader(`{"type": "dep", "from": "n/0", "to": "n/1"}
{"type": "dep", "from": "n/1", "to": "n/2"}
{"type": "dep", "from": "n/2", "to": "n/0"}`), graph.ImportOptions{})
	if err != nil || rep.Imported != 0 || len(rep.Errors) != 1 || rep.Errors[0].Code != "cycle" || rep.Errors[0].Line == 0 {
		t.Fatalf("cycle: %+v %v", rep, err)
	}

	var progress []int64
	var lines strings.Builder
	for i := range 12000 {
		fmt.Fprintf(&lines, `{"type": "one", "from": "n/%d", "to": "n/%d", "props": {"i": %d}}`+"\n", i%5, (i/5)%5, i)
	}
	// 25 distinct (from, to) pairs of a unique type: the rest are duplicates.
	rep, err = e.g.EdgeImport(ctx, e.Tenant, strings.NewReader(lines.String()), graph.ImportOptions{})
	if err != nil || rep.Imported != 0 || rep.Failed != 12000-25 || len(rep.Errors) != 1000 {
		t.Fatalf("mostly duplicates: imported %d failed %d errors %d: %v", rep.Imported, rep.Failed, len(rep.Errors), err)
	}
	lines.Reset()
	for i := range 12000 {
		fmt.Fprintf(&lines, `{"type": "many", "from": "n/%d", "to": "n/%d", "props": {"i": %d}}`+"\n", i%5, (i/5)%5, i)
	}
	if _, err := e.g.TypeDeclare(ctx, e.Tenant, graph.TypeInput{Name: "many"}); err != nil {
		t.Fatal(err)
	}
	rep, err = e.g.EdgeImport(ctx, e.Tenant, strings.NewReader(lines.String()), graph.ImportOptions{Progress: func(l, _ int64) { progress = append(progress, l) }})
	if err != nil || rep.Imported != 12000 || fmt.Sprint(progress) != "[5000 10000 12000]" {
		t.Fatalf("import: %+v %v progress %v", rep, err, progress)
	}
	deg, err := e.g.Degree(ctx, e.Tenant, ref("n", 0), graph.Options{})
	if err != nil || deg.OutTotal != 2400 {
		t.Fatalf("degree after import: %+v %v", deg, err)
	}
	imported := 0
	for _, c := range e.edgeChanges(t, 12000) {
		if c.Op == "import" {
			imported++
		}
	}
	if imported != 12000 { // one change per edge
		t.Fatalf("%d import changes on the feed", imported)
	}
}

// A page that ends exactly where the out edges end continues with the in edges.
func TestNeighboursPageBoundary(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 3)
	e.edge(t, "a", 0, 1, "")
	e.edge(t, "a", 2, 0, "")
	p1, err := e.g.Neighbours(e.ctx, e.Tenant, ref("n", 0), graph.Options{Direction: graph.Both, Limit: 1}, "")
	if err != nil || len(p1.Items) != 1 || p1.Items[0].Direction != graph.Out || p1.NextCursor == "" {
		t.Fatalf("page 1: %+v %v", p1, err)
	}
	p2, err := e.g.Neighbours(e.ctx, e.Tenant, ref("n", 0), graph.Options{Direction: graph.Both, Limit: 1}, p1.NextCursor)
	if err != nil || len(p2.Items) != 1 || p2.Items[0].Direction != graph.In || p2.Items[0].Node != ref("n", 2) {
		t.Fatalf("page 2: %+v %v", p2, err)
	}
}

// Node references that no document can have (NUL, invalid UTF-8, characters outside the
// id alphabet) are refused as invalid, not sent to PostgreSQL.
func TestHostileNodeRefs(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	for _, bad := range []graph.NodeRef{{Collection: "n", ID: "a\x00b"}, {Collection: "n", ID: "\xff\xfe"}, {Collection: "n\x00", ID: "1"}, {Collection: "n", ID: "a/b c"}} {
		_, err := e.g.EdgeCreate(e.ctx, e.Tenant, graph.EdgeInput{Type: "t", From: bad, To: bad})
		wantProblem(t, err, 400, "invalid_node")
		_, err = graph.ParseNodeRef(bad.Collection+"/"+bad.ID, "from")
		wantProblem(t, err, 400, "invalid_node")
	}
}

// An update without a body is refused rather than taken as "no properties".
func TestEmptyPropsUpdate(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 3)
	ed := e.edge(t, "t", 1, 2, `{"w": 1}`)
	for _, body := range []string{"", "  \n"} {
		_, err := e.g.EdgeUpdate(e.ctx, e.Tenant, ed.ID, json.RawMessage(body), false, nil)
		wantProblem(t, err, 400, "empty_body")
	}
	got, err := e.g.EdgeGet(e.ctx, e.Tenant, ed.ID)
	if err != nil || string(got.Props) != `{"w": 1}` || got.Version != 1 {
		t.Fatalf("after refused updates: %+v %v", got, err)
	}
}

// A limit on all paths keeps the shortest: here the depth-first order meets the long path
// (0 → 1 → 2 → 4) before the short one (0 → 3 → 4).
func TestAllPathsShortestFirstUnderLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 5)
	for _, p := range [][2]int{{0, 1}, {1, 2}, {2, 4}, {0, 3}, {3, 4}} {
		e.edge(t, "t", p[0], p[1], "")
	}
	r, err := e.g.AllPaths(e.ctx, e.Tenant, ref("n", 0), ref("n", 4), graph.Options{Limit: 1, MaxDepth: 5})
	if err != nil || len(r.Paths) != 1 || len(r.Paths[0].Edges) != 2 || !r.Truncated {
		t.Fatalf("limit 1: %+v %v", r, err)
	}
	r, err = e.g.AllPaths(e.ctx, e.Tenant, ref("n", 0), ref("n", 4), graph.Options{Limit: 2, MaxDepth: 5})
	if err != nil || len(r.Paths) != 2 || len(r.Paths[0].Edges) != 2 || len(r.Paths[1].Edges) != 3 || r.Truncated {
		t.Fatalf("limit 2: %+v %v", r, err)
	}
}

// Turning a type acyclic while an edge closing a cycle is being written: whichever comes
// first, the other sees it — never an acyclic type with a cycle. (Writers read the type's
// flags under a row lock, not from the cache.)
func TestAcyclicChangeRacesEdgeCreate(t *testing.T) {
	t.Parallel()
	e := setup(t, graph.Config{})
	e.nodes(t, "n", 3)
	yes := true
	for i := range 15 {
		typ := fmt.Sprintf("r%d", i)
		e.edge(t, typ, 0, 1, "")
		e.edge(t, typ, 1, 2, "")
		var wg sync.WaitGroup
		var edgeErr, typeErr error
		wg.Go(func() {
			_, edgeErr = e.g.EdgeCreate(e.ctx, e.Tenant, graph.EdgeInput{Type: typ, From: ref("n", 2), To: ref("n", 0)})
		})
		wg.Go(func() {
			_, typeErr = e.g.TypeUpdate(e.ctx, e.Tenant, graph.TypeInput{Name: typ, Acyclic: &yes})
		})
		wg.Wait()
		switch {
		case edgeErr == nil && typeErr == nil:
			t.Fatalf("%s: the type became acyclic and the edge closing a cycle was written", typ)
		case edgeErr != nil:
			wantProblem(t, edgeErr, 409, "cycle")
		default:
			wantProblem(t, typeErr, 409, "cycle")
		}
	}
}

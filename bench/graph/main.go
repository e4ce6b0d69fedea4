// Command graph measures the graph on a generated power-law graph, against raw PostgreSQL
// on the same data in the same run (an embedded PostgreSQL with production durability):
//
//   - the k-hop neighbourhood (out edges, k = 2…5) of random nodes, against the recursive
//     CTE found in tutorials (UNION ALL carrying a path array as its cycle check) and a
//     better one (UNION over (node, depth)), both over an indexed two-column edge table;
//
//   - the same neighbourhoods through the SQL walker (the in-memory index disabled), on
//     the CTEs' starts (every case runs once untimed on those starts before it is timed);
//
//   - the shortest path between random connected nodes;
//
//   - the full dependents closure of the root of a 100k-node dependency graph, against a
//     recursive CTE with UNION (reachability, each node once);
//
//   - loading: the edge import (COPY, with history, feed and node bookkeeping) against a
//     bare COPY into the two-column table plus its two indexes.
//
// Strata answers from its in-memory adjacency index; the run loads it first (one timed
// load per tenant, its memory reported) and reports how many traversals it answered.
//
// The graph is Barabási–Albert (each new node links to 5 existing ones chosen by degree;
// each edge's direction is a coin toss), so degrees follow a power law in both directions
// and the graph has cycles.
//
//	go run ./graph [-nodes 1000000] [-m 5] [-queries 200]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/bench/internal/harness"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/graph"
	"github.com/stratadb/strata/internal/graphgen"
)

var (
	nNodes     = flag.Int("nodes", 1_000_000, "nodes of the power-law graph")
	m          = flag.Int("m", 5, "edges each new node adds (edges ≈ nodes × m)")
	nClosure   = flag.Int("closure-nodes", 100_000, "nodes of the dependency graph")
	queries    = flag.Int("queries", 200, "sampled starts (or pairs) per timed case")
	cteQueries = flag.Int("cte-queries", 20, "starts per recursive-CTE case (they are slow)")
	cteTimeout = flag.Duration("cte-timeout", 20*time.Second, "statement timeout of one recursive-CTE query")
	seed       = flag.Uint64("seed", 1, "random seed")
	cpuProfile = flag.String("cpuprofile", "", "write a CPU profile of the k-hop cases to this file")
)

func main() {
	flag.Parse()
	ctx := context.Background()
	s, cleanup, err := harness.Platform(ctx, strata.Config{AdminPassword: "bench-admin-password",
		Graph: graph.Config{MaxResults: 1_000_000, TimeBudget: time.Minute}})
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	sys := auth.System(ctx)
	rng := rand.New(rand.NewPCG(*seed, 7))
	fmt.Printf("# Graph (GOMAXPROCS=%d, %s)\n\n", runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.DateOnly))

	tenant := newTenant(ctx, s, "graph")
	from, to := graphgen.BarabasiAlbert(rng, *nNodes, *m)
	load(ctx, s, sys, tenant, "n", *nNodes, from, to, "e", true)
	adj := graphgen.Out(*nNodes, from, to)
	from, to = nil, nil
	index(sys, s, tenant, graph.NodeRef{Collection: "n", ID: "0"})
	hops(ctx, s, sys, tenant, rng, adj)
	shortest(ctx, s, sys, tenant, rng, adj)

	ctenant := newTenant(ctx, s, "closure")
	cfrom, cto := dependencyDAG(rng, *nClosure)
	load(ctx, s, sys, ctenant, "d", *nClosure, cfrom, cto, "depends_on", false)
	index(sys, s, ctenant, graph.NodeRef{Collection: "d", ID: "0"})
	closure(ctx, s, sys, ctenant)
	st := s.Graph().IndexStats()
	fmt.Printf("## In-memory index use\n\n%d traversals answered from memory, %d in SQL while an index was not ready (the loads' first traversals).\n\n",
		st.Traversals, st.Fallbacks)
}

// index loads a tenant's in-memory adjacency index (a traversal starts it), waits for it,
// and reports its load time and memory: as estimated by the index, and as the Go heap grew.
func index(sys context.Context, s *strata.Strata, tenant string, start graph.NodeRef) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := s.Graph().Neighbourhood(sys, tenant, start, graph.Options{}); err != nil {
		log.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Minute)
	for {
		for _, t := range s.Graph().IndexStats().Tenants {
			if t.Tenant != tenant {
				continue
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			fmt.Printf("In-memory index: %d nodes, %d edges loaded in %.2f s; %.0f MB by its estimate (%.1f bytes per edge), Go heap %+.0f MB.\n\n",
				t.Nodes, t.Edges, t.LoadTime.Seconds(), float64(t.Bytes)/1e6, float64(t.Bytes)/float64(max(t.Edges, 1)),
				(float64(after.HeapAlloc)-float64(before.HeapAlloc))/1e6)
			return
		}
		if time.Now().After(deadline) {
			log.Fatal("the in-memory index did not load")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newTenant(ctx context.Context, s *strata.Strata, name string) string {
	t, err := harness.Tenant(ctx, s, name)
	if err != nil {
		log.Fatal(err)
	}
	return t
}

// dependencyDAG is a dependency graph: node i (i > 0) depends on 1 to 4 earlier nodes, so
// everything eventually depends on node 0.
func dependencyDAG(rng *rand.Rand, n int) (from, to []int32) {
	for i := 1; i < n; i++ {
		k := min(i, 1+rng.IntN(4))
		seen := map[int32]bool{}
		for len(seen) < k {
			j := int32(rng.IntN(i))
			if i > 10 && rng.IntN(2) == 0 {
				j = int32(rng.IntN(max(1, i/100))) // lean on old, foundational nodes
			}
			if !seen[j] {
				seen[j] = true
				from, to = append(from, int32(i)), append(to, j)
			}
		}
	}
	return from, to
}

// load creates the nodes as documents and the edges through EdgeImport, and — when raw is
// set — the same edges by bare COPY into bench_edges(from_node, to_node) with an index per
// direction, timing both.
func load(ctx context.Context, s *strata.Strata, sys context.Context, tenant, coll string, n int, from, to []int32, typ string, raw bool) {
	if _, err := s.Docs().CollectionCreate(sys, tenant, doc.CollectionInput{Name: coll}); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	rep, err := s.Docs().DocImport(sys, tenant, coll, harness.Generate(func(w io.Writer) {
		for i := range n {
			fmt.Fprintf(w, `{"id": "%d", "data": {"i": %d, "group": %d}}`+"\n", i, i, i%100)
		}
	}), doc.ImportOptions{Envelopes: true})
	if err != nil || rep.Failed > 0 {
		log.Fatalf("node import: %+v %v", rep, err)
	}
	docsTook := time.Since(start)
	start = time.Now()
	erep, err := s.Graph().EdgeImport(sys, tenant, harness.Generate(func(w io.Writer) {
		for i := range from {
			fmt.Fprintf(w, `{"type": %q, "from": "%s/%d", "to": "%s/%d"}`+"\n", typ, coll, from[i], coll, to[i])
		}
	}), graph.ImportOptions{})
	if err != nil || erep.Failed > 0 {
		log.Fatalf("edge import: %+v %v", erep, err)
	}
	edgesTook := time.Since(start)
	fmt.Printf("## Loading %s: %d nodes, %d edges\n\n", coll, n, len(from))
	fmt.Printf("| step | time | rate |\n|---|---:|---:|\n")
	fmt.Printf("| nodes: document import | %.1f s | %.0f docs/s |\n", docsTook.Seconds(), float64(n)/docsTook.Seconds())
	fmt.Printf("| edges: `EdgeImport` (COPY, versions, feed, nodes) | %.1f s | %.0f edges/s |\n", edgesTook.Seconds(), float64(len(from))/edgesTook.Seconds())
	if raw {
		start = time.Now()
		exec(ctx, s, `CREATE TABLE bench_edges (from_node bigint NOT NULL, to_node bigint NOT NULL)`)
		rows := make([][]any, len(from))
		for i := range from {
			rows[i] = []any{int64(from[i]), int64(to[i])}
		}
		if _, err := s.Pool().CopyFrom(ctx, pgx.Identifier{"bench_edges"}, []string{"from_node", "to_node"}, pgx.CopyFromRows(rows)); err != nil {
			log.Fatal(err)
		}
		exec(ctx, s, `CREATE INDEX bench_edges_out ON bench_edges (from_node, to_node)`)
		exec(ctx, s, `CREATE INDEX bench_edges_in ON bench_edges (to_node, from_node)`)
		rawTook := time.Since(start)
		fmt.Printf("| baseline: bare COPY of (from, to) + two indexes | %.1f s | %.0f edges/s |\n", rawTook.Seconds(), float64(len(from))/rawTook.Seconds())
		fmt.Printf("\nEdge import runs at %.2f× the bare COPY's rate.\n", rawTook.Seconds()/edgesTook.Seconds())
	}
	fmt.Println()
	exec(ctx, s, `VACUUM ANALYZE`) // as autovacuum would after a bulk load: index-only scans need the visibility map
}

func exec(ctx context.Context, s *strata.Strata, sql string) {
	if _, err := s.Pool().Exec(ctx, sql); err != nil {
		log.Fatalf("%s: %v", sql, err)
	}
}

// nodeNumbers maps document ids to graph node numbers, for the SQL baselines.
func nodeNumbers(ctx context.Context, s *strata.Strata, tenant string, ids []int) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		if err := s.Pool().QueryRow(ctx, `SELECT node FROM graph_nodes WHERE tenant_id = $1 AND doc_id = $2`, tenant, strconv.Itoa(id)).
			Scan(&out[i]); err != nil {
			log.Fatal(err)
		}
	}
	return out
}

// The recursive CTE found in tutorials: every path, carried as an array to stop cycles.
const ctePaths = `WITH RECURSIVE walk(node, depth, path) AS (
	SELECT $1::bigint, 0, ARRAY[$1::bigint]
	UNION ALL
	SELECT e.to_node, w.depth + 1, w.path || e.to_node
	FROM walk w JOIN bench_edges e ON e.from_node = w.node
	WHERE w.depth < $2 AND NOT e.to_node = ANY(w.path))
SELECT count(DISTINCT node) - 1 FROM walk`

// A better one: UNION drops repeated (node, depth) pairs, so each node is expanded at most
// once per depth.
const cteUnion = `WITH RECURSIVE walk(node, depth) AS (
	SELECT $1::bigint, 0
	UNION
	SELECT e.to_node, w.depth + 1 FROM walk w JOIN bench_edges e ON e.from_node = w.node WHERE w.depth < $2)
SELECT count(DISTINCT node) - 1 FROM walk`

// cte times one query with a statement timeout; ok is false when it ran out.
func cte(ctx context.Context, s *strata.Strata, sql string, args ...any) (time.Duration, int64, bool) {
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET statement_timeout = %d", cteTimeout.Milliseconds())); err != nil {
		log.Fatal(err)
	}
	defer func() { _, _ = conn.Exec(ctx, "RESET statement_timeout") }()
	start := time.Now()
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	took := time.Since(start)
	if err != nil {
		if strings.Contains(err.Error(), "statement timeout") {
			return took, 0, false
		}
		log.Fatal(err)
	}
	return took, n, true
}

func hops(ctx context.Context, s *strata.Strata, sys context.Context, tenant string, rng *rand.Rand, adj [][]int32) {
	starts := make([]int, *queries)
	for i := range starts {
		starts[i] = rng.IntN(len(adj))
	}
	sample := starts[:min(*cteQueries, len(starts))]
	fmt.Printf("## k-hop neighbourhood (out edges) from %d random nodes\n\n", len(starts))
	fmt.Printf("Strata: `Neighbourhood(depth k)` through the Go API, every node found (no limit). CTE: on `bench_edges`, %d of the same starts, %s statement timeout.\n\n",
		*cteQueries, *cteTimeout)
	fmt.Printf("Strata p50 and p99 over all %d starts; every other column on the CTEs' %d starts (ratios: the CTE's p50 over Strata's there). Each case runs once untimed over those starts before it is timed.\n\n", len(starts), len(sample))
	fmt.Println("| k | nodes found (median) | Strata p50 | Strata p99 | Strata p50, CTE starts | SQL walker p50 | tutorial CTE p50 | ratio | UNION CTE p50 | ratio |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	nodes := nodeNumbers(ctx, s, tenant, sample)
	defer harness.CPUProfile(*cpuProfile)()
	sqlWalker := graph.New(s.Pool(), s.Auth(), s.Docs(), s.Feed(), s.Listener(),
		graph.Config{MaxResults: 1_000_000, TimeBudget: time.Minute, MemoryEdges: -1})
	for k := 2; k <= 5; k++ {
		neighbourhood := func(g *graph.Store, starts []int) ([]time.Duration, []int) {
			var lat []time.Duration
			var sizes []int
			for _, st := range starts {
				t := time.Now()
				r, err := g.Neighbourhood(sys, tenant, graph.NodeRef{Collection: "n", ID: strconv.Itoa(st)},
					graph.Options{MaxDepth: k, Limit: 1_000_000})
				if err != nil {
					log.Fatal(err)
				}
				lat = append(lat, time.Since(t))
				sizes = append(sizes, len(r.Nodes))
			}
			return lat, sizes
		}
		// Every case first runs once over the CTEs' starts untimed, so that none pays for
		// the caches the case before it left cold.
		neighbourhood(s.Graph(), sample)
		lat, sizes := neighbourhood(s.Graph(), starts)
		neighbourhood(sqlWalker, sample)
		sqlLat, sqlSizes := neighbourhood(sqlWalker, sample)
		if !slices.Equal(sqlSizes, sizes[:len(sample)]) {
			log.Fatalf("the SQL walker and the in-memory index disagree at depth %d: %v vs %v", k, sqlSizes, sizes[:len(sample)])
		}
		sp50 := median(lat[:len(sample)]) // compare on the same starts
		row := fmt.Sprintf("| %d | %d | %s | %s | %s | %s |", k, medianInt(sizes), ms(median(lat)), ms(percentile(lat, 0.99)), ms(sp50), ms(median(sqlLat)))
		for _, q := range []string{ctePaths, cteUnion} {
			var cl []time.Duration
			timeouts := 0
			for _, n := range nodes {
				cte(ctx, s, q, n, k) // the untimed pass
			}
			for _, n := range nodes {
				d, _, ok := cte(ctx, s, q, n, k)
				if !ok {
					timeouts++
				}
				cl = append(cl, d)
			}
			c50 := median(cl)
			cell := ms(c50)
			if timeouts > len(nodes)/2 {
				cell = "> " + ms(*cteTimeout) + fmt.Sprintf(" (%d/%d timed out)", timeouts, len(nodes))
			} else if timeouts > 0 {
				cell += fmt.Sprintf(" (%d/%d timed out)", timeouts, len(nodes))
			}
			row += fmt.Sprintf(" %s | %.2f× |", cell, float64(c50)/float64(sp50))
		}
		fmt.Println(row)
	}
	fmt.Println()
}

func shortest(ctx context.Context, s *strata.Strata, sys context.Context, tenant string, rng *rand.Rand, adj [][]int32) {
	type pair struct{ a, b int }
	var pairs []pair
	for len(pairs) < *queries {
		a := rng.IntN(len(adj))
		b, steps := a, 2+rng.IntN(6)
		for range steps { // a random walk guarantees a path
			if len(adj[b]) == 0 {
				break
			}
			b = int(adj[b][rng.IntN(len(adj[b]))])
		}
		if b != a {
			pairs = append(pairs, pair{a, b})
		}
	}
	var lat []time.Duration
	var lengths []int
	for _, p := range pairs {
		t := time.Now()
		r, err := s.Graph().ShortestPath(sys, tenant, graph.NodeRef{Collection: "n", ID: strconv.Itoa(p.a)},
			graph.NodeRef{Collection: "n", ID: strconv.Itoa(p.b)}, "", graph.Options{})
		if err != nil {
			log.Fatal(err)
		}
		if !r.Found {
			log.Fatalf("no path from %d to %d", p.a, p.b)
		}
		lat = append(lat, time.Since(t))
		lengths = append(lengths, r.Length)
	}
	fmt.Printf("## Shortest path between random connected nodes (%d pairs)\n\n", len(pairs))
	fmt.Println("| path length (median) | p50 | p99 |\n|---:|---:|---:|")
	fmt.Printf("| %d | %s | %s |\n\n", medianInt(lengths), ms(median(lat)), ms(percentile(lat, 0.99)))
}

func closure(ctx context.Context, s *strata.Strata, sys context.Context, tenant string) {
	root := nodeNumbers(ctx, s, tenant, []int{0})[0]
	var lat, base []time.Duration
	found := 0
	for range 5 {
		t := time.Now()
		r, err := s.Graph().Dependents(sys, tenant, graph.NodeRef{Collection: "d", ID: "0"}, graph.Options{Limit: 1_000_000})
		if err != nil {
			log.Fatal(err)
		}
		lat = append(lat, time.Since(t))
		found = len(r.Nodes)
		d, n, ok := cte(ctx, s, `WITH RECURSIVE up(node) AS (SELECT $1::bigint UNION
			SELECT e.from_node FROM up JOIN graph_edges e ON e.to_node = up.node AND e.deleted_at IS NULL)
			SELECT count(*) - 1 FROM up`, root)
		if !ok || n != int64(found) {
			log.Fatal(errors.New("the CTE disagrees: " + strconv.FormatInt(n, 10) + " vs " + strconv.Itoa(found)))
		}
		base = append(base, d)
	}
	fmt.Printf("## Dependents closure: everything that depends on the root of a %d-node dependency graph\n\n", *nClosure)
	fmt.Println("| case | nodes | median of 5 |\n|---|---:|---:|")
	fmt.Printf("| Strata `Dependents` (depths, Go visited set) | %d | %s |\n", found, ms(median(lat)))
	fmt.Printf("| recursive CTE with UNION (reachability only, no depths) | %d | %s |\n\n", found, ms(median(base)))
	fmt.Printf("Strata takes %.2f× the CTE's time.\n\n", float64(median(lat))/float64(median(base)))
	_ = os.Stdout.Sync()
}

func median(d []time.Duration) time.Duration { return percentile(d, 0.5) }

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func medianInt(v []int) int {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func ms(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	if d < 10*time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

package graph_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/graph"
	"github.com/stratadb/strata/internal/graphgen"
)

// benchGraph loads a Barabási–Albert graph of n nodes (m edges added per node) and
// returns its out adjacency.
func benchGraph(b *testing.B, n, m int) (*env, [][]int32) {
	e := setup(b, graph.Config{MaxResults: 1_000_000})
	e.nodes(b, "n", n)
	from, to := graphgen.BarabasiAlbert(rand.New(rand.NewPCG(1, 2)), n, m)
	var lines strings.Builder
	for i := range from {
		fmt.Fprintf(&lines, `{"type": "e", "from": "n/%d", "to": "n/%d"}`+"\n", from[i], to[i])
	}
	if _, err := e.g.EdgeImport(e.ctx, e.Tenant, strings.NewReader(lines.String()), graph.ImportOptions{}); err != nil {
		b.Fatal(err)
	}
	// As autovacuum would after a bulk load: index-only scans need the visibility map. (The
	// checkpoint flushes the commit first: test servers commit asynchronously, and vacuum
	// does not mark pages whose commit is not yet on disk.)
	for _, sql := range []string{`CHECKPOINT`, `VACUUM ANALYZE graph_edges`, `VACUUM ANALYZE graph_nodes`} {
		if _, err := e.Pool.Exec(context.Background(), sql); err != nil {
			b.Fatal(err)
		}
	}
	return e, graphgen.Out(n, from, to)
}

// BenchmarkNeighbourhood3Hop is the 3-hop neighbourhood (out edges) of a random node of a
// 20,000-node power-law graph, every node found returned.
func BenchmarkNeighbourhood3Hop(b *testing.B) {
	e, adj := benchGraph(b, 20000, 5)
	rng := rand.New(rand.NewPCG(3, 4))
	found := 0
	for b.Loop() {
		r, err := e.g.Neighbourhood(e.ctx, e.Tenant, ref("n", rng.IntN(len(adj))), graph.Options{MaxDepth: 3, Limit: 1_000_000})
		if err != nil {
			b.Fatal(err)
		}
		found += len(r.Nodes)
	}
	b.ReportMetric(float64(found)/float64(b.N), "nodes/op")
}

// BenchmarkNeighbourhood4HopMemory is the 4-hop neighbourhood of a random node of a
// 100,000-node power-law graph from the in-memory index.
func BenchmarkNeighbourhood4HopMemory(b *testing.B) {
	e, adj := benchGraph(b, 100000, 5)
	graph.SetIndexWait(e.g, time.Minute)
	rng := rand.New(rand.NewPCG(3, 4))
	found := 0
	for b.Loop() {
		r, err := e.g.Neighbourhood(e.ctx, e.Tenant, ref("n", rng.IntN(len(adj))), graph.Options{MaxDepth: 4, Limit: 1_000_000})
		if err != nil {
			b.Fatal(err)
		}
		found += len(r.Nodes)
	}
	b.ReportMetric(float64(found)/float64(b.N), "nodes/op")
}

// BenchmarkShortestPath is a shortest path between random connected nodes of the same graph.
func BenchmarkShortestPath(b *testing.B) {
	e, adj := benchGraph(b, 20000, 5)
	rng := rand.New(rand.NewPCG(3, 4))
	for b.Loop() {
		a := rng.IntN(len(adj))
		c := a
		for range 4 {
			if len(adj[c]) > 0 {
				c = int(adj[c][rng.IntN(len(adj[c]))])
			}
		}
		r, err := e.g.ShortestPath(e.ctx, e.Tenant, ref("n", a), ref("n", c), "", graph.Options{})
		if err != nil || !r.Found {
			b.Fatal(r, err)
		}
	}
}

// Package graphgen generates graphs for benchmarks: scale-free ones whose degrees follow a
// power law, as social, dependency and link graphs do.
package graphgen

import (
	"math/rand/v2"
	"slices"
)

// BarabasiAlbert grows a graph of n nodes (0 … n-1): each new node links to m distinct
// earlier nodes picked with probability proportional to their degree (and, one time in
// ten, uniformly, so that no region is starved), and each edge points one way or the other
// at random — so degrees follow a power law in both directions and the graph has cycles.
// It returns the edges as two parallel slices.
func BarabasiAlbert(rng *rand.Rand, n, m int) (from, to []int32) {
	ends := make([]int32, 0, 2*n*m) // every edge's two ends: picking from it picks by degree
	for v := 1; v < n; v++ {
		var picked []int32
		for len(picked) < min(m, v) {
			u := int32(rng.IntN(v))
			if len(ends) > 0 && rng.IntN(10) != 0 {
				u = ends[rng.IntN(len(ends))]
			}
			if !slices.Contains(picked, u) {
				picked = append(picked, u)
			}
		}
		for _, u := range picked {
			a, b := int32(v), u
			if rng.IntN(2) == 0 {
				a, b = b, a
			}
			from, to = append(from, a), append(to, b)
			ends = append(ends, a, b)
		}
	}
	return from, to
}

// Out returns the out-neighbours of each of n nodes.
func Out(n int, from, to []int32) [][]int32 {
	adj := make([][]int32, n)
	for i := range from {
		adj[from[i]] = append(adj[from[i]], to[i])
	}
	return adj
}

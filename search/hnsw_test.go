package search

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

func randomVectors(rng *rand.Rand, n, dim int, clusters int) [][]float32 {
	centers := make([][]float32, clusters)
	for c := range centers {
		centers[c] = make([]float32, dim)
		for j := range centers[c] {
			centers[c][j] = float32(rng.NormFloat64() * 3)
		}
	}
	out := make([][]float32, n)
	for i := range out {
		c := centers[rng.IntN(clusters)]
		out[i] = make([]float32, dim)
		for j := range out[i] {
			out[i][j] = c[j] + float32(rng.NormFloat64())
		}
	}
	return out
}

// near is a query from the data's distribution: a point moved a little.
func near(rng *rand.Rand, v []float32) []float32 {
	q := make([]float32, len(v))
	for i := range v {
		q[i] = v[i] + float32(rng.NormFloat64()*0.5)
	}
	return q
}

// exact is the brute-force answer: the k keys nearest q among those accept allows.
func exact(h *hnsw, vecs [][]float32, q []float32, k int, accept func(string) bool) []string {
	pq := h.prepare(q)
	type kd struct {
		key string
		d   float32
	}
	var all []kd
	for i, v := range vecs {
		key := strconv.Itoa(i)
		if accept != nil && !accept(key) {
			continue
		}
		all = append(all, kd{key, h.distFunc(pq, h.prepare(v))})
	}
	slices.SortFunc(all, func(a, b kd) int { return cmp.Compare(a.d, b.d) })
	var out []string
	for _, x := range all[:min(k, len(all))] {
		out = append(out, x.key)
	}
	return out
}

func recall(got []hit, want []string) float64 {
	if len(want) == 0 {
		return 1
	}
	set := map[string]bool{}
	for _, w := range want {
		set[w] = true
	}
	n := 0
	for _, g := range got {
		if set[g.key] {
			n++
		}
	}
	return float64(n) / float64(len(want))
}

func TestHNSWRecall(t *testing.T) {
	t.Parallel()
	for _, metric := range []string{"cosine", "l2", "ip"} {
		t.Run(metric, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(1, 2))
			vecs := randomVectors(rng, 5000, 48, 20)
			h := newHNSW(48, metric)
			for i, v := range vecs {
				h.add(strconv.Itoa(i), v)
			}
			total := 0.0
			for range 100 {
				q := near(rng, vecs[rng.IntN(len(vecs))])
				total += recall(h.search(q, 10, 64, nil), exact(h, vecs, q, 10, nil))
			}
			if r := total / 100; r < 0.95 {
				t.Fatalf("recall@10 %.3f", r)
			}
		})
	}
}

func TestHNSWFilterAndDelete(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	vecs := randomVectors(rng, 3000, 32, 10)
	h := newHNSW(32, "cosine")
	for i, v := range vecs {
		h.add(strconv.Itoa(i), v)
	}
	// Delete every third vector: searches never return them.
	for i := 0; i < len(vecs); i += 3 {
		if !h.remove(strconv.Itoa(i)) {
			t.Fatal("remove")
		}
	}
	alive := func(key string) bool { i, _ := strconv.Atoi(key); return i%3 != 0 }
	even := func(key string) bool { i, _ := strconv.Atoi(key); return i%3 != 0 && i%2 == 0 }
	total, totalF := 0.0, 0.0
	for range 50 {
		q := near(rng, vecs[rng.IntN(len(vecs))])
		got := h.search(q, 10, 64, nil)
		for _, g := range got {
			if !alive(g.key) {
				t.Fatalf("deleted %s returned", g.key)
			}
		}
		total += recall(got, exact(h, vecs, q, 10, alive))
		gotF := h.search(q, 10, 64, func(k string) bool { i, _ := strconv.Atoi(k); return i%2 == 0 })
		for _, g := range gotF {
			if !even(g.key) {
				t.Fatalf("filtered-out %s returned", g.key)
			}
		}
		totalF += recall(gotF, exact(h, vecs, q, 10, even))
	}
	if total/50 < 0.95 || totalF/50 < 0.95 {
		t.Fatalf("recall after deletes %.3f, filtered %.3f", total/50, totalF/50)
	}
	if live, dead := h.size(); live != 2000 || dead != 1000 {
		t.Fatalf("size %d live %d dead", live, dead)
	}
	// Replacing a vector moves it.
	h.add("1", vecs[2])
	if got := h.search(vecs[2], 1, 32, func(k string) bool { return k == "1" }); len(got) != 1 || got[0].dist > -0.999 {
		t.Fatalf("replaced vector: %v", got)
	}
}

// BenchmarkHNSWBuild512 inserts 512-d vectors; ns/op is per insert.
func BenchmarkHNSWBuild512(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	vecs := randomVectors(rng, b.N, 512, 50)
	h := newHNSW(512, "cosine")
	b.ResetTimer()
	for i := range b.N {
		h.add(strconv.Itoa(i), vecs[i])
	}
}

// BenchmarkHNSWSearch512 is a k=10, ef=64 search of a 20,000 × 512-d graph.
func BenchmarkHNSWSearch512(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	vecs := randomVectors(rng, 20000, 512, 50)
	h := newHNSW(512, "cosine")
	for i, v := range vecs {
		h.add(strconv.Itoa(i), v)
	}
	b.ResetTimer()
	for b.Loop() {
		h.search(near(rng, vecs[rng.IntN(len(vecs))]), 10, 64, nil)
	}
}

func TestDot(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 3, 4, 17, 512} {
		a, b := randomVectors(rng, 1, n, 1)[0], randomVectors(rng, 1, n, 1)[0]
		if d1, d2 := dot(a, b), dotGo(a, b); math.Abs(float64(d1-d2)) > 1e-3*math.Max(1, math.Abs(float64(d2))) {
			t.Fatalf("n=%d: %v vs %v", n, d1, d2)
		}
	}
}

func BenchmarkDot512(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	x, y := randomVectors(rng, 1, 512, 1)[0], randomVectors(rng, 1, 512, 1)[0]
	b.Run("gonum", func(b *testing.B) {
		for b.Loop() {
			dot(x, y)
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			dotGo(x, y)
		}
	})
}

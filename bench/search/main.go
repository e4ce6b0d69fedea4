// Command search measures search in one run, on an embedded PostgreSQL with production
// durability:
//
//   - full-text: a 2-term query over generated documents (Zipf-distributed words), Strata's
//     search (ranking, prefix on the last word, typo lookup, keyset cursor) against raw
//     PostgreSQL's plainto_tsquery over a bare table with a GIN index on the same texts;
//
//   - k-NN over clustered 512-d vectors: exact scan, the HNSW index and the planner's
//     choice, unfiltered and with 10% and 1% filters, with recall@10 against exact;
//
//   - the built-in embedder's sentences per second on one core.
//
//     go run ./search [-docs 1000000] [-vectors 100000] [-queries 200]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/bench/internal/harness"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/search"
	"github.com/stratadb/strata/search/embed"
)

var (
	nDocs    = flag.Int("docs", 1_000_000, "documents of the full-text case")
	nVectors = flag.Int("vectors", 100_000, "documents of the k-NN case")
	dim      = flag.Int("dim", 512, "vector dimension")
	queries  = flag.Int("queries", 200, "queries per timed case")
	sentence = flag.Int("sentences", 2000, "sentences embedded by the embedder case")
	seed     = flag.Uint64("seed", 1, "random seed")
)

func main() {
	flag.Parse()
	ctx := context.Background()
	s, cleanup, err := harness.Platform(ctx, strata.Config{AdminPassword: "bench-admin-password"})
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	sys := auth.System(ctx)
	rng := rand.New(rand.NewPCG(*seed, 11))
	fmt.Printf("# Search (GOMAXPROCS=%d, %s)\n\n", runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.DateOnly))
	tenant, err := harness.Tenant(ctx, s, "search")
	if err != nil {
		log.Fatal(err)
	}
	embedder()
	if *nVectors > 0 {
		knn(sys, s, tenant, rng)
	}
	if *nDocs > 0 {
		fullText(sys, s, tenant, rng)
	}
}

// words is a vocabulary of pronounceable made-up words, drawn with a Zipf distribution.
type words struct {
	list []string
	zipf *rand.Zipf
}

func newWords(rng *rand.Rand, n int) *words {
	syll := []string{"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu", "fe", "bi", "ha"}
	seen := map[string]bool{}
	w := &words{zipf: rand.NewZipf(rng, 1.1, 2, uint64(n-1))}
	for len(w.list) < n {
		var b strings.Builder
		for range 2 + rng.IntN(3) {
			b.WriteString(syll[rng.IntN(len(syll))])
		}
		if !seen[b.String()] {
			seen[b.String()] = true
			w.list = append(w.list, b.String())
		}
	}
	return w
}

func (w *words) text(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = w.list[w.zipf.Uint64()]
	}
	return strings.Join(parts, " ")
}

func fullText(ctx context.Context, s *strata.Strata, tenant string, rng *rand.Rand) {
	voc := newWords(rng, 50_000)
	texts := make([]string, *nDocs)
	for i := range texts {
		texts[i] = voc.text(8 + rng.IntN(24))
	}
	if _, err := s.Docs().CollectionCreate(ctx, tenant, doc.CollectionInput{Name: "articles"}); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	rep, err := s.Docs().DocImport(ctx, tenant, "articles", harness.Generate(func(w io.Writer) {
		for i, t := range texts {
			fmt.Fprintf(w, `{"id": "a%d", "data": {"text": %q}}`+"\n", i, t)
		}
	}), doc.ImportOptions{Envelopes: true})
	if err != nil || rep.Failed > 0 {
		log.Fatalf("import: %+v %v", rep, err)
	}
	imported := time.Since(start)
	start = time.Now()
	if _, err := s.Search().SettingsPut(ctx, tenant, "articles", search.Settings{Text: &search.TextSettings{Fields: []search.TextField{{Path: "text"}}}}); err != nil {
		log.Fatal(err)
	}
	waitReady(ctx, s, tenant, "articles")
	indexed := time.Since(start)

	// The same texts in a bare table with a GIN index.
	pool := s.Pool()
	exec(ctx, s, `CREATE TABLE bench_fts (id text PRIMARY KEY, tsv tsvector NOT NULL)`)
	start = time.Now()
	exec(ctx, s, `INSERT INTO bench_fts SELECT id, to_tsvector('english', body->>'text') FROM strata.documents
		WHERE collection_id = (SELECT id FROM strata.collections WHERE name = 'articles')`)
	exec(ctx, s, `CREATE INDEX ON bench_fts USING gin (tsv)`)
	rawIndexed := time.Since(start)
	exec(ctx, s, `VACUUM ANALYZE bench_fts`)
	exec(ctx, s, `CHECKPOINT`)
	exec(ctx, s, `VACUUM ANALYZE strata.search_text`)

	// 2-term queries from the middle of the distribution: words that match thousands.
	qs := make([]string, *queries)
	for i := range qs {
		qs[i] = voc.list[20+rng.IntN(400)] + " " + voc.list[20+rng.IntN(400)]
	}
	var matched []int
	for _, q := range qs {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM bench_fts WHERE tsv @@ plainto_tsquery('english', $1)`, q).Scan(&n); err != nil {
			log.Fatal(err)
		}
		matched = append(matched, n)
	}
	slices.Sort(matched)
	i := 0
	next := func() string { i++; return qs[i%len(qs)] }
	res := harness.Interleave(3, 1, 5*time.Second,
		harness.Case{Name: "raw PostgreSQL: plainto_tsquery, ts_rank_cd, LIMIT 10", Op: func(c context.Context) error {
			rows, err := pool.Query(c, `SELECT id FROM bench_fts, plainto_tsquery('english', $1) q WHERE tsv @@ q
				ORDER BY ts_rank_cd(tsv, q) DESC LIMIT 10`, next())
			if err != nil {
				return err
			}
			rows.Close()
			return rows.Err()
		}},
		harness.Case{Name: "Strata search, k 10 (prefix + typo lookup, documents returned)", Op: func(c context.Context) error {
			_, err := s.Search().Search(ctx, tenant, "articles", search.Query{Q: next(), K: 10})
			return err
		}},
	)
	fmt.Printf("## Full-text: %d documents of 8–31 words (vocabulary 50,000, Zipf)\n\n", *nDocs)
	fmt.Printf("Import %s (%.0f docs/s); Strata's text index build %s; raw table + GIN index %s. Matches per query: median %d, p90 %d.\n\n",
		imported.Round(time.Millisecond), float64(*nDocs)/imported.Seconds(), indexed.Round(time.Millisecond), rawIndexed.Round(time.Millisecond),
		matched[len(matched)/2], matched[len(matched)*9/10])
	harness.Table(os.Stdout, res[0], res[1])
	fmt.Println()
}

// cluster draws clustered vectors, as embeddings are: a centre plus noise.
type cluster struct {
	centres [][]float32
	rng     *rand.Rand
}

func (c *cluster) vec() []float32 {
	ctr := c.centres[c.rng.IntN(len(c.centres))]
	v := make([]float32, len(ctr))
	for i := range v {
		v[i] = ctr[i] + float32(c.rng.NormFloat64()*0.35)
	}
	return v
}

func knn(ctx context.Context, s *strata.Strata, tenant string, rng *rand.Rand) {
	c := &cluster{rng: rng}
	for range 200 {
		ctr := make([]float32, *dim)
		for i := range ctr {
			ctr[i] = float32(rng.NormFloat64())
		}
		c.centres = append(c.centres, ctr)
	}
	// The filters' path is declared indexed, as an application filtering on it would.
	if _, err := s.Docs().CollectionCreate(ctx, tenant, doc.CollectionInput{Name: "items", Indexes: []string{"bucket"}}); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	rep, err := s.Docs().DocImport(ctx, tenant, "items", harness.Generate(func(w io.Writer) {
		for i := range *nVectors {
			fmt.Fprintf(w, `{"id": "i%d", "data": {"bucket": %d, "v": %s}}`+"\n", i, i%100, vecJSON(c.vec()))
		}
	}), doc.ImportOptions{Envelopes: true})
	if err != nil || rep.Failed > 0 {
		log.Fatalf("import: %+v %v", rep, err)
	}
	imported := time.Since(start)
	start = time.Now()
	if _, err := s.Search().SettingsPut(ctx, tenant, "items", search.Settings{Vectors: []search.VectorField{{Name: "v", Dimension: *dim, Metric: "cosine", Path: "v"}}}); err != nil {
		log.Fatal(err)
	}
	waitReady(ctx, s, tenant, "items")
	built := time.Since(start)
	waitCollectionIndexes(ctx, s, tenant, "items")
	exec(ctx, s, `VACUUM ANALYZE strata.documents`)
	exec(ctx, s, `VACUUM ANALYZE strata.search_vectors`)
	fmt.Printf("## k-NN: %d × %d-d clustered vectors (cosine), k = 10\n\n", *nVectors, *dim)
	fmt.Printf("Import %s; stored and HNSW index built (this node) %s.\n\n", imported.Round(time.Millisecond), built.Round(time.Millisecond))
	fmt.Println("| filter (selectivity) | plan | path taken | p50 | p99 | recall@10 vs exact | always 10 |")
	fmt.Println("|---|---|---|---:|---:|---:|---|")
	qv := make([][]float32, *queries)
	for i := range qv {
		qv[i] = c.vec()
	}
	for _, f := range []struct{ filter, label string }{{"", "none (100%)"}, {"bucket < 10", "bucket < 10 (10%)"}, {"bucket = 0", "bucket = 0 (1%)"}} {
		truth := make([][]string, len(qv))
		for _, plan := range []string{"exact", "index", "auto"} {
			var lat []time.Duration
			paths := map[string]int{}
			recall, full := 0.0, true
			for qi, q := range qv {
				t := time.Now()
				r, err := s.Search().Search(ctx, tenant, "items", search.Query{Mode: "vector", Vector: q, K: 10, Filter: f.filter, Plan: plan, Fields: []string{"-"}})
				if err != nil {
					log.Fatalf("%s %s: %v", f.filter, plan, err)
				}
				lat = append(lat, time.Since(t))
				paths[r.Path]++
				ids := make([]string, len(r.Items))
				for i, h := range r.Items {
					ids[i] = h.ID
				}
				full = full && len(ids) == 10
				if plan == "exact" {
					truth[qi] = ids
				}
				hit := 0
				for _, id := range ids {
					if slices.Contains(truth[qi], id) {
						hit++
					}
				}
				recall += float64(hit) / float64(max(1, len(truth[qi])))
			}
			slices.Sort(lat)
			fmt.Printf("| %s | %s | %s | %s | %s | %.3f | %v |\n", f.label, plan, pathSummary(paths), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]),
				recall/float64(len(qv)), full)
		}
	}
	fmt.Println()
}

func embedder() {
	e, err := embed.Builtin()
	if err != nil {
		log.Fatal(err)
	}
	base := []string{"How do I fix my car?", "The quick brown fox jumps over the lazy dog.", "Automobile repair shop near me",
		"Electric vehicles are getting cheaper every year.", "Our cat sleeps all afternoon on the warm sofa.",
		"Semantic search finds documents by meaning rather than by exact words."}
	texts := make([]string, *sentence)
	for i := range texts {
		texts[i] = base[i%len(base)] + fmt.Sprintf(" (note %d)", i)
	}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < len(texts); i += 32 {
		if _, err := e.Embed(context.Background(), texts[i:min(i+32, len(texts))]); err != nil {
			log.Fatal(err)
		}
	}
	took, cpu := time.Since(start), cpuTime()-cpu0
	fmt.Printf("## Built-in embedder (%s), one core (GOMAXPROCS=1)\n\n", e.Name())
	fmt.Printf("%d sentences of 6–13 words in batches of 32: %s wall clock (%.0f sentences/s), %s of CPU time: **%.0f sentences per CPU-second**"+
		" (the process's user+system time, which a shared machine does not inflate).\n\n",
		len(texts), took.Round(time.Millisecond), float64(len(texts))/took.Seconds(), cpu.Round(time.Millisecond), float64(len(texts))/cpu.Seconds())
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pathSummary(paths map[string]int) string {
	var out []string
	for p, n := range paths {
		out = append(out, fmt.Sprintf("%s ×%d", p, n))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func vecJSON(v []float32) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		if math.IsNaN(float64(x)) {
			x = 0
		}
		fmt.Fprintf(&b, "%.4f", x)
	}
	b.WriteByte(']')
	return b.String()
}

func waitReady(ctx context.Context, s *strata.Strata, tenant, coll string) {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		states, err := s.Search().Indexes(ctx, tenant, coll)
		if err != nil {
			log.Fatal(err)
		}
		ready := len(states) > 0
		for _, st := range states {
			if st.Status == "failed" {
				log.Fatalf("index %s failed: %s", st.Name, st.Error)
			}
			ready = ready && st.Status == "ready" && (st.Memory == nil || st.Memory.Status == "ready")
		}
		if ready {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatal("indexes not ready after 30 minutes")
}

func waitCollectionIndexes(ctx context.Context, s *strata.Strata, tenant, coll string) {
	for range 6000 {
		c, err := s.Docs().CollectionGet(ctx, tenant, coll)
		if err != nil {
			log.Fatal(err)
		}
		ready := true
		for _, ix := range c.Indexes {
			ready = ready && ix.Status == "ready"
		}
		if ready {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatal("collection indexes not ready")
}

func exec(ctx context.Context, s *strata.Strata, sql string) {
	if _, err := s.Pool().Exec(ctx, sql); err != nil {
		log.Fatalf("%s: %v", sql, err)
	}
}

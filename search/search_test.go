package search_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/queue"
	"github.com/stratadb/strata/search"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type env struct {
	*testworld.World
	docs *doc.Store
	s    *search.Store
	q    *queue.Client
	ctx  context.Context
}

func setup(t testing.TB, cfg search.Config) *env {
	t.Helper()
	w := testworld.New(t, search.Schema)
	docs := doc.New(w.Pool, w.Auth, w.Feed, w.Listener, doc.Config{})
	q := queue.New(w.Pool, w.Auth, w.Listener, queue.Config{PollInterval: 100 * time.Millisecond})
	s := search.New(w.Pool, w.Auth, docs, q, w.Feed, w.Listener, cfg)
	bg, stop := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { s.Run(bg); done <- struct{}{} }()
	go func() { q.Run(bg); done <- struct{}{} }()
	t.Cleanup(func() { stop(); <-done; <-done })
	return &env{World: w, docs: docs, s: s, q: q, ctx: w.As(testworld.Owner)}
}

var wantProblem = testworld.WantProblem

func (e *env) collection(t testing.TB, name string) {
	t.Helper()
	if _, err := e.docs.CollectionCreate(e.ctx, e.Tenant, doc.CollectionInput{Name: name}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) put(t testing.TB, coll, id, body string) {
	t.Helper()
	if _, err := e.docs.DocReplace(e.ctx, e.Tenant, coll, id, json.RawMessage(body), nil); err != nil {
		t.Fatalf("put %s: %v", id, err)
	}
}

func (e *env) settings(t testing.TB, coll string, st search.Settings) {
	t.Helper()
	if _, err := e.s.SettingsPut(e.ctx, e.Tenant, coll, st); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits until every index of the collection is ready.
func (e *env) waitReady(t testing.TB, coll string) []search.IndexState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		states, err := e.s.Indexes(e.ctx, e.Tenant, coll)
		if err != nil {
			t.Fatal(err)
		}
		ready := true
		for _, st := range states {
			if st.Status == "failed" {
				t.Fatalf("index %s failed: %s", st.Name, st.Error)
			}
			ready = ready && st.Status == "ready" && (st.Memory == nil || st.Memory.Status == "ready")
		}
		if ready {
			return states
		}
		if time.Now().After(deadline) {
			t.Fatalf("indexes not ready: %+v", states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ids(r search.Results) []string {
	out := []string{}
	for _, h := range r.Items {
		out = append(out, h.ID)
	}
	return out
}

func (e *env) search(t testing.TB, coll string, q search.Query) search.Results {
	t.Helper()
	r, err := e.s.Search(e.ctx, e.Tenant, coll, q)
	if err != nil {
		t.Fatalf("search %+v: %v (%v)", q, err, errors.Unwrap(err))
	}
	return r
}

var articles = map[string]string{
	"a1": `{"title": "Choosing a family vehicle", "body": "Minivans and SUVs compared for families", "tags": ["cars", "family"], "year": 2021, "region": "eu"}`,
	"a2": `{"title": "Red car review", "body": "The red sports car is fast and loud", "tags": ["cars"], "year": 2023, "region": "us"}`,
	"a3": `{"title": "Banana bread recipe", "body": "Ripe bananas, flour, sugar and butter", "tags": ["food"], "year": 2020, "region": "eu"}`,
	"a4": `{"title": "Electric vehicles in winter", "body": "Battery range drops in the cold", "tags": ["cars", "energy"], "year": 2024, "region": "us"}`,
	"a5": `{"title": "Gardening basics", "body": "Vegetables grow best in full sun; a car park is no garden", "tags": ["garden"], "year": 2019, "region": "eu"}`,
}

func TestTextSearch(t *testing.T) {
	t.Parallel()
	e := setup(t, search.Config{})
	e.collection(t, "articles")
	e.settings(t, "articles", search.Settings{Text: &search.TextSettings{
		Fields: []search.TextField{{Path: "title", Weight: "A"}, {Path: "body"}}, Facets: []string{"tags", "region"}}})
	for id, body := range articles {
		e.put(t, "articles", id, body)
	}
	q := func(query string, extra ...func(*search.Query)) []string {
		t.Helper()
		sq := search.Query{Q: query}
		for _, f := range extra {
			f(&sq)
		}
		return ids(e.search(t, "articles", sq))
	}
	// Written documents are searchable at once: the index is written with them.
	if got := q("vehicle "); !slices.Equal(got, []string{"a1", "a4"}) && !slices.Equal(got, []string{"a4", "a1"}) {
		t.Fatalf("vehicle: %v", got)
	}
	// A title match (weight A) ranks above a body match.
	if got := q("car "); len(got) != 2 || got[0] != "a2" {
		t.Fatalf("car: %v", got)
	}
	if got := q("vehicel "); len(got) != 2 {
		t.Fatalf("one typo in a 7-letter word: %v", got)
	}
	if got := q("gardning "); !slices.Equal(got, []string{"a5"}) {
		t.Fatalf("a missing letter: %v", got)
	}
	if got := q("veh"); len(got) != 2 {
		t.Fatalf("prefix of the last word: %v", got)
	}
	if got := q(`"red sports car"`); !slices.Equal(got, []string{"a2"}) {
		t.Fatalf("phrase: %v", got)
	}
	if got := q("car -red "); !slices.Equal(got, []string{"a5"}) {
		t.Fatalf("exclusion: %v", got)
	}
	if got := q("banana or garden "); len(got) != 2 {
		t.Fatalf("or: %v", got)
	}
	if got := q("car ", func(s *search.Query) { s.Filter = "year >= 2020" }); !slices.Equal(got, []string{"a2"}) {
		t.Fatalf("filtered: %v", got)
	}
	if got := q("vehicles ", func(s *search.Query) { s.Sort = "-year" }); !slices.Equal(got, []string{"a4", "a1"}) {
		t.Fatalf("sorted by year: %v", got)
	}
	// Facets count every match; highlights mark the words.
	r := e.search(t, "articles", search.Query{Q: "car or vehicle ", Facets: []string{"tags"}, Highlight: true})
	if fmt.Sprint(r.Facets["tags"][0]) != "{cars 3}" {
		t.Fatalf("facets %v", r.Facets)
	}
	if h := r.Items[0].Highlights; h == nil || !strings.Contains(h["title"]+h["body"], "<mark>") {
		t.Fatalf("highlights %+v", r.Items[0])
	}
	// Pages never repeat or skip.
	var seen []string
	cursor := ""
	for range 10 {
		r := e.search(t, "articles", search.Query{Q: "car or vehicle or banana or garden ", K: 2, Cursor: cursor, Fields: []string{"-"}})
		seen = append(seen, ids(r)...)
		if r.NextCursor == "" {
			break
		}
		cursor = r.NextCursor
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"a1", "a2", "a3", "a4", "a5"}) {
		t.Fatalf("pages: %v", seen)
	}
	// Updates and deletions show at once.
	e.put(t, "articles", "a3", `{"title": "Truck maintenance", "body": "Oil and tyres"}`)
	if got := q("banana "); len(got) != 0 {
		t.Fatalf("after update: %v", got)
	}
	if _, err := e.docs.DocDelete(e.ctx, e.Tenant, "articles", "a2", nil); err != nil {
		t.Fatal(err)
	}
	if got := q("sports "); len(got) != 0 {
		t.Fatalf("after delete: %v", got)
	}

	// Bad input.
	_, err := e.s.Search(e.ctx, e.Tenant, "articles", search.Query{Q: "car", Filter: "year >"})
	wantProblem(t, err, 400, "invalid_filter")
	_, err = e.s.Search(e.ctx, e.Tenant, "articles", search.Query{Q: "car", Facets: []string{"year"}})
	wantProblem(t, err, 400, "invalid_facet")
	_, err = e.s.Search(e.ctx, e.Tenant, "articles", search.Query{Q: "car", K: 100000})
	wantProblem(t, err, 400, "invalid_k")
	_, err = e.s.Search(e.ctx, e.Tenant, "articles", search.Query{Q: "car", Cursor: "xyz"})
	wantProblem(t, err, 400, "invalid_cursor")
	_, err = e.s.Search(e.ctx, e.Tenant, "articles", search.Query{Q: "car", Mode: "semantic"})
	wantProblem(t, err, 422, "semantic_not_configured")
	e.collection(t, "plain")
	_, err = e.s.Search(e.ctx, e.Tenant, "plain", search.Query{Q: "car"})
	wantProblem(t, err, 422, "search_not_configured")
	_, err = e.s.SettingsPut(e.ctx, e.Tenant, "plain", search.Settings{Text: &search.TextSettings{
		Fields: []search.TextField{{Path: "title"}}, Language: "klingon"}})
	wantProblem(t, err, 422, "invalid_settings")
}

// Documents written before the settings are indexed by the build, with progress.
func TestIndexBuild(t *testing.T) {
	t.Parallel()
	e := setup(t, search.Config{})
	e.collection(t, "notes")
	var lines strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&lines, `{"id": "n%d", "data": {"text": "note number %d about %s"}}`+"\n", i, i, []string{"apples", "pears", "plums"}[i%3])
	}
	if _, err := e.docs.DocImport(e.ctx, e.Tenant, "notes", strings.NewReader(lines.String()), doc.ImportOptions{Envelopes: true}); err != nil {
		t.Fatal(err)
	}
	e.settings(t, "notes", search.Settings{Text: &search.TextSettings{Fields: []search.TextField{{Path: "text"}}}})
	states := e.waitReady(t, "notes")
	if states[0].RowsDone != 5000 || states[0].Progress != 1 {
		t.Fatalf("index state %+v", states)
	}
	r := e.search(t, "notes", search.Query{Q: "pears ", K: 1000})
	if len(r.Items) != 1000 || r.NextCursor == "" {
		t.Fatalf("pears: %d items", len(r.Items))
	}
	// Imports after the settings are indexed in their transaction.
	if _, err := e.docs.DocImport(e.ctx, e.Tenant, "notes", strings.NewReader(`{"text": "quinces"}`+"\n"), doc.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := ids(e.search(t, "notes", search.Query{Q: "quinces "})); len(got) != 1 {
		t.Fatalf("imported: %v", got)
	}
}

func vec(rng *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestFilteredKNN checks that vector search returns k results at every selectivity, with
// recall against the exact answer, by every path.
func TestFilteredKNN(t *testing.T) {
	t.Parallel()
	e := setup(t, search.Config{ExactBelow: 100})
	e.collection(t, "items")
	const n, dim = 3000, 16
	rng := rand.New(rand.NewPCG(1, 1))
	var lines strings.Builder
	for i := range n {
		// bucket: 1% of documents have 0, 10% have < 10.
		fmt.Fprintf(&lines, `{"id": "i%d", "data": {"bucket": %d, "v": %s}}`+"\n", i, i%100, mustJSON(vec(rng, dim)))
	}
	if _, err := e.docs.DocImport(e.ctx, e.Tenant, "items", strings.NewReader(lines.String()), doc.ImportOptions{Envelopes: true}); err != nil {
		t.Fatal(err)
	}
	e.settings(t, "items", search.Settings{Vectors: []search.VectorField{{Name: "v", Dimension: dim, Metric: "l2", Path: "v"}}})
	e.waitReady(t, "items")
	for _, c := range []struct {
		filter string
		paths  []string
	}{
		{"bucket = 0", []string{"exact"}},                                     // 1%: 30 documents
		{"bucket < 10", []string{"index", "index+widened", "exact:fallback"}}, // 10%
		{"", []string{"index"}},                                               // 100%
	} {
		total := 0.0
		for range 20 {
			q := vec(rng, dim)
			exact := e.search(t, "items", search.Query{Mode: "vector", Vector: q, K: 10, Filter: c.filter, Plan: "exact", Fields: []string{"-"}})
			got := e.search(t, "items", search.Query{Mode: "vector", Vector: q, K: 10, Filter: c.filter, Fields: []string{"-"}})
			if len(got.Items) != 10 || len(exact.Items) != 10 {
				t.Fatalf("%q: %d results (exact %d), want 10", c.filter, len(got.Items), len(exact.Items))
			}
			if !slices.Contains(c.paths, got.Path) {
				t.Fatalf("%q: path %s, want one of %v", c.filter, got.Path, c.paths)
			}
			want := map[string]bool{}
			for _, h := range exact.Items {
				want[h.ID] = true
			}
			hits := 0
			for _, h := range got.Items {
				if want[h.ID] {
					hits++
				}
			}
			total += float64(hits) / 10
		}
		if r := total / 20; r < 0.95 {
			t.Fatalf("%q: recall@10 %.3f", c.filter, r)
		}
	}
	// A wrong-sized vector in a document is refused with the write.
	_, err := e.docs.DocReplace(e.ctx, e.Tenant, "items", "bad", json.RawMessage(`{"v": [1, 2]}`), nil)
	wantProblem(t, err, 422, "invalid_vector")
	if _, err := e.docs.DocGet(e.ctx, e.Tenant, "items", "bad"); err == nil {
		t.Fatal("the refused document was written")
	}
	// New vectors reach the index through the feed; deleted documents leave it.
	e.put(t, "items", "new", `{"bucket": 1, "v": `+mustJSON(make32(dim, 100))+`}`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.search(t, "items", search.Query{Mode: "vector", Vector: make32(dim, 100), K: 1, Plan: "index"})
		if len(r.Items) == 1 && r.Items[0].ID == "new" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new vector never reached the index: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := e.docs.DocDelete(e.ctx, e.Tenant, "items", "new", nil); err != nil {
		t.Fatal(err)
	}
	r := e.search(t, "items", search.Query{Mode: "vector", Vector: make32(dim, 100), K: 1, Plan: "index"})
	if len(r.Items) != 1 || r.Items[0].ID == "new" {
		t.Fatalf("a deleted document was returned: %+v", r)
	}
}

func make32(dim int, x float32) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = x
	}
	return v
}

// TestSemantic is seed 001's ask: "car" finds the documents about vehicles, automobiles
// and trucks before unrelated ones, by meaning (no document contains the word), through
// the built-in embedder, in semantic and hybrid mode — for documents embedded by the
// index build and for documents written afterwards (embedded by queue jobs).
func TestSemantic(t *testing.T) {
	t.Parallel()
	e := setup(t, search.Config{})
	e.collection(t, "notes")
	about := map[string]string{
		"v1": "The truck hauled a heavy load of cargo across the state.",
		"v2": "She finally bought a new automobile after years of saving.",
		"v3": "Electric vehicles are getting cheaper to drive every year.",
		"u1": "The recipe calls for two cups of flour and a pinch of salt.",
		"u2": "Our cat sleeps all afternoon on the warm sofa.",
		"u3": "The orchestra played a violin concerto by Mendelssohn.",
		"u4": "Interest rates rose again after the central bank met.",
	}
	for id, text := range about {
		if id == "v3" || id == "u4" {
			continue // written after the index is ready
		}
		e.put(t, "notes", id, mustJSON(map[string]string{"text": text}))
	}
	e.settings(t, "notes", search.Settings{
		Text:    &search.TextSettings{Fields: []search.TextField{{Path: "text"}}},
		Vectors: []search.VectorField{{Name: "meaning", Dimension: 512, Embed: &search.EmbedSource{Fields: []string{"text"}}}},
	})
	e.waitReady(t, "notes")
	e.put(t, "notes", "v3", mustJSON(map[string]string{"text": about["v3"]}))
	e.put(t, "notes", "u4", mustJSON(map[string]string{"text": about["u4"]}))

	vehicles := func(got []string) bool {
		return len(got) >= 3 && slices.Contains(got[:3], "v1") && slices.Contains(got[:3], "v2") && slices.Contains(got[:3], "v3")
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, mode := range []string{"semantic", "hybrid"} {
		for {
			r := e.search(t, "notes", search.Query{Q: "car", Mode: mode, K: 7, Fields: []string{"-"}})
			got := ids(r)
			if vehicles(got) && len(got) == 7 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s search for car: %v (path %s), want v1, v2, v3 first of all 7", mode, got, r.Path)
			}
			time.Sleep(50 * time.Millisecond) // the later writes' embedding jobs
		}
	}
	// Text mode only finds "car" as the start of "cargo" (search-as-you-type).
	if got := ids(e.search(t, "notes", search.Query{Q: "car"})); !slices.Equal(got, []string{"v1"}) {
		t.Fatalf("text search for car: %v, want [v1]", got)
	}
}

// TestRestart: a node started later (or restarted) finds the indexes ready in PostgreSQL,
// loads its in-memory vector index from the stored vectors without a rebuild, and answers
// through it.
func TestRestart(t *testing.T) {
	t.Parallel()
	e := setup(t, search.Config{ExactBelow: 10})
	e.collection(t, "items")
	rng := rand.New(rand.NewPCG(2, 2))
	var lines strings.Builder
	for i := range 500 {
		fmt.Fprintf(&lines, `{"id": "i%d", "data": {"v": %s}}`+"\n", i, mustJSON(vec(rng, 8)))
	}
	if _, err := e.docs.DocImport(e.ctx, e.Tenant, "items", strings.NewReader(lines.String()), doc.ImportOptions{Envelopes: true}); err != nil {
		t.Fatal(err)
	}
	e.settings(t, "items", search.Settings{Vectors: []search.VectorField{{Name: "v", Dimension: 8, Path: "v"}}})
	built := e.waitReady(t, "items")

	// A second node over the same database.
	docs := doc.New(e.Pool, e.Auth, e.Feed, e.Listener, doc.Config{})
	q := queue.New(e.Pool, e.Auth, e.Listener, queue.Config{})
	s2 := search.New(e.Pool, e.Auth, docs, q, e.Feed, e.Listener, search.Config{ExactBelow: 10})
	bg, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s2.Run(bg); close(done) }()
	defer func() { stop(); <-done }()
	e2 := &env{World: e.World, docs: docs, s: s2, ctx: e.ctx}
	after := e2.waitReady(t, "items")
	if !after[0].StartedAt.Equal(built[0].StartedAt) || after[0].FinishedAt == nil || !after[0].FinishedAt.Equal(*built[0].FinishedAt) {
		t.Fatalf("the index was rebuilt: before %+v, after %+v", built[0], after[0])
	}
	if after[0].Memory == nil || after[0].Memory.Vectors != 500 {
		t.Fatalf("memory index %+v", after[0].Memory)
	}
	r := e2.search(t, "items", search.Query{Mode: "vector", Vector: vec(rng, 8), K: 5, Plan: "index", Fields: []string{"-"}})
	if len(r.Items) != 5 || r.Path != "index" {
		t.Fatalf("after restart: %d items by %s", len(r.Items), r.Path)
	}
}

// Seed 003's partitions: a search limited to some partitions sees only their documents,
// through either path; each partition gets its own in-memory graph; a document that moves
// to another partition is found there.
func TestPartitions(t *testing.T) {
	t.Parallel()
	e := setup(t, search.Config{ExactBelow: 5})
	e.collection(t, "items")
	rng := rand.New(rand.NewPCG(4, 4))
	regions := []string{"eu", "us", "asia"}
	var lines strings.Builder
	for i := range 300 {
		fmt.Fprintf(&lines, `{"id": "i%d", "data": {"region": %q, "text": "item %d", "v": %s}}`+"\n", i, regions[i%3], i, mustJSON(vec(rng, 4)))
	}
	if _, err := e.docs.DocImport(e.ctx, e.Tenant, "items", strings.NewReader(lines.String()), doc.ImportOptions{Envelopes: true}); err != nil {
		t.Fatal(err)
	}
	e.settings(t, "items", search.Settings{Partition: "region",
		Text:    &search.TextSettings{Fields: []search.TextField{{Path: "text"}}},
		Vectors: []search.VectorField{{Name: "v", Dimension: 4, Metric: "l2", Path: "v"}}})
	states := e.waitReady(t, "items")
	for _, st := range states {
		if st.Name == "v" && (st.Memory == nil || st.Memory.Partitions != 3 || st.Memory.Vectors != 300) {
			t.Fatalf("memory index %+v", st.Memory)
		}
	}
	inRegion := func(r search.Results, want ...string) {
		t.Helper()
		for _, h := range r.Items {
			var n int
			fmt.Sscanf(h.ID, "i%d", &n)
			if !slices.Contains(want, regions[n%3]) {
				t.Fatalf("%s (%s) in a search of %v (path %s)", h.ID, regions[n%3], want, r.Path)
			}
		}
	}
	q := vec(rng, 4)
	for _, plan := range []string{"exact", "index"} {
		r := e.search(t, "items", search.Query{Mode: "vector", Vector: q, K: 10, Partitions: []string{"eu"}, Plan: plan, Fields: []string{"-"}})
		if len(r.Items) != 10 {
			t.Fatalf("%s: %d items", plan, len(r.Items))
		}
		inRegion(r, "eu")
		r = e.search(t, "items", search.Query{Mode: "vector", Vector: q, K: 10, Partitions: []string{"us", "asia"}, Plan: plan, Fields: []string{"-"}})
		inRegion(r, "us", "asia")
	}
	r := e.search(t, "items", search.Query{Q: "item", K: 1000, Partitions: []string{"asia"}, Fields: []string{"-"}})
	if len(r.Items) != 100 {
		t.Fatalf("text in asia: %d items", len(r.Items))
	}
	inRegion(r, "asia")

	// i0 moves from eu to us, with a vector equal to the query: first in us, gone from eu.
	e.put(t, "items", "i0", mustJSON(map[string]any{"region": "us", "text": "item 0", "v": q}))
	deadline := time.Now().Add(20 * time.Second)
	for {
		us := e.search(t, "items", search.Query{Mode: "vector", Vector: q, K: 1, Partitions: []string{"us"}, Plan: "index", Fields: []string{"-"}})
		eu := e.search(t, "items", search.Query{Mode: "vector", Vector: q, K: 300, Partitions: []string{"eu"}, Plan: "index", Fields: []string{"-"}})
		if len(us.Items) == 1 && us.Items[0].ID == "i0" && !slices.ContainsFunc(eu.Items, func(h search.Hit) bool { return h.ID == "i0" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the move: us %v, eu has i0: %v", ids(us), slices.Contains(ids(eu), "i0"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Partitions of an unpartitioned collection are refused.
	e.collection(t, "plain")
	e.settings(t, "plain", search.Settings{Text: &search.TextSettings{Fields: []search.TextField{{Path: "text"}}}})
	_, err := e.s.Search(e.ctx, e.Tenant, "plain", search.Query{Q: "x", Partitions: []string{"eu"}})
	wantProblem(t, err, 400, "not_partitioned")
}

// The search jobs run on each tenant's own queue, which its members may push to: a job
// naming another tenant's collection is discarded without touching it.
func TestJobsStayInTheirTenant(t *testing.T) {
	t.Parallel()
	e := setup(t, search.Config{})
	e.collection(t, "notes")
	e.put(t, "notes", "n1", `{"text": "a quiet afternoon"}`)
	e.settings(t, "notes", search.Settings{Vectors: []search.VectorField{{Name: "meaning", Dimension: 512, Embed: &search.EmbedSource{Fields: []string{"text"}}}}})
	before := e.waitReady(t, "notes")
	var coll string
	if err := e.Pool.QueryRow(e.ctx, `SELECT id FROM strata.collections WHERE name = 'notes'`).Scan(&coll); err != nil {
		t.Fatal(err)
	}
	outsider := e.As(testworld.Outsider)
	var pushed []queue.JobID
	for _, in := range []queue.JobInput{
		{Kind: "build", Payload: json.RawMessage(fmt.Sprintf(`{"collection_id": %q, "name": "meaning", "generation": 1}`, coll))},
		{Kind: "embed", Payload: json.RawMessage(fmt.Sprintf(`{"collection_id": %q, "field": "meaning", "ids": ["n1"]}`, coll))},
	} {
		p, err := e.q.JobPush(outsider, e.Other, "strata.search", in)
		if err != nil {
			t.Fatal(err)
		}
		pushed = append(pushed, p.ID)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, id := range pushed {
		for {
			j, err := e.q.JobGet(outsider, e.Other, "strata.search", id)
			if err != nil {
				t.Fatal(err)
			}
			if j.State == queue.StateDead || j.State == queue.StateCancelled {
				break
			}
			if j.State == queue.StateCompleted || time.Now().After(deadline) {
				t.Fatalf("job %s of another tenant's collection: %s", j.Kind, j.State)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	after := e.waitReady(t, "notes")
	if !after[0].StartedAt.Equal(before[0].StartedAt) {
		t.Fatal("another tenant's job rebuilt the index")
	}
}

package doc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/doc"
)

// seedPeople writes n documents whose "age" is set on most (some lack it, one is null),
// with "city" and "tags".
func seedPeople(t *testing.T, e *env, coll string, n int) map[string]map[string]any {
	t.Helper()
	cities := []string{"Boston", "New York", "Paris", "Zürich"}
	all := map[string]map[string]any{}
	for i := range n {
		m := map[string]any{"name": fmt.Sprintf("p%03d", i), "city": cities[i%4], "tags": []string{fmt.Sprintf("t%d", i%3)}}
		switch {
		case i%10 == 9:
			// no age
		case i == 4:
			m["age"] = nil
		default:
			m["age"] = (i * 37) % 90
		}
		b, _ := json.Marshal(m)
		id := fmt.Sprintf("id%03d", i)
		if _, err := e.store.DocCreate(e.ctx, e.Tenant, coll, doc.DocInput{ID: id, Data: b}); err != nil {
			t.Fatal(err)
		}
		all[id] = m
	}
	return all
}

func waitIndexes(t *testing.T, e *env, coll string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := e.store.CollectionGet(e.ctx, e.Tenant, coll)
		if err != nil {
			t.Fatal(err)
		}
		ready := true
		for _, i := range c.Indexes {
			if i.Status == "failed" {
				t.Fatalf("index %s failed: %s", i.Path, i.Error)
			}
			ready = ready && i.Status == "ready"
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("indexes not ready: %+v", c.Indexes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Paging with small pages through a sort on a declared path visits every document once,
// in order, those missing the path last; filters and the cursor agree.
func TestListSortFilterCursor(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "people", Indexes: []string{"age", "city"}})
	all := seedPeople(t, e, "people", 60)
	waitIndexes(t, e, "people")
	ctx := e.ctx
	collect := func(q doc.Query) []string {
		t.Helper()
		var ids []string
		for pages := 0; ; pages++ {
			page, err := e.store.DocList(ctx, e.Tenant, "people", q)
			if err != nil {
				t.Fatalf("%+v: %v", q, err)
			}
			for _, d := range page.Items {
				ids = append(ids, d.ID)
			}
			if page.NextCursor == "" {
				return ids
			}
			if pages > 100 {
				t.Fatal("too many pages")
			}
			q.Cursor = page.NextCursor
		}
	}
	// Expected order: by age (JSON null lowest), then id; missing age last by id.
	key := func(id string) (int, float64) {
		v, ok := all[id]["age"]
		switch {
		case !ok:
			return 2, 0
		case v == nil:
			return 0, 0
		}
		return 1, float64(v.(int))
	}
	for _, desc := range []bool{false, true} {
		var want []string
		for id := range all {
			want = append(want, id)
		}
		sort.Slice(want, func(i, j int) bool {
			gi, vi := key(want[i])
			gj, vj := key(want[j])
			if (gi == 2) != (gj == 2) {
				return gj == 2
			}
			if gi == 2 {
				return want[i] < want[j]
			}
			if gi != gj || vi != vj {
				less := gi < gj || (gi == gj && vi < vj)
				if desc {
					return !less
				}
				return less
			}
			if desc {
				return want[i] > want[j]
			}
			return want[i] < want[j]
		})
		sortKey := "age"
		if desc {
			sortKey = "-age"
		}
		got := collect(doc.Query{Sort: sortKey, Limit: 7})
		if !slices.Equal(got, want) {
			t.Errorf("sort %s:\n got %v\nwant %v", sortKey, got, want)
		}
	}
	// Filter, by id, small pages.
	got := collect(doc.Query{Filter: `city in ["Boston", "Zürich"] and age >= 30`, Limit: 4})
	var want []string
	for id, m := range all {
		c := m["city"].(string)
		if a, ok := m["age"].(int); ok && a >= 30 && (c == "Boston" || c == "Zürich") {
			want = append(want, id)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("filtered: got %v want %v", got, want)
	}
	// Counting with a cap.
	n, capped, err := e.store.DocCount(ctx, e.Tenant, "people", `tags contains "t1"`, 1000)
	if err != nil || n != 20 || capped {
		t.Errorf("count = %d capped %v (%v), want 20", n, capped, err)
	}
	n, capped, _ = e.store.DocCount(ctx, e.Tenant, "people", "", 10)
	if n != 10 || !capped {
		t.Errorf("capped count = %d %v", n, capped)
	}
	// Projection keeps only the named fields.
	page, err := e.store.DocList(ctx, e.Tenant, "people", doc.Query{Filter: `@id = "id001"`, Fields: []string{"name", "nope.deeper"}})
	if err != nil || len(page.Items) != 1 || string(page.Items[0].Data) != `{"name":"p001"}` {
		t.Fatalf("projection: %+v %v", page.Items, err)
	}
	// A cursor of another query is refused; a sort on an undeclared path too.
	p1, _ := e.store.DocList(ctx, e.Tenant, "people", doc.Query{Sort: "age", Limit: 2})
	_, err = e.store.DocList(ctx, e.Tenant, "people", doc.Query{Sort: "city", Cursor: p1.NextCursor})
	wantProblem(t, err, 400, "invalid_cursor")
	_, err = e.store.DocList(ctx, e.Tenant, "people", doc.Query{Sort: "name"})
	wantProblem(t, err, 400, "invalid_sort")
	_, err = e.store.DocList(ctx, e.Tenant, "people", doc.Query{Filter: `age >`})
	p := wantProblem(t, err, 400, "invalid_filter")
	if p.Extensions["position"] != 5 {
		t.Errorf("filter error position = %v, want 5", p.Extensions["position"])
	}
}

// A filter on a declared path uses its index once built (the planner's choice, checked
// with EXPLAIN on enough rows that a scan would cost more).
func TestDeclaredIndexIsUsed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "big", Indexes: []string{"status"}})
	ctx := e.ctx
	var lines strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&lines, `{"status": "s%d", "n": %d}`+"\n", i%500, i)
	}
	if _, err := e.store.DocImport(ctx, e.Tenant, "big", strings.NewReader(lines.String()), doc.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, e, "big")
	if _, err := e.Pool.Exec(ctx, `ANALYZE documents`); err != nil {
		t.Fatal(err)
	}
	var collID string
	_ = e.Pool.QueryRow(ctx, `SELECT id FROM collections WHERE name = 'big'`).Scan(&collID)
	rows, err := e.Pool.Query(ctx, `EXPLAIN SELECT id FROM documents d WHERE d.collection_id = '`+collID+`'::uuid
		AND d.body IS NOT NULL AND ((d.body #> '{"status"}'::text[]) = '"s7"'::jsonb) ORDER BY d.id LIMIT 51`)
	if err != nil {
		t.Fatal(err)
	}
	var plan bytes.Buffer
	for rows.Next() {
		var l string
		_ = rows.Scan(&l)
		plan.WriteString(l + "\n")
	}
	if !strings.Contains(plan.String(), "doc_idx_") {
		t.Fatalf("the filter does not use the declared index:\n%s", plan.String())
	}
	page, err := e.store.DocList(ctx, e.Tenant, "big", doc.Query{Filter: `status = "s7"`})
	if err != nil || len(page.Items) != 10 {
		t.Fatalf("%d items (%v)", len(page.Items), err)
	}
}

// A whole collection as it was at a time: later creations absent, later changes and
// deletions undone.
func TestListAsOf(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "pit"})
	ctx := e.ctx
	put := func(id, body string) {
		t.Helper()
		if _, err := e.store.DocReplace(ctx, e.Tenant, "pit", id, json.RawMessage(body), nil); err != nil {
			t.Fatal(err)
		}
	}
	put("a", `{"v": 1}`)
	put("b", `{"v": 1}`)
	put("c", `{"v": 1}`)
	time.Sleep(5 * time.Millisecond)
	var at time.Time
	_ = e.Pool.QueryRow(ctx, `SELECT now()`).Scan(&at)
	time.Sleep(5 * time.Millisecond)
	put("a", `{"v": 2}`)
	if _, err := e.store.DocDelete(ctx, e.Tenant, "pit", "b", nil); err != nil {
		t.Fatal(err)
	}
	put("d", `{"v": 1}`)
	page, err := e.store.DocList(ctx, e.Tenant, "pit", doc.Query{AsOf: at, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	next, err := e.store.DocList(ctx, e.Tenant, "pit", doc.Query{AsOf: at, Limit: 2, Cursor: page.NextCursor})
	if err != nil {
		t.Fatal(err)
	}
	items := append(page.Items, next.Items...)
	var got []string
	for _, d := range items {
		got = append(got, d.ID+string(d.Data))
	}
	if strings.Join(got, " ") != `a{"v": 1} b{"v": 1} c{"v": 1}` {
		t.Fatalf("as of: %v", got)
	}
	filtered, err := e.store.DocList(ctx, e.Tenant, "pit", doc.Query{AsOf: at, Filter: `@id != "a"`})
	if err != nil || len(filtered.Items) != 2 {
		t.Fatalf("filtered as of: %+v %v", filtered.Items, err)
	}
	var buf bytes.Buffer
	n, err := e.store.DocExport(ctx, e.Tenant, "pit", &buf, doc.ExportOptions{AsOf: at})
	if err != nil || n != 3 {
		t.Fatalf("export as of: %d %v", n, err)
	}
	_ = context.Background()
}

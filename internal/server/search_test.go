package server_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/search"
)

// searchWorld is the identity world plus a searchable collection "notes" in T (and one of
// the same name in the outsider's tenant, with documents T must never see).
func searchWorld(t *testing.T) (*world, string) {
	w := newWorld(t)
	base := "/v1/t/" + w.T + "/collections/notes"
	w.must(201, "POST", "/v1/t/"+w.T+"/collections", w.authz[owner], `{"name": "notes"}`)
	for i, text := range []string{"green apples and pears", "red apples", "a quiet afternoon"} {
		w.must(201, "POST", fmt.Sprintf("%s/docs?id=n%d", base, i), w.authz[owner], fmt.Sprintf(`{"text": %q, "kind": "k%d"}`, text, i%2))
	}
	settings := `{"text": {"fields": [{"path": "text", "weight": "A"}], "facets": ["kind"]},
		"vectors": [{"name": "v", "dimension": 3, "metric": "l2", "path": "v"}]}`
	w.must(200, "PUT", base+"/search-settings", w.authz[owner], settings)

	// The outsider's tenant has a collection of the same name, with apples too.
	var mine struct {
		Items []struct{ ID, Name string }
	}
	w.must(200, "GET", "/v1/tenants", w.authz[outsider], "").json(t, &mine)
	other := "/v1/t/" + mine.Items[0].ID + "/collections/notes"
	w.must(201, "POST", "/v1/t/"+mine.Items[0].ID+"/collections", w.authz[outsider], `{"name": "notes"}`)
	w.must(200, "PUT", other+"/search-settings", w.authz[outsider], settings)
	w.must(201, "POST", other+"/docs?id=secret", w.authz[outsider], `{"text": "secret apples", "v": [0, 0, 0]}`)
	waitIndexes(t, w, base)
	waitIndexes(t, w, other)
	return w, base
}

func waitIndexes(t *testing.T, w *world, coll string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var out struct{ Items []search.IndexState }
		w.must(200, "GET", coll+"/indexes", w.authz[platAdm], "").json(t, &out)
		ready := len(out.Items) > 0
		for _, ix := range out.Items {
			ready = ready && ix.Status == "ready"
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("indexes of %s not ready: %+v", coll, out.Items)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func searchDigest(t *testing.T, w *world) string {
	t.Helper()
	var d string
	if err := w.s.Pool().QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 's' || collection_id || generation || settings::text FROM strata.search_settings
		UNION ALL SELECT 'i' || collection_id || name || generation FROM strata.search_indexes
		UNION ALL SELECT 't' || collection_id || doc_id || version FROM strata.search_text) s(x)`).Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// Every search endpoint × every identity: members read and search, tenant admins manage
// settings and rebuilds, the other tenant's owner gets 404 and the anonymous 401; denials
// change nothing and successful changes are audited.
func TestSearchEndpointsByIdentity(t *testing.T) {
	t.Parallel()
	w, base := searchWorld(t)
	read := statuses(200, anon, 401, outsider, 404)
	eps := []endpoint{
		{"settings get", "GET", fixed(base+"/search-settings", ""), read},
		{"settings put", "PUT", fixed(base+"/search-settings", `{"text": {"fields": [{"path": "text", "weight": "A"}], "facets": ["kind"]},
			"vectors": [{"name": "v", "dimension": 3, "metric": "l2", "path": "v"}]}`), tenantAdmin(200)},
		{"settings delete", "DELETE", func(w *world, _ string) (string, string) {
			name := w.fresh("s")
			w.must(201, "POST", "/v1/t/"+w.T+"/collections", w.authz[owner], fmt.Sprintf(`{"name": %q}`, name))
			w.must(200, "PUT", "/v1/t/"+w.T+"/collections/"+name+"/search-settings", w.authz[owner], `{"text": {"fields": [{"path": "t"}]}}`)
			return "/v1/t/" + w.T + "/collections/" + name + "/search-settings", ""
		}, tenantAdmin(204)},
		{"query: search", "POST", fixed(base+"/search", `{"q": "apples"}`), read},
		{"indexes", "GET", fixed(base+"/indexes", ""), read},
		{"rebuild", "POST", fixed(base+"/indexes/rebuild", ""), tenantAdmin(202)},
		{"stats", "GET", fixed(base+"/search-stats", ""), read},
	}
	w.checkEndpoints(t, eps, searchDigest)
}

func TestSearchHTTPSemantics(t *testing.T) {
	t.Parallel()
	w, base := searchWorld(t)
	own := w.authz[owner]

	// Only T's documents, ranked, faceted, highlighted; the outsider's "secret apples"
	// never appears, whatever the mode.
	var r search.Results
	w.must(200, "POST", base+"/search", w.authz[member], `{"q": "apples", "facets": ["kind"], "highlight": true}`).json(t, &r)
	got := []string{}
	for _, h := range r.Items {
		got = append(got, h.ID)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"n0", "n1"}) || len(r.Facets["kind"]) != 2 {
		t.Fatalf("apples: %v facets %v", got, r.Facets)
	}
	w.must(200, "POST", base+"/search", own, `{"mode": "vector", "vector": [0, 0, 0], "k": 10}`).json(t, &r)
	if len(r.Items) != 0 {
		t.Fatalf("vector search saw another tenant's documents: %+v", r.Items)
	}
	// Typo and prefix.
	w.must(200, "POST", base+"/search", own, `{"q": "aples"}`).json(t, &r)
	if len(r.Items) != 2 {
		t.Fatalf("typo: %+v", r.Items)
	}
	w.must(200, "POST", base+"/search", own, `{"q": "afte"}`).json(t, &r)
	if len(r.Items) != 1 || r.Items[0].ID != "n2" {
		t.Fatalf("prefix: %+v", r.Items)
	}

	// Client vectors: written with the document, searchable at once.
	w.must(200, "PUT", base+"/docs/n0", own, `{"text": "green apples and pears", "kind": "k0", "v": [1, 0, 0]}`)
	w.must(200, "PUT", base+"/docs/n1", own, `{"text": "red apples", "kind": "k1", "v": [0, 1, 0]}`)
	w.must(200, "POST", base+"/search", own, `{"mode": "vector", "vector": [0.9, 0.1, 0], "k": 1, "plan": "exact"}`).json(t, &r)
	if len(r.Items) != 1 || r.Items[0].ID != "n0" || r.Path != "exact" {
		t.Fatalf("vector: %+v", r)
	}

	// Bad input: problem+json with a stable code, nothing changed.
	before := searchDigest(t, w)
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", base + "/search", `{"q": "apples"`, 400, "malformed_json"},
		{"POST", base + "/search", `{"q": 7}`, 422, "validation_failed"},
		{"POST", base + "/search", `{"mode": "sideways"}`, 422, "validation_failed"},
		{"POST", base + "/search", `{"mode": "vector", "vector": [1, 2]}`, 400, "invalid_vector"},
		{"POST", base + "/search", `{"q": "x", "filter": "kind = = 1"}`, 400, "invalid_filter"},
		{"PUT", base + "/search-settings", `{"vectors": [{"name": "v", "dimension": 0, "path": "v"}]}`, 422, "validation_failed"},
		{"PUT", base + "/search-settings", `{"text": {"fields": [{"path": "text"}], "language": "klingon"}}`, 422, ""},
		{"PUT", base + "/docs/n2", `{"text": "bad vector", "v": [1, "two", 3]}`, 422, "invalid_vector"},
		{"POST", "/v1/t/" + w.T + "/collections/nope/search", `{"q": "x"}`, 404, ""},
	} {
		res := w.do(c.method, c.path, own, c.body)
		if res.status != c.status || res.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s %s → %d %s, want %d problem+json", c.method, c.path, c.body, res.status, res.body, c.status)
			continue
		}
		if c.code != "" && !strings.Contains(res.body, `"code":"`+c.code+`"`) {
			t.Errorf("%s %s → %s, want code %s", c.method, c.body, res.body, c.code)
		}
	}
	if searchDigest(t, w) != before {
		t.Fatal("bad input changed search state")
	}

	// The query log (written in the background) feeds the statistics.
	since := url.QueryEscape(time.Now().Add(-time.Hour).Format(time.RFC3339))
	deadline := time.Now().Add(20 * time.Second)
	for {
		var stats search.Stats
		w.must(200, "GET", base+"/search-stats?since="+since, own, "").json(t, &stats)
		if stats.Searches >= 5 && stats.ByMode["vector"] >= 2 && stats.ByPath["exact"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", stats)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A write that asks to wait answers once the embedder's vector is stored: a semantic
// search right after it finds the document.
func TestSearchWaitIndexed(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	own := w.authz[owner]
	base := "/v1/t/" + w.T + "/collections/pages"
	w.must(201, "POST", "/v1/t/"+w.T+"/collections", own, `{"name": "pages"}`)
	w.must(200, "PUT", base+"/search-settings", own, `{"vectors": [{"name": "meaning", "dimension": 512, "embed": {"fields": ["title"]}}]}`)
	waitIndexes(t, w, base)
	r := w.must(201, "PUT", base+"/docs/p1?wait=indexed", own, `{"title": "Trucks and vans for hire"}`)
	if got := r.header.Get("Strata-Indexed"); got != "true" {
		t.Fatalf("Strata-Indexed %q", got)
	}
	var res search.Results
	w.must(200, "POST", base+"/search", own, `{"q": "vehicle rental", "mode": "semantic", "plan": "exact"}`).json(t, &res)
	if len(res.Items) != 1 || res.Items[0].ID != "p1" {
		t.Fatalf("semantic search right after the write: %+v", res.Items)
	}
	// Without an embedded field there is nothing to wait for.
	w.must(201, "POST", "/v1/t/"+w.T+"/collections", own, `{"name": "plain"}`)
	r = w.must(201, "PUT", "/v1/t/"+w.T+"/collections/plain/docs/x?wait=indexed", own, `{"title": "x"}`)
	if got := r.header.Get("Strata-Indexed"); got != "true" {
		t.Fatalf("plain: Strata-Indexed %q", got)
	}
	w.must(422, "PUT", base+"/docs/p2?wait=soon", own, `{"title": "x"}`)
}

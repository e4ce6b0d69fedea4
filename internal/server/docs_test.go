package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
)

// docWorld is the identity world plus a collection "notes" with one document.
func docWorld(t *testing.T) (*world, string) {
	w := newWorld(t)
	w.must(201, "POST", "/v1/t/"+w.T+"/collections", w.authz[owner],
		`{"name": "notes", "indexes": ["title"], "schema": {"type": "object", "properties": {"title": {"type": "string"}}}}`)
	r := w.must(201, "POST", "/v1/t/"+w.T+"/collections/notes/docs?id=seed", w.authz[owner], `{"title": "seed"}`)
	if r.header.Get("ETag") != `"1"` || !strings.HasSuffix(r.header.Get("Location"), "/docs/seed") {
		t.Fatalf("create headers: %v", r.header)
	}
	return w, "/v1/t/" + w.T + "/collections/notes"
}

// Every document endpoint × every identity: readers read, only owners, admins and the
// platform admin write or administer; the other tenant's owner sees 404; anonymous 401.
// Denials change nothing.
func TestDocEndpointsByIdentity(t *testing.T) {
	t.Parallel()
	w, base := docWorld(t)
	read := statuses(200, anon, 401, outsider, 404)
	write := tenantAdmin(200)
	eps := []endpoint{
		{"collection list", "GET", fixed("/v1/t/"+w.T+"/collections", ""), read},
		{"collection get", "GET", fixed(base, ""), read},
		{"collection create", "POST", func(w *world, _ string) (string, string) {
			return "/v1/t/" + w.T + "/collections", fmt.Sprintf(`{"name": %q}`, w.fresh("c"))
		}, tenantAdmin(201)},
		{"collection update", "PATCH", fixed(base, `{"description": "notes"}`), write},
		{"collection delete", "DELETE", func(w *world, _ string) (string, string) {
			name := w.fresh("gone")
			w.must(201, "POST", "/v1/t/"+w.T+"/collections", w.authz[owner], fmt.Sprintf(`{"name": %q}`, name))
			return "/v1/t/" + w.T + "/collections/" + name, ""
		}, tenantAdmin(204)},
		{"doc create", "POST", fixed(base+"/docs", `{"title": "x"}`), tenantAdmin(201)},
		{"doc get", "GET", fixed(base+"/docs/seed", ""), read},
		{"doc get version", "GET", fixed(base+"/docs/seed?version=1", ""), read},
		{"doc list", "GET", fixed(base+"/docs?filter="+url.QueryEscape(`title = "seed"`), ""), read},
		{"doc count", "GET", fixed(base+"/count", ""), read},
		{"doc versions", "GET", fixed(base+"/docs/seed/versions", ""), read},
		{"doc diff", "GET", fixed(base+"/docs/seed/diff?from=1&to=1", ""), read},
		{"doc export", "GET", fixed(base+"/export", ""), read},
		{"doc replace", "PUT", fixed(base+"/docs/seed", `{"title": "seed"}`), write},
		{"doc patch", "PATCH", fixed(base+"/docs/seed", `{"extra": 1}`), write},
		{"doc delete", "DELETE", func(w *world, _ string) (string, string) {
			id := w.fresh("d")
			w.must(201, "POST", base+"/docs?id="+id, w.authz[owner], `{}`)
			return base + "/docs/" + id, ""
		}, tenantAdmin(204)},
		{"doc restore", "POST", func(w *world, _ string) (string, string) {
			id := w.fresh("r")
			w.must(201, "POST", base+"/docs?id="+id, w.authz[owner], `{}`)
			w.must(204, "DELETE", base+"/docs/"+id, w.authz[owner], "")
			return base + "/docs/" + id + "/restore", ""
		}, write},
		{"doc revert", "POST", fixed(base+"/docs/seed/revert", `{"version": 1}`), write},
		{"doc import", "POST", fixed(base+"/import", `{"a": 1}`+"\n"), write},
		{"changes", "GET", fixed("/v1/t/"+w.T+"/changes", ""), read},
	}
	w.checkEndpoints(t, eps, docDigest)
}

func docDigest(t *testing.T, w *world) string {
	t.Helper()
	var d string
	if err := w.s.Pool().QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'c' || id || name || description FROM strata.collections
		UNION ALL SELECT 'd' || id || version || coalesce(body::text, '') FROM strata.documents
		UNION ALL SELECT 'v' || id || version FROM strata.document_versions) s(x)`).Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDocHTTPSemantics(t *testing.T) {
	t.Parallel()
	w, base := docWorld(t)
	o := w.authz[owner]
	// Bad input over HTTP, each a problem document; nothing written.
	before := docDigest(t, w)
	for _, c := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"title": 1}`, 422, "schema_violation"},
		{`{"title": "a", "title": "b"}`, 422, "duplicate_key"},
		{`{"title": "nul\u0000"}`, 422, "nul_character"},
		{`{"title": `, 400, "invalid_json"},
		{`{"n": 1e999}`, 422, "number_out_of_range"},
		{`{"big": "` + strings.Repeat("x", 17<<20) + `"}`, 413, "body_too_large"},
	} {
		r := w.do("POST", base+"/docs", o, c.body)
		if r.status != c.status || !strings.Contains(r.body, `"code":"`+c.code+`"`) {
			t.Errorf("%.30s…: %d %.200s, want %d %s", c.body, r.status, r.body, c.status, c.code)
		}
	}
	if docDigest(t, w) != before {
		t.Error("bad input changed documents")
	}
	w.must(404, "GET", "/v1/t/"+w.T+"/collections/nope/docs/x", o, "")
	r := w.must(400, "GET", base+"/docs?filter="+url.QueryEscape(`title = "x" and`), o, "")
	if !strings.Contains(r.body, `"position":15`) {
		t.Errorf("filter error lacks its position: %s", r.body)
	}
	// ETag / If-Match.
	r = w.must(200, "GET", base+"/docs/seed", o, "")
	if r.header.Get("ETag") != `"1"` {
		t.Fatalf("ETag %q", r.header.Get("ETag"))
	}
	r = w.doHeaders("PUT", base+"/docs/seed", o, `{"title": "v2"}`, map[string]string{"If-Match": `"7"`})
	if r.status != 412 || !strings.Contains(r.body, `"current_version":1`) || r.header.Get("ETag") != `"1"` {
		t.Fatalf("stale If-Match: %d %s %v", r.status, r.body, r.header)
	}
	r = w.doHeaders("PUT", base+"/docs/seed", o, `{"title": "v2"}`, map[string]string{"If-Match": `"1"`})
	if r.status != 200 || r.header.Get("ETag") != `"2"` {
		t.Fatalf("If-Match ok: %d %s", r.status, r.body)
	}
	// JSON Patch by content type.
	r = w.doHeaders("PATCH", base+"/docs/seed", o, `[{"op": "add", "path": "/tags", "value": ["x"]}]`,
		map[string]string{"Content-Type": "application/json-patch+json"})
	if r.status != 200 || !strings.Contains(r.body, `"tags":["x"]`) {
		t.Fatalf("json patch: %d %s", r.status, r.body)
	}
	r = w.doHeaders("PATCH", base+"/docs/seed", o, `{}`, map[string]string{"Content-Type": "text/plain"})
	if r.status != 415 {
		t.Fatalf("patch with text/plain: %d", r.status)
	}
	// Idempotency-Key replays.
	r1 := w.doHeaders("POST", base+"/docs", o, `{"title": "once"}`, map[string]string{"Idempotency-Key": "k1"})
	r2 := w.doHeaders("POST", base+"/docs", o, `{"title": "once"}`, map[string]string{"Idempotency-Key": "k1"})
	var d1, d2 doc.Document
	r1.json(t, &d1)
	r2.json(t, &d2)
	if r1.status != 201 || d1.ID == "" || d1.ID != d2.ID {
		t.Fatalf("idempotent create: %d %s / %s", r1.status, r1.body, r2.body)
	}
	// Import with streamed progress, then export.
	var lines strings.Builder
	for i := range 2500 {
		fmt.Fprintf(&lines, `{"title": "imported %d"}`+"\n", i)
	}
	r = w.doHeaders("POST", base+"/import", o, lines.String(), map[string]string{"Accept": "application/x-ndjson", "Content-Type": "application/x-ndjson"})
	if r.status != 200 || !strings.Contains(r.body, `"type":"progress"`) || !strings.Contains(r.body, `"imported":2500`) {
		t.Fatalf("import: %d %.300s", r.status, r.body)
	}
	r = w.must(200, "GET", base+"/export?filter="+url.QueryEscape(`title >= "imported 2"`), o, "")
	if n := strings.Count(r.body, "\n"); n < 500 || !strings.Contains(r.header.Get("Content-Type"), "ndjson") {
		t.Fatalf("export: %d lines, %s", n, r.header.Get("Content-Type"))
	}
	// History endpoints.
	r = w.must(200, "GET", base+"/docs/seed/diff?from=1&to=3", o, "")
	if !strings.Contains(r.body, `"patch":[`) {
		t.Fatalf("diff: %s", r.body)
	}
	r = w.must(404, "GET", base+"/docs/seed?as_of="+url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)), o, "")
	if !strings.Contains(r.body, "did not exist") {
		t.Errorf("as of before creation: %s", r.body)
	}
	r = w.must(200, "GET", base+"/docs/seed?version=1", o, "")
	if !strings.Contains(r.body, `"title":"seed"`) || r.header.Get("ETag") != `"1"` {
		t.Errorf("version 1: %s", r.body)
	}
}

func TestChangeFeedOverHTTP(t *testing.T) {
	t.Parallel()
	w, base := docWorld(t)
	o := w.authz[owner]
	// Poll from the start: the seed document's creation is there, with a position.
	var page struct {
		Items     []feed.Change `json:"items"`
		NextAfter string        `json:"next_after"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(page.Items) == 0 && time.Now().Before(deadline) {
		w.must(200, "GET", "/v1/t/"+w.T+"/changes", w.authz[viewer], "").json(t, &page)
		time.Sleep(10 * time.Millisecond)
	}
	if len(page.Items) == 0 || page.Items[0].Key != "seed" || page.Items[0].Kind != "doc" {
		t.Fatalf("changes: %+v", page)
	}
	// Server-Sent Events over a real connection: a write shows up promptly.
	srv := httptest.NewServer(w.h)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/t/"+w.T+"/changes/stream?after="+page.NextAfter, nil)
	req.Header.Set("Authorization", w.authz[member])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	start := time.Now()
	wrote := make(chan int, 1)
	go func() { wrote <- w.do("POST", base+"/docs?id=live", o, `{"title": "live"}`).status }()
	sc := bufio.NewScanner(resp.Body)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(v, `"key":"live"`) {
			data = v
			break
		}
	}
	if data == "" {
		t.Fatalf("no event for the write (%v)", sc.Err())
	}
	if _, err := feed.ParsePosition(id); err != nil || id == "" {
		t.Errorf("event id %q is not a position", id)
	}
	t.Logf("write to SSE event: %s", time.Since(start))
	if code := <-wrote; code != 201 {
		t.Fatalf("the write answered %d", code)
	}
	resp.Body.Close()
	var c feed.Change
	_ = json.Unmarshal([]byte(data), &c)
	if c.Op != "create" || c.Scope != "notes" {
		t.Errorf("event %+v", c)
	}
	// The outsider cannot follow this tenant.
	req2, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/t/"+w.T+"/changes/stream", nil)
	req2.Header.Set("Authorization", w.authz[outsider])
	resp2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != 404 {
		t.Errorf("outsider stream: %d", resp2.StatusCode)
	}
}

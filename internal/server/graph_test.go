package server_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stratadb/strata/graph"
)

// graphWorld is the identity world plus a collection "tasks" with documents a … e and the
// edges a → b → c → d (type dep) and a → e (type rel). It returns the edge a → b's id.
func graphWorld(t *testing.T) (*world, int64) {
	w := newWorld(t)
	w.must(201, "POST", "/v1/t/"+w.T+"/collections", w.authz[owner], `{"name": "tasks"}`)
	w.must(201, "POST", "/v1/t/"+w.T+"/graph/types", w.authz[owner], `{"name": "dep"}`)
	w.must(201, "POST", "/v1/t/"+w.T+"/graph/types", w.authz[owner], `{"name": "rel", "description": "related"}`)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		w.must(201, "POST", "/v1/t/"+w.T+"/collections/tasks/docs?id="+id, w.authz[owner], fmt.Sprintf(`{"name": %q}`, id))
	}
	var first int64
	for i, e := range [][3]string{{"dep", "a", "b"}, {"dep", "b", "c"}, {"dep", "c", "d"}, {"rel", "a", "e"}} {
		r := w.must(201, "POST", "/v1/t/"+w.T+"/graph/edges", w.authz[owner],
			fmt.Sprintf(`{"type": %q, "from": {"collection": "tasks", "id": %q}, "to": {"collection": "tasks", "id": %q}, "props": {"n": %d}}`, e[0], e[1], e[2], i))
		var ed graph.Edge
		r.json(t, &ed)
		if i == 0 {
			first = ed.ID
			if r.header.Get("ETag") != `"1"` || !strings.HasSuffix(r.header.Get("Location"), fmt.Sprintf("/graph/edges/%d", ed.ID)) {
				t.Fatalf("create headers %v", r.header)
			}
		}
	}
	return w, first
}

func graphDigest(t *testing.T, w *world) string {
	t.Helper()
	var d string
	if err := w.s.Pool().QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'e' || id || version || props::text || coalesce(deleted_at::text, '') FROM strata.graph_edges
		UNION ALL SELECT 't' || name || declared || acyclic || uniq FROM strata.graph_types
		UNION ALL SELECT 'v' || edge_id || version FROM strata.graph_edge_versions) s(x)`).Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// Every graph endpoint × every identity: readers read, owners, admins and the platform
// admin write, the other tenant's owner sees 404 and the anonymous 401; denials change
// nothing and successful writes are audited.
func TestGraphEndpointsByIdentity(t *testing.T) {
	t.Parallel()
	w, edge := graphWorld(t)
	base := "/v1/t/" + w.T + "/graph"
	node := base + "/nodes/tasks/a"
	read := statuses(200, anon, 401, outsider, 404)
	write := tenantAdmin(200)
	e := fmt.Sprintf("%s/edges/%d", base, edge)
	eps := []endpoint{
		{"type declare", "POST", func(w *world, _ string) (string, string) {
			return base + "/types", fmt.Sprintf(`{"name": %q, "acyclic": true}`, w.fresh("t"))
		}, tenantAdmin(201)},
		{"type list", "GET", fixed(base+"/types", ""), read},
		{"type get", "GET", fixed(base+"/types/dep", ""), read},
		{"type update", "PATCH", fixed(base+"/types/dep", `{"description": "depends on"}`), write},
		{"type delete", "DELETE", func(w *world, _ string) (string, string) {
			name := w.fresh("gone")
			w.must(201, "POST", base+"/types", w.authz[owner], fmt.Sprintf(`{"name": %q}`, name))
			return base + "/types/" + name, ""
		}, tenantAdmin(204)},
		{"edge create", "POST", fixed(base+"/edges", `{"type": "rel", "from": {"collection": "tasks", "id": "b"}, "to": {"collection": "tasks", "id": "e"}}`), tenantAdmin(201)},
		{"edge get", "GET", fixed(e, ""), read},
		{"edge get version", "GET", fixed(e+"?version=1", ""), read},
		{"edge versions", "GET", fixed(e+"/versions", ""), read},
		{"edge props replace", "PUT", fixed(e+"/props", `{"n": 10}`), write},
		{"edge props patch", "PATCH", fixed(e+"/props", `{"m": 1}`), write},
		{"edge delete", "DELETE", func(w *world, _ string) (string, string) {
			r := w.must(201, "POST", base+"/edges", w.authz[owner], `{"type": "rel", "from": {"collection": "tasks", "id": "c"}, "to": {"collection": "tasks", "id": "e"}}`)
			var ed graph.Edge
			r.json(w.t, &ed)
			return fmt.Sprintf("%s/edges/%d", base, ed.ID), ""
		}, tenantAdmin(204)},
		{"edge import", "POST", fixed(base+"/edges/import", `{"type": "rel", "from": "tasks/d", "to": "tasks/e"}`+"\n"), write},
		{"neighbours", "GET", fixed(node+"/neighbours", ""), read},
		{"neighbourhood", "GET", fixed(node+"/neighbourhood?depth=2", ""), read},
		{"dependents", "GET", fixed(base+"/nodes/tasks/d/dependents", ""), read},
		{"dependencies", "GET", fixed(node+"/dependencies", ""), read},
		{"degree", "GET", fixed(node+"/degree", ""), read},
		{"subgraph around", "GET", fixed(node+"/subgraph", ""), read},
		{"board", "GET", fixed(base+"/subgraph?collection=tasks", ""), read},
		{"shortest path", "GET", fixed(base+"/path?from=tasks/a&to=tasks/d", ""), read},
		{"all paths", "GET", fixed(base+"/paths?from=tasks/a&to=tasks/d", ""), read},
	}
	w.checkEndpoints(t, eps, graphDigest)
}

func TestGraphHTTPSemantics(t *testing.T) {
	t.Parallel()
	w, edge := graphWorld(t)
	base := "/v1/t/" + w.T + "/graph"
	own := w.authz[owner]

	var r graph.Result
	w.must(200, "GET", base+"/nodes/tasks/a/neighbourhood?depth=3&paths=true&type=dep", own, "").json(t, &r)
	if len(r.Nodes) != 3 || r.Nodes[2].ID != "d" || r.Nodes[2].Depth != 3 || len(r.Nodes[2].Path.Edges) != 3 {
		t.Fatalf("neighbourhood %+v", r)
	}
	// Types repeat or comma-separate.
	for _, q := range []string{"type=dep&type=rel", "type=dep,rel"} {
		w.must(200, "GET", base+"/nodes/tasks/a/neighbourhood?depth=3&"+q, own, "").json(t, &r)
		if len(r.Nodes) != 4 {
			t.Fatalf("%s: %+v", q, r)
		}
	}
	w.must(200, "GET", base+"/nodes/tasks/a/neighbourhood?depth=3&filter="+url.QueryEscape(`name != "c"`), own, "").json(t, &r)
	if len(r.Nodes) != 2 {
		t.Fatalf("filtered %+v", r)
	}
	var p graph.PathResult
	w.must(200, "GET", base+"/path?from=tasks/d&to=tasks/a&direction=in", own, "").json(t, &p)
	if !p.Found || p.Length != 3 || p.Path.Nodes[0].ID != "d" {
		t.Fatalf("path %+v", p)
	}
	var d graph.Degree
	w.must(200, "GET", base+"/nodes/tasks/a/degree", own, "").json(t, &d)
	if d.OutTotal != 2 || d.Out["dep"] != 1 {
		t.Fatalf("degree %+v", d)
	}

	// Bad input answers problems and changes nothing.
	before := graphDigest(t, w)
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", base + "/nodes/tasks/a/neighbourhood?depth=1000", "", 400, "depth_out_of_range"},
		{"GET", base + "/nodes/tasks/a/neighbourhood?limit=100000000", "", 400, "limit_out_of_range"},
		{"GET", base + "/nodes/tasks/a/neighbourhood?filter=" + url.QueryEscape("name ="), "", 400, "invalid_filter"},
		{"GET", base + "/nodes/tasks/zz/neighbourhood", "", 404, "document_not_found"},
		{"GET", base + "/nodes/nope/a/neighbourhood", "", 404, "collection_not_found"},
		{"GET", base + "/path?from=tasks-a&to=tasks/b", "", 400, "invalid_node"},
		{"GET", base + "/path?from=tasks/a&to=tasks/b&weight=" + url.QueryEscape("n["), "", 400, "invalid_weight"},
		{"GET", base + "/nodes/tasks/a/neighbours?cursor=xyz", "", 400, "invalid_cursor"},
		{"POST", base + "/edges", `{"type": "dep", "from": {"collection": "tasks", "id": "a"}}`, 422, "validation_failed"},
		{"POST", base + "/edges", `{"type": "dep", "from": {"collection": "tasks", "id": "a"}, "to": {"collection": "tasks", "id": "zz"}}`, 404, "document_not_found"},
		{"POST", base + "/edges", `{"type": "dep", "from": {"collection": "tasks", "id": "a"}, "to": {"collection": "tasks", "id": "b"}, "props": 7}`, 422, "not_an_object"},
		{"POST", base + "/edges", `{"type": "dep", "from": {"collection": "tasks", "id": "a"}, "to": {"collection": "tasks", "id": "b"}, "extra": 1}`, 422, "validation_failed"},
		{"POST", base + "/edges", `{"type":`, 400, "malformed_json"},
		{"PUT", fmt.Sprintf("%s/edges/%d/props", base, edge), `{"n": 1`, 400, "invalid_json"},
		{"PUT", fmt.Sprintf("%s/edges/%d/props", base, edge), `{"n": 1}`, 0, ""}, // placeholder for If-Match below
	} {
		if c.status == 0 {
			continue
		}
		res := w.do(c.method, c.path, own, c.body)
		var prob struct{ Code string }
		res.json(t, &prob)
		if res.status != c.status || prob.Code != c.code || res.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d %s (%s), want %d %s", c.method, c.path, res.status, prob.Code, res.header.Get("Content-Type"), c.status, c.code)
		}
	}
	res := w.doHeaders("PUT", fmt.Sprintf("%s/edges/%d/props", base, edge), own, `{"n": 9}`, map[string]string{"If-Match": `"7"`})
	if res.status != 412 || res.header.Get("ETag") != `"1"` {
		t.Fatalf("stale If-Match: %d %v %s", res.status, res.header, res.body)
	}
	if graphDigest(t, w) != before {
		t.Fatal("bad requests changed the graph")
	}

	// Declaring a type acyclic, then closing a cycle: 409 naming it.
	w.must(200, "PATCH", base+"/types/dep", own, `{"acyclic": true}`)
	res = w.do("POST", base+"/edges", own, `{"type": "dep", "from": {"collection": "tasks", "id": "d"}, "to": {"collection": "tasks", "id": "a"}}`)
	var cyc struct {
		Code  string
		Cycle []graph.NodeRef
	}
	res.json(t, &cyc)
	if res.status != 409 || cyc.Code != "cycle" || len(cyc.Cycle) != 5 {
		t.Fatalf("cycle: %d %s", res.status, res.body)
	}
	// Edges are versioned: history survives deletion.
	w.must(200, "PATCH", fmt.Sprintf("%s/edges/%d/props", base, edge), own, `{"m": 2}`)
	w.must(204, "DELETE", fmt.Sprintf("%s/edges/%d", base, edge), own, "")
	w.must(404, "GET", fmt.Sprintf("%s/edges/%d", base, edge), own, "")
	var old graph.Edge
	w.must(200, "GET", fmt.Sprintf("%s/edges/%d?version=2", base, edge), own, "").json(t, &old)
	if string(old.Props) != `{"m":2,"n":0}` && string(old.Props) != `{"m": 2, "n": 0}` {
		t.Fatalf("version 2 props %s", old.Props)
	}

	// An import streams progress, then its report.
	res = w.doHeaders("POST", base+"/edges/import", own, `{"type": "rel", "from": "tasks/b", "to": "tasks/c"}`+"\n"+`{"type": "rel", "from": "tasks/b", "to": "tasks/zz"}`,
		map[string]string{"Accept": "application/x-ndjson"})
	lines := strings.Split(strings.TrimSpace(res.body), "\n")
	if res.status != 200 || len(lines) != 2 || !strings.Contains(lines[1], `"failed":1`) || !strings.Contains(lines[1], "document_not_found") {
		t.Fatalf("import stream: %d %s", res.status, res.body)
	}
}

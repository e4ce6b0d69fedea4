package server

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/graph"
)

// NodePath is embedded by operations on one node of the graph.
type NodePath struct {
	TenantPath
	Collection string `path:"collection" doc:"The node's collection."`
	ID         string `path:"id" doc:"The node's document id."`
}

func (p NodePath) ref() graph.NodeRef { return graph.NodeRef{Collection: p.Collection, ID: p.ID} }

// EdgePath is embedded by operations on one edge.
type EdgePath struct {
	TenantPath
	Edge int64 `path:"edge" doc:"Edge id."`
}

// TypePath is embedded by operations on one edge type.
type TypePath struct {
	TenantPath
	Type string `path:"type" doc:"Edge type name."`
}

// EdgeQuery is what every traversal may be narrowed by.
type EdgeQuery struct {
	Types       []string  `query:"type,explode" doc:"Edge types to follow (repeat, or comma-separate); default every type the caller may read."`
	Collections []string  `query:"collection,explode" doc:"Enter (and return) only nodes of these collections (repeat, or comma-separate)."`
	Filter      string    `query:"filter" maxLength:"8192" doc:"Enter (and return) only nodes whose documents match (docs/filters.md)."`
	EdgeFilter  string    `query:"edge_filter" maxLength:"8192" doc:"Follow only edges whose properties match."`
	AsOf        time.Time `query:"as_of" doc:"Traverse the graph as it was at this time (not with filters)."`
}

// TraversalQuery bounds a traversal.
type TraversalQuery struct {
	EdgeQuery
	Depth   int  `query:"depth" doc:"Hops, up to the configured maximum (400 depth_out_of_range above it)."`
	Limit   int  `query:"limit" doc:"Results, up to the configured maximum (400 limit_out_of_range above it)."`
	Partial bool `query:"partial" doc:"When the time budget runs out, answer with what was found (partial: true) instead of 422 traversal_budget_exceeded."`
}

// list reads a repeated query parameter whose values may also be comma-separated.
func list(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
	}
	return out
}

func (q TraversalQuery) options(dir string, paths bool) graph.Options {
	return graph.Options{Direction: graph.Direction(dir), Types: list(q.Types), Collections: list(q.Collections), Filter: q.Filter,
		EdgeFilter: q.EdgeFilter, AsOf: q.AsOf, MaxDepth: q.Depth, Limit: q.Limit, Partial: q.Partial, Paths: paths}
}

type typeOut struct{ Body graph.EdgeType }

type typeListOut struct {
	Body struct {
		Items []graph.EdgeType `json:"items"`
	}
}

type typeDeclareIn struct {
	TenantPath
	Body graph.TypeInput
}

type typeUpdateIn struct {
	TypePath
	Body struct {
		Acyclic     *bool   `json:"acyclic,omitempty"`
		Unique      *bool   `json:"unique,omitempty"`
		Description *string `json:"description,omitempty" maxLength:"1000"`
	}
}

type edgeCreateIn struct {
	TenantPath
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Retrying with the same key returns the first answer instead of creating again."`
	Body           graph.EdgeInput
}

type edgeOut struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	Status   int
	Body     graph.Edge
}

type edgeGetIn struct {
	EdgePath
	Version int64     `query:"version" minimum:"1" doc:"Read this version instead of the current one."`
	AsOf    time.Time `query:"as_of" doc:"Read the version current at this time."`
}

type edgePropsIn struct {
	EdgePath
	IfMatch string `header:"If-Match" doc:"The version (an ETag) the edge must be at."`
	RawBody []byte `contentType:"application/json"`
}

type edgeDeleteIn struct {
	EdgePath
	IfMatch string `header:"If-Match"`
}

type edgeVersionsOut struct {
	Body struct {
		Items []graph.EdgeVersion `json:"items"`
	}
}

type edgeImportIn struct {
	TenantPath
	Accept string `header:"Accept" doc:"application/x-ndjson streams progress lines before the report."`
}

type neighboursIn struct {
	NodePath
	EdgeQuery
	Direction string `query:"direction" enum:"out,in,both" default:"both"`
	Limit     int    `query:"limit" minimum:"1" maximum:"1000" default:"100"`
	Cursor    string `query:"cursor" maxLength:"500" doc:"next_cursor of the previous page."`
}

type neighboursOut struct{ Body graph.NeighbourPage }

type reachIn struct {
	NodePath
	TraversalQuery
	Direction string `query:"direction" enum:"out,in,both" default:"out"`
	Paths     bool   `query:"paths" doc:"Include a shortest path to each node."`
}

type closureIn struct {
	NodePath
	TraversalQuery
	Paths bool `query:"paths" doc:"Include a shortest path to each node."`
}

type resultOut struct{ Body graph.Result }

type degreeIn struct {
	NodePath
	Types       []string  `query:"type,explode"`
	Collections []string  `query:"collection,explode"`
	AsOf        time.Time `query:"as_of"`
}

type degreeOut struct{ Body graph.Degree }

type pathIn struct {
	TenantPath
	TraversalQuery
	From      string `query:"from" required:"true" doc:"collection/id"`
	To        string `query:"to" required:"true" doc:"collection/id"`
	Direction string `query:"direction" enum:"out,in,both" default:"out"`
	Weight    string `query:"weight" maxLength:"300" doc:"A path into edge properties (such as cost): find the path of least total weight instead of fewest edges. Edges without a number there weigh 1."`
}

type pathOut struct{ Body graph.PathResult }

type pathsIn struct {
	TenantPath
	TraversalQuery
	From      string `query:"from" required:"true" doc:"collection/id"`
	To        string `query:"to" required:"true" doc:"collection/id"`
	Direction string `query:"direction" enum:"out,in,both" default:"out"`
}

type pathsOut struct{ Body graph.PathsResult }

type subgraphAroundIn struct {
	NodePath
	TraversalQuery
	Direction   string `query:"direction" enum:"out,in,both" default:"both"`
	IncludeData bool   `query:"include_data" doc:"Include each node's document."`
}

type boardIn struct {
	TenantPath
	Collection  string   `query:"collection" required:"true" doc:"The collection whose documents are the nodes."`
	Filter      string   `query:"filter" maxLength:"8192" doc:"Which of its documents (a board's, say)."`
	Types       []string `query:"type,explode"`
	Limit       int      `query:"limit" doc:"Nodes, up to the configured maximum."`
	IncludeData bool     `query:"include_data"`
}

type subgraphOut struct{ Body graph.Subgraph }

func edgeResponse(e graph.Edge, status int, tenant string) *edgeOut {
	out := &edgeOut{Status: status, Body: e, ETag: `"` + strconv.FormatInt(e.Version, 10) + `"`}
	if status == http.StatusCreated {
		out.Location = "/v1/t/" + tenant + "/graph/edges/" + strconv.FormatInt(e.ID, 10)
	}
	return out
}

func (s *Server) routesGraph() {
	g := s.deps.Graph
	tags := []string{"Graph"}
	base := "/v1/t/{tenant}/graph"
	node := base + "/nodes/{collection}/{id}"
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-type-declare", Method: http.MethodPost, Path: base + "/types", Tags: tags,
		Summary: "Declare an edge type", Security: signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 409, 422},
		Description: "Needs admin on graph:<type>. Types otherwise come into being with their first edge; once a tenant declares one, " +
			"edges of undeclared types are refused (422 unknown_edge_type). An acyclic type refuses edges that would close a cycle " +
			"(409 cycle); a unique type allows one edge of it from a node to another (409 edge_exists).",
	}, func(ctx context.Context, in *typeDeclareIn) (*typeOut, error) {
		t, err := g.TypeDeclare(ctx, in.Tenant, in.Body)
		return &typeOut{Body: t}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-type-list", Method: http.MethodGet, Path: base + "/types", Tags: tags,
		Summary: "List edge types", Security: signedIn, Errors: []int{401, 404},
	}, func(ctx context.Context, in *TenantPath) (*typeListOut, error) {
		ts, err := g.Types(ctx, in.Tenant)
		out := &typeListOut{}
		out.Body.Items = ts
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-type-get", Method: http.MethodGet, Path: base + "/types/{type}", Tags: tags,
		Summary: "Get an edge type", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TypePath) (*typeOut, error) {
		t, err := g.Type(ctx, in.Tenant, in.Type)
		return &typeOut{Body: t}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-type-update", Method: http.MethodPatch, Path: base + "/types/{type}", Tags: tags,
		Summary: "Change an edge type", Security: signedIn, Errors: []int{401, 403, 404, 409},
		Description: "Turning acyclic or unique on checks the existing edges (409 cycle, 409 duplicate_edges).",
	}, func(ctx context.Context, in *typeUpdateIn) (*typeOut, error) {
		t, err := g.TypeUpdate(ctx, in.Tenant, graph.TypeInput{Name: in.Type, Acyclic: in.Body.Acyclic, Unique: in.Body.Unique,
			Description: in.Body.Description})
		return &typeOut{Body: t}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-type-delete", Method: http.MethodDelete, Path: base + "/types/{type}", Tags: tags,
		Summary: "Delete an edge type no live edge uses", Security: signedIn, DefaultStatus: http.StatusNoContent,
		Errors: []int{401, 403, 404, 409},
	}, func(ctx context.Context, in *TypePath) (*struct{}, error) {
		return nil, g.TypeDelete(ctx, in.Tenant, in.Type)
	})

	huma.Register(s.api, huma.Operation{
		OperationID: "graph-edge-create", Method: http.MethodPost, Path: base + "/edges", Tags: tags,
		Summary: "Create an edge between two documents", Security: signedIn, DefaultStatus: http.StatusCreated,
		Description: "Needs write on graph:<type> and read on both documents' collections. Both documents must exist in the tenant.",
		Errors:      []int{400, 401, 403, 404, 409, 413, 422},
	}, func(ctx context.Context, in *edgeCreateIn) (*edgeOut, error) {
		in.Body.IdempotencyKey = in.IdempotencyKey
		e, err := g.EdgeCreate(ctx, in.Tenant, in.Body)
		if err != nil {
			return nil, err
		}
		return edgeResponse(e, http.StatusCreated, in.Tenant), nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-edge-get", Method: http.MethodGet, Path: base + "/edges/{edge}", Tags: tags,
		Summary: "Get an edge, now or at a version or time", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *edgeGetIn) (*edgeOut, error) {
		var e graph.Edge
		var err error
		if in.Version != 0 || !in.AsOf.IsZero() {
			e, err = g.EdgeGetAt(ctx, in.Tenant, in.Edge, in.Version, in.AsOf)
		} else {
			e, err = g.EdgeGet(ctx, in.Tenant, in.Edge)
		}
		if err != nil {
			return nil, err
		}
		return edgeResponse(e, http.StatusOK, in.Tenant), nil
	})
	props := func(merge bool) func(ctx context.Context, in *edgePropsIn) (*edgeOut, error) {
		return func(ctx context.Context, in *edgePropsIn) (*edgeOut, error) {
			v, _, err := ifMatch(in.IfMatch)
			if err != nil {
				return nil, err
			}
			e, err := g.EdgeUpdate(ctx, in.Tenant, in.Edge, in.RawBody, merge, &graph.WriteOptions{IfMatch: v})
			if err != nil {
				return nil, err
			}
			return edgeResponse(e, http.StatusOK, in.Tenant), nil
		}
	}
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-edge-props-replace", Method: http.MethodPut, Path: base + "/edges/{edge}/props", Tags: tags,
		Summary: "Replace an edge's properties", Security: signedIn, SkipValidateBody: true, MaxBodyBytes: 16 << 20,
		Errors: []int{400, 401, 403, 404, 412, 413, 422},
	}, props(false))
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-edge-props-patch", Method: http.MethodPatch, Path: base + "/edges/{edge}/props", Tags: tags,
		Summary: "Merge a patch (RFC 7396) into an edge's properties", Security: signedIn, SkipValidateBody: true, MaxBodyBytes: 16 << 20,
		Errors: []int{400, 401, 403, 404, 412, 413, 422},
	}, props(true))
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-edge-delete", Method: http.MethodDelete, Path: base + "/edges/{edge}", Tags: tags,
		Summary: "Delete an edge (its history stays)", Security: signedIn, DefaultStatus: http.StatusNoContent,
		Errors: []int{401, 403, 404, 412},
	}, func(ctx context.Context, in *edgeDeleteIn) (*docDeleteOut, error) {
		v, _, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		e, err := g.EdgeDelete(ctx, in.Tenant, in.Edge, &graph.WriteOptions{IfMatch: v})
		if err != nil {
			return nil, err
		}
		return &docDeleteOut{ETag: `"` + strconv.FormatInt(e.Version, 10) + `"`}, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-edge-versions", Method: http.MethodGet, Path: base + "/edges/{edge}/versions", Tags: tags,
		Summary: "List an edge's versions", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *EdgePath) (*edgeVersionsOut, error) {
		vs, err := g.EdgeVersions(ctx, in.Tenant, in.Edge)
		out := &edgeVersionsOut{}
		out.Body.Items = vs
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-edge-import", Method: http.MethodPost, Path: base + "/edges/import", Tags: tags,
		Summary: "Import NDJSON edges through COPY, all or nothing",
		Description: "Each line is {\"type\", \"from\", \"to\", \"props\"} with ends as {\"collection\", \"id\"} or \"collection/id\". " +
			"One bad line imports nothing; the report lists every bad line (the first 1000). With Accept: application/x-ndjson, " +
			"progress lines stream before the result.",
		Security: signedIn, BodyReadTimeout: -1, Middlewares: huma.Middlewares{keepBody, noWriteDeadline},
		RequestBody: &huma.RequestBody{Content: map[string]*huma.MediaType{"application/x-ndjson": {Schema: &huma.Schema{Type: huma.TypeString}}}},
		Errors:      []int{401, 403, 404},
	}, func(ctx context.Context, in *edgeImportIn) (*huma.StreamResponse, error) {
		return importResponse(ctx, in.Accept, func(ctx context.Context, body io.Reader, progress func(lines, imported int64)) (any, error) {
			return g.EdgeImport(ctx, in.Tenant, body, graph.ImportOptions{Progress: progress})
		})
	})

	huma.Register(s.api, huma.Operation{
		OperationID: "graph-neighbours", Method: http.MethodGet, Path: node + "/neighbours", Tags: tags,
		Summary: "A node's edges and the nodes at their other ends, paged", Security: signedIn, Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *neighboursIn) (*neighboursOut, error) {
		o := graph.Options{Direction: graph.Direction(in.Direction), Types: list(in.Types), Collections: list(in.Collections), Filter: in.Filter,
			EdgeFilter: in.EdgeFilter, AsOf: in.AsOf, Limit: in.Limit}
		p, err := g.Neighbours(ctx, in.Tenant, in.ref(), o, in.Cursor)
		return &neighboursOut{Body: p}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-neighbourhood", Method: http.MethodGet, Path: node + "/neighbourhood", Tags: tags,
		Summary: "The nodes within depth hops (default 1), nearest first, each once", Security: signedIn,
		Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *reachIn) (*resultOut, error) {
		r, err := g.Neighbourhood(ctx, in.Tenant, in.ref(), in.options(in.Direction, in.Paths))
		return &resultOut{Body: r}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-dependents", Method: http.MethodGet, Path: node + "/dependents", Tags: tags,
		Summary: "Everything that reaches this node (what depends on it), nearest first", Security: signedIn,
		Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *closureIn) (*resultOut, error) {
		r, err := g.Dependents(ctx, in.Tenant, in.ref(), in.options("", in.Paths))
		return &resultOut{Body: r}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-dependencies", Method: http.MethodGet, Path: node + "/dependencies", Tags: tags,
		Summary: "Everything this node reaches (what it depends on), nearest first", Security: signedIn,
		Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *closureIn) (*resultOut, error) {
		r, err := g.Dependencies(ctx, in.Tenant, in.ref(), in.options("", in.Paths))
		return &resultOut{Body: r}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-degree", Method: http.MethodGet, Path: node + "/degree", Tags: tags,
		Summary: "A node's edge counts by type and direction", Security: signedIn, Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *degreeIn) (*degreeOut, error) {
		d, err := g.Degree(ctx, in.Tenant, in.ref(), graph.Options{Types: list(in.Types), Collections: list(in.Collections), AsOf: in.AsOf})
		return &degreeOut{Body: d}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-subgraph-around", Method: http.MethodGet, Path: node + "/subgraph", Tags: tags,
		Summary: "The nodes around a node and every edge between them, for rendering", Security: signedIn,
		Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *subgraphAroundIn) (*subgraphOut, error) {
		ref := in.ref()
		sg, err := g.Subgraph(ctx, in.Tenant, graph.SubgraphQuery{Around: &ref, IncludeData: in.IncludeData, Options: in.options(in.Direction, false)})
		return &subgraphOut{Body: sg}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-subgraph", Method: http.MethodGet, Path: base + "/subgraph", Tags: tags,
		Summary: "The documents of a collection that match a filter (a whole board) and every edge between them", Security: signedIn,
		Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *boardIn) (*subgraphOut, error) {
		sg, err := g.Subgraph(ctx, in.Tenant, graph.SubgraphQuery{Collection: in.Collection, Filter: in.Filter, IncludeData: in.IncludeData,
			Options: graph.Options{Types: list(in.Types), Limit: in.Limit}})
		return &subgraphOut{Body: sg}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-shortest-path", Method: http.MethodGet, Path: base + "/path", Tags: tags,
		Summary:     "The shortest path between two nodes (fewest edges, or least weight)",
		Description: "Unweighted: breadth-first from both ends, stopping where they meet. With weight: Dijkstra; a negative weight is 422 negative_weight.",
		Security:    signedIn, Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *pathIn) (*pathOut, error) {
		from, to, err := ends(in.From, in.To)
		if err != nil {
			return nil, err
		}
		r, err := g.ShortestPath(ctx, in.Tenant, from, to, in.Weight, in.options(in.Direction, false))
		return &pathOut{Body: r}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "graph-all-paths", Method: http.MethodGet, Path: base + "/paths", Tags: tags,
		Summary:  "Every simple path between two nodes up to depth edges (default 4), shortest first, up to limit (default 100)",
		Security: signedIn, Errors: []int{400, 401, 403, 404, 422},
	}, func(ctx context.Context, in *pathsIn) (*pathsOut, error) {
		from, to, err := ends(in.From, in.To)
		if err != nil {
			return nil, err
		}
		r, err := g.AllPaths(ctx, in.Tenant, from, to, in.options(in.Direction, false))
		return &pathsOut{Body: r}, err
	})
	s.documentEdgeProps()
}

func ends(from, to string) (graph.NodeRef, graph.NodeRef, error) {
	a, err := graph.ParseNodeRef(from, "query.from")
	if err != nil {
		return a, a, err
	}
	b, err := graph.ParseNodeRef(to, "query.to")
	return a, b, err
}

// documentEdgeProps describes the raw bodies of the property operations as JSON objects.
func (s *Server) documentEdgeProps() {
	item := s.api.OpenAPI().Paths["/v1/t/{tenant}/graph/edges/{edge}/props"]
	if item == nil {
		return
	}
	for _, op := range []*huma.Operation{item.Put, item.Patch} {
		if op == nil || op.RequestBody == nil {
			continue
		}
		op.RequestBody.Content = map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Type: huma.TypeObject,
			Description: "The properties (PUT), or a merge patch of them (PATCH)."}}}
	}
}

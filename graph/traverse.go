package graph

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Options shape a traversal. Zero values mean the defaults.
type Options struct {
	// Direction is which way edges are followed (default out).
	Direction Direction
	// Types are the edge types followed; none means every type the caller may read.
	Types []string
	// Collections restricts the nodes a traversal may enter (and return) to documents of
	// these collections.
	Collections []string
	// Filter restricts the nodes a traversal may enter (and return) to documents matching
	// it (the filter language). The nodes given as start and end are not filtered.
	Filter string
	// EdgeFilter restricts the edges followed to those whose properties match it.
	EdgeFilter string
	// MaxDepth bounds the number of hops.
	MaxDepth int
	// Limit bounds the number of nodes (or paths) returned.
	Limit int
	// Paths asks for the path to every node returned.
	Paths bool
	// AsOf traverses the graph as it was at that time (edges alive then). It cannot be
	// combined with Filter or EdgeFilter, which see current data.
	AsOf time.Time
	// Partial returns what was found when the time budget runs out, instead of an error.
	Partial bool
}

// Node is a node reached by a traversal.
type Node struct {
	NodeRef
	// Depth is the number of hops from the start (the shortest way the traversal found).
	Depth int `json:"depth"`
	// Path is one shortest way from the start, when asked for.
	Path *Path `json:"path,omitempty"`
}

// Path is a walk through the graph: nodes, and the edges between consecutive ones.
type Path struct {
	Nodes []NodeRef `json:"nodes"`
	Edges []EdgeRef `json:"edges"`
}

// EdgeRef names an edge on a path.
type EdgeRef struct {
	ID   int64  `json:"id"`
	Type string `json:"type"`
}

// Result is the answer of a traversal that returns nodes.
type Result struct {
	Nodes []Node `json:"nodes"`
	// Truncated says the limit cut the result short.
	Truncated bool `json:"truncated"`
	// Partial says the time budget ran out and the result is what was found by then.
	Partial bool `json:"partial,omitempty"`
}

// view is a traversal's resolved options: the walker, and what naming nodes needs.
type view struct {
	w      *walker
	tenant string
	types  *typeSet
	o      Options

	allowed    []string // collection ids the traversal may enter
	restricted bool     // allowed is not every collection of the tenant
	nodeExpr   filter.Expr
	edgeExpr   filter.Expr
}

var errBudget = errors.New("time budget exceeded")

// budgetErr is the answer to a traversal that ran out of time without partial=true.
func (s *Store) budgetErr() error {
	return problem.Unprocessable("traversal_budget_exceeded",
		"the traversal ran past its time budget of %s; narrow it (depth, types, collections, filters, limit) or pass partial=true to get what was found in time",
		s.cfg.TimeBudget)
}

// within runs a traversal under the time budget. fn gets the budgeted context; when the
// budget ends it, within reports errBudget (the caller decides between a partial answer
// and budgetErr).
func (s *Store) within(ctx context.Context, fn func(ctx context.Context) error) error {
	bctx, cancel := context.WithTimeout(ctx, s.cfg.TimeBudget)
	defer cancel()
	err := fn(bctx)
	if err != nil && bctx.Err() != nil && ctx.Err() == nil {
		return errBudget
	}
	return err
}

// traverse runs a traversal under the time budget. Past it, the answer is partial (what fn
// found so far) when o.Partial asks for that, 422 traversal_budget_exceeded otherwise.
func (s *Store) traverse(ctx context.Context, o Options, fn func(ctx context.Context) error) (partial bool, err error) {
	err = s.within(ctx, fn)
	switch {
	case errors.Is(err, errBudget) && o.Partial:
		return true, nil
	case errors.Is(err, errBudget):
		return false, s.budgetErr()
	}
	return false, db.Translate(err, "graph")
}

// prepare checks o against the limits, fills defaults, resolves types, collections and
// filters into a walker, and authorizes: the caller must be in the tenant, may follow only
// edge types it can read and enter only collections it can read.
func (s *Store) prepare(ctx context.Context, tenant string, o *Options, q querier, defaultDepth int) (*view, error) {
	a, err := s.auth.Access(ctx, tenant)
	if err != nil {
		return nil, err
	}
	switch o.Direction {
	case "":
		o.Direction = Out
	case Out, In, Both:
	default:
		return nil, problem.Invalid("invalid_direction", "direction is out, in or both").WithField("query.direction", string(o.Direction))
	}
	if o.MaxDepth == 0 {
		o.MaxDepth = min(defaultDepth, s.cfg.MaxDepth)
	}
	if o.MaxDepth < 1 || o.MaxDepth > s.cfg.MaxDepth {
		return nil, problem.Invalid("depth_out_of_range", "depth must be 1 to %d (the configured maximum)", s.cfg.MaxDepth).
			WithField("query.depth", fmt.Sprint(o.MaxDepth))
	}
	if o.Limit == 0 {
		o.Limit = s.cfg.DefaultLimit
	}
	if o.Limit < 1 || o.Limit > s.cfg.MaxResults {
		return nil, problem.Invalid("limit_out_of_range", "limit must be 1 to %d (the configured maximum)", s.cfg.MaxResults).
			WithField("query.limit", fmt.Sprint(o.Limit))
	}
	if !o.AsOf.IsZero() && (o.Filter != "" || o.EdgeFilter != "") {
		return nil, problem.Invalid("as_of_unsupported", "filter and edge_filter see current data; they cannot be combined with as_of")
	}
	ts, err := s.typeSetOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	w := &walker{q: q, asOf: o.AsOf}
	if len(o.Types) > 0 {
		w.types = []int32{}
		for _, name := range o.Types {
			t := ts.byName[name]
			if t == nil {
				return nil, problem.Unprocessable("unknown_edge_type", "edge type %q does not exist", name).WithField("query.type", name)
			}
			if !a.Can("graph:"+name, auth.PermRead) {
				return nil, problem.Forbidden("forbidden", "read permission on graph:%s is required", name)
			}
			w.types = append(w.types, t.id)
		}
	} else if !a.CanAll("graph", auth.PermRead) {
		var readable []int32
		for _, t := range ts.byID {
			if a.Can("graph:"+t.Name, auth.PermRead) {
				readable = append(readable, t.id)
			}
		}
		if len(readable) < len(ts.byID) {
			w.types = append([]int32{}, readable...)
		}
	}
	var allowed []string
	restricted := false
	switch {
	case len(o.Collections) > 0:
		restricted = true
		for _, name := range o.Collections {
			id, err := s.docs.CollectionID(ctx, tenant, name, auth.PermRead)
			if err != nil {
				return nil, err
			}
			allowed = append(allowed, id)
		}
	case !a.CanAll("collection", auth.PermRead):
		names, err := s.docs.CollectionNames(ctx, tenant)
		if err != nil {
			return nil, err
		}
		for id, name := range names {
			if a.Can("collection:"+name, auth.PermRead) {
				allowed = append(allowed, id)
			} else {
				restricted = true
			}
		}
	}
	v := &view{w: w, tenant: tenant, types: ts, allowed: allowed, restricted: restricted}
	var nodeCond string
	var nodeArgs []any
	if o.Filter != "" {
		expr, err := doc.ParseFilter(o.Filter)
		if err != nil {
			return nil, err
		}
		if nodeCond, nodeArgs, err = filter.SQL(expr, doc.FilterTarget, 3); err != nil {
			return nil, problem.Invalid("invalid_filter", "%v", err)
		}
		v.nodeExpr = expr
	}
	if o.EdgeFilter != "" {
		expr, err := doc.ParseFilterField(o.EdgeFilter, "query.edge_filter")
		if err != nil {
			return nil, err
		}
		v.edgeExpr = expr
		// The adjacency query numbers its own values first: frontier, limit, types (and no
		// time: as_of is refused with filters).
		next := 3
		if w.types != nil {
			next++
		}
		if w.edgeCond, w.edgeArgs, err = filter.SQL(expr, filter.Target{Body: "e.props"}, next); err != nil {
			return nil, problem.Invalid("invalid_filter", "edge_filter: %v", err).WithField("query.edge_filter", "invalid")
		}
	}
	if restricted || nodeCond != "" {
		if !restricted {
			allowed = nil
		} else if allowed == nil {
			allowed = []string{} // nothing is readable
		}
		w.admit = admitter(q, allowed, nodeCond, nodeArgs)
	}
	v.o = *o
	return v, nil
}

// admitter returns the check that newly reached nodes belong to an allowed collection and
// (with a filter) that their documents match.
// allowed nil admits every collection.
func admitter(q querier, allowed []string, cond string, args []any) func(ctx context.Context, nodes []int64) (map[int64]bool, error) {
	sql := `SELECT n.node FROM graph_nodes n WHERE n.node = ANY($1::int8[]) AND ($2::uuid[] IS NULL OR n.collection_id = ANY($2::uuid[]))`
	if cond != "" {
		sql = `SELECT n.node FROM graph_nodes n JOIN documents d ON d.collection_id = n.collection_id AND d.id = n.doc_id
			WHERE n.node = ANY($1::int8[]) AND ($2::uuid[] IS NULL OR n.collection_id = ANY($2::uuid[])) AND d.body IS NOT NULL AND (` + cond + `)`
	}
	return func(ctx context.Context, nodes []int64) (map[int64]bool, error) {
		rows, err := q.Query(ctx, sql, append([]any{nodes, allowed}, args...)...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		ok := map[int64]bool{}
		for rows.Next() {
			var n int64
			if err := rows.Scan(&n); err != nil {
				return nil, err
			}
			ok[n] = true
		}
		return ok, rows.Err()
	}
}

// start resolves the node a traversal begins at (read on its collection). A document that
// exists but has no edges is node 0, which reaches nothing; a deleted one answers 404
// unless the traversal looks at the past.
func (s *Store) start(ctx context.Context, tenant string, ref NodeRef, field string, asOf time.Time) (int64, error) {
	collID, err := s.docs.CollectionID(ctx, tenant, ref.Collection, auth.PermRead)
	if err != nil {
		return 0, err
	}
	var node *int64
	var live *bool
	err = s.pool.QueryRow(ctx, `SELECT (SELECT node FROM graph_nodes WHERE collection_id = $1 AND doc_id = $2),
		(SELECT body IS NOT NULL FROM documents WHERE collection_id = $1 AND id = $2)`, collID, ref.ID).Scan(&node, &live)
	if err != nil {
		return 0, db.Translate(err, "node")
	}
	switch {
	case live == nil && (node == nil || asOf.IsZero()):
		return 0, problem.NotFound("document_not_found", "document %s not found", ref).WithField(field, ref.String())
	case live != nil && !*live && asOf.IsZero():
		return 0, problem.NotFound("document_deleted", "document %s is deleted", ref).WithField(field, ref.String())
	case node == nil:
		return 0, nil
	}
	return *node, nil
}

// Neighbourhood returns the nodes within o.MaxDepth hops of from (default 1), nearest
// first, each with its depth and, with o.Paths, a shortest path to it.
func (s *Store) Neighbourhood(ctx context.Context, tenant string, from NodeRef, o Options) (Result, error) {
	return s.reach(ctx, tenant, from, o, 1)
}

// Dependents returns everything that reaches node: the nodes with a path of edges (of
// o.Types) to it, nearest first, up to o.MaxDepth (default: the configured maximum).
func (s *Store) Dependents(ctx context.Context, tenant string, node NodeRef, o Options) (Result, error) {
	o.Direction = In
	return s.reach(ctx, tenant, node, o, s.cfg.MaxDepth)
}

// Dependencies returns everything node reaches, nearest first, up to o.MaxDepth (default:
// the configured maximum).
func (s *Store) Dependencies(ctx context.Context, tenant string, node NodeRef, o Options) (Result, error) {
	o.Direction = Out
	return s.reach(ctx, tenant, node, o, s.cfg.MaxDepth)
}

func (s *Store) reach(ctx context.Context, tenant string, from NodeRef, o Options, defaultDepth int) (Result, error) {
	v, err := s.prepare(ctx, tenant, &o, s.pool, defaultDepth)
	if err != nil {
		return Result{}, err
	}
	var start int64
	mw, release, err := s.memWalkWhile(ctx, v, true, func() (err error) {
		start, err = s.start(ctx, tenant, from, "path.node", o.AsOf)
		return err
	})
	if err != nil {
		return Result{}, err
	}
	res := Result{Nodes: []Node{}}
	if mw != nil {
		defer release()
	}
	if start == 0 {
		return res, nil
	}
	if mw != nil {
		return s.reachMemory(ctx, v, mw, start)
	}
	var r *bfsResult
	res.Partial, err = s.traverse(ctx, o, func(ctx context.Context) error {
		var err error
		r, err = v.w.bfs(ctx, start, o.Direction, o.MaxDepth, o.Limit)
		return err
	})
	if err != nil {
		return Result{}, err
	}
	res.Truncated = r.truncated
	need := append([]int64{start}, r.order...)
	refs, err := s.refs(ctx, s.pool, tenant, need)
	if err != nil {
		return Result{}, err
	}
	for _, n := range r.order {
		node := Node{NodeRef: refs[n], Depth: r.visits[n].depth}
		if o.Paths {
			nodes, edges, types := pathTo(r.visits, n)
			node.Path = v.path(refs, nodes, edges, types)
		}
		res.Nodes = append(res.Nodes, node)
	}
	return res, nil
}

// reachMemory is reach over the in-memory index.
func (s *Store) reachMemory(ctx context.Context, v *view, mw *memWalk, start int64) (Result, error) {
	o := v.o
	res := Result{Nodes: []Node{}}
	a, ok := mw.g.dense(start)
	if !ok {
		return res, nil // no live edges
	}
	var r *memBFS
	var err error
	res.Partial, err = s.traverse(ctx, o, func(ctx context.Context) error {
		var err error
		r, err = mw.bfs(ctx, a, o.Direction, o.MaxDepth, o.Limit, o.Paths)
		return err
	})
	if r != nil {
		defer mw.idx.putSet(r.vs)
	}
	if err != nil {
		return Result{}, err
	}
	res.Truncated = r.truncated
	res.Nodes = mw.nodesOf(r.order, r.ends)
	if o.Paths {
		for i, n := range r.order {
			res.Nodes[i].Path = mw.path(v, r.vs, n)
		}
	}
	return res, nil
}

// path names the nodes and edges of a walk.
func (v *view) path(refs map[int64]NodeRef, nodes, edges []int64, types []int32) *Path {
	p := &Path{Nodes: make([]NodeRef, len(nodes)), Edges: make([]EdgeRef, len(edges))}
	for i, n := range nodes {
		p.Nodes[i] = refs[n]
	}
	for i, e := range edges {
		p.Edges[i] = EdgeRef{ID: e, Type: v.types.name(types[i])}
	}
	return p
}

func (ts *typeSet) name(id int32) string {
	if t := ts.byID[id]; t != nil {
		return t.Name
	}
	return ""
}

// refs names nodes. Collection names come from a cache: a collection's id never changes
// name, nor is it reused.
func (s *Store) refs(ctx context.Context, q querier, tenant string, nodes []int64) (map[int64]NodeRef, error) {
	rows, err := q.Query(ctx, `SELECT node, collection_id::text, doc_id FROM graph_nodes WHERE node = ANY($1::int8[]) AND tenant_id = $2`,
		nodes, tenant)
	if err != nil {
		return nil, db.Translate(err, "nodes")
	}
	refs := make(map[int64]NodeRef, len(nodes))
	colls := map[int64]string{}
	var n int64
	var coll, id string
	if _, err := pgx.ForEachRow(rows, []any{&n, &coll, &id}, func() error {
		refs[n] = NodeRef{ID: id}
		colls[n] = coll
		return nil
	}); err != nil {
		return nil, db.Translate(err, "nodes")
	}
	names, err := s.collectionNames(ctx, tenant, colls)
	if err != nil {
		return nil, err
	}
	for n, r := range refs {
		r.Collection = names[colls[n]]
		refs[n] = r
	}
	return refs, nil
}

// collectionNames returns the names of the collections (by id) in colls, from the cache or,
// for ids it does not hold, the database.
func (s *Store) collectionNames(ctx context.Context, tenant string, colls map[int64]string) (map[string]string, error) {
	names := map[string]string{}
	s.mu.Lock()
	missing := false
	for _, id := range colls {
		if name, ok := s.collNames[id]; ok {
			names[id] = name
		} else {
			missing = true
		}
	}
	s.mu.Unlock()
	if !missing {
		return names, nil
	}
	all, err := s.docs.CollectionNames(ctx, tenant)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, name := range all {
		s.collNames[id] = name
		names[id] = name
	}
	return names, nil
}

package graph

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Neighbour is an edge of a node and the node at its other end.
type Neighbour struct {
	Node NodeRef `json:"node"`
	Edge Edge    `json:"edge"`
	// Direction is out when the edge goes from the node asked about, in when it points at it.
	Direction Direction `json:"direction" enum:"out,in"`
}

// NeighbourPage is a page of neighbours.
type NeighbourPage struct {
	Items []Neighbour `json:"items"`
	// NextCursor continues the listing; absent on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// Neighbours lists a node's edges and the nodes at their other ends, paged (o.Limit,
// default 100, at most 1000; cursor from the previous page): out edges, then in edges for
// Both, each ordered by type, neighbour and edge. o.Collections, o.Filter and
// o.EdgeFilter narrow the list; with o.AsOf the edges are those alive then, with their
// properties as they were.
func (s *Store) Neighbours(ctx context.Context, tenant string, node NodeRef, o Options, cursor string) (NeighbourPage, error) {
	if o.Limit == 0 {
		o.Limit = 100
	}
	if o.Limit > 1000 {
		return NeighbourPage{}, problem.Invalid("limit_out_of_range", "limit must be 1 to 1000").WithField("query.limit", fmt.Sprint(o.Limit))
	}
	v, err := s.prepare(ctx, tenant, &o, s.pool, 1)
	if err != nil {
		return NeighbourPage{}, err
	}
	start, err := s.start(ctx, tenant, node, "path.node", o.AsOf)
	if err != nil {
		return NeighbourPage{}, err
	}
	cur, err := parseCursor(cursor)
	if err != nil {
		return NeighbourPage{}, err
	}
	page := NeighbourPage{Items: []Neighbour{}}
	if start == 0 {
		return page, nil
	}
	phases := []Direction{Out, In}
	switch o.Direction {
	case Out:
		phases = phases[:1]
	case In:
		phases = phases[1:]
	}
	for _, dir := range phases {
		if cur.Dir == In && dir == Out {
			continue // the cursor is past the out edges
		}
		c := neighbourCursor{}
		if cur.Dir == dir {
			c = cur
		}
		want := o.Limit - len(page.Items)
		if want == 0 {
			// The page filled up with the out edges: the next starts at the in edges.
			page.NextCursor = neighbourCursor{Dir: dir}.String()
			break
		}
		items, err := s.neighbourPhase(ctx, v, start, dir, c, want+1)
		if err != nil {
			return NeighbourPage{}, err
		}
		if len(items) > want {
			items = items[:want]
			last := items[want-1]
			page.NextCursor = neighbourCursor{Dir: dir, Type: last.typeID, Node: last.other, Edge: last.Edge.ID}.String()
		}
		for _, it := range items {
			page.Items = append(page.Items, it.Neighbour)
		}
		if page.NextCursor != "" {
			break
		}
	}
	return page, nil
}

type neighbourRow struct {
	Neighbour
	typeID int32
	other  int64
}

func (s *Store) neighbourPhase(ctx context.Context, v *view, start int64, dir Direction, cur neighbourCursor, limit int) ([]neighbourRow, error) {
	q := v.nodeEdges(start, dir)
	if cur.Edge != 0 {
		q.where += fmt.Sprintf(" AND (e.type_id, e.%s, e.id) > (%s, %s, %s)", q.other, q.arg(cur.Type), q.arg(cur.Node), q.arg(cur.Edge))
	}
	if v.nodeExpr != nil {
		if !v.restricted {
			q.join += " JOIN graph_nodes n ON n.node = e." + q.other
		}
		q.join += " JOIN documents d ON d.collection_id = n.collection_id AND d.id = n.doc_id AND d.body IS NOT NULL"
		if err := q.filter(v.nodeExpr, doc.FilterTarget); err != nil {
			return nil, err
		}
	}
	if v.edgeExpr != nil {
		if err := q.filter(v.edgeExpr, filter.Target{Body: "e.props"}); err != nil {
			return nil, err
		}
	}
	sql := `SELECT ` + edgeColumns + ` FROM graph_edges e` + q.join + ` WHERE ` + q.where +
		` ORDER BY e.type_id, e.` + q.other + `, e.id LIMIT ` + q.arg(limit)
	args := q.args
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, db.Translate(err, "neighbours")
	}
	var es []*edgeRow
	for rows.Next() {
		e := &edgeRow{}
		if err := scanEdge(rows, e); err != nil {
			rows.Close()
			return nil, db.Translate(err, "neighbours")
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, db.Translate(err, "neighbours")
	}
	nodes := []int64{start}
	for _, e := range es {
		nodes = append(nodes, e.from, e.to)
	}
	refs, err := s.refs(ctx, s.pool, v.tenant, nodes)
	if err != nil {
		return nil, err
	}
	out := make([]neighbourRow, 0, len(es))
	for _, e := range es {
		e.Type, e.From, e.To = v.types.name(e.typeID), refs[e.from], refs[e.to]
		edge := e.Edge
		if !v.o.AsOf.IsZero() && e.UpdatedAt.After(v.o.AsOf) {
			if edge, err = s.at(ctx, edge, 0, v.o.AsOf); err != nil {
				return nil, db.Translate(err, "neighbours")
			}
		}
		r := neighbourRow{Neighbour: Neighbour{Edge: edge, Direction: dir, Node: e.To}, typeID: e.typeID, other: e.to}
		if dir == In {
			r.Node, r.other = e.From, e.from
		}
		out = append(out, r)
	}
	return out, nil
}

// edgeQuery is a query over a node's edges in one direction, its values numbered as they
// are added.
type edgeQuery struct {
	other       string // the column of the neighbour: to_node or from_node
	join, where string
	args        []any
}

func (q *edgeQuery) arg(v any) string {
	q.args = append(q.args, v)
	return fmt.Sprintf("$%d", len(q.args))
}

func (q *edgeQuery) filter(e filter.Expr, t filter.Target) error {
	cond, args, err := filter.SQL(e, t, len(q.args)+1)
	if err != nil {
		return problem.Invalid("invalid_filter", "%v", err)
	}
	q.args = append(q.args, args...)
	q.where += " AND (" + cond + ")"
	return nil
}

// nodeEdges selects start's edges going dir: live (or alive at the view's time), of the
// types followed, to nodes of the collections the view may enter (joined as n).
func (v *view) nodeEdges(start int64, dir Direction) *edgeQuery {
	key, other := "from_node", "to_node"
	if dir == In {
		key, other = other, key
	}
	q := &edgeQuery{other: other, args: []any{start}, where: "e." + key + " = $1"}
	if v.o.AsOf.IsZero() {
		q.where += " AND e.deleted_at IS NULL"
	} else {
		at := q.arg(v.o.AsOf)
		q.where += " AND e.created_at <= " + at + " AND (e.deleted_at IS NULL OR e.deleted_at > " + at + ")"
	}
	if v.w.types != nil {
		q.where += " AND e.type_id = ANY(" + q.arg(v.w.types) + "::int4[])"
	}
	if v.restricted {
		q.join = " JOIN graph_nodes n ON n.node = e." + other
		q.where += " AND n.collection_id = ANY(" + q.arg(v.allowed) + "::uuid[])"
	}
	return q
}

// neighbourCursor is where a neighbour listing stopped: after this edge, in this phase
// (Edge 0: at the phase's start).
type neighbourCursor struct {
	Dir  Direction `json:"d"`
	Type int32     `json:"t"`
	Node int64     `json:"n"`
	Edge int64     `json:"e"`
}

func (c neighbourCursor) String() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseCursor(s string) (neighbourCursor, error) {
	var c neighbourCursor
	if s == "" {
		return c, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || (c.Dir != Out && c.Dir != In) || c.Edge < 0 {
		return c, problem.Invalid("invalid_cursor", "the cursor is not one this listing returned").WithField("query.cursor", "invalid")
	}
	return c, nil
}

// Degree counts a node's edges by type and direction.
type Degree struct {
	Out      map[string]int64 `json:"out"`
	In       map[string]int64 `json:"in"`
	OutTotal int64            `json:"out_total"`
	InTotal  int64            `json:"in_total"`
}

// Degree counts a node's edges, per type the caller may read (o.Types narrows them), as of
// o.AsOf when set. With o.Collections, only edges to nodes of those collections count.
func (s *Store) Degree(ctx context.Context, tenant string, node NodeRef, o Options) (Degree, error) {
	v, err := s.prepare(ctx, tenant, &o, s.pool, 1)
	if err != nil {
		return Degree{}, err
	}
	if o.Filter != "" || o.EdgeFilter != "" {
		return Degree{}, problem.Invalid("invalid_request", "degree counts take types and collections, not filters")
	}
	var start int64
	mw, release, err := s.memWalkWhile(ctx, v, true, func() (err error) {
		start, err = s.start(ctx, tenant, node, "path.node", o.AsOf)
		return err
	})
	if err != nil {
		return Degree{}, err
	}
	if mw != nil {
		defer release()
	}
	d := Degree{Out: map[string]int64{}, In: map[string]int64{}}
	if start == 0 {
		return d, nil
	}
	if mw != nil {
		if u, ok := mw.g.dense(start); ok {
			return d, mw.degree(ctx, v, u, &d)
		}
		return d, nil
	}
	for _, dir := range []Direction{Out, In} {
		q := v.nodeEdges(start, dir)
		rows, err := s.pool.Query(ctx, `SELECT e.type_id, count(*) FROM graph_edges e`+q.join+` WHERE `+q.where+` GROUP BY e.type_id`, q.args...)
		if err != nil {
			return Degree{}, db.Translate(err, "degree")
		}
		var typ int32
		var n int64
		counts, total := d.Out, &d.OutTotal
		if dir == In {
			counts, total = d.In, &d.InTotal
		}
		if _, err := pgx.ForEachRow(rows, []any{&typ, &n}, func() error {
			counts[v.types.name(typ)] += n
			*total += n
			return nil
		}); err != nil {
			return Degree{}, db.Translate(err, "degree")
		}
	}
	return d, nil
}

// SubgraphQuery picks a subgraph: the neighbourhood of a node (Around, with Options'
// direction — default both — and depth — default 1), or the documents of a collection that
// match a filter (Collection and Filter: a whole board). The subgraph has those nodes and
// every edge between them (of Options' types).
type SubgraphQuery struct {
	Around     *NodeRef
	Collection string
	Filter     string
	// IncludeData adds each node's document.
	IncludeData bool
	Options     Options
}

// SubgraphNode is a node of a subgraph.
type SubgraphNode struct {
	NodeRef
	Depth *int            `json:"depth,omitempty" doc:"Hops from the node the subgraph is around."`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Subgraph is a set of nodes and the edges between them, for rendering.
type Subgraph struct {
	Nodes []SubgraphNode `json:"nodes"`
	Edges []Edge         `json:"edges"`
	// Truncated says the limit (on nodes, or on edges at the configured maximum) cut it short.
	Truncated bool `json:"truncated"`
	Partial   bool `json:"partial,omitempty"`
}

// Subgraph returns the nodes that q picks and the edges between them.
func (s *Store) Subgraph(ctx context.Context, tenant string, q SubgraphQuery) (Subgraph, error) {
	out := Subgraph{Nodes: []SubgraphNode{}, Edges: []Edge{}}
	o := q.Options
	if q.IncludeData && !o.AsOf.IsZero() {
		return out, problem.Invalid("as_of_unsupported", "include_data reads current documents; it cannot be combined with as_of")
	}
	var nodes []int64
	data := map[int64]json.RawMessage{}
	switch {
	case q.Around != nil && q.Collection == "":
		if o.Direction == "" {
			o.Direction = Both
		}
		r, err := s.Neighbourhood(ctx, tenant, *q.Around, o)
		if err != nil {
			return out, err
		}
		start := *q.Around
		zero := 0
		out.Nodes = append(out.Nodes, SubgraphNode{NodeRef: start, Depth: &zero})
		for _, n := range r.Nodes {
			depth := n.Depth
			out.Nodes = append(out.Nodes, SubgraphNode{NodeRef: n.NodeRef, Depth: &depth})
		}
		out.Truncated, out.Partial = r.Truncated, r.Partial
		refs := make([]NodeRef, len(out.Nodes))
		for i, n := range out.Nodes {
			refs[i] = n.NodeRef
		}
		var err2 error
		if nodes, err2 = s.nodeIDs(ctx, tenant, refs); err2 != nil {
			return out, err2
		}
	case q.Around == nil && q.Collection != "":
		var err error
		nodes, err = s.boardNodes(ctx, tenant, q, &out, data)
		if err != nil {
			return out, err
		}
	default:
		return out, problem.Invalid("invalid_request", "give either around (a node) or collection (with an optional filter)")
	}
	v, err := s.prepare(ctx, tenant, &o, s.pool, 1)
	if err != nil {
		return out, err
	}
	var ids []int64
	for _, n := range nodes {
		if n != 0 {
			ids = append(ids, n)
		}
	}
	if len(ids) > 0 {
		if err := s.edgesAmong(ctx, v, ids, &out); err != nil {
			return out, err
		}
	}
	if q.IncludeData && q.Around != nil {
		if err := s.nodeData(ctx, ids, data); err != nil {
			return out, err
		}
	}
	if q.Around != nil {
		for i := range out.Nodes {
			if nodes[i] != 0 {
				out.Nodes[i].Data = data[nodes[i]]
			}
		}
	}
	return out, nil
}

// nodeIDs returns the node numbers of refs, 0 for a document without edges.
func (s *Store) nodeIDs(ctx context.Context, tenant string, refs []NodeRef) ([]int64, error) {
	colls, ids := make([]string, len(refs)), make([]string, len(refs))
	for i, r := range refs {
		colls[i], ids[i] = r.Collection, r.ID
	}
	rows, err := s.pool.Query(ctx, `SELECT w.ord, n.node FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(c, i, ord)
		JOIN collections c ON c.tenant_id = $3 AND c.name = w.c
		JOIN graph_nodes n ON n.collection_id = c.id AND n.doc_id = w.i`, colls, ids, tenant)
	if err != nil {
		return nil, db.Translate(err, "nodes")
	}
	out := make([]int64, len(refs))
	var ord, n int64
	_, err = pgx.ForEachRow(rows, []any{&ord, &n}, func() error {
		out[ord-1] = n
		return nil
	})
	return out, db.Translate(err, "nodes")
}

// boardNodes fills out.Nodes with the documents of q.Collection matching q.Filter (read on
// the collection) and returns their node numbers (0: no edges).
func (s *Store) boardNodes(ctx context.Context, tenant string, q SubgraphQuery, out *Subgraph, data map[int64]json.RawMessage) ([]int64, error) {
	o := q.Options
	if o.Limit == 0 {
		o.Limit = s.cfg.DefaultLimit
	}
	if o.Limit < 1 || o.Limit > s.cfg.MaxResults {
		return nil, problem.Invalid("limit_out_of_range", "limit must be 1 to %d (the configured maximum)", s.cfg.MaxResults)
	}
	if !o.AsOf.IsZero() {
		return nil, problem.Invalid("as_of_unsupported", "a collection's subgraph is read as it is now")
	}
	collID, err := s.docs.CollectionID(ctx, tenant, q.Collection, auth.PermRead)
	if err != nil {
		return nil, err
	}
	expr, err := doc.ParseFilter(q.Filter)
	if err != nil {
		return nil, err
	}
	where, args, err := filter.SQL(expr, doc.FilterTarget, 3)
	if err != nil {
		return nil, problem.Invalid("invalid_filter", "%v", err)
	}
	body := "NULL::jsonb"
	if q.IncludeData {
		body = "d.body"
	}
	rows, err := s.pool.Query(ctx, `SELECT d.id, coalesce(n.node, 0), `+body+` FROM documents d
		LEFT JOIN graph_nodes n ON n.collection_id = d.collection_id AND n.doc_id = d.id
		WHERE d.collection_id = $1 AND d.body IS NOT NULL AND (`+where+`) ORDER BY d.id LIMIT $2`,
		append([]any{collID, o.Limit + 1}, args...)...)
	if err != nil {
		return nil, db.Translate(err, "documents")
	}
	var nodes []int64
	var id string
	var n int64
	var b []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &n, &b}, func() error {
		if len(nodes) == o.Limit {
			out.Truncated = true
			return nil
		}
		nodes = append(nodes, n)
		sn := SubgraphNode{NodeRef: NodeRef{Collection: q.Collection, ID: id}}
		if b != nil {
			sn.Data = append(json.RawMessage(nil), b...)
		}
		out.Nodes = append(out.Nodes, sn)
		return nil
	})
	return nodes, db.Translate(err, "documents")
}

// edgesAmong adds the edges whose two ends are both among nodes (at most the configured
// maximum).
func (s *Store) edgesAmong(ctx context.Context, v *view, nodes []int64, out *Subgraph) error {
	args := []any{nodes, s.cfg.MaxResults + 1}
	where := "e.from_node = ANY($1::int8[]) AND e.to_node = ANY($1::int8[])"
	if v.o.AsOf.IsZero() {
		where += " AND e.deleted_at IS NULL"
	} else {
		args = append(args, v.o.AsOf)
		where += " AND e.created_at <= $3 AND (e.deleted_at IS NULL OR e.deleted_at > $3)"
	}
	if v.w.types != nil {
		args = append(args, v.w.types)
		where += fmt.Sprintf(" AND e.type_id = ANY($%d::int4[])", len(args))
	}
	rows, err := s.pool.Query(ctx, `SELECT `+edgeColumns+` FROM graph_edges e WHERE `+where+` ORDER BY e.id LIMIT $2`, args...)
	if err != nil {
		return db.Translate(err, "edges")
	}
	var es []*edgeRow
	for rows.Next() {
		e := &edgeRow{}
		if err := scanEdge(rows, e); err != nil {
			rows.Close()
			return db.Translate(err, "edges")
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return db.Translate(err, "edges")
	}
	if len(es) > s.cfg.MaxResults {
		es, out.Truncated = es[:s.cfg.MaxResults], true
	}
	refs, err := s.refs(ctx, s.pool, v.tenant, nodes)
	if err != nil {
		return err
	}
	for _, e := range es {
		e.Type, e.From, e.To = v.types.name(e.typeID), refs[e.from], refs[e.to]
		edge := e.Edge
		if !v.o.AsOf.IsZero() && e.UpdatedAt.After(v.o.AsOf) {
			if edge, err = s.at(ctx, edge, 0, v.o.AsOf); err != nil {
				return db.Translate(err, "edges")
			}
		}
		out.Edges = append(out.Edges, edge)
	}
	return nil
}

// nodeData reads the documents of nodes.
func (s *Store) nodeData(ctx context.Context, nodes []int64, data map[int64]json.RawMessage) error {
	rows, err := s.pool.Query(ctx, `SELECT n.node, d.body FROM graph_nodes n
		JOIN documents d ON d.collection_id = n.collection_id AND d.id = n.doc_id WHERE n.node = ANY($1::int8[]) AND d.body IS NOT NULL`, nodes)
	if err != nil {
		return db.Translate(err, "documents")
	}
	var n int64
	var b []byte
	_, err = pgx.ForEachRow(rows, []any{&n, &b}, func() error {
		data[n] = append(json.RawMessage(nil), b...)
		return nil
	})
	return db.Translate(err, "documents")
}

package graph

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Direction is which way edges are followed.
type Direction string

// Directions.
const (
	Out  Direction = "out"  // from the node along its edges
	In   Direction = "in"   // against edges: who points at the node
	Both Direction = "both" // either way
)

func (d Direction) reverse() Direction {
	switch d {
	case Out:
		return In
	case In:
		return Out
	}
	return Both
}

// hop is one edge followed from a node to a neighbour.
type hop struct {
	from, to, edge int64
	typ            int32
	weight         float64
}

// walker reads adjacency for traversals: one query per frontier, over the index of the
// direction followed, restricted to some edge types, to edges alive at a time, to edges
// whose properties match a filter; admit decides which newly reached nodes a traversal may
// enter (nil: all).
type walker struct {
	q        querier
	types    []int32 // nil: every type
	asOf     time.Time
	edgeCond string // SQL over e.props, or ""
	edgeArgs []any
	weight   string // SQL of an edge's weight, or "" (every hop weighs 1)
	admit    func(ctx context.Context, nodes []int64) (map[int64]bool, error)

	sqls map[Direction]string
}

// query builds (once per direction) the adjacency query. $1 is the frontier, $2 the row
// limit; edge types, the time and the edge filter's values follow.
func (w *walker) query(dir Direction) (string, []any) {
	args := []any{nil, nil}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var cond strings.Builder
	if w.types != nil {
		cond.WriteString(" AND e.type_id = ANY(" + arg(w.types) + "::int4[])")
	}
	var at string
	if !w.asOf.IsZero() {
		at = arg(w.asOf)
	}
	if w.edgeCond != "" {
		// The edge filter was compiled with its values numbered from here.
		args = append(args, w.edgeArgs...)
		cond.WriteString(" AND (" + w.edgeCond + ")")
	}
	if w.sqls == nil {
		w.sqls = map[Direction]string{}
	}
	if sql, ok := w.sqls[dir]; ok {
		return sql, args
	}
	weight := ""
	if w.weight != "" {
		weight = ", " + w.weight
	}
	one := func(key, other string) []string {
		head := "SELECT e." + key + ", e." + other + ", e.id, e.type_id" + weight + " FROM graph_edges e WHERE e." + key + " = ANY($1::int8[]) AND "
		if at == "" {
			return []string{head + "e.deleted_at IS NULL" + cond.String()}
		}
		// As of a time: live edges made by then, and tombstones deleted after it.
		return []string{
			head + "e.deleted_at IS NULL AND e.created_at <= " + at + cond.String(),
			head + "e.deleted_at IS NOT NULL AND e.deleted_at > " + at + " AND e.created_at <= " + at + cond.String(),
		}
	}
	var parts []string
	if dir == Out || dir == Both {
		parts = append(parts, one("from_node", "to_node")...)
	}
	if dir == In || dir == Both {
		parts = append(parts, one("to_node", "from_node")...)
	}
	sql := "SELECT * FROM (" + strings.Join(parts, " UNION ALL ") + ") h LIMIT $2"
	w.sqls[dir] = sql
	return sql, args
}

// expand returns up to limit hops out of the frontier (limit 0: all).
func (w *walker) expand(ctx context.Context, frontier []int64, dir Direction, limit int) ([]hop, error) {
	if len(frontier) == 0 {
		return nil, nil
	}
	sql, args := w.query(dir)
	args[0] = frontier
	args[1] = int64(math.MaxInt64)
	if limit > 0 {
		args[1] = int64(limit)
	}
	rows, err := w.q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hops []hop
	for rows.Next() {
		var h hop
		dst := []any{&h.from, &h.to, &h.edge, &h.typ}
		if w.weight != "" {
			dst = append(dst, &h.weight)
		} else {
			h.weight = 1
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		hops = append(hops, h)
	}
	return hops, rows.Err()
}

// visit is how a traversal reached a node: its depth, and the node and edge it came by.
type visit struct {
	depth  int
	parent int64
	edge   int64
	typ    int32
	denied bool // reached but not admitted: never entered, never returned
}

// bfsResult is a breadth-first traversal: the nodes entered, in order of depth, and how
// each was reached.
type bfsResult struct {
	order     []int64
	visits    map[int64]visit
	truncated bool
}

// bfs walks breadth-first from start up to maxDepth, entering each admitted node once,
// until limit nodes are found. On error (the time budget) it returns what it found so far.
func (w *walker) bfs(ctx context.Context, start int64, dir Direction, maxDepth, limit int) (*bfsResult, error) {
	r := &bfsResult{visits: map[int64]visit{start: {parent: -1}}}
	frontier := []int64{start}
	for depth := 1; depth <= maxDepth && len(frontier) > 0; depth++ {
		remaining := limit - len(r.order)
		rowCap := max(4*remaining, 1024)
		for {
			hops, err := w.expand(ctx, frontier, dir, rowCap)
			if err != nil {
				return r, err
			}
			cand, err := w.discover(ctx, r.visits, hops, depth)
			if err != nil {
				return r, err
			}
			if len(hops) == rowCap && len(cand) < remaining {
				// The row cap cut the level short and more nodes may be new: forget this
				// level and fetch it again, with room for more.
				for _, h := range hops {
					if v, ok := r.visits[h.to]; ok && v.depth == depth && v.parent >= 0 {
						delete(r.visits, h.to)
					}
				}
				rowCap *= 4
				continue
			}
			for _, n := range cand {
				v := r.visits[n]
				if len(r.order) == limit {
					delete(r.visits, n)
					r.truncated = true
					continue
				}
				r.visits[n] = v
				r.order = append(r.order, n)
			}
			if len(hops) == rowCap {
				r.truncated = true
			}
			frontier = cand[:min(len(cand), remaining)]
			break
		}
		if len(r.order) == limit {
			r.truncated = r.truncated || (depth < maxDepth && len(frontier) > 0)
			break
		}
	}
	return r, nil
}

// discover records the nodes that hops reach for the first time (at depth), asks admit
// about them, and returns the admitted ones, sorted by node number so that a traversal cut
// short by its limit answers the same way every time. Nodes denied entry are remembered
// as such and not asked about again.
func (w *walker) discover(ctx context.Context, visits map[int64]visit, hops []hop, depth int) ([]int64, error) {
	var cand []int64
	for _, h := range hops {
		if _, seen := visits[h.to]; seen {
			continue
		}
		visits[h.to] = visit{depth: depth, parent: h.from, edge: h.edge, typ: h.typ}
		cand = append(cand, h.to)
	}
	slices.Sort(cand)
	if w.admit == nil || len(cand) == 0 {
		return cand, nil
	}
	ok, err := w.admit(ctx, cand)
	if err != nil {
		for _, n := range cand {
			delete(visits, n)
		}
		return nil, err
	}
	admitted := cand[:0]
	for _, n := range cand {
		if ok[n] {
			admitted = append(admitted, n)
		} else {
			v := visits[n]
			v.denied = true
			visits[n] = v
		}
	}
	return admitted, nil
}

// pathTo follows parents from n back to the start.
func pathTo(visits map[int64]visit, n int64) (nodes []int64, edges []int64, types []int32) {
	for {
		nodes = append(nodes, n)
		v := visits[n]
		if v.parent < 0 {
			break
		}
		edges = append(edges, v.edge)
		types = append(types, v.typ)
		n = v.parent
	}
	slices.Reverse(nodes)
	slices.Reverse(edges)
	slices.Reverse(types)
	return nodes, edges, types
}

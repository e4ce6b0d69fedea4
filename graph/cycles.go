package graph

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/problem"
)

// cycleError answers 409 cycle naming the nodes of the cycle, first node repeated last.
func cycleError(typ string, cycle []NodeRef, format string) error {
	names := make([]string, len(cycle))
	for i, n := range cycle {
		names[i] = n.String()
	}
	return problem.Conflict("cycle", format+": %s", typ, strings.Join(names, " → ")).WithExtension("cycle", cycle)
}

// closesCycle reports the cycle an edge from → to of an acyclic type would close: the
// shortest path back from to to from over the type's edges, or nil. The caller holds the
// type's lock, so no concurrent writer can close a cycle behind the check.
func (s *Store) closesCycle(ctx context.Context, tx pgx.Tx, tenant string, typeID int32, from, to int64) ([]NodeRef, error) {
	var found *walk
	if from == to {
		found = &walk{nodes: []int64{to}}
	} else {
		w := &walker{q: tx, types: []int32{typeID}}
		err := s.within(ctx, func(ctx context.Context) error {
			var err error
			found, err = w.shortest(ctx, to, from, Out, math.MaxInt32)
			return err
		})
		if errors.Is(err, errBudget) {
			return nil, problem.Unavailable("timeout", "checking the edge type for cycles took longer than the time budget of %s", s.cfg.TimeBudget)
		}
		if err != nil || found == nil {
			return nil, err
		}
	}
	nodes := append([]int64{from}, found.nodes...)
	refs, err := s.refs(ctx, tx, tenant, nodes)
	if err != nil {
		return nil, err
	}
	out := make([]NodeRef, len(nodes))
	for i, n := range nodes {
		out[i] = refs[n]
	}
	return out, nil
}

// anyCycle finds a cycle among the live edges of a type, or nil: a depth-first search
// over the type's edges, loaded whole (declaring a type acyclic, or importing into one, is
// rare). It returns the cycle's node numbers and names.
func (s *Store) anyCycle(ctx context.Context, tx pgx.Tx, tenant string, typeID int32) ([]int64, []NodeRef, error) {
	rows, err := tx.Query(ctx, `SELECT from_node, to_node FROM graph_edges WHERE type_id = $1 AND deleted_at IS NULL`, typeID)
	if err != nil {
		return nil, nil, err
	}
	adj := map[int64][]int64{}
	var from, to int64
	if _, err := pgx.ForEachRow(rows, []any{&from, &to}, func() error {
		adj[from] = append(adj[from], to)
		return nil
	}); err != nil {
		return nil, nil, err
	}
	cycle := findCycle(adj)
	if cycle == nil {
		return nil, nil, nil
	}
	refs, err := s.refs(ctx, tx, tenant, cycle)
	if err != nil {
		return nil, nil, err
	}
	named := make([]NodeRef, len(cycle))
	for i, n := range cycle {
		named[i] = refs[n]
	}
	return cycle, named, nil
}

// findCycle returns the nodes of a cycle (first repeated last) in a directed graph, or nil.
// Iterative, so a long chain cannot overflow the stack.
func findCycle(adj map[int64][]int64) []int64 {
	const (
		white = iota
		grey
		black
	)
	color := map[int64]int{}
	starts := make([]int64, 0, len(adj))
	for n := range adj {
		starts = append(starts, n)
	}
	slices.Sort(starts)
	type frame struct {
		node int64
		next int
	}
	for _, s := range starts {
		if color[s] != white {
			continue
		}
		stack := []frame{{node: s}}
		color[s] = grey
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next == len(adj[top.node]) {
				color[top.node] = black
				stack = stack[:len(stack)-1]
				continue
			}
			n := adj[top.node][top.next]
			top.next++
			switch color[n] {
			case grey:
				var cycle []int64
				for i := len(stack) - 1; i >= 0; i-- {
					cycle = append(cycle, stack[i].node)
					if stack[i].node == n {
						break
					}
				}
				slices.Reverse(cycle)
				return append(cycle, n)
			case white:
				color[n] = grey
				stack = append(stack, frame{node: n})
			}
		}
	}
	return nil
}

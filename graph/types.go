package graph

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// EdgeType describes a type of edge. A tenant's types come into being by use, or are
// declared; once a tenant declares one, edges of undeclared types are refused.
type EdgeType struct {
	Name string `json:"name" example:"depends_on"`
	// Declared types were created explicitly; the others by their first edge.
	Declared bool `json:"declared"`
	// Acyclic types refuse an edge that would close a cycle.
	Acyclic bool `json:"acyclic"`
	// Unique types allow one edge of the type from a node to another.
	Unique      bool      `json:"unique"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`

	id int32
}

// TypeInput declares a type or changes one.
type TypeInput struct {
	Name        string  `json:"name" maxLength:"64" example:"depends_on"`
	Acyclic     *bool   `json:"acyclic,omitempty" doc:"Refuse edges that would close a cycle (default false). Turning it on checks the existing edges."`
	Unique      *bool   `json:"unique,omitempty" doc:"At most one edge of this type from a node to another (default false). Turning it on checks the existing edges."`
	Description *string `json:"description,omitempty" maxLength:"1000"`
}

var typeNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)

func checkTypeName(name, field string) error {
	if !typeNameRE.MatchString(name) {
		return problem.Unprocessable("invalid_type", "an edge type is 1 to 64 letters, digits or _ . -, starting with a letter").WithField(field, "invalid")
	}
	return nil
}

func typeNotFound(name string) error {
	return problem.NotFound("type_not_found", "edge type %q not found", name)
}

// typeSet is a tenant's edge types.
type typeSet struct {
	byName map[string]*EdgeType
	byID   map[int32]*EdgeType
	strict bool // some type is declared: undeclared ones are refused
}

// typesChannel carries the tenant whose types changed.
const typesChannel = "strata_graph_types"

func (s *Store) forgetTypes(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tenant == "" {
		clear(s.types)
		return
	}
	delete(s.types, tenant)
}

// typeSetOf returns a tenant's types, cached while the listener that invalidates the cache
// is connected.
func (s *Store) typeSetOf(ctx context.Context, tenant string) (*typeSet, error) {
	if s.listener.Healthy() {
		s.mu.Lock()
		ts := s.types[tenant]
		s.mu.Unlock()
		if ts != nil {
			return ts, nil
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT id, name, declared, acyclic, uniq, description, created_at FROM graph_types WHERE tenant_id = $1`, tenant)
	if err != nil {
		return nil, db.Translate(err, "edge types")
	}
	ts := &typeSet{byName: map[string]*EdgeType{}, byID: map[int32]*EdgeType{}}
	_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) {
		t := &EdgeType{}
		if err := r.Scan(&t.id, &t.Name, &t.Declared, &t.Acyclic, &t.Unique, &t.Description, &t.CreatedAt); err != nil {
			return struct{}{}, err
		}
		ts.byName[t.Name], ts.byID[t.id] = t, t
		ts.strict = ts.strict || t.Declared
		return struct{}{}, nil
	})
	if err != nil {
		return nil, db.Translate(err, "edge types")
	}
	if s.listener.Healthy() {
		s.mu.Lock()
		s.types[tenant] = ts
		s.mu.Unlock()
	}
	return ts, nil
}

// writableType authorizes writing edges of a type and returns it, creating it on first use
// unless the tenant declares its types.
func (s *Store) writableType(ctx context.Context, tenant, name, field string) (*EdgeType, error) {
	if err := checkTypeName(name, field); err != nil {
		return nil, err
	}
	if _, err := s.auth.Authorize(ctx, tenant, "graph:"+name, auth.PermWrite); err != nil {
		return nil, err
	}
	ts, err := s.typeSetOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if t := ts.byName[name]; t != nil && (t.Declared || !ts.strict) {
		return t, nil
	}
	if ts.strict {
		return nil, problem.Unprocessable("unknown_edge_type", "edge type %q is not declared; this tenant declares %s", name, ts.declaredNames()).
			WithField(field, "unknown")
	}
	// First use: the type row commits on its own, so concurrent writers need not wait for
	// each other, and a type nobody ends up using is harmless.
	if _, err := s.pool.Exec(ctx, `INSERT INTO graph_types (tenant_id, name) VALUES ($1, $2) ON CONFLICT (tenant_id, name) DO NOTHING`,
		tenant, name); err != nil {
		return nil, db.Translate(err, "edge type")
	}
	if _, err := s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", typesChannel, tenant); err != nil {
		return nil, db.Translate(err, "edge type")
	}
	s.forgetTypes(tenant)
	if ts, err = s.typeSetOf(ctx, tenant); err != nil {
		return nil, err
	}
	if t := ts.byName[name]; t != nil {
		return t, nil
	}
	return nil, typeNotFound(name)
}

func (ts *typeSet) declaredNames() string {
	var names []string
	for n, t := range ts.byName {
		if t.Declared {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Types lists a tenant's edge types the caller may read, by name.
func (s *Store) Types(ctx context.Context, tenant string) ([]EdgeType, error) {
	a, err := s.auth.Access(ctx, tenant)
	if err != nil {
		return nil, err
	}
	ts, err := s.typeSetOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := []EdgeType{}
	for _, t := range ts.byName {
		if a.Can("graph:"+t.Name, auth.PermRead) {
			out = append(out, *t)
		}
	}
	slices.SortFunc(out, func(a, b EdgeType) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Type returns one edge type (read on graph:<name>).
func (s *Store) Type(ctx context.Context, tenant, name string) (EdgeType, error) {
	if _, err := s.auth.Authorize(ctx, tenant, "graph:"+name, auth.PermRead); err != nil {
		return EdgeType{}, err
	}
	ts, err := s.typeSetOf(ctx, tenant)
	if err != nil {
		return EdgeType{}, err
	}
	t := ts.byName[name]
	if t == nil {
		return EdgeType{}, typeNotFound(name)
	}
	return *t, nil
}

// TypeDeclare declares an edge type (admin on graph:<name>). Declaring a type that exists
// by use adopts it, after checking its edges satisfy the declaration; declaring one twice
// answers 409 type_exists.
func (s *Store) TypeDeclare(ctx context.Context, tenant string, in TypeInput) (EdgeType, error) {
	if err := checkTypeName(in.Name, "body.name"); err != nil {
		return EdgeType{}, err
	}
	if _, err := s.auth.Authorize(ctx, tenant, "graph:"+in.Name, auth.PermAdmin); err != nil {
		return EdgeType{}, err
	}
	return s.changeType(ctx, tenant, in, true)
}

// TypeUpdate changes a type's description or constraints (admin on graph:<name>).
func (s *Store) TypeUpdate(ctx context.Context, tenant string, in TypeInput) (EdgeType, error) {
	if _, err := s.auth.Authorize(ctx, tenant, "graph:"+in.Name, auth.PermAdmin); err != nil {
		return EdgeType{}, err
	}
	return s.changeType(ctx, tenant, in, false)
}

func (s *Store) changeType(ctx context.Context, tenant string, in TypeInput, declare bool) (EdgeType, error) {
	var out EdgeType
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if declare {
			if _, err := tx.Exec(ctx, `INSERT INTO graph_types (tenant_id, name) VALUES ($1, $2) ON CONFLICT (tenant_id, name) DO NOTHING`,
				tenant, in.Name); err != nil {
				return err
			}
		}
		t := EdgeType{}
		err := tx.QueryRow(ctx, `SELECT id, name, declared, acyclic, uniq, description, created_at FROM graph_types
			WHERE tenant_id = $1 AND name = $2 FOR UPDATE`, tenant, in.Name).
			Scan(&t.id, &t.Name, &t.Declared, &t.Acyclic, &t.Unique, &t.Description, &t.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return typeNotFound(in.Name)
		}
		if err != nil {
			return err
		}
		if declare && t.Declared {
			return problem.Conflict("type_exists", "edge type %q is already declared", in.Name)
		}
		if err := lockType(ctx, tx, t.id); err != nil {
			return err
		}
		if in.Unique != nil && *in.Unique && !t.Unique {
			var from, to int64
			err := tx.QueryRow(ctx, `SELECT from_node, to_node FROM graph_edges WHERE type_id = $1 AND deleted_at IS NULL
				GROUP BY from_node, to_node HAVING count(*) > 1 LIMIT 1`, t.id).Scan(&from, &to)
			if err == nil {
				refs, rerr := s.refs(ctx, tx, tenant, []int64{from, to})
				if rerr != nil {
					return rerr
				}
				return problem.Conflict("duplicate_edges", "edge type %q cannot be unique: %s has more than one edge to %s",
					in.Name, refs[from], refs[to])
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE graph_edges SET uniq = true WHERE type_id = $1`, t.id); err != nil {
				return err
			}
			t.Unique = true
		} else if in.Unique != nil && !*in.Unique && t.Unique {
			if _, err := tx.Exec(ctx, `UPDATE graph_edges SET uniq = false WHERE type_id = $1`, t.id); err != nil {
				return err
			}
			t.Unique = false
		}
		if in.Acyclic != nil && *in.Acyclic && !t.Acyclic {
			_, cycle, err := s.anyCycle(ctx, tx, tenant, t.id)
			if err != nil {
				return err
			}
			if cycle != nil {
				return cycleError(in.Name, cycle, "edge type %q cannot be acyclic: its edges form a cycle")
			}
			t.Acyclic = true
		} else if in.Acyclic != nil && !*in.Acyclic {
			t.Acyclic = false
		}
		if in.Description != nil {
			t.Description = *in.Description
		}
		t.Declared = t.Declared || declare
		if _, err := tx.Exec(ctx, `UPDATE graph_types SET declared = $2, acyclic = $3, uniq = $4, description = $5 WHERE id = $1`,
			t.id, t.Declared, t.Acyclic, t.Unique, t.Description); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", typesChannel, tenant); err != nil {
			return err
		}
		action := "graph.type.update"
		if declare {
			action = "graph.type.declare"
		}
		out = t
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: action, ResourceType: "graph", ResourceID: in.Name,
			Details: map[string]any{"acyclic": t.Acyclic, "unique": t.Unique}})
	})
	if err != nil {
		return EdgeType{}, db.Translate(err, "edge type")
	}
	s.forgetTypes(tenant)
	return out, nil
}

// TypeDelete removes a type that no live edge uses (admin on graph:<name>).
func (s *Store) TypeDelete(ctx context.Context, tenant, name string) error {
	if _, err := s.auth.Authorize(ctx, tenant, "graph:"+name, auth.PermAdmin); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int32
		err := tx.QueryRow(ctx, `SELECT id FROM graph_types WHERE tenant_id = $1 AND name = $2 FOR UPDATE`, tenant, name).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return typeNotFound(name)
		}
		if err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM graph_edges WHERE type_id = $1 AND deleted_at IS NULL LIMIT 1000000) x`, id).
			Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return problem.Conflict("type_in_use", "edge type %q has %d edges; delete them first", name, n)
		}
		// Deleted edges of the type go too, with their history.
		if _, err := tx.Exec(ctx, `WITH e AS (DELETE FROM graph_edges WHERE type_id = $1 RETURNING id)
			DELETE FROM graph_edge_versions WHERE edge_id IN (SELECT id FROM e)`, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM graph_types WHERE id = $1`, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", typesChannel, tenant); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "graph.type.delete", ResourceType: "graph", ResourceID: name})
	})
	if err != nil {
		return db.Translate(err, "edge type")
	}
	s.forgetTypes(tenant)
	return nil
}

// lockTypeRow share-locks a type's row for the rest of tx and returns the type with its
// flags as committed, not as cached: a change of the type (which locks the row for update)
// waits for the writers already using it and sees their edges, and a writer that comes
// after it sees the new flags.
func lockTypeRow(ctx context.Context, tx pgx.Tx, t *EdgeType) (*EdgeType, error) {
	fresh := *t
	err := tx.QueryRow(ctx, `SELECT acyclic, uniq FROM graph_types WHERE id = $1 FOR SHARE`, t.id).Scan(&fresh.Acyclic, &fresh.Unique)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, typeNotFound(t.Name)
	}
	return &fresh, err
}

// lockType serializes the writers that must see each other's edges of a type (acyclic
// checks, turning uniqueness on) until the transaction ends.
func lockType(ctx context.Context, tx pgx.Tx, typeID int32) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(1735550000, $1)`, typeID)
	return err
}

// Package graph relates documents with typed, versioned edges and answers traversals over
// them: neighbours, k-hop neighbourhoods, shortest paths (breadth-first from both ends, or
// weighted), all simple paths, dependents and dependencies, subgraphs and degrees.
//
// Edges live in one table with an index per direction. Traversals of the current graph
// run over an in-memory adjacency index per tenant, derived from that table and caught up
// from the change feed before each traversal (memory.go); the others (as of a time, with
// filters or weights) walk the table breadth-first one level per query. Either way each
// node is visited once, so cycles cost nothing and the work grows with the nodes reached,
// not with the paths between them (the common recursive-CTE formulation enumerates paths,
// which grows exponentially with depth). Every traversal is bounded by depth, by result
// count and by a time budget.
//
// Permissions: writing an edge needs write on "graph:<type>" and read on both documents'
// collections; declaring types needs admin on "graph:<type>". A traversal follows only the
// edge types the caller may read and enters only nodes in collections the caller may read.
package graph

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/problem"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the graph's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "graph", FS: migrate.Dir(migrations, "migrations"),
	Requires: []*migrate.Module{doc.Schema, feed.Schema, idem.Schema}}

func init() {
	auth.OnTenantDelete(func(ctx context.Context, tx pgx.Tx, tenant string) error {
		if _, err := tx.Exec(ctx, `WITH e AS (DELETE FROM graph_edges WHERE tenant_id = $1 RETURNING id)
			DELETE FROM graph_edge_versions WHERE edge_id IN (SELECT id FROM e)`, tenant); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM graph_nodes WHERE tenant_id = $1`, tenant)
		return err
	})
}

// liveEdgesOf selects the ids of live edges touching the nodes of n (a CTE of nodes).
const liveEdgesOf = `SELECT id FROM graph_edges WHERE from_node IN (SELECT node FROM n) AND deleted_at IS NULL
	UNION SELECT id FROM graph_edges WHERE to_node IN (SELECT node FROM n) AND deleted_at IS NULL`

// cascade removes the edges of deleted documents in the deletion's transaction (queued into
// its batch: one statement). A deleted document's edges become tombstones, so the graph as
// of an earlier time still has them; a deleted collection's edges go with their history.
// Either way the feed records one delete per edge, grouped by type.
func cascade(ctx context.Context, q doc.Execer, d doc.Deletion) error {
	actor := audit.ActorFrom(ctx).Name
	changes := feed.InsertManySQL + `SELECT $1::uuid, 'edge', t.name, array_agg(e.id::text ORDER BY e.id), 'delete', NULL::bigint, $2
		FROM e JOIN graph_types t ON t.id = e.type_id WHERE e.was_live GROUP BY t.name`
	if d.IDs != nil {
		_, err := q.Exec(ctx, `WITH n AS (SELECT node FROM graph_nodes WHERE collection_id = $3 AND doc_id = ANY($4)),
			e AS (UPDATE graph_edges g SET deleted_at = now(), updated_at = now(), version = g.version + 1
				WHERE g.id IN (`+liveEdgesOf+`) AND g.deleted_at IS NULL -- rechecked after a concurrent delete: one tombstone
				RETURNING g.id, g.version, g.props, g.type_id, true AS was_live),
			prev AS (UPDATE graph_edge_versions v SET snapshot = e.props, delta = NULL FROM e WHERE v.edge_id = e.id AND v.version = e.version - 1),
			tomb AS (INSERT INTO graph_edge_versions (edge_id, version, op, at, actor) SELECT id, version, 'delete', now(), $2 FROM e)
			`+changes, d.Tenant, actor, d.CollectionID, d.IDs)
		return err
	}
	_, err := q.Exec(ctx, `WITH n AS (SELECT node FROM graph_nodes WHERE collection_id = $3),
		e AS (DELETE FROM graph_edges g WHERE g.id IN (`+liveEdgesOf+`
				UNION SELECT id FROM graph_edges WHERE from_node IN (SELECT node FROM n) AND deleted_at IS NOT NULL
				UNION SELECT id FROM graph_edges WHERE to_node IN (SELECT node FROM n) AND deleted_at IS NOT NULL)
			RETURNING g.id, g.type_id, g.deleted_at IS NULL AS was_live),
		hist AS (DELETE FROM graph_edge_versions WHERE edge_id IN (SELECT id FROM e)),
		nodes AS (DELETE FROM graph_nodes WHERE collection_id = $3)
		`+changes, d.Tenant, actor, d.CollectionID)
	return err
}

// Config tunes the graph. Zero values mean the defaults.
type Config struct {
	// MaxDepth is the deepest a traversal may go. Default 100.
	MaxDepth int
	// MaxResults is the most nodes (or paths) a traversal may return. Default 100000.
	MaxResults int
	// DefaultLimit is a traversal's result limit when the caller gives none. Default 1000.
	DefaultLimit int
	// TimeBudget bounds each traversal. Default 10s.
	TimeBudget time.Duration
	// MaxPropsBytes bounds an edge's properties. Default 64 KiB.
	MaxPropsBytes int
	// SnapshotEvery keeps full properties in history every this many versions. Default 32.
	SnapshotEvery int
	// MemoryEdges bounds the nodes plus edges this process holds in its in-memory adjacency
	// indexes, across tenants (about 40 bytes an edge, 30 a node). A tenant's nodes count
	// whether or not they have live edges. A tenant's index loads on its first traversal
	// that can use it; a tenant with more nodes and edges than this is traversed in SQL
	// (its load stops as soon as it passes the budget), and the least recently used indexes
	// make way for a new one. Default 20,000,000; negative disables the indexes (every
	// traversal runs in SQL).
	MemoryEdges int64
	// Logger receives background-work warnings. Nil is quiet.
	Logger *slog.Logger
}

// Store is the graph.
type Store struct {
	pool     *pgxpool.Pool
	auth     *auth.Service
	docs     *doc.Store
	feed     *feed.Feed
	listener *db.Listener
	cfg      Config
	log      *slog.Logger
	mem      *memory

	mu        sync.Mutex
	types     map[string]*typeSet // tenant → its edge types
	collNames map[string]string   // collection id → name (ids are never renamed or reused)
}

// New returns the graph. listener carries edge-type cache invalidations between nodes.
func New(pool *pgxpool.Pool, a *auth.Service, docs *doc.Store, f *feed.Feed, listener *db.Listener, cfg Config) *Store {
	cfg.MaxDepth = cmp.Or(cfg.MaxDepth, 100)
	cfg.MaxResults = cmp.Or(cfg.MaxResults, 100000)
	cfg.DefaultLimit = min(cmp.Or(cfg.DefaultLimit, 1000), cfg.MaxResults)
	cfg.TimeBudget = cmp.Or(cfg.TimeBudget, 10*time.Second)
	cfg.MaxPropsBytes = cmp.Or(cfg.MaxPropsBytes, 64<<10)
	cfg.SnapshotEvery = cmp.Or(cfg.SnapshotEvery, 32)
	cfg.MemoryEdges = cmp.Or(cfg.MemoryEdges, 20_000_000)
	s := &Store{pool: pool, auth: a, docs: docs, feed: f, listener: listener, cfg: cfg,
		log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)), types: map[string]*typeSet{}, collNames: map[string]string{}}
	s.mem = newMemory(s, cfg.MemoryEdges)
	docs.OnDelete(cascade)
	listener.Handle(typesChannel, func(tenant string) { s.forgetTypes(tenant) })
	listener.OnReset(func() { s.forgetTypes("") })
	return s
}

// Limits reports the configured bounds, for documentation and error messages.
func (s *Store) Limits() Config { return s.cfg }

// NodeRef names a document taking part in the graph.
type NodeRef struct {
	Collection string `json:"collection" minLength:"1" example:"tasks"`
	ID         string `json:"id" minLength:"1" example:"build-api"`
}

// String writes the reference as "collection/id".
func (n NodeRef) String() string { return n.Collection + "/" + n.ID }

// ParseNodeRef reads "collection/id" (a collection name has no slash).
func ParseNodeRef(s, field string) (NodeRef, error) {
	c, id, ok := strings.Cut(s, "/")
	if !ok || !doc.ValidRef(c, id) {
		return NodeRef{}, problem.Invalid("invalid_node", "%q is not a node: write collection/id", s).WithField(field, "invalid")
	}
	return NodeRef{Collection: c, ID: id}, nil
}

// Edge is a typed, directed relation from one document to another.
type Edge struct {
	ID        int64           `json:"id" example:"17"`
	Type      string          `json:"type" example:"depends_on"`
	From      NodeRef         `json:"from"`
	To        NodeRef         `json:"to"`
	Props     json.RawMessage `json:"props" doc:"The edge's properties: a JSON object."`
	Version   int64           `json:"version"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	Deleted   bool            `json:"deleted,omitempty" doc:"Set on a deleted edge, as read from history."`
}

// querier is the pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

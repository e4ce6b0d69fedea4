// Package doc stores schema-less JSON documents in collections, each write versioned in
// the same transaction (history with reverse deltas and periodic snapshots), readable as of
// any version or time, revertable, queryable with the shared filter language, bulk
// importable and exportable as NDJSON, and published on the change feed.
//
// Every operation authorizes the principal in its context against the collection's
// resource, "collection:<name>": read to read, write to write, admin to create, change or
// delete the collection. Every write records an audit entry and a feed entry in its
// transaction. Operations that write have a …Tx twin taking the caller's transaction.
package doc

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the doc module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "doc", FS: migrate.Dir(migrations, "migrations"),
	Requires: []*migrate.Module{auth.Schema, feed.Schema, idem.Schema}}

func init() {
	// A tenant's documents go with it (they carry no foreign key, for import speed).
	auth.OnTenantDelete(func(ctx context.Context, tx pgx.Tx, tenant string) error {
		if _, err := tx.Exec(ctx, `INSERT INTO collection_index_drops (name)
			SELECT i.name FROM collection_indexes i JOIN collections c ON c.id = i.collection_id WHERE c.tenant_id = $1
			ON CONFLICT DO NOTHING`, tenant); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM document_versions WHERE collection_id IN (SELECT id FROM collections WHERE tenant_id = $1)`, tenant); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM documents WHERE tenant_id = $1`, tenant)
		return err
	})
}

// Execer runs a statement: a transaction, or a batch being assembled.
type Execer = audit.Execer

// Deletion tells a DeleteHook which documents are going.
type Deletion struct {
	Tenant       string
	CollectionID string
	Collection   string
	// IDs are the deleted documents (now tombstones, their history kept); nil means the
	// whole collection, which goes with every document's history.
	IDs []string
}

// DeleteHook runs in the transaction that deletes documents, so that what refers to them
// (a graph's edges, a search index) goes in the same commit. A document's deletion queues
// the hook's statements into the batch that writes the tombstone: a hook may only Exec.
type DeleteHook func(ctx context.Context, q Execer, d Deletion) error

// Written tells a WriteHook which documents were written, with their new bodies.
type Written struct {
	Tenant       string
	CollectionID string
	Collection   string
	// IDs and Bodies are the written documents (one, or an import's batch).
	IDs    []string
	Bodies [][]byte
	// Version is the documents' new version.
	Version int64
}

// WriteHook runs in the transaction of every write that leaves a document with a body —
// create, replace, patch, restore, revert, import — so that what is derived from documents
// (a search index) commits with them. Like a DeleteHook it may only Exec: its statements
// are queued after the document's, and see it written. An error fails the write.
type WriteHook func(ctx context.Context, q Execer, w Written) error

// OnDelete registers h for every document or collection deletion through this store.
// Register hooks before serving.
func (s *Store) OnDelete(h DeleteHook) { s.deleteHooks = append(s.deleteHooks, h) }

// OnWrite registers h for every document write through this store. Register hooks before
// serving.
func (s *Store) OnWrite(h WriteHook) { s.writeHooks = append(s.writeHooks, h) }

func (s *Store) runWriteHooks(ctx context.Context, q Execer, w Written) error {
	for _, h := range s.writeHooks {
		if err := h(ctx, q, w); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) runDeleteHooks(ctx context.Context, q Execer, d Deletion) error {
	for _, h := range s.deleteHooks {
		if err := h(ctx, q, d); err != nil {
			return err
		}
	}
	return nil
}

// Config tunes the store. Zero values mean the defaults.
type Config struct {
	// DefaultMaxDocBytes is a new collection's document size limit. Default 1 MiB.
	DefaultMaxDocBytes int
	// SnapshotEvery keeps a full body in history every this many versions. Default 32.
	SnapshotEvery int
	// Logger receives background-work warnings. Nil is quiet.
	Logger *slog.Logger
}

// Store is the document store.
type Store struct {
	pool     *pgxpool.Pool
	auth     *auth.Service
	feed     *feed.Feed
	listener *db.Listener
	cfg      Config
	log      *slog.Logger

	mu    sync.Mutex
	colls map[string]*collection // tenant|name → cached collection
	wake  chan struct{}          // index builder

	writeHooks  []WriteHook
	deleteHooks []DeleteHook
}

// New returns the store. listener carries collection-cache invalidations between nodes.
func New(pool *pgxpool.Pool, a *auth.Service, f *feed.Feed, listener *db.Listener, cfg Config) *Store {
	cfg.DefaultMaxDocBytes = cmp.Or(cfg.DefaultMaxDocBytes, 1<<20)
	cfg.SnapshotEvery = cmp.Or(cfg.SnapshotEvery, 32)
	s := &Store{pool: pool, auth: a, feed: f, listener: listener, cfg: cfg, log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		colls: map[string]*collection{}, wake: make(chan struct{}, 1)}
	listener.Handle(notifyChannel, func(key string) { s.forget(key) })
	listener.OnReset(func() { s.forgetAll() })
	return s
}

// notifyChannel carries "tenant|name" of a collection that changed or went away.
const notifyChannel = "strata_collections"

// Document is a document as returned by reads and writes.
type Document struct {
	ID         string          `json:"id"`
	Collection string          `json:"collection"`
	Version    int64           `json:"version"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	Deleted    bool            `json:"deleted,omitempty" doc:"Set on a version that is a deletion (a tombstone)."`
	Data       json.RawMessage `json:"data,omitempty" doc:"The document's JSON object."`
}

// Run does the store's background work until ctx ends: building declared indexes and
// dropping retired ones, pruning history per each collection's retention, and expiring
// idempotency keys. Every node runs it; advisory locks keep one at a task.
func (s *Store) Run(ctx context.Context) {
	s.kickIndexes()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		s.buildIndexes(ctx)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-tick.C:
			s.prune(ctx)
		}
	}
}

func (s *Store) kickIndexes() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Package search makes collections searchable: full-text (ranked, highlighted, typo- and
// prefix-tolerant, faceted, filtered), by vectors (exact or HNSW, with a planner that
// returns k results under any filter), and both at once (reciprocal-rank fusion).
//
// PostgreSQL holds the truth: each document's tsvector is written in the same transaction
// as the document, so the text index never lags; vectors are stored in PostgreSQL too,
// and the in-memory HNSW index of every node is derived from them — built at start, kept
// current from the change feed. Searching needs read on the collection.
package search

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/queue"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the search module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "search", FS: migrate.Dir(migrations, "migrations"), Requires: []*migrate.Module{doc.Schema, queue.Schema}}

func init() {
	auth.OnTenantDelete(func(ctx context.Context, tx pgx.Tx, tenant string) error {
		ids := `(SELECT id FROM collections WHERE tenant_id = $1)`
		for _, table := range []string{"search_text", "search_words", "search_vectors", "search_indexes", "search_queries", "search_embed_pending"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE collection_id IN `+ids, tenant); err != nil {
				return err
			}
		}
		return nil
	})
}

// Config tunes search. Zero values mean the defaults.
type Config struct {
	// ExactBelow is how many matching documents a filtered vector search scans exactly
	// rather than through the index (and never more than 5% of the field's vectors).
	// Default 20000.
	ExactBelow int
	// MaxK bounds k (and a page's size). Default 1000.
	MaxK int
	// SnapshotDir, when set, holds snapshots of the vector indexes that speed restarts.
	SnapshotDir string
	// QueryLogRetention is how long the query log is kept. Default 30 days.
	QueryLogRetention time.Duration
	// Embedders makes the embedder a vector field's configuration names, for vectors of
	// dimension dim. Default Embedders (the search/embed package).
	Embedders func(c EmbedderConfig, dim int) (Embedder, error)
	// Logger receives background-work warnings. Nil is quiet.
	Logger *slog.Logger
}

// Store is search.
type Store struct {
	pool     *pgxpool.Pool
	auth     *auth.Service
	docs     *doc.Store
	queue    *queue.Client
	feed     *feed.Feed
	listener *db.Listener
	cfg      Config
	log      *slog.Logger

	mu        sync.Mutex
	settings  map[string]*settings // collection id → settings; nil: none (cached too)
	embedders map[string]Embedder
	embedWake chan struct{}

	vectors *registry
	qlog    *queryLog
}

// settingsChannel carries the id of a collection whose settings changed.
const settingsChannel = "strata_search_settings"

// New returns search over docs, registering the hooks that index documents as they are
// written. Its builds and embeddings run as jobs on q. Run does its background work.
func New(pool *pgxpool.Pool, a *auth.Service, docs *doc.Store, q *queue.Client, f *feed.Feed, listener *db.Listener, cfg Config) *Store {
	cfg.ExactBelow = cmp.Or(cfg.ExactBelow, 20000)
	cfg.MaxK = cmp.Or(cfg.MaxK, 1000)
	cfg.QueryLogRetention = cmp.Or(cfg.QueryLogRetention, 30*24*time.Hour)
	s := &Store{pool: pool, auth: a, docs: docs, queue: q, feed: f, listener: listener, cfg: cfg,
		log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)), settings: map[string]*settings{}, embedders: map[string]Embedder{}, embedWake: make(chan struct{}, 1)}
	s.vectors = newRegistry(s)
	s.qlog = newQueryLog(pool, s.log)
	docs.OnWrite(s.onWrite)
	docs.OnDelete(s.onDelete)
	listener.Handle(settingsChannel, func(collID string) {
		s.forget(collID)
	})
	listener.Handle(embedChannel, func(string) {
		select {
		case s.embedWake <- struct{}{}:
		default:
		}
	})
	listener.OnReset(func() {
		s.mu.Lock()
		clear(s.settings)
		s.mu.Unlock()
	})
	return s
}

func (s *Store) forget(collID string) {
	s.mu.Lock()
	delete(s.settings, collID)
	s.mu.Unlock()
}

// settingsOf returns a collection's settings (nil when it has none), cached while the
// listener that invalidates the cache is connected.
func (s *Store) settingsOf(ctx context.Context, collID string) (*settings, error) {
	healthy := s.listener.Healthy()
	if healthy {
		s.mu.Lock()
		st, ok := s.settings[collID]
		s.mu.Unlock()
		if ok {
			return st, nil
		}
	}
	var raw []byte
	var gen int64
	var tenant, name string
	err := s.pool.QueryRow(ctx, `SELECT s.settings, s.generation, s.tenant_id, c.name FROM search_settings s
		JOIN collections c ON c.id = s.collection_id WHERE s.collection_id = $1`, collID).Scan(&raw, &gen, &tenant, &name)
	var st *settings
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, db.Translate(err, "search settings")
	default:
		var in Settings
		if err := json.Unmarshal(raw, &in); err != nil {
			return nil, err
		}
		if st, err = s.check(ctx, in); err != nil {
			return nil, err
		}
		st.collID, st.tenant, st.collection, st.generation = collID, tenant, name, gen
	}
	if healthy {
		s.mu.Lock()
		s.settings[collID] = st
		s.mu.Unlock()
	}
	return st, nil
}

// Run does the background work until ctx ends: working the search job queues (index
// builds, embedding), keeping the vector indexes current from the change feed, and
// pruning the query log. Every node runs it.
func (s *Store) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.vectors.run(ctx) })
	wg.Go(func() { s.qlog.run(ctx, s.cfg.QueryLogRetention) })
	wg.Go(func() { s.runJobs(ctx) })
	wg.Wait()
}

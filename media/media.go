// Package media is Strata's content-addressed file store: uploads are streamed to disk,
// hashed (SHA-256) while streaming, checked against limits, and stored once per tenant
// and hash in a Store (a local directory or S3-compatible object storage); every upload
// gets its own alias ("<uuid>.<ext>") and delete token, so uploading the same bytes twice
// stores them once and answers a new alias. Details (dimensions, frames, format) are
// extracted once per blob. Deleting the last alias of a hash removes its variants,
// details and blob.
//
// A blob is recorded in PostgreSQL only after the store holds it completely and durably;
// identifiers are unique per write. A crash between storing and recording leaves a blob
// without a row, which the periodic prune deletes; a crash after a deletion commits leaves
// its blob listed in media_gone, which the prune finishes.
//
// Every operation authorizes the principal in its context: read on "media:<alias>" to
// read, write on "media:<alias>" to delete (with the token), write on "media:*" to
// upload, admin on "media:*" for the admin operations.
package media

import (
	"cmp"
	"context"
	"embed"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/kv"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/queue"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the media module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "media", FS: migrate.Dir(migrations, "migrations"),
	Requires: []*migrate.Module{auth.Schema, idem.Schema, queue.Schema, kv.Schema}}

// Config tunes the service. Zero values mean the defaults.
type Config struct {
	// Limits bound uploads; zero fields take Limits' defaults.
	Limits Limits
	// SpoolDir is where uploads are streamed before they are checked and stored. Default:
	// the FileStore's own temporary directory (so storing is a rename), otherwise the
	// system's temporary directory.
	SpoolDir string
	// PruneInterval is how often Run deletes blobs whose rows are gone. Default 1m.
	PruneInterval time.Duration
	// OrphanGrace is how old a blob without a row must be before the prune deletes it:
	// longer than any upload takes between storing and recording. Default 1h.
	OrphanGrace time.Duration
	// OrphanSweepInterval is how often the store is listed whole for orphaned blobs, by
	// one node of the cluster at a time (removed blobs are deleted every PruneInterval on
	// every node). Default 1h.
	OrphanSweepInterval time.Duration
	// ProxyTimeout bounds fetching a proxied URL, redirects included. Default 10s.
	ProxyTimeout time.Duration
	// ProxyAllowPrivate lets proxied fetches reach loopback, private, link-local and other
	// non-public addresses. Default false: such URLs are refused (SSRF).
	ProxyAllowPrivate bool
	// ProxyMaxAge evicts proxied media not requested for this long (checked every
	// PruneInterval). Zero keeps them forever.
	ProxyMaxAge time.Duration
	// VariantMaxAge evicts variants not requested for this long. Zero keeps them forever.
	VariantMaxAge time.Duration
	// Queue runs variant generation as jobs (queue "media-variants", one job per hash and
	// spec across all nodes) and Listener wakes requests waiting for a variant. Without
	// both, variants are unavailable (503 variants_unavailable).
	Queue    *queue.Client
	Listener *db.Listener
	// KV keeps the tenants' media settings (the not-found image, under the key
	// "media/not-found"). Without it, setting one is unavailable (503
	// settings_unavailable) and none is served.
	KV *kv.Store
	// VariantWorkers is how many variants this node generates at once. Default 2.
	VariantWorkers int
	// VariantWait bounds how long a request waits for a variant being generated before
	// answering 503 variant_pending (with Retry-After). Default 10s.
	VariantWait time.Duration
	// UploadExpiry is how long a backgrounded upload's result waits to be claimed; an
	// unclaimed result's alias is then removed. Default 1h.
	UploadExpiry time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives background-work warnings. Nil is quiet.
	Logger *slog.Logger
}

// Service is the media module.
type Service struct {
	pool  *pgxpool.Pool
	auth  *auth.Service
	store Store
	cfg   Config
	log   *slog.Logger

	mu      sync.Mutex
	waiters map[string][]chan struct{} // by variant notification id

	// moved names the store the blobs were moved to while this node runs with another
	// (see StoreCheck); new blobs are then refused.
	moved atomic.Pointer[string]
}

// New returns the service keeping blobs in store. Run prunes in the background.
func New(pool *pgxpool.Pool, a *auth.Service, store Store, cfg Config) *Service {
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
		if fsStore, ok := store.(*FileStore); ok {
			cfg.SpoolDir = fsStore.TempDir()
		}
	}
	cfg.PruneInterval = cmp.Or(cfg.PruneInterval, time.Minute)
	cfg.OrphanGrace = cmp.Or(cfg.OrphanGrace, time.Hour)
	cfg.OrphanSweepInterval = cmp.Or(cfg.OrphanSweepInterval, time.Hour)
	cfg.ProxyTimeout = cmp.Or(cfg.ProxyTimeout, 10*time.Second)
	cfg.VariantWorkers = cmp.Or(cfg.VariantWorkers, 2)
	cfg.VariantWait = cmp.Or(cfg.VariantWait, 10*time.Second)
	cfg.UploadExpiry = cmp.Or(cfg.UploadExpiry, time.Hour)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{pool: pool, auth: a, store: store, cfg: cfg, log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		waiters: map[string][]chan struct{}{}}
	if cfg.Listener != nil {
		cfg.Listener.Handle(variantChannel, s.variantReady)
		cfg.Listener.Handle(uploadChannel, s.variantReady) // the same waiters, by upload id
		cfg.Listener.OnReset(s.wakeAllWaiters)
	}
	return s
}

// Limits returns the upload limits in force (defaults filled in).
func (s *Service) Limits() Limits { return s.cfg.Limits }

// Store returns the store blobs are kept in.
func (s *Service) Store() Store { return s.store }

func aliasNotFound(alias string) error {
	return problem.NotFound("alias_not_found", "media %q not found", alias)
}

func resource(alias string) string { return "media:" + alias }

const allMedia = "media:*"

func (s *Service) authorize(ctx context.Context, tenant, res string, perm auth.Permission) error {
	_, err := s.auth.Authorize(ctx, tenant, res, perm)
	return err
}

// Run generates variants (with Config.Queue), evicts unused proxied media and variants
// (with ProxyMaxAge, VariantMaxAge) and deletes removed and orphaned blobs every
// PruneInterval, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	if s.cfg.Queue != nil {
		w := s.cfg.Queue.NewWorker(queue.WorkerConfig{Queues: map[string]int{variantQueue: s.cfg.VariantWorkers, ingestQueue: s.cfg.VariantWorkers}, Logger: s.log})
		w.Handle(variantKind, s.variantJob)
		w.Handle(ingestKind, s.ingestJob)
		if err := w.Start(auth.System(ctx)); err != nil {
			s.log.Warn("starting the variant worker", "err", err)
		} else {
			defer func() { _ = w.Stop(context.Background()) }()
		}
	}
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		if s.cfg.ProxyMaxAge > 0 {
			if _, err := s.ProxiesEvict(ctx, s.cfg.Now().Add(-s.cfg.ProxyMaxAge)); err != nil && ctx.Err() == nil {
				s.log.Warn("evicting proxied media", "err", err)
			}
		}
		if s.cfg.VariantMaxAge > 0 {
			if _, err := s.VariantsEvict(ctx, s.cfg.Now().Add(-s.cfg.VariantMaxAge)); err != nil && ctx.Err() == nil {
				s.log.Warn("evicting variants", "err", err)
			}
		}
		if _, err := s.UploadsExpire(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("expiring backgrounded uploads", "err", err)
		}
		if err := s.storeWatch(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("media store", "err", err)
		}
		// A node whose store is no longer the repository's leaves both stores alone.
		if s.moved.Load() == nil {
			s.storeClean(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// storeClean deletes removed blobs and, when this node wins the election, sweeps the
// store for orphans.
func (s *Service) storeClean(ctx context.Context) {
	if _, err := s.goneRemove(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("deleting removed media blobs", "err", err)
	}
	mine, err := s.sweepClaim(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("claiming the media orphan sweep", "err", err)
		}
		return
	}
	if !mine {
		return
	}
	if n, err := s.orphansSweep(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("sweeping orphaned media blobs", "err", err)
	} else if n > 0 {
		s.log.Info("swept orphaned media blobs", "count", n)
	}
}

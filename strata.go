package strata

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/graph"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/embedpg"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/kv"
	"github.com/stratadb/strata/media"
	"github.com/stratadb/strata/queue"
	"github.com/stratadb/strata/search"
	"github.com/stratadb/strata/series"
)

// version is set at build time with -ldflags "-X github.com/stratadb/strata.version=v1.2.3".
var version = ""

// Version returns the version of this build: the one stamped at build time, else the
// module version recorded by `go install`, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Config configures Open. Every field is optional.
type Config struct {
	// DatabaseURL names an external PostgreSQL 14+ (any managed one) to use. Empty means
	// run an embedded PostgreSQL in DataDir from the machine's server binaries.
	DatabaseURL string
	// DataDir holds Strata's local state: the embedded cluster (DataDir/pg) and, for
	// modules that keep files, their files. Default "strata-data".
	DataDir string
	// Postgres configures the embedded server; ignored with DatabaseURL.
	Postgres PostgresConfig
	// DatabaseWait is how long Open retries a database that is not reachable yet.
	// Default 30s.
	DatabaseWait time.Duration
	// MaxConns caps the connection pool. Default 16.
	MaxConns int32
	// Attach connects to the embedded PostgreSQL of a strata already serving DataDir,
	// instead of failing on its lock (for maintenance commands run beside `strata serve`).
	Attach bool
	// SkipMigrations opens the database only: no migrations, no modules (for
	// `strata migrate status`).
	SkipMigrations bool
	// AdminPassword is the password of the first platform administrator, "admin", created
	// when the database has no users. Empty means generate one and pass it to OnAdminCreated.
	AdminPassword string
	// OnAdminCreated is called once when the first administrator is created, with the
	// generated password (or "" when AdminPassword was used), so it can be shown once.
	OnAdminCreated func(username, generatedPassword string)
	// Auth tunes identity: token lifetimes, sign-in rate limits, password hashing cost.
	Auth auth.Config
	// ChangeRetention is how long the change feed keeps entries. Default 7 days.
	ChangeRetention time.Duration
	// Graph bounds traversals: depth, results, time budget.
	Graph graph.Config
	// Search tunes search: the exact-scan threshold, vector index snapshots.
	Search search.Config
	// Series configures device readings: the embedded MQTT broker, an external broker,
	// Redis, batching and retention defaults. Its zero value runs no broker.
	Series series.Config
	// Media tunes uploads: limits, spool directory, prune interval.
	Media media.Config
	// MediaStore keeps media blobs. Nil means a file store in DataDir/media.
	MediaStore media.Store
	// Logger receives lifecycle and database logs. Nil is quiet.
	Logger *slog.Logger
}

// PostgresConfig configures the embedded PostgreSQL.
type PostgresConfig struct {
	// BinDir holds the server programs; empty means discover them (STRATA_PG_BIN,
	// pg_config --bindir, /usr/lib/postgresql/*/bin, PATH).
	BinDir string
	// User is the OS user the server runs as when strata runs as root. Default "postgres",
	// then "nobody".
	User string
	// ListenAddr also serves TCP on this address ("127.0.0.1:5433"), with password
	// authentication. Empty means the unix socket in DataDir only.
	ListenAddr string
	// Settings override server settings (postgresql.conf names).
	Settings map[string]string
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.DataDir = cmp.Or(c.DataDir, "strata-data")
	c.DatabaseWait = cmp.Or(c.DatabaseWait, 30*time.Second)
	c.MaxConns = cmp.Or(c.MaxConns, 16)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Strata is an open platform: a database (embedded or external) with every module's schema
// migrated, and the modules' Go APIs.
type Strata struct {
	cfg      Config
	cluster  *embedpg.Cluster
	pool     *pgxpool.Pool
	migrated atomic.Bool

	listener *db.Listener
	audit    *audit.Log
	auth     *auth.Service
	feed     *feed.Feed
	docs     *doc.Store
	graph    *graph.Store
	search   *search.Store
	queue    *queue.Client
	kv       *kv.Store
	series   *series.Service
	media    *media.Service

	stop context.CancelFunc
	bg   sync.WaitGroup
}

// schema lists every module's migrations; migrate.Plan orders them by dependency.
var schema = []*migrate.Module{audit.Schema, auth.Schema, feed.Schema, doc.Schema, graph.Schema, search.Schema, queue.Schema, kv.Schema, series.Schema, media.Schema}

// Open starts or connects to the database, applies pending migrations (under an advisory
// lock, so several nodes may open at once) and returns the platform. Close releases it.
func Open(ctx context.Context, cfg Config) (*Strata, error) {
	cfg = cfg.WithDefaults()
	s := &Strata{cfg: cfg}
	dsn := cfg.DatabaseURL
	if dsn == "" && cfg.Attach {
		if u, err := embedpg.Attach(cfg.DataDir, ""); err == nil {
			dsn = u
		}
	}
	if dsn == "" {
		c, err := embedpg.Start(ctx, embedpg.Options{
			DataDir:    cfg.DataDir,
			BinDir:     cfg.Postgres.BinDir,
			User:       cfg.Postgres.User,
			ListenAddr: cfg.Postgres.ListenAddr,
			Settings:   cfg.Postgres.Settings,
			Logger:     cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		s.cluster = c
		dsn = c.URL("")
	}
	pool, err := db.Connect(ctx, dsn, &db.Options{Wait: cfg.DatabaseWait, MaxConns: cfg.MaxConns, Logger: cfg.Logger})
	if err != nil {
		_ = s.stopCluster()
		return nil, err
	}
	s.pool = pool
	if cfg.SkipMigrations {
		return s, nil
	}
	if _, err := s.Migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.startModules(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// startModules builds the modules and starts their background work.
func (s *Strata) startModules(ctx context.Context) error {
	log := s.cfg.Logger
	s.listener = db.NewListener(s.pool, log)
	s.listener.Start()
	s.audit = audit.New(s.pool, log)
	authCfg := s.cfg.Auth
	if authCfg.Logger == nil {
		authCfg.Logger = log
	}
	s.auth = auth.New(s.pool, s.listener, s.audit, authCfg)
	if err := s.auth.Start(ctx); err != nil {
		return err
	}
	created, generated, err := s.auth.EnsureAdmin(ctx, s.cfg.AdminPassword)
	if err != nil {
		return fmt.Errorf("creating the first administrator: %w", err)
	}
	if created && s.cfg.OnAdminCreated != nil {
		s.cfg.OnAdminCreated("admin", generated)
	}
	s.feed = feed.New(s.pool, s.listener, log, s.cfg.ChangeRetention)
	bg, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.bg.Go(func() { s.audit.RunSealer(bg, 100*time.Millisecond) })
	s.bg.Go(func() { s.feed.Run(bg) })
	s.docs = doc.New(s.pool, s.auth, s.feed, s.listener, doc.Config{Logger: log})
	s.bg.Go(func() { s.docs.Run(bg) })
	graphCfg := s.cfg.Graph
	graphCfg.Logger = cmp.Or(graphCfg.Logger, log)
	s.graph = graph.New(s.pool, s.auth, s.docs, s.feed, s.listener, graphCfg)
	searchCfg := s.cfg.Search
	searchCfg.Logger = cmp.Or(searchCfg.Logger, log)
	s.queue = queue.New(s.pool, s.auth, s.listener, queue.Config{Logger: log})
	s.bg.Go(func() { s.queue.Run(bg) })
	s.search = search.New(s.pool, s.auth, s.docs, s.queue, s.feed, s.listener, searchCfg)
	s.bg.Go(func() { s.search.Run(bg) })
	s.kv = kv.New(s.pool, s.auth, s.feed, kv.Config{Logger: log})
	s.bg.Go(func() { s.kv.Run(bg) })
	seriesCfg := s.cfg.Series
	seriesCfg.Logger = cmp.Or(seriesCfg.Logger, log)
	s.series = series.New(s.pool, s.auth, s.listener, seriesCfg)
	if err := s.series.Start(ctx); err != nil {
		return err
	}
	s.bg.Go(func() { s.series.Run(bg) })
	mediaStore := s.cfg.MediaStore
	if mediaStore == nil {
		if mediaStore, err = media.NewFileStore(filepath.Join(s.cfg.DataDir, "media")); err != nil {
			return err
		}
	}
	mediaCfg := s.cfg.Media
	mediaCfg.Logger = cmp.Or(mediaCfg.Logger, log)
	mediaCfg.Queue, mediaCfg.Listener, mediaCfg.KV = s.queue, s.listener, s.kv
	s.media = media.New(s.pool, s.auth, mediaStore, mediaCfg)
	if err := s.media.StoreCheck(ctx); err != nil {
		return err
	}
	s.bg.Go(func() { s.media.Run(bg) })
	return nil
}

// Docs returns the document store. Nil when opened with SkipMigrations.
func (s *Strata) Docs() *doc.Store { return s.docs }

// Search returns search. Nil when opened with SkipMigrations.
func (s *Strata) Search() *search.Store { return s.search }

// Graph returns the graph of documents. Nil when opened with SkipMigrations.
func (s *Strata) Graph() *graph.Store { return s.graph }

// Queue returns the job queue. Nil when opened with SkipMigrations.
func (s *Strata) Queue() *queue.Client { return s.queue }

// KV returns the key-value store. Nil when opened with SkipMigrations.
func (s *Strata) KV() *kv.Store { return s.kv }

// Media returns the media module. Nil when opened with SkipMigrations.
func (s *Strata) Media() *media.Service { return s.media }

// Series returns the device readings module. Nil when opened with SkipMigrations.
func (s *Strata) Series() *series.Service { return s.series }

// Feed returns the change feed. Nil when opened with SkipMigrations.
func (s *Strata) Feed() *feed.Feed { return s.feed }

// Listener returns the process's LISTEN/NOTIFY hub, for modules that wake on
// notifications. Nil when opened with SkipMigrations.
func (s *Strata) Listener() *db.Listener { return s.listener }

// Auth returns the identity and permissions service. Nil when opened with SkipMigrations.
func (s *Strata) Auth() *auth.Service { return s.auth }

// Audit returns the audit log. Nil when opened with SkipMigrations.
func (s *Strata) Audit() *audit.Log { return s.audit }

// Migrate applies pending migrations and returns the ids of those applied.
func (s *Strata) Migrate(ctx context.Context) ([]string, error) {
	applied, err := migrate.Up(ctx, s.pool, s.cfg.Logger, schema...)
	if err != nil {
		return nil, fmt.Errorf("migrating the database: %w", err)
	}
	s.migrated.Store(true)
	ids := make([]string, len(applied))
	for i, m := range applied {
		ids[i] = m.ID()
	}
	return ids, nil
}

// MigrationState is one migration and whether the database has it.
type MigrationState struct {
	// ID is module/NNNN_name.
	ID string
	// AppliedAt is when it was applied; zero when pending.
	AppliedAt time.Time
	// Modified means the applied file differs from this binary's.
	Modified bool
	// Unknown means the database has it but this binary does not (a newer strata applied it).
	Unknown bool
}

// MigrationStatus lists every migration this binary knows and any unknown applied ones.
func (s *Strata) MigrationStatus(ctx context.Context) ([]MigrationState, error) {
	states, err := migrate.Status(ctx, s.pool, schema...)
	if err != nil {
		return nil, err
	}
	out := make([]MigrationState, len(states))
	for i, st := range states {
		out[i] = MigrationState{ID: st.ID(), AppliedAt: st.AppliedAt, Modified: st.Modified, Unknown: st.Unknown}
	}
	return out, nil
}

// Ready reports whether the platform can serve: the database answers and the schema is
// migrated. Its errors are fit to show to clients.
func (s *Strata) Ready(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return errors.New("the database is unreachable")
	}
	if !s.migrated.Load() {
		states, err := migrate.Status(ctx, s.pool, schema...)
		if err != nil {
			return errors.New("the migration state cannot be read")
		}
		if n := migrate.Pending(states); n > 0 {
			return fmt.Errorf("%d migrations are pending", n)
		}
		s.migrated.Store(true)
	}
	return nil
}

// Pool returns the database pool, for composing Strata's …Tx operations with your own
// statements in one transaction.
func (s *Strata) Pool() *pgxpool.Pool { return s.pool }

// Logger returns the configured logger.
func (s *Strata) Logger() *slog.Logger { return s.cfg.Logger }

// Postgres describes the embedded server, or returns ok=false with an external database.
func (s *Strata) Postgres() (pid int, dataDir string, ok bool) {
	if s.cluster == nil {
		return 0, "", false
	}
	return s.cluster.PID(), s.cluster.DataDir(), true
}

// Close stops background work, closes the pool and stops the embedded server (fast
// shutdown, bounded at 60s).
func (s *Strata) Close() error {
	if s.stop != nil {
		s.stop()
	}
	s.bg.Wait()
	if s.listener != nil {
		s.listener.Close()
	}
	if s.auth != nil {
		s.auth.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	return s.stopCluster()
}

func (s *Strata) stopCluster() error {
	if s.cluster == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return s.cluster.Stop(ctx)
}

// Package auth is Strata's identity and permissions: users (argon2id passwords), tenants
// and memberships with roles and date windows, per-resource grants, API keys, short-lived
// JWT access tokens with rotating refresh tokens, and HTTP Basic made cheap by a cache of
// verified credentials. Authorize is the one authorization function every module calls.
//
// Per-request checks read users, sessions, keys and memberships from in-process caches that
// every node keeps current through LISTEN/NOTIFY; while the notification connection is down
// the caches are bypassed, so a revocation never waits for a cache to expire.
package auth

import (
	"cmp"
	"context"
	"embed"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the auth module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "auth", FS: migrate.Dir(migrations, "migrations"), Requires: []*migrate.Module{audit.Schema}}

// Config tunes the service. Zero values mean the documented defaults.
type Config struct {
	// AccessTTL is the lifetime of access tokens. Default 15 minutes.
	AccessTTL time.Duration
	// RefreshTTL is the lifetime of a session (its refresh tokens). Default 30 days.
	RefreshTTL time.Duration
	// BasicCacheTTL is how long a verified Basic credential is remembered. Default 60s.
	BasicCacheTTL time.Duration
	// SignInPerMinute limits sign-in attempts (token requests and uncached Basic
	// credentials) per username. Default 10.
	SignInPerMinute int
	// SignInPerMinutePerIP limits sign-in attempts per client address. Default 60.
	SignInPerMinutePerIP int
	// Argon2 sets the password hashing cost. Default 64 MiB, 1 pass, 2 lanes.
	Argon2 Argon2Params
	// Now is the clock; nil means time.Now. Tests inject one.
	Now func() time.Time
	// Logger receives warnings. Nil is quiet.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.AccessTTL = cmp.Or(c.AccessTTL, 15*time.Minute)
	c.RefreshTTL = cmp.Or(c.RefreshTTL, 30*24*time.Hour)
	c.BasicCacheTTL = cmp.Or(c.BasicCacheTTL, 60*time.Second)
	c.SignInPerMinute = cmp.Or(c.SignInPerMinute, 10)
	c.SignInPerMinutePerIP = cmp.Or(c.SignInPerMinutePerIP, 60)
	c.Argon2 = c.Argon2.withDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Service is the identity and permissions service.
type Service struct {
	pool     *pgxpool.Pool
	listener *db.Listener
	audit    *audit.Log
	cfg      Config
	log      *slog.Logger

	keys      *keyRing
	users     *cache[string, userState]
	sessions  *cache[string, sessionState]
	apiKeys   *cache[string, keyState]
	access    *cache[string, accessState]
	basic     *basicCache
	verified  *ttlMap[string, *claims] // access tokens whose signature was checked
	parser    *jwt.Parser
	limits    *limiter
	argonSlot chan struct{}
	touched   *touchThrottle
	bg        sync.WaitGroup // background writes (API key last use)

	verifications atomic.Int64
}

// New returns the service. listener carries cache invalidations between nodes; it must be
// started by the caller. Call Start before serving requests.
func New(pool *pgxpool.Pool, listener *db.Listener, auditLog *audit.Log, cfg Config) *Service {
	cfg = cfg.withDefaults()
	s := &Service{pool: pool, listener: listener, audit: auditLog, cfg: cfg, log: cfg.Logger,
		keys:      &keyRing{},
		limits:    newLimiter(cfg.SignInPerMinute, cfg.SignInPerMinutePerIP),
		argonSlot: make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		touched:   newTouchThrottle(time.Minute),
	}
	healthy := listener.Healthy
	s.users = newCache[string, userState](healthy, 10000, time.Minute)
	s.sessions = newCache[string, sessionState](healthy, 100000, time.Minute)
	s.apiKeys = newCache[string, keyState](healthy, 10000, time.Minute)
	s.access = newCache[string, accessState](healthy, 100000, time.Minute)
	s.basic = newBasicCache(cfg.BasicCacheTTL)
	s.verified = newTTLMap[string, *claims](100000, time.Minute)
	s.parser = jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired(),
		jwt.WithIssuer(issuer), jwt.WithIssuedAt(), jwt.WithLeeway(30*time.Second), jwt.WithTimeFunc(s.now))
	listener.Handle(notifyChannel, s.invalidate)
	listener.OnReset(s.flushCaches)
	return s
}

// Start loads the signing keys (creating the first one on a new database).
func (s *Service) Start(ctx context.Context) error {
	return s.loadKeys(ctx, true)
}

// Close waits for background writes to finish.
func (s *Service) Close() { s.bg.Wait() }

func (s *Service) now() time.Time { return s.cfg.Now() }

// notifyChannel carries cache invalidations: "user:<id>" (state, password, admin flag),
// "session:<id>", "key:<prefix>" (an API key's state), "access:<tenant>" (memberships and
// grants of a tenant), "keys" (signing keys).
const notifyChannel = "strata_auth"

// notify queues an invalidation, delivered to every node when tx commits, and applies it
// to this node's caches at once (a stale read right after commit would otherwise be
// possible here).
func (s *Service) notify(ctx context.Context, tx pgx.Tx, payload string) error {
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, payload); err != nil {
		return err
	}
	s.invalidate(payload)
	return nil
}

func (s *Service) invalidate(payload string) {
	kind, id, _ := strings.Cut(payload, ":")
	switch kind {
	case "user":
		s.users.remove(id)
	case "session":
		s.sessions.remove(id)
	case "key":
		s.apiKeys.remove(id)
	case "access":
		s.access.removeIf(func(k string) bool { return strings.HasPrefix(k, id+"|") })
	case "keys":
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.loadKeys(ctx, false); err != nil {
				s.log.Warn("reloading signing keys failed", "err", err)
			}
		}()
	default:
		s.flushCaches()
	}
}

func (s *Service) flushCaches() {
	s.users.purge()
	s.sessions.purge()
	s.apiKeys.purge()
	s.access.purge()
}

// inTx runs fn in a transaction and translates its error, naming what for problems.
func (s *Service) inTx(ctx context.Context, what string, fn func(pgx.Tx) error) error {
	return db.Translate(pgx.BeginFunc(ctx, s.pool, fn), what)
}

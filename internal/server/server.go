// Package server is Strata's HTTP API: huma v2 on net/http, one file per route group,
// every error an RFC 9457 problem, a request id on every response and log line, and
// Prometheus metrics by route.
package server

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"path"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/graph"
	"github.com/stratadb/strata/kv"
	"github.com/stratadb/strata/media"
	"github.com/stratadb/strata/queue"
	"github.com/stratadb/strata/search"
	"github.com/stratadb/strata/series"
)

// Config holds the HTTP listener's settings. Zero values mean the documented defaults.
type Config struct {
	// Addr is the listen address. Default "127.0.0.1:8080".
	Addr string
	// ReadHeaderTimeout bounds reading request headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Default 60s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response; streaming endpoints (long polls, server-sent
	// events, downloads) extend their own deadline. Default 60s.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default 120s.
	IdleTimeout time.Duration
	// ShutdownTimeout is how long a graceful shutdown waits for in-flight requests. Default 30s.
	ShutdownTimeout time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.Addr = cmp.Or(c.Addr, "127.0.0.1:8080")
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, 10*time.Second)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, 60*time.Second)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, 60*time.Second)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, 120*time.Second)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 30*time.Second)
	return c
}

// Deps are what the API serves from.
type Deps struct {
	// Pool is the database pool; its statistics are exported as metrics.
	Pool *pgxpool.Pool
	// Ready reports whether the platform can serve: database reachable and migrated.
	Ready func(context.Context) error
	// Logger receives request and error logs. Nil is quiet.
	Logger *slog.Logger
	// Version is reported by the OpenAPI document and metrics.
	Version string
	// Auth and Audit serve identity, permissions and the audit log; their routes are
	// registered only when set.
	Auth  *auth.Service
	Audit *audit.Log
	// Feed serves the change feed; Docs the document store. Their routes are registered
	// only when set.
	Feed *feed.Feed
	Docs *doc.Store
	// Graph serves edges and traversals; its routes are registered only when set.
	Graph *graph.Store
	// Search serves search; its routes are registered only when set.
	Search *search.Store
	// Series serves devices and their readings; its routes are registered only when set.
	Series *series.Service
	// Queue serves the job queue and KV the key-value store; their routes are registered
	// only when set.
	Queue *queue.Client
	KV    *kv.Store
	// Media serves uploads and their originals; its routes are registered only when set.
	Media *media.Service
}

// Server is the HTTP handler of the whole API.
type Server struct {
	deps    Deps
	log     *slog.Logger
	mux     *http.ServeMux
	api     huma.API
	metrics *metrics
	handler http.Handler
	// rejections bounds how many refused credentials per client address are audited.
	rejections *ipLimiter
}

// New builds the API: every route group registered, wrapped in request ids, logging,
// metrics and panic recovery.
func New(d Deps) *Server {
	s := &Server{deps: d, log: cmp.Or(d.Logger, slog.New(slog.DiscardHandler)), mux: http.NewServeMux(),
		rejections: newIPLimiter(2, 20)}
	s.metrics = newMetrics(d.Pool, d.Version)
	s.api = humago.New(s.mux, apiConfig(d.Version))
	securitySchemes(s.api)
	s.api.UseMiddleware(s.authn)
	s.mux.HandleFunc("/", s.unmatched)
	s.routesHealth()
	if d.Auth != nil && d.Audit != nil {
		s.routesAuth()
		s.routesUsers()
		s.routesTenants()
		s.routesGrants()
		s.routesAudit()
		if d.Feed != nil {
			s.routesChanges()
		}
		if d.Docs != nil {
			s.routesDocs()
		}
		if d.Graph != nil {
			s.routesGraph()
		}
		if d.Search != nil {
			s.routesSearch()
		}
		s.routesSeries()
		s.routesQueue()
		s.routesKV()
		s.routesMedia()
	}
	s.mux.Handle("GET /metrics", s.metrics.handler())
	s.handler = s.observe(s.mux)
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// API returns the huma API, for registering operations and reading the OpenAPI document.
func (s *Server) API() huma.API { return s.api }

// Registry returns the Prometheus registry behind /metrics, for modules' own collectors.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

func apiConfig(version string) huma.Config {
	cfg := huma.DefaultConfig("Strata", version)
	cfg.Info.Description = "PostgreSQL-native application data platform. Errors are RFC 9457 " +
		"problem documents (application/problem+json) with a stable `code`; see docs/errors.md."
	cfg.OpenAPIPath = "/openapi"
	cfg.Components.Schemas = huma.NewMapRegistry("#/components/schemas/", schemaNamer())
	cfg.CreateHooks = nil // no $schema members or Link headers in responses
	cfg.Transformers = append(cfg.Transformers, stampProblem)
	return cfg
}

// schemaNamer names OpenAPI schemas as huma does (graph.Result → "Result"), except that a
// named type whose name another module's type already took gets its package's name in front
// (search.Stats → "SearchStats"), so modules need not keep their type names apart. Routes
// register in a fixed order, so the names are stable.
func schemaNamer() func(reflect.Type, string) string {
	var mu sync.Mutex
	byType := map[reflect.Type]string{}
	taken := map[string]reflect.Type{}
	return func(t reflect.Type, hint string) string {
		name := huma.DefaultSchemaNamer(t, hint)
		d := t
		for d.Kind() == reflect.Pointer {
			d = d.Elem()
		}
		if d.Name() == "" || d.PkgPath() == "" {
			return name // anonymous or built-in: huma names it from the hint
		}
		mu.Lock()
		defer mu.Unlock()
		if n, ok := byType[d]; ok {
			return n
		}
		if other, ok := taken[name]; ok && other != d {
			pkg := path.Base(d.PkgPath())
			name = strings.ToUpper(pkg[:1]) + pkg[1:] + name
		}
		byType[d], taken[name] = name, d
		return name
	}
}

// NewHTTPServer returns an http.Server for h with c's timeouts.
func NewHTTPServer(c Config, h http.Handler, log *slog.Logger) *http.Server {
	c = c.WithDefaults()
	return &http.Server{
		Addr:              c.Addr,
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cmp.Or(log, slog.New(slog.DiscardHandler)).Handler(), slog.LevelDebug),
	}
}

// Gate serves probes and "starting" problems until Open hands it the real handler, so a
// listener can be bound (and health-checked) before the database is up.
type Gate struct {
	h atomic.Pointer[http.Handler]
}

// Set switches the gate to serve h.
func (g *Gate) Set(h http.Handler) { g.h.Store(&h) }

// ServeHTTP serves the real handler once set; before that /healthz answers 200 and
// everything else 503 starting.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	r, _ = withRequestID(w, r)
	if r.URL.Path == "/healthz" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
		return
	}
	writeProblem(w, r, startingProblem())
}

package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/embedpg"
	"github.com/stratadb/strata/internal/server"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type echoIn struct {
	Body struct {
		Name  string `json:"name" maxLength:"20"`
		Count int    `json:"count,omitempty" minimum:"0"`
	}
}

type echoOut struct {
	Body struct {
		Name string `json:"name"`
	}
}

// newServer builds the API on pool with a few test-only operations that exercise the
// mechanisms every module relies on: body parsing and limits, validation, handler
// errors, panics and database errors.
func newServer(t *testing.T, pool *pgxpool.Pool) (*server.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	ready := func(ctx context.Context) error {
		if err := pool.Ping(ctx); err != nil {
			return err
		}
		return nil
	}
	s := server.New(server.Deps{Pool: pool, Ready: ready, Version: "test",
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	huma.Register(s.API(), huma.Operation{OperationID: "echo", Method: http.MethodPost, Path: "/test/echo", MaxBodyBytes: 1024},
		func(_ context.Context, in *echoIn) (*echoOut, error) {
			if in.Body.Name == "taken" {
				return nil, problem.Conflict("name_taken", "the name %q is taken", in.Body.Name).WithExtension("current_version", 7)
			}
			out := &echoOut{}
			out.Body.Name = in.Body.Name
			return out, nil
		})
	huma.Register(s.API(), huma.Operation{OperationID: "panic", Method: http.MethodGet, Path: "/test/panic"},
		func(context.Context, *struct{}) (*struct{}, error) { panic("secret-internal-detail") })
	huma.Register(s.API(), huma.Operation{OperationID: "plain-error", Method: http.MethodGet, Path: "/test/error"},
		func(context.Context, *struct{}) (*struct{}, error) {
			return nil, io.ErrUnexpectedEOF // a plain error from deep inside: a 500, described only in the log
		})
	huma.Register(s.API(), huma.Operation{OperationID: "maintenance", Method: http.MethodGet, Path: "/test/maintenance"},
		func(context.Context, *struct{}) (*struct{}, error) {
			return nil, huma.Error503ServiceUnavailable("down for maintenance")
		})
	huma.Register(s.API(), huma.Operation{OperationID: "db", Method: http.MethodGet, Path: "/test/db"},
		func(ctx context.Context, _ *struct{}) (*echoOut, error) {
			out := &echoOut{}
			err := pool.QueryRow(ctx, "SELECT 'from the database'").Scan(&out.Body.Name)
			return out, db.Translate(err, "greeting")
		})
	return s, logs
}

type scenario struct {
	name       string
	method     string
	path       string
	header     map[string]string
	body       string
	wantStatus int
	wantCode   string   // problem code, when the answer is a problem
	wantBody   []string // fragments the body must contain
	notBody    []string // fragments the body must not contain
	wantHeader map[string]string
}

func run(t *testing.T, h http.Handler, sc scenario) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if sc.body != "" {
		body = strings.NewReader(sc.body)
	}
	req := httptest.NewRequest(sc.method, sc.path, body)
	if sc.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range sc.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	got := rec.Body.String()
	if rec.Code != sc.wantStatus {
		t.Fatalf("%s %s: status %d, want %d; body %s", sc.method, sc.path, rec.Code, sc.wantStatus, got)
	}
	if rec.Header().Get("X-Request-Id") == "" {
		t.Errorf("%s %s: no X-Request-Id", sc.method, sc.path)
	}
	if sc.wantCode != "" {
		if ct := rec.Header().Get("Content-Type"); ct != problem.ContentType {
			t.Errorf("%s %s: Content-Type %q, want %s", sc.method, sc.path, ct, problem.ContentType)
		}
		var p map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("problem is not JSON: %v: %s", err, got)
		}
		if p["code"] != sc.wantCode {
			t.Errorf("%s %s: code %v, want %s; body %s", sc.method, sc.path, p["code"], sc.wantCode, got)
		}
		if p["status"] != float64(sc.wantStatus) || p["title"] == "" {
			t.Errorf("%s %s: problem lacks status/title: %s", sc.method, sc.path, got)
		}
		if p["request_id"] != rec.Header().Get("X-Request-Id") {
			t.Errorf("%s %s: request_id %v differs from header %q", sc.method, sc.path, p["request_id"], rec.Header().Get("X-Request-Id"))
		}
	}
	for _, f := range sc.wantBody {
		if !strings.Contains(got, f) {
			t.Errorf("%s %s: body lacks %q: %s", sc.method, sc.path, f, got)
		}
	}
	for _, f := range sc.notBody {
		if strings.Contains(got, f) {
			t.Errorf("%s %s: body contains %q: %s", sc.method, sc.path, f, got)
		}
	}
	for k, v := range sc.wantHeader {
		if rec.Header().Get(k) != v {
			t.Errorf("%s %s: header %s = %q, want %q", sc.method, sc.path, k, rec.Header().Get(k), v)
		}
	}
	return rec
}

func TestScenarios(t *testing.T) {
	t.Parallel()
	s, logs := newServer(t, testdb.New(t))
	scenarios := []scenario{
		{name: "liveness", method: "GET", path: "/healthz", wantStatus: 200, wantBody: []string{`"status":"ok"`}},
		{name: "readiness", method: "GET", path: "/readyz", wantStatus: 200},
		{name: "openapi 3.1", method: "GET", path: "/openapi.json", wantStatus: 200, wantBody: []string{`"openapi":"3.1.0"`, `"/readyz"`}},
		{name: "docs page", method: "GET", path: "/docs", wantStatus: 200, wantBody: []string{"<html"}},
		{name: "unknown route", method: "GET", path: "/v1/nothing-here", wantStatus: 404, wantCode: "route_not_found"},
		{name: "wrong method", method: "DELETE", path: "/healthz", wantStatus: 405, wantCode: "method_not_allowed",
			wantHeader: map[string]string{"Allow": "GET, HEAD"}},
		{name: "wrong method on an op with a body", method: "GET", path: "/test/echo", wantStatus: 405, wantCode: "method_not_allowed",
			wantHeader: map[string]string{"Allow": "POST"}},
		{name: "ok", method: "POST", path: "/test/echo", body: `{"name":"ada"}`, wantStatus: 200, wantBody: []string{`"name":"ada"`},
			notBody: []string{"$schema"}},
		{name: "malformed JSON", method: "POST", path: "/test/echo", body: `{"name":`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "malformed JSON is not echoed", method: "POST", path: "/test/echo", body: `{"name":"hunter2-secret"`, wantStatus: 400,
			wantCode: "malformed_json", notBody: []string{"hunter2"}},
		{name: "wrong type", method: "POST", path: "/test/echo", body: `{"name":5}`, wantStatus: 422, wantCode: "validation_failed",
			wantBody: []string{"body.name"}},
		{name: "unknown field", method: "POST", path: "/test/echo", body: `{"name":"x","admin":true}`, wantStatus: 422,
			wantCode: "validation_failed", wantBody: []string{"admin"}},
		{name: "constraint", method: "POST", path: "/test/echo", body: `{"name":"x","count":-1}`, wantStatus: 422, wantCode: "validation_failed"},
		{name: "missing body", method: "POST", path: "/test/echo", wantStatus: 400, wantCode: "invalid_request"},
		{name: "oversize body", method: "POST", path: "/test/echo", body: `{"name":"` + strings.Repeat("a", 4096) + `"}`,
			wantStatus: 413, wantCode: "body_too_large"},
		{name: "module problem with extension", method: "POST", path: "/test/echo", body: `{"name":"taken"}`, wantStatus: 409,
			wantCode: "name_taken", wantBody: []string{`"current_version":7`}},
		{name: "panic", method: "GET", path: "/test/panic", wantStatus: 500, wantCode: "internal", notBody: []string{"secret-internal-detail"}},
		{name: "plain error", method: "GET", path: "/test/error", wantStatus: 500, wantCode: "internal", notBody: []string{"EOF"}},
		{name: "huma 503 keeps its status", method: "GET", path: "/test/maintenance", wantStatus: 503, wantCode: "unavailable",
			wantBody: []string{"down for maintenance"}},
		{name: "database", method: "GET", path: "/test/db", wantStatus: 200, wantBody: []string{"from the database"}},
		{name: "client request id kept", method: "GET", path: "/healthz", header: map[string]string{"X-Request-Id": "abc-123"},
			wantStatus: 200, wantHeader: map[string]string{"X-Request-Id": "abc-123"}},
		{name: "hostile request id replaced", method: "GET", path: "/nope", header: map[string]string{"X-Request-Id": "a\"b<script>"},
			wantStatus: 404, wantCode: "route_not_found", notBody: []string{"script"}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { run(t, s, sc) })
	}
	// The panic's detail and stack went to the log, with the request id, not to the client.
	log := logs.String()
	for _, want := range []string{"secret-internal-detail", `"stack"`, "unexpected EOF", `"request_id"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestMetricsByRoute(t *testing.T) {
	t.Parallel()
	s, _ := newServer(t, testdb.New(t))
	for range 3 {
		run(t, s, scenario{method: "GET", path: "/healthz", wantStatus: 200})
	}
	run(t, s, scenario{method: "GET", path: "/no/such/thing", wantStatus: 404, wantCode: "route_not_found"})
	rec := run(t, s, scenario{method: "GET", path: "/metrics", wantStatus: 200})
	body := rec.Body.String()
	for _, want := range []string{
		`strata_http_requests_total{method="GET",route="GET /healthz",status="200"} 3`,
		`strata_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`strata_http_request_duration_seconds_bucket{method="GET",route="GET /healthz"`,
		`strata_db_pool_connections{state="max"}`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// The database going away turns readiness and database-backed requests into 503 problems,
// and service resumes when it returns.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	c := testdb.Cluster(t)
	ctx := context.Background()
	pool, err := db.Connect(ctx, c.URL("postgres"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, _ := newServer(t, pool)
	run(t, s, scenario{method: "GET", path: "/readyz", wantStatus: 200})

	dataDir := filepath.Dir(c.DataDir())
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	run(t, s, scenario{method: "GET", path: "/readyz", wantStatus: 503, wantCode: "not_ready",
		wantHeader: map[string]string{"Retry-After": "1"}})
	run(t, s, scenario{method: "GET", path: "/test/db", wantStatus: 503, wantCode: "database_unavailable"})
	run(t, s, scenario{method: "GET", path: "/healthz", wantStatus: 200}) // the process is still alive

	c2, err := embedpg.Start(ctx, embedpg.Options{DataDir: dataDir, Settings: testdb.FastSettings, Database: "postgres"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Stop(ctx)
	run(t, s, scenario{method: "GET", path: "/readyz", wantStatus: 200})
	run(t, s, scenario{method: "GET", path: "/test/db", wantStatus: 200})
}

func TestGate(t *testing.T) {
	t.Parallel()
	g := &server.Gate{}
	run(t, g, scenario{method: "GET", path: "/healthz", wantStatus: 200})
	run(t, g, scenario{method: "GET", path: "/readyz", wantStatus: 503, wantCode: "starting"})
	run(t, g, scenario{method: "GET", path: "/v1/anything", wantStatus: 503, wantCode: "starting"})
	s, _ := newServer(t, testdb.New(t))
	g.Set(s)
	run(t, g, scenario{method: "GET", path: "/readyz", wantStatus: 200})
}

// Graceful shutdown lets a request in flight finish.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		_, _ = w.Write([]byte("finished"))
	})
	srv := server.NewHTTPServer(server.Config{}, h, nil)
	ts := httptest.NewUnstartedServer(h)
	ts.Config = srv
	ts.Start()
	defer ts.Close()
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get(ts.URL)
		if err != nil {
			result <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		result <- string(b)
	}()
	<-started
	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownDone <- srv.Shutdown(ctx)
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if got := <-result; got != "finished" {
		t.Fatalf("in-flight request got %q", got)
	}
	if err := <-shutdownDone; err != nil {
		t.Fatal(err)
	}
}

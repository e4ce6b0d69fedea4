package embed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratadb/strata/problem"
)

// The servers in these tests speak Ollama's and OpenAI's documented wire formats; they
// stand in for the third-party services, which cannot run here.

const testKey = "sk-test-0123456789abcdef"

// vectorFor is the vector the test servers answer for a text: its length, then a ramp.
func vectorFor(text string, dims int) []float32 {
	v := make([]float32, dims)
	v[0] = float32(len(text))
	for i := 1; i < dims; i++ {
		v[i] = float32(i) / 10
	}
	return v
}

// embedRequest is what both APIs receive.
type embedRequest struct {
	Model      string   `json:"model"`
	Input      []string `json:"input"`
	Dimensions *int     `json:"dimensions"`
}

// server is a test server recording the requests it gets.
type server struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
	bodies   []embedRequest
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// newServer starts a server whose handler gets the decoded request and its 0-based
// sequence number.
func newServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, req embedRequest, n int)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req embedRequest
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusMethodNotAllowed)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		n := len(s.requests)
		s.requests = append(s.requests, r)
		s.bodies = append(s.bodies, req)
		s.mu.Unlock()
		handle(w, r, req, n)
	}))
	t.Cleanup(s.Close)
	return s
}

// ollamaOK answers like Ollama's /api/embed.
func ollamaOK(dims int) func(http.ResponseWriter, *http.Request, embedRequest, int) {
	return func(w http.ResponseWriter, r *http.Request, req embedRequest, _ int) {
		if r.URL.Path != "/api/embed" {
			http.NotFound(w, r)
			return
		}
		var out struct {
			Model      string      `json:"model"`
			Embeddings [][]float32 `json:"embeddings"`
		}
		out.Model = req.Model
		for _, text := range req.Input {
			out.Embeddings = append(out.Embeddings, vectorFor(text, dims))
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

// openAIOK answers like OpenAI's /v1/embeddings, listing the items in reverse order (the
// index says which text each is for).
func openAIOK(dims int) func(http.ResponseWriter, *http.Request, embedRequest, int) {
	return func(w http.ResponseWriter, r *http.Request, req embedRequest, _ int) {
		if r.URL.Path != "/v1/embeddings" {
			http.NotFound(w, r)
			return
		}
		type item struct {
			Object    string    `json:"object"`
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		}
		out := struct {
			Object string `json:"object"`
			Data   []item `json:"data"`
			Model  string `json:"model"`
		}{Object: "list", Model: req.Model}
		for i := len(req.Input) - 1; i >= 0; i-- {
			out.Data = append(out.Data, item{"embedding", i, vectorFor(req.Input[i], dims)})
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

// newTestRemote builds the embedder for cfg through New, pointed at s, with retries
// paced in milliseconds.
func newTestRemote(t *testing.T, cfg Config, s *server) *remote {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = s.URL
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := e.(*remote)
	r.client, r.backoff = s.Client(), time.Millisecond
	return r
}

func TestOllama(t *testing.T) {
	t.Parallel()
	s := newServer(t, ollamaOK(8))
	e := newTestRemote(t, Config{Kind: KindOllama, Model: "nomic-embed-text", Dimensions: 8, MaxBatch: 2}, s)
	if e.Name() != "ollama:nomic-embed-text" || e.Dim() != 8 {
		t.Errorf("Name %q, Dim %d", e.Name(), e.Dim())
	}
	texts := []string{"a", "bb", "ccc", "dddd", "eeeee"}
	got, err := e.Embed(context.Background(), texts)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v[0] != float32(len(texts[i])) {
			t.Errorf("vector %d is for a text of length %v", i, v[0])
		}
	}
	var sizes []int
	for i, b := range s.bodies {
		sizes = append(sizes, len(b.Input))
		if b.Model != "nomic-embed-text" || s.requests[i].Header.Get("Authorization") != "" {
			t.Errorf("request %d: model %q, authorization %q", i, b.Model, s.requests[i].Header.Get("Authorization"))
		}
	}
	if fmt.Sprint(sizes) != "[2 2 1]" {
		t.Errorf("batches of %v, want [2 2 1]", sizes)
	}
	if v, err := e.Embed(context.Background(), nil); err != nil || len(v) != 0 || s.count() != 3 {
		t.Errorf("no texts: %d vectors, %v, %d requests", len(v), err, s.count())
	}
}

func TestOpenAI(t *testing.T) {
	t.Parallel()
	s := newServer(t, openAIOK(4))
	for _, c := range []struct {
		url        string
		request    bool
		dimensions string
	}{
		{url: "", dimensions: "<nil>"},
		{url: "/v1/", request: true, dimensions: "4"}, // a base URL naming the version
	} {
		e := newTestRemote(t, Config{Kind: KindOpenAI, URL: s.URL + c.url, Model: "text-embedding-3-small", Dimensions: 4,
			RequestDimensions: c.request, APIKey: testKey}, s)
		texts := []string{"one", "three", "five5"}
		got, err := e.Embed(context.Background(), texts)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range got {
			if v[0] != float32(len(texts[i])) {
				t.Errorf("vector %d is for a text of length %v: the answer's order was kept", i, v[0])
			}
		}
		last := s.count() - 1
		r, b := s.requests[last], s.bodies[last]
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			t.Errorf("Authorization %q", r.Header.Get("Authorization"))
		}
		if b.Dimensions != nil {
			if d := fmt.Sprint(*b.Dimensions); d != c.dimensions {
				t.Errorf("dimensions sent %s, want %s", d, c.dimensions)
			}
		} else if c.dimensions != "<nil>" {
			t.Errorf("dimensions not sent")
		}
	}
	if e := newTestRemote(t, Config{Kind: KindOpenAI, Model: "m", Dimensions: 4}, s); e.Name() != "openai:m" {
		t.Errorf("Name %q", e.Name())
	}
}

// TestRemoteErrors checks how answers other than success become problems.
func TestRemoteErrors(t *testing.T) {
	t.Parallel()
	type handler = func(http.ResponseWriter, *http.Request, embedRequest, int)
	status := func(code int, body string) handler {
		return func(w http.ResponseWriter, _ *http.Request, _ embedRequest, _ int) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = w.Write([]byte(body))
		}
	}
	// failFirst answers code to the first n requests, then succeeds.
	failFirst := func(n, code int, retryAfter string) handler {
		return func(w http.ResponseWriter, r *http.Request, req embedRequest, i int) {
			if i < n {
				if retryAfter != "" {
					w.Header().Set("Retry-After", retryAfter)
				}
				http.Error(w, "busy", code)
				return
			}
			ollamaOK(4)(w, r, req, i)
		}
	}
	for _, c := range []struct {
		name     string
		handle   handler
		code     string // "" means success
		status   int    // of the problem
		upstream int
		requests int
		detail   string
	}{
		{"bad request", status(400, `{"error":"input must not be empty"}`), "embedder_failed", 502, 400, 1, "400 Bad Request: input must not be empty"},
		{"unauthorized, key echoed", status(401, `{"error":{"message":"Incorrect API key provided: `+testKey+`"}}`), "embedder_failed", 502, 401, 1, "check the API key"},
		{"model not found", status(404, `{"error":"model \"x\" not found, try pulling it first"}`), "embedder_failed", 502, 404, 1, "not found, try pulling it first"},
		{"server error, retried", status(500, "boom"), "embedder_unavailable", 503, 500, 4, "500 Internal Server Error: boom"},
		{"rate limited, then served", failFirst(1, 429, "0"), "", 0, 0, 2, ""},
		{"unavailable twice, then served", failFirst(2, 503, ""), "", 0, 0, 3, ""},
		{"rate limited throughout", failFirst(100, 429, "0"), "embedder_unavailable", 503, 429, 4, "429 Too Many Requests"},
		{"wrong dimension", ollamaOK(5), "embedder_dimension_mismatch", 502, 200, 1, "answered 5-dimensional vectors; the embedder is configured for 4"},
		{"too few vectors", func(w http.ResponseWriter, r *http.Request, req embedRequest, i int) {
			req.Input = req.Input[1:]
			ollamaOK(4)(w, r, req, i)
		}, "embedder_failed", 502, 200, 1, "1 vectors for 2 texts"},
		{"malformed JSON", status(200, `{"embeddings": [[1, 2,`), "embedder_failed", 502, 200, 1, "malformed answer"},
		{"wrong JSON", status(200, `{"embeddings": "none"}`), "embedder_failed", 502, 200, 1, "malformed answer"},
		{"answer too large", func(w http.ResponseWriter, _ *http.Request, _ embedRequest, _ int) {
			_, _ = w.Write([]byte(`{"embeddings": [[` + strings.Repeat("0.123456789,", 200_000) + `0]]}`))
		}, "embedder_failed", 502, 0, 1, "answer too large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, c.handle)
			e := newTestRemote(t, Config{Kind: KindOllama, Model: "m", Dimensions: 4, APIKey: testKey}, s)
			_, err := e.Embed(context.Background(), []string{"x", "y"})
			if s.count() != c.requests {
				t.Errorf("%d requests, want %d", s.count(), c.requests)
			}
			if c.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			p, ok := problem.As(err)
			if !ok || p.Code != c.code || p.Status != c.status {
				t.Fatalf("error %v, want a %d %s problem", err, c.status, c.code)
			}
			if !strings.Contains(p.Detail, c.detail) || !strings.Contains(p.Detail, "ollama at "+s.URL) {
				t.Errorf("detail %q does not name the server and say %q", p.Detail, c.detail)
			}
			if up, _ := p.Extensions["upstream_status"].(int); up != c.upstream {
				t.Errorf("upstream_status %v, want %d", p.Extensions["upstream_status"], c.upstream)
			}
			if b, _ := json.Marshal(p); strings.Contains(p.Detail+string(b)+err.Error(), testKey) {
				t.Errorf("the API key leaked: %s", b)
			}
		})
	}
}

func TestRemoteTimeout(t *testing.T) {
	t.Parallel()
	s := newServer(t, func(w http.ResponseWriter, r *http.Request, _ embedRequest, _ int) {
		select { // answer only after the client has given up
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	e := newTestRemote(t, Config{Kind: KindOpenAI, Model: "m", Dimensions: 4, Timeout: 50 * time.Millisecond, MaxRetries: 1}, s)
	start := time.Now()
	_, err := e.Embed(context.Background(), []string{"x"})
	if !problem.HasCode(err, "embedder_unavailable") || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Errorf("error %v, want embedder_unavailable naming the timeout", err)
	}
	if s.count() != 2 || time.Since(start) > 3*time.Second {
		t.Errorf("%d requests in %s, want 2 (one retry) well before the server answers", s.count(), time.Since(start))
	}
}

func TestRemoteUnreachable(t *testing.T) {
	t.Parallel()
	s := newServer(t, ollamaOK(4))
	e := newTestRemote(t, Config{Kind: KindOllama, Model: "m", Dimensions: 4, MaxRetries: -1}, s)
	s.Close() // nothing listens at the URL any more
	_, err := e.Embed(context.Background(), []string{"x"})
	if !problem.HasCode(err, "embedder_unavailable") {
		t.Errorf("error %v, want embedder_unavailable", err)
	}
}

// TestRemoteCanceled checks that a canceled context stops the retries at once.
func TestRemoteCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ embedRequest, _ int) {
		calls.Add(1)
		cancel()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	})
	e := newTestRemote(t, Config{Kind: KindOllama, Model: "m", Dimensions: 4}, s)
	start := time.Now()
	if _, err := e.Embed(ctx, []string{"x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	if calls.Load() != 1 || time.Since(start) > 2*time.Second {
		t.Errorf("%d calls in %s after the cancel", calls.Load(), time.Since(start))
	}
}

func TestOpenAIBadIndexes(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"repeated":     `{"data":[{"index":0,"embedding":[1,2]},{"index":0,"embedding":[3,4]}]}`,
		"out of range": `{"data":[{"index":0,"embedding":[1,2]},{"index":2,"embedding":[3,4]}]}`,
		"missing":      `{"data":[{"embedding":[1,2]},{"index":1,"embedding":[3,4]}]}`,
		"no embedding": `{"data":[{"index":0},{"index":1,"embedding":[3,4]}]}`,
		"too few":      `{"data":[{"index":0,"embedding":[1,2]}]}`,
	} {
		s := newServer(t, func(w http.ResponseWriter, _ *http.Request, _ embedRequest, _ int) { _, _ = w.Write([]byte(body)) })
		e := newTestRemote(t, Config{Kind: KindOpenAI, Model: "m", Dimensions: 2}, s)
		if _, err := e.Embed(context.Background(), []string{"a", "b"}); !problem.HasCode(err, "embedder_failed") {
			t.Errorf("%s: error %v, want embedder_failed", name, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg   Config
		field string // "" means valid
	}{
		{Config{}, ""},
		{Config{Kind: "builtin", Model: "use-lite-512", Dimensions: 512}, ""},
		{Config{Kind: "builtin", Dimensions: 384}, "dimensions"},
		{Config{Kind: "builtin", Model: "minilm"}, "model"},
		{Config{Kind: "builtin", URL: "http://x"}, "url"},
		{Config{Kind: "word2vec"}, "kind"},
		{Config{Kind: "ollama", Model: "nomic-embed-text", Dimensions: 768}, ""},
		{Config{Kind: "ollama", Dimensions: 768}, "model"},
		{Config{Kind: "ollama", Model: "m"}, "dimensions"},
		{Config{Kind: "ollama", Model: "m", Dimensions: 1 << 20}, "dimensions"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, URL: "ftp://x"}, "url"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, URL: "http://user:pw@host"}, "url"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, URL: "http://host?x=1"}, "url"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, URL: "localhost:8080"}, "url"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, MaxBatch: 5000}, "max_batch"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, MaxRetries: 11}, "max_retries"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, Timeout: -time.Second}, "timeout"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, APIKey: "a\nb"}, "api_key"},
		{Config{Kind: "openai", Model: "m", Dimensions: 8, URL: "http://127.0.0.1:8000/v1", APIKey: testKey}, ""},
	} {
		err := c.cfg.Validate()
		if c.field == "" {
			if err != nil {
				t.Errorf("%v: %v", c.cfg, err)
			}
			continue
		}
		p, ok := problem.As(err)
		if !ok || p.Code != "invalid_embedder" || p.Status != http.StatusUnprocessableEntity ||
			len(p.Errors) != 1 || p.Errors[0].Location != "embedder."+c.field {
			t.Errorf("%v: got %v, want invalid_embedder on %s", c.cfg, err, c.field)
		}
		if _, err := New(c.cfg); err == nil {
			t.Errorf("%v: New accepted it", c.cfg)
		}
	}
}

// TestConfigSecrets checks that the API key never leaves in JSON or in the Config's text.
func TestConfigSecrets(t *testing.T) {
	t.Parallel()
	cfg := Config{Kind: KindOpenAI, Model: "m", Dimensions: 8, APIKey: testKey, Timeout: time.Second}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), testKey) || strings.Contains(string(b), "imeout") || strings.Contains(cfg.String(), testKey) ||
		strings.Contains(fmt.Sprintf("%v %+v", cfg, cfg), testKey) {
		t.Errorf("the key leaked: %s / %v", b, cfg)
	}
	var back Config
	if err := json.Unmarshal(b, &back); err != nil || back.Kind != cfg.Kind || back.Dimensions != 8 || back.Model != "m" {
		t.Errorf("round trip gave %+v, %v", back, err)
	}
}

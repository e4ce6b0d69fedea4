package embed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/stratadb/strata/problem"
)

// Retry pacing for remote embedders: the first retry waits about firstBackoff, each later
// one twice as long, up to maxBackoff; a Retry-After header is honoured up to maxBackoff.
const (
	firstBackoff = 250 * time.Millisecond
	maxBackoff   = 8 * time.Second
)

// remote is what the Ollama and OpenAI clients share: batching, the HTTP exchange with
// timeouts and bounded retries, and the checks on answers.
type remote struct {
	cfg      Config
	name     string // Name()
	server   string // names the server in errors, e.g. "ollama at http://127.0.0.1:11434"
	endpoint string
	client   *http.Client
	backoff  time.Duration // first retry delay; tests shorten it
	// request builds the JSON body for a batch; decode reads the vectors of an answer
	// for n texts, in order.
	request func(batch []string) any
	decode  func(body []byte, n int) ([][]float32, error)
}

func newRemote(cfg Config, kind, path string) *remote {
	base := strings.TrimRight(cfg.URL, "/")
	return &remote{
		cfg:      cfg,
		name:     cfg.Kind + ":" + cfg.Model,
		server:   kind + " at " + base,
		endpoint: base + path,
		client:   http.DefaultClient,
		backoff:  firstBackoff,
	}
}

// Name is "<kind>:<model>".
func (r *remote) Name() string { return r.name }

// Dim is the configured dimension, which every answer is checked against.
func (r *remote) Dim() int { return r.cfg.Dimensions }

// Embed sends texts in batches of at most MaxBatch and returns their vectors in order.
// Errors are problems: embedder_unavailable (503) when the server cannot be reached, times
// out or keeps answering 429 or 5xx; embedder_failed (502) for other error answers and
// malformed ones; embedder_dimension_mismatch (502) for vectors of the wrong dimension.
// A canceled ctx returns ctx's error.
func (r *remote) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, 0, len(texts))
	for start := 0; start < len(texts); start += r.cfg.MaxBatch {
		batch := texts[start:min(start+r.cfg.MaxBatch, len(texts))]
		vecs, err := r.post(ctx, batch)
		if err != nil {
			return nil, err
		}
		out = append(out, vecs...)
	}
	return out, nil
}

// post sends one batch, retrying transient failures.
func (r *remote) post(ctx context.Context, batch []string) ([][]float32, error) {
	body, err := json.Marshal(r.request(batch))
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		vecs, wait, err := r.attempt(ctx, body, len(batch))
		if err == nil || wait < 0 || attempt >= r.cfg.MaxRetries {
			return vecs, err
		}
		if wait == 0 {
			wait = r.backoff << attempt
			wait += time.Duration(rand.Int64N(int64(wait)/4 + 1)) //nolint:gosec // jitter, so clients spread out; not a secret
		}
		t := time.NewTimer(min(wait, maxBackoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// attempt makes one request. On failure, wait says whether to retry: negative means no,
// zero means after the usual backoff, positive after that long (the server's Retry-After).
func (r *remote) attempt(ctx context.Context, body []byte, n int) (vecs [][]float32, wait time.Duration, err error) {
	reqCtx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, r.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, -1, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if r.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.APIKey)
	}
	resp, err := r.client.Do(req)
	if err == nil {
		defer resp.Body.Close()
		var answer []byte
		if answer, err = r.read(resp.Body, n); err == nil {
			return r.answer(resp, answer, n)
		}
	}
	switch {
	case ctx.Err() != nil:
		return nil, -1, ctx.Err()
	case errors.Is(err, errTooLarge):
		return nil, -1, r.failed(http.StatusBadGateway, "embedder_failed", 0, "%v", err)
	case reqCtx.Err() != nil:
		return nil, 0, r.failed(http.StatusServiceUnavailable, "embedder_unavailable", 0, "no answer within %s", r.cfg.Timeout)
	}
	return nil, 0, r.failed(http.StatusServiceUnavailable, "embedder_unavailable", 0, "%s", r.redact(err.Error()))
}

var errTooLarge = errors.New("answer too large")

// read reads an answer body, refusing more than n vectors' worth of JSON can need.
func (r *remote) read(body io.Reader, n int) ([]byte, error) {
	limit := int64(1<<20) + int64(n)*int64(r.cfg.Dimensions)*32
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err == nil && int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes for %d texts", errTooLarge, limit, n)
	}
	return b, err
}

// answer turns a response into vectors or a problem (see attempt for wait).
func (r *remote) answer(resp *http.Response, body []byte, n int) ([][]float32, time.Duration, error) {
	status := resp.StatusCode
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		return nil, retryAfter(resp.Header.Get("Retry-After")), r.failed(http.StatusServiceUnavailable, "embedder_unavailable", status, "%s", r.excerpt(body))
	case status/100 != 2:
		detail := r.excerpt(body)
		if status == http.StatusUnauthorized || status == http.StatusForbidden {
			detail += " (check the API key)"
		}
		return nil, -1, r.failed(http.StatusBadGateway, "embedder_failed", status, "%s", detail)
	}
	vecs, err := r.decode(body, n)
	if err != nil {
		return nil, -1, r.failed(http.StatusBadGateway, "embedder_failed", status, "malformed answer: %s", r.redact(err.Error()))
	}
	if len(vecs) != n {
		return nil, -1, r.failed(http.StatusBadGateway, "embedder_failed", status, "%d vectors for %d texts", len(vecs), n)
	}
	for _, v := range vecs {
		if len(v) != r.cfg.Dimensions {
			return nil, -1, r.failed(http.StatusBadGateway, "embedder_dimension_mismatch", status,
				"model %q answered %d-dimensional vectors; the embedder is configured for %d", r.cfg.Model, len(v), r.cfg.Dimensions)
		}
	}
	return vecs, 0, nil
}

// failed builds a problem naming the server and, when there was one, its HTTP status.
func (r *remote) failed(status int, code string, upstream int, format string, args ...any) *problem.Error {
	what := r.server
	if upstream != 0 {
		what += fmt.Sprintf(" answered %d %s", upstream, http.StatusText(upstream))
	}
	p := problem.New(status, code, "embedder %s: %s: %s", r.name, what, fmt.Sprintf(format, args...))
	if upstream != 0 {
		p = p.WithExtension("upstream_status", upstream)
	}
	return p
}

// excerpt is the useful part of an error answer: the message of {"error": "…"} or
// {"error": {"message": "…"}} when the body is one, else its start; at most 300
// characters, printable, without the API key.
func (r *remote) excerpt(body []byte) string {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	msg := string(body)
	if json.Unmarshal(body, &e) == nil && len(e.Error) > 0 {
		var s string
		var obj struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(e.Error, &s) == nil && s != "" {
			msg = s
		} else if json.Unmarshal(e.Error, &obj) == nil && obj.Message != "" {
			msg = obj.Message
		}
	}
	msg = strings.Map(func(c rune) rune {
		if unicode.IsPrint(c) {
			return c
		}
		return ' '
	}, strings.ToValidUTF8(msg, "?"))
	if rs := []rune(strings.TrimSpace(msg)); len(rs) > 300 {
		msg = string(rs[:300]) + "…"
	} else {
		msg = string(rs)
	}
	if msg == "" {
		msg = "(empty body)"
	}
	return r.redact(msg)
}

// redact removes the API key from s, should a server or proxy echo it.
func (r *remote) redact(s string) string {
	if len(r.cfg.APIKey) < 4 {
		return s
	}
	return strings.ReplaceAll(s, r.cfg.APIKey, "[redacted]")
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); 0 when absent or bad.
func retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	if secs, err := strconv.Atoi(h); err == nil && secs >= 0 {
		return max(time.Duration(secs)*time.Second, time.Millisecond)
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), time.Millisecond)
	}
	return 0
}

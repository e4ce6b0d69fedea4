package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/problem"
)

// RequestIDHeader carries the request id in and out. A client may supply one (up to 64
// characters of [A-Za-z0-9._-]); otherwise the server makes one.
const RequestIDHeader = "X-Request-Id"

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyLogger
	keyBody
)

// RequestID returns the id of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

// logger returns the request's logger (with its request id), or a quiet one.
func logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(keyLogger).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// observe wraps every request: request id, panic recovery, metrics and the access log.
// Paths are logged without their query strings, which may carry tokens.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		r, id := withRequestID(w, r)
		log := s.log.With("request_id", id)
		ctx := context.WithValue(r.Context(), keyLogger, log)
		ctx = audit.WithRequest(ctx, audit.Request{IP: clientIP(r), UserAgent: r.UserAgent(), RequestID: id})
		r = r.WithContext(ctx)
		rec := &recorder{ResponseWriter: w}
		s.metrics.inFlight.Inc()
		defer func() {
			s.metrics.inFlight.Dec()
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler { //nolint:errorlint // sentinel compared as net/http does
					panic(v)
				}
				log.Error("handler panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if !rec.wrote {
					writeProblem(rec, r, problem.Internal(fmt.Errorf("panic: %v", v)))
				}
			}
			route := r.Pattern
			if route == "" || route == "/" {
				route = "unmatched"
			}
			status := rec.statusCode()
			elapsed := time.Since(start)
			s.metrics.observe(r.Method, route, status, elapsed)
			level := slog.LevelDebug
			switch {
			case status == http.StatusServiceUnavailable:
				level = slog.LevelWarn // the database is away; said once per request, not as a failure of ours
			case status >= 500:
				level = slog.LevelError
			}
			log.Log(ctx, level, "request", "method", r.Method, "path", r.URL.Path, "route", route,
				"status", status, "bytes", rec.bytes, "duration_ms", float64(elapsed.Microseconds())/1000)
		}()
		next.ServeHTTP(rec, r)
	})
}

// withRequestID takes the client's request id or makes one, and sets it on the response
// and in the request's context.
func withRequestID(w http.ResponseWriter, r *http.Request) (*http.Request, string) {
	id := r.Header.Get(RequestIDHeader)
	if !validRequestID(id) {
		id = rand.Text()
	}
	w.Header().Set(RequestIDHeader, id)
	return r.WithContext(context.WithValue(r.Context(), keyRequestID, id)), id
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// recorder notes the status and size of a response. It unwraps for http.ResponseController
// and passes Flush through, so streaming handlers work behind it.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		if !r.wrote {
			r.status, r.wrote = http.StatusOK, true
		}
		f.Flush()
	}
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := r.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("hijacking not supported")
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// SetWriteDeadline extends the write deadline (huma's event streams call it per event).
func (r *recorder) SetWriteDeadline(t time.Time) error {
	return http.NewResponseController(r.ResponseWriter).SetWriteDeadline(t)
}

func (r *recorder) statusCode() int {
	if !r.wrote {
		return http.StatusOK
	}
	return r.status
}

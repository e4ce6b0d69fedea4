package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
	"golang.org/x/time/rate"
)

// Security requirements of operations: signedIn needs credentials, optionalAuth accepts
// anonymous callers but verifies credentials when present.
var (
	signedIn     = []map[string][]string{{"bearer": {}}, {"basic": {}}}
	optionalAuth = []map[string][]string{{"bearer": {}}, {"basic": {}}, {}}
)

// challenge is sent with every 401: both schemes the API accepts.
var challenge = []string{`Bearer realm="strata"`, `Basic realm="strata", charset="UTF-8"`}

func securitySchemes(api huma.API) {
	c := api.OpenAPI().Components
	if c.SecuritySchemes == nil {
		c.SecuritySchemes = map[string]*huma.SecurityScheme{}
	}
	c.SecuritySchemes["bearer"] = &huma.SecurityScheme{Type: "http", Scheme: "bearer",
		Description: "An access token from POST /v1/auth/token, or an API key (sk_…)."}
	c.SecuritySchemes["basic"] = &huma.SecurityScheme{Type: "http", Scheme: "basic",
		Description: "Username and password; verified once, then served from a short-lived cache."}
}

// authn authenticates operations that declare a security requirement and puts the
// principal (and the audit actor) in the request context.
func (s *Server) authn(ctx huma.Context, next func(huma.Context)) {
	op := ctx.Operation()
	if op == nil || len(op.Security) == 0 || s.deps.Auth == nil {
		next(ctx)
		return
	}
	optional := slices.ContainsFunc(op.Security, func(m map[string][]string) bool { return len(m) == 0 })
	header := ctx.Header("Authorization")
	if header == "" && optional {
		next(ctx)
		return
	}
	r, _ := humago.Unwrap(ctx)
	p, err := s.deps.Auth.Authenticate(ctx.Context(), header, clientIP(r))
	if err != nil {
		pe, ok := problem.As(err)
		if !ok || pe.Status >= 500 {
			writeHumaProblem(ctx, toProblem(http.StatusInternalServerError, "", []error{err}))
			return
		}
		if pe.Status == http.StatusUnauthorized && pe.Code != "invalid_credentials" { // those are audited as failed sign-ins
			s.auditRejected(ctx.Context(), pe.Code, r)
		}
		writeHumaProblem(ctx, pe)
		return
	}
	next(huma.WithContext(ctx, auth.WithPrincipal(ctx.Context(), p)))
}

// writeHumaProblem answers from a huma middleware with p.
func writeHumaProblem(ctx huma.Context, p *problem.Error) {
	p = stamp(ctx.Context(), p)
	for k, vs := range p.GetHeaders() {
		for _, v := range vs {
			ctx.AppendHeader(k, v)
		}
	}
	challengeHuma(ctx, p)
	ctx.SetHeader("Content-Type", problem.ContentType)
	ctx.SetStatus(p.Status)
	b, _ := json.Marshal(p)
	_, _ = ctx.BodyWriter().Write(append(b, '\n'))
}

// challengeHuma adds the WWW-Authenticate challenges every 401 carries (RFC 9110 §11.6.1).
func challengeHuma(ctx huma.Context, p *problem.Error) {
	if p.Status == http.StatusUnauthorized {
		for _, c := range challenge {
			ctx.AppendHeader("WWW-Authenticate", c)
		}
	}
}

// auditRejected records a refused credential on the platform chain, at most a few per
// second per client address so a flood of bad requests cannot flood the log.
func (s *Server) auditRejected(ctx context.Context, code string, r *http.Request) {
	if s.deps.Audit == nil || !s.rejections.allow(clientIP(r)) {
		return
	}
	err := s.deps.Audit.Record(ctx, audit.Entry{Action: "auth.rejected", ResourceType: "request",
		Details: map[string]any{"code": code, "method": r.Method, "path": r.URL.Path}})
	if err != nil {
		logger(ctx).Warn("recording a rejected request", "err", err)
	}
}

// ipLimiter allows a burst then a steady rate of events per client address.
type ipLimiter struct {
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	every   rate.Limit
	burst   int
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{buckets: map[string]*rate.Limiter{}, every: rate.Limit(perSecond), burst: burst}
}

func (l *ipLimiter) allow(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) > 10000 {
		clear(l.buckets)
	}
	b, ok := l.buckets[ip]
	if !ok {
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[ip] = b
	}
	return b.AllowN(time.Now(), 1)
}

// clientIP is the address of the peer. (Behind a proxy it is the proxy's.)
func clientIP(r *http.Request) string {
	if r == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// principal returns the caller, which authn guarantees for signed-in operations.
func principal(ctx context.Context) *auth.Principal { return auth.PrincipalFrom(ctx) }

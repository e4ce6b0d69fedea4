package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/server"
	"github.com/stratadb/strata/internal/testdb"
)

// cheapAuth keeps password hashing fast and sign-in limits out of the way in tests.
var cheapAuth = auth.Config{Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1},
	SignInPerMinute: 100000, SignInPerMinutePerIP: 100000}

// platform is a whole Strata behind its HTTP handler, on a fresh database.
type platform struct {
	t      *testing.T
	s      *strata.Strata
	h      http.Handler
	root   string // the platform admin's bearer token
	nextIP atomic.Int64
}

func newPlatform(t *testing.T) *platform { return newPlatformWith(t, cheapAuth) }

func newPlatformWith(t *testing.T, authCfg auth.Config) *platform {
	t.Helper()
	ctx := context.Background()
	s, err := strata.Open(ctx, strata.Config{DatabaseURL: testdb.NewURL(t, audit.Schema, auth.Schema),
		AdminPassword: "root-password", Auth: authCfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	p := &platform{t: t, s: s}
	p.h = server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Version: "test", Auth: s.Auth(), Audit: s.Audit(),
		Feed: s.Feed(), Docs: s.Docs(), Graph: s.Graph(), Search: s.Search(), Series: s.Series(),
		Queue: s.Queue(), KV: s.KV(),
		Media: s.Media()})
	p.root = p.token("admin", "root-password")
	return p
}

// response is an answer to a request made through the handler.
type response struct {
	status    int
	body      string
	header    http.Header
	requestID string
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// do sends a request with the given Authorization value (empty: anonymous) from a client
// address of its own.
func (p *platform) do(method, path, authz, body string) response {
	p.t.Helper()
	return p.doHeaders(method, path, authz, body, nil)
}

// doHeaders is do with extra request headers.
func (p *platform) doHeaders(method, path, authz, body string, headers map[string]string) response {
	p.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:4000", p.nextIP.Add(1)>>16&255, p.nextIP.Load()>>8&255, p.nextIP.Load()&255)
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, req)
	return response{status: rec.Code, body: rec.Body.String(), header: rec.Header(), requestID: rec.Header().Get("X-Request-Id")}
}

// must sends a request and fails the test unless it answers want.
func (p *platform) must(want int, method, path, authz, body string) response {
	p.t.Helper()
	r := p.do(method, path, authz, body)
	if r.status != want {
		p.t.Fatalf("%s %s: %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

func bearer(tok string) string { return "Bearer " + tok }

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// token signs in and returns the access token.
func (p *platform) token(user, pass string) string {
	p.t.Helper()
	r := p.must(200, "POST", "/v1/auth/token", "", fmt.Sprintf(`{"username":%q,"password":%q}`, user, pass))
	var tok auth.Tokens
	r.json(p.t, &tok)
	return tok.AccessToken
}

// user creates a user (as the platform admin) and returns its id and bearer token.
func (p *platform) user(name string) (string, string) {
	p.t.Helper()
	r := p.must(201, "POST", "/v1/users", bearer(p.root), fmt.Sprintf(`{"username":%q,"password":%q}`, name, name+"-password"))
	var u auth.User
	r.json(p.t, &u)
	return u.ID, p.token(name, name+"-password")
}

func (p *platform) tenant(authz, name string) string {
	p.t.Helper()
	r := p.must(201, "POST", "/v1/tenants", authz, fmt.Sprintf(`{"name":%q}`, name))
	var t auth.Tenant
	r.json(p.t, &t)
	return t.ID
}

func (p *platform) member(authz, tenant, userID, role, extra string) {
	p.t.Helper()
	p.must(201, "POST", "/v1/t/"+tenant+"/members", authz, fmt.Sprintf(`{"user_id":%q,"role":%q%s}`, userID, role, extra))
}

// auditCount counts audit entries with the given request id, or all denials when id is "".
func (p *platform) auditCount(requestID string) int {
	p.t.Helper()
	var n int
	q := `SELECT count(*) FROM strata.audit_log WHERE action IN ('access.denied', 'auth.rejected')`
	args := []any{}
	if requestID != "" {
		q, args = `SELECT count(*) FROM strata.audit_log WHERE request_id = $1`, []any{requestID}
	}
	if err := p.s.Pool().QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		p.t.Fatal(err)
	}
	return n
}

// digest fingerprints every identity table (not the audit log, which denials append to,
// nor last-used times), to prove a denied request changed nothing.
func (p *platform) digest() string {
	p.t.Helper()
	var d string
	err := p.s.Pool().QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'u' || id || username || coalesce(email, '') || is_admin || disabled || cred_version || password_hash FROM strata.users
		UNION ALL SELECT 't' || id || name FROM strata.tenants
		UNION ALL SELECT 'm' || tenant_id || user_id || role || coalesce(starts_on::text, '') || coalesce(ends_on::text, '') FROM strata.memberships
		UNION ALL SELECT 'g' || id || resource || permission FROM strata.grants
		UNION ALL SELECT 'k' || id || name || role || coalesce(revoked_at::text, '') FROM strata.api_keys
		UNION ALL SELECT 's' || id || coalesce(revoked_at::text, '') FROM strata.sessions
		UNION ALL SELECT 'r' || encode(hash, 'hex') || coalesce(used_at::text, '') FROM strata.refresh_tokens
		UNION ALL SELECT 'sk' || kid || coalesce(retired_at::text, '') FROM strata.signing_keys) d(x)`).Scan(&d)
	if err != nil {
		p.t.Fatal(err)
	}
	return d
}

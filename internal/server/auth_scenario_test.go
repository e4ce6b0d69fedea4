package server_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/stratadb/strata/auth"
)

// The identities every endpoint is tried with.
const (
	anon     = "anonymous"
	viewer   = "viewer"
	member   = "member"
	admin    = "admin"
	owner    = "owner"
	outsider = "other tenant's owner"
	platAdm  = "platform admin"
	apiKey   = "API key (member)"
)

var identities = []string{anon, viewer, member, admin, owner, outsider, platAdm, apiKey}

// world is a tenant T with one user in each role, an outsider owning another tenant, the
// platform admin, and a member-role API key of T.
type world struct {
	*platform
	T       string
	authz   map[string]string
	ids     map[string]string // user ids by identity
	counter int
}

func newWorld(t *testing.T) *world { return worldOn(newPlatform(t)) }

// worldOn peoples a platform: a user per identity, tenant T with its members and an API
// key, and the outsider's tenant U.
func worldOn(p *platform) *world {
	t := p.t
	w := &world{platform: p, authz: map[string]string{anon: ""}, ids: map[string]string{}}
	w.authz[platAdm] = bearer(w.root)
	for _, who := range []string{owner, admin, member, viewer, outsider} {
		name := "w_" + strings.ReplaceAll(strings.ReplaceAll(who, " ", "_"), "'", "")
		id, tok := w.user(name)
		w.ids[who], w.authz[who] = id, bearer(tok)
	}
	w.T = w.tenant(w.authz[owner], "T")
	w.tenant(w.authz[outsider], "U")
	for _, who := range []string{admin, member, viewer} {
		w.member(w.authz[owner], w.T, w.ids[who], who, "")
	}
	r := w.must(201, "POST", "/v1/t/"+w.T+"/api-keys", w.authz[owner], `{"name":"robot","role":"member"}`)
	var k struct{ Key string }
	r.json(t, &k)
	w.authz[apiKey] = bearer(k.Key)
	return w
}

// fresh returns a name unique within the world.
func (w *world) fresh(prefix string) string {
	w.counter++
	return fmt.Sprintf("%s%d", prefix, w.counter)
}

// freshUser creates a user that is a member of T, for endpoints that consume one.
func (w *world) freshUser(inT bool) string {
	id, _ := w.user(w.fresh("u"))
	if inT {
		w.member(w.authz[owner], w.T, id, "member", "")
	}
	return id
}

// freshTenant creates a tenant with the same members as T (and an API key with a member
// role whose token replaces the world's for this attempt).
func (w *world) freshTenant() string {
	id := w.tenant(w.authz[owner], w.fresh("t"))
	for _, who := range []string{admin, member, viewer} {
		w.member(w.authz[owner], id, w.ids[who], who, "")
	}
	return id
}

type endpoint struct {
	name   string
	method string
	// request builds the path and body of one attempt, creating what it consumes.
	request func(w *world, who string) (path, body string)
	want    map[string]int
}

// checkEndpoints runs every endpoint as every identity and checks the status; that a
// denial (401, 403, 404) is a problem document, changes nothing digest sees and leaves
// exactly one denial in the audit log; and that a successful write leaves an audit row.
// Successful calls other than GETs must be audited, except those named "query: …" (reads
// that take their question as a POST body, such as search) and those named in unaudited
// (such as a queue worker's transitions, which the job's own record keeps).
func (w *world) checkEndpoints(t *testing.T, eps []endpoint, digest func(*testing.T, *world) string, opts ...checkOptions) {
	t.Helper()
	var o checkOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	for _, ep := range eps {
		for _, who := range identities {
			want := ep.want[who]
			path, body := ep.request(w, who)
			var headers map[string]string
			if h := o.headers[ep.name]; h != nil {
				headers = h(w)
			}
			denied := want == http.StatusUnauthorized || want == http.StatusForbidden || want == http.StatusNotFound
			before, denials := "", 0
			if denied {
				before, denials = digest(t, w), w.auditCount("")
			}
			r := w.doHeaders(ep.method, path, w.authz[who], body, headers)
			if r.status != want {
				t.Errorf("%s as %s: %s %s → %d, want %d: %s", ep.name, who, ep.method, path, r.status, want, r.body)
				continue
			}
			switch {
			case denied:
				if digest(t, w) != before {
					t.Errorf("%s as %s: denied (%d) but the data changed", ep.name, who, r.status)
				}
				if n := w.auditCount(""); n != denials+1 {
					t.Errorf("%s as %s: denied (%d) with %d audit rows, want exactly one", ep.name, who, r.status, n-denials)
				}
				if !strings.Contains(r.header.Get("Content-Type"), "problem+json") {
					t.Errorf("%s as %s: the denial (%d) is not a problem document", ep.name, who, r.status)
				}
			case ep.method != "GET" && !strings.HasPrefix(ep.name, "query:") && !slices.Contains(o.unaudited, ep.name):
				if w.auditCount(r.requestID) == 0 {
					t.Errorf("%s as %s: a successful %s left no audit row", ep.name, who, ep.method)
				}
			}
		}
	}
}

// checkOptions adjust checkEndpoints.
type checkOptions struct {
	// unaudited names the endpoints whose successes are not audited.
	unaudited []string
	// headers gives an endpoint's extra request headers, by endpoint name; it is called
	// after the endpoint's request, so that can leave them (a token, a content type).
	headers map[string]func(w *world) map[string]string
}

// statuses builds an expectation: def for everyone, then overrides.
func statuses(def int, overrides ...any) map[string]int {
	m := map[string]int{}
	for _, who := range identities {
		m[who] = def
	}
	for i := 0; i < len(overrides); i += 2 {
		for _, who := range strings.Split(overrides[i].(string), ",") {
			m[who] = overrides[i+1].(int)
		}
	}
	return m
}

// Common shapes: tenant administration (owners and admins of T, the platform admin) and
// platform administration.
func tenantAdmin(ok int) map[string]int {
	return statuses(403, anon, 401, outsider, 404, admin+","+owner+","+platAdm, ok)
}

func platformOnly(ok int) map[string]int { return statuses(403, anon, 401, platAdm, ok) }

func fixed(path, body string) func(*world, string) (string, string) {
	return func(*world, string) (string, string) { return path, body }
}

func endpoints() []endpoint {
	t := func(w *world, rest string) string { return "/v1/t/" + w.T + rest }
	return []endpoint{
		{"sign in", "POST", func(w *world, _ string) (string, string) {
			return "/v1/auth/token", `{"username":"w_member","password":"w_member-password"}`
		}, statuses(200)},
		{"refresh", "POST", func(w *world, _ string) (string, string) {
			r := w.must(200, "POST", "/v1/auth/token", "", `{"username":"w_viewer","password":"w_viewer-password"}`)
			var tok auth.Tokens
			r.json(w.t, &tok)
			return "/v1/auth/refresh", fmt.Sprintf(`{"refresh_token":%q}`, tok.RefreshToken)
		}, statuses(200)},
		{"logout", "POST", func(w *world, _ string) (string, string) {
			r := w.must(200, "POST", "/v1/auth/token", "", `{"username":"w_viewer","password":"w_viewer-password"}`)
			var tok auth.Tokens
			r.json(w.t, &tok)
			return "/v1/auth/logout", fmt.Sprintf(`{"refresh_token":%q}`, tok.RefreshToken)
		}, statuses(204)},
		{"ping", "GET", fixed("/v1/ping", ""), statuses(200)},
		{"me", "GET", fixed("/v1/me", ""), statuses(200, anon, 401)},
		{"user create", "POST", func(w *world, _ string) (string, string) {
			return "/v1/users", fmt.Sprintf(`{"username":%q,"password":"long-password"}`, w.fresh("new"))
		}, platformOnly(201)},
		{"user list", "GET", fixed("/v1/users", ""), platformOnly(200)},
		{"user get", "GET", func(w *world, _ string) (string, string) { return "/v1/users/" + w.freshUser(false), "" }, platformOnly(200)},
		{"user update", "PATCH", func(w *world, _ string) (string, string) {
			return "/v1/users/" + w.freshUser(false), `{"email":"x@example.com"}`
		}, platformOnly(200)},
		{"user delete", "DELETE", func(w *world, _ string) (string, string) { return "/v1/users/" + w.freshUser(false), "" }, platformOnly(204)},
		{"user password", "PUT", func(w *world, _ string) (string, string) {
			return "/v1/users/" + w.freshUser(false) + "/password", `{"password":"brand-new-password"}`
		}, platformOnly(204)},
		{"tenant create", "POST", fixed("/v1/tenants", `{"name":"new tenant"}`), statuses(201, anon, 401, apiKey, 403)},
		{"tenant list", "GET", fixed("/v1/tenants", ""), statuses(200, anon, 401)},
		{"tenant get", "GET", func(w *world, _ string) (string, string) { return t(w, ""), "" }, statuses(200, anon, 401, outsider, 404)},
		{"tenant rename", "PATCH", func(w *world, _ string) (string, string) { return t(w, ""), `{"name":"T"}` }, tenantAdmin(200)},
		{"tenant delete", "DELETE", func(w *world, who string) (string, string) {
			id := w.freshTenant()
			if who == apiKey { // the world's key belongs to T; this attempt's key to the new tenant
				r := w.must(201, "POST", "/v1/t/"+id+"/api-keys", w.authz[owner], `{"name":"k","role":"member"}`)
				var k struct{ Key string }
				r.json(w.t, &k)
				w.authz[apiKey+" (attempt)"] = bearer(k.Key)
			}
			return "/v1/t/" + id, ""
		}, statuses(403, anon, 401, outsider, 404, owner+","+platAdm, 204)},
		{"member list", "GET", func(w *world, _ string) (string, string) { return t(w, "/members"), "" }, statuses(200, anon, 401, outsider, 404)},
		{"member add", "POST", func(w *world, _ string) (string, string) {
			return t(w, "/members"), fmt.Sprintf(`{"user_id":%q,"role":"member"}`, w.freshUser(false))
		}, tenantAdmin(201)},
		{"member put", "PUT", func(w *world, _ string) (string, string) {
			return t(w, "/members/"+w.freshUser(true)), `{"role":"viewer","ends_on":"2999-12-31"}`
		}, tenantAdmin(200)},
		{"member remove", "DELETE", func(w *world, _ string) (string, string) { return t(w, "/members/"+w.freshUser(true)), "" }, tenantAdmin(204)},
		{"grant create", "POST", func(w *world, _ string) (string, string) {
			return t(w, "/grants"), fmt.Sprintf(`{"user_id":%q,"resource":%q,"permission":"write"}`, w.ids[member], "collection:"+w.fresh("c"))
		}, tenantAdmin(201)},
		{"grant list", "GET", func(w *world, _ string) (string, string) { return t(w, "/grants"), "" }, tenantAdmin(200)},
		{"grant revoke", "DELETE", func(w *world, _ string) (string, string) {
			r := w.must(201, "POST", t(w, "/grants"), w.authz[owner],
				fmt.Sprintf(`{"user_id":%q,"resource":%q,"permission":"read"}`, w.ids[member], "collection:"+w.fresh("c")))
			var g auth.Grant
			r.json(w.t, &g)
			return t(w, "/grants/"+g.ID), ""
		}, tenantAdmin(204)},
		{"grant revoke matching", "DELETE", func(w *world, _ string) (string, string) {
			res := "collection:" + w.fresh("c")
			w.must(201, "POST", t(w, "/grants"), w.authz[owner], fmt.Sprintf(`{"user_id":%q,"resource":%q,"permission":"read"}`, w.ids[member], res))
			return t(w, fmt.Sprintf("/grants?user_id=%s&resource=%s&permission=read", w.ids[member], res)), ""
		}, tenantAdmin(204)},
		{"grant check (someone else)", "GET", func(w *world, _ string) (string, string) {
			return t(w, fmt.Sprintf("/grants/check?user=%s&resource=collection:x&permission=write", w.ids[admin])), ""
		}, tenantAdmin(200)},
		{"api key create", "POST", func(w *world, _ string) (string, string) { return t(w, "/api-keys"), `{"name":"k","role":"viewer"}` }, tenantAdmin(201)},
		{"api key list", "GET", func(w *world, _ string) (string, string) { return t(w, "/api-keys"), "" }, tenantAdmin(200)},
		{"api key revoke", "DELETE", func(w *world, _ string) (string, string) {
			r := w.must(201, "POST", t(w, "/api-keys"), w.authz[owner], `{"name":"doomed","role":"viewer"}`)
			var k struct {
				APIKey auth.APIKey `json:"api_key"`
			}
			r.json(w.t, &k)
			return t(w, "/api-keys/"+k.APIKey.ID), ""
		}, tenantAdmin(204)},
		{"audit list", "GET", func(w *world, _ string) (string, string) { return t(w, "/audit"), "" }, tenantAdmin(200)},
		{"audit verify", "GET", func(w *world, _ string) (string, string) { return t(w, "/audit/verify"), "" }, tenantAdmin(200)},
		{"platform audit list", "GET", fixed("/v1/audit", ""), platformOnly(200)},
		{"platform audit verify", "GET", fixed("/v1/audit/verify", ""), platformOnly(200)},
	}
}

// Every endpoint × every identity: the status code; a denied request changes nothing and
// leaves an audit row; an allowed mutating request leaves an audit row with its request id.
func TestEndpointsByIdentity(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	for _, ep := range endpoints() {
		for _, who := range identities {
			want := ep.want[who]
			path, body := ep.request(w, who)
			authz := w.authz[who]
			if a, ok := w.authz[who+" (attempt)"]; ok {
				authz = a
				delete(w.authz, who+" (attempt)")
			}
			denied := want == http.StatusUnauthorized || want == http.StatusForbidden || want == http.StatusNotFound
			before, denials := "", 0
			if denied {
				before, denials = w.digest(), w.auditCount("")
			}
			r := w.do(ep.method, path, authz, body)
			if r.status != want {
				t.Errorf("%s as %s: %s %s → %d, want %d: %s", ep.name, who, ep.method, path, r.status, want, r.body)
				continue
			}
			switch {
			case denied:
				if w.digest() != before {
					t.Errorf("%s as %s: denied (%d) but something changed", ep.name, who, r.status)
				}
				if w.auditCount("") != denials+1 {
					t.Errorf("%s as %s: denied (%d) without exactly one audit row", ep.name, who, r.status)
				}
				if !strings.Contains(r.header.Get("Content-Type"), "problem+json") {
					t.Errorf("%s as %s: denial is not a problem document", ep.name, who)
				}
				if want == 401 && len(r.header.Values("WWW-Authenticate")) == 0 {
					t.Errorf("%s as %s: 401 without WWW-Authenticate", ep.name, who)
				}
			case ep.method != "GET" && ep.name != "sign in" && ep.name != "refresh":
				if w.auditCount(r.requestID) == 0 {
					t.Errorf("%s as %s: a successful %s left no audit row", ep.name, who, ep.method)
				}
			}
		}
	}
}

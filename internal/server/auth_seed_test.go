package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/auth"
)

// Seed 002 end to end over HTTP: an admin creates users and two houses; owners, using HTTP
// Basic as the seed's API does, see only their houses and members; a user in both houses
// lists both by name; a tenancy whose end date has passed gives no access; 401 vs 403.
func TestSeed002Houses(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	root := bearer(p.root)
	users := map[string]string{}
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		id, _ := p.user(name)
		users[name] = id
	}
	basic := func(name string) string { return basicAuth(name, name+"-password") }
	elm := p.tenant(root, "123 Elm Street")
	cedar := p.tenant(root, "222 Cedar Avenue")
	yesterday := time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	p.member(root, elm, users["alice"], "owner", `,"starts_on":"2025-01-01"`)
	p.member(root, cedar, users["bob"], "owner", `,"starts_on":"2025-01-01"`)
	p.member(root, elm, users["carol"], "member", "")
	p.member(root, cedar, users["carol"], "viewer", "")
	p.member(root, elm, users["dave"], "member", fmt.Sprintf(`,"starts_on":"2024-01-01","ends_on":%q`, yesterday))
	// The admin hands the houses over and leaves them.
	adminID := strings.Split(p.must(200, "GET", "/v1/me", root, "").body, `"id":"`)[1][:36]
	p.must(204, "DELETE", "/v1/t/"+elm+"/members/"+adminID, root, "")
	p.must(204, "DELETE", "/v1/t/"+cedar+"/members/"+adminID, root, "")

	list := func(authz string) map[string]auth.Role {
		var out struct{ Items []auth.Tenant }
		p.must(200, "GET", "/v1/tenants", authz, "").json(t, &out)
		m := map[string]auth.Role{}
		for _, ten := range out.Items {
			m[ten.Name] = ten.Role
		}
		return m
	}
	if got := list(basic("alice")); len(got) != 1 || got["123 Elm Street"] != auth.RoleOwner {
		t.Errorf("alice sees %v, want only Elm Street as owner", got)
	}
	if got := list(basic("bob")); len(got) != 1 || got["222 Cedar Avenue"] != auth.RoleOwner {
		t.Errorf("bob sees %v, want only Cedar Avenue as owner", got)
	}
	if got := list(basic("carol")); len(got) != 2 || got["123 Elm Street"] != auth.RoleMember || got["222 Cedar Avenue"] != auth.RoleViewer {
		t.Errorf("carol sees %v, want both houses by name", got)
	}
	if got := list(basic("dave")); len(got) != 0 {
		t.Errorf("dave, whose tenancy ended, sees %v", got)
	}
	if got := list(root); len(got) != 2 {
		t.Errorf("the platform admin sees %d houses, want all 2", len(got))
	}

	// Owners see their houses' members, and nothing of the other house.
	var members struct{ Items []auth.Membership }
	p.must(200, "GET", "/v1/t/"+elm+"/members", basic("alice"), "").json(t, &members)
	names := []string{}
	for _, m := range members.Items {
		names = append(names, m.Username)
	}
	if strings.Join(names, ",") != "alice,carol,dave" {
		t.Errorf("Elm Street members = %v", names)
	}
	p.must(404, "GET", "/v1/t/"+cedar+"/members", basic("alice"), "")
	p.must(404, "GET", "/v1/t/"+elm, basic("dave"), "")

	// 401 without credentials or with wrong ones; 403 for a known user without the right.
	r := p.must(401, "GET", "/v1/tenants", "", "")
	if len(r.header.Values("WWW-Authenticate")) != 2 {
		t.Errorf("401 challenges: %v", r.header.Values("WWW-Authenticate"))
	}
	p.must(401, "GET", "/v1/tenants", basicAuth("alice", "wrong-password"), "")
	p.must(403, "POST", "/v1/users", basic("bob"), `{"username":"eve","password":"eve-password"}`)
	p.must(403, "DELETE", "/v1/t/"+elm, basic("carol"), "")
	// An owner manages their house.
	p.must(200, "PATCH", "/v1/t/"+elm, basic("alice"), `{"name":"123 Elm Street, Suite 100"}`)
}

func TestSelfServiceAndSessions(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	id, tok := p.user("ada")
	p.must(200, "GET", "/v1/users/"+id, bearer(tok), "")
	p.must(403, "POST", "/v1/me/password", bearer(tok), `{"current_password":"wrong-one","new_password":"the-new-password"}`)
	p.must(204, "POST", "/v1/me/password", bearer(tok), `{"current_password":"ada-password","new_password":"the-new-password"}`)
	r := p.must(401, "GET", "/v1/me", bearer(tok), "")
	if !strings.Contains(r.body, "token_revoked") {
		t.Errorf("old token after a password change: %s", r.body)
	}
	fresh := p.token("ada", "the-new-password")
	p.must(200, "GET", "/v1/me", bearer(fresh), "")
	p.must(204, "POST", "/v1/auth/logout", bearer(fresh), "")
	p.must(401, "GET", "/v1/me", bearer(fresh), "")
	p.must(400, "POST", "/v1/auth/logout", "", "")
	// Basic works on every endpoint.
	p.must(200, "GET", "/v1/me", basicAuth("ada", "the-new-password"), "")
	p.must(201, "POST", "/v1/tenants", basicAuth("ada", "the-new-password"), `{"name":"by basic"}`)
}

func TestSignInRateLimitedOverHTTP(t *testing.T) {
	t.Parallel()
	cfg := cheapAuth
	cfg.SignInPerMinute = 3
	p := newPlatformWith(t, cfg)
	p.user("ada") // signs in once: one attempt of three
	for range 2 {
		p.must(401, "POST", "/v1/auth/token", "", `{"username":"ada","password":"wrong-password"}`)
	}
	r := p.must(429, "POST", "/v1/auth/token", "", `{"username":"ada","password":"ada-password"}`)
	if r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "too_many_attempts") {
		t.Fatalf("429: headers %v body %s", r.header, r.body)
	}
	// Basic credentials count as sign-in attempts too.
	p.must(429, "GET", "/v1/me", basicAuth("ada", "ada-password"), "")
}

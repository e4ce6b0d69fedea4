// Package testworld gives a module's tests a running platform core on a fresh database:
// auth, audit and the change feed started, one tenant with a user in each role, another
// tenant whose owner is an outsider, a platform admin, and a member-role API key — each as
// a context carrying its principal, ready for tenant-wall tests.
package testworld

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/problem"
)

// Roles of the world's identities.
const (
	Owner    = "owner"
	Admin    = "admin"
	Member   = "member"
	Viewer   = "viewer"
	Outsider = "outsider" // owner of Other, not in Tenant
	Platform = "platform" // platform admin, in no tenant
	APIKey   = "api_key"  // a member-role key of Tenant
)

// World is the platform core and its identities.
type World struct {
	Pool     *pgxpool.Pool
	Listener *db.Listener
	Auth     *auth.Service
	Audit    *audit.Log
	Feed     *feed.Feed
	// Tenant has an owner, an admin, a member, a viewer and an API key; Other is owned by
	// the outsider.
	Tenant, Other string
	// UserIDs by role (not for APIKey).
	UserIDs map[string]string
	ctx     map[string]context.Context
}

// New builds a world on a fresh database holding the core schema and mods.
func New(t testing.TB, mods ...*migrate.Module) *World {
	t.Helper()
	pool := testdb.New(t, append([]*migrate.Module{feed.Schema}, mods...)...)
	w := &World{Pool: pool, UserIDs: map[string]string{}, ctx: map[string]context.Context{}}
	w.Listener = db.NewListener(pool, nil)
	w.Audit = audit.New(pool, nil)
	w.Auth = auth.New(pool, w.Listener, w.Audit, auth.Config{Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}})
	w.Feed = feed.New(pool, w.Listener, nil, 0)
	w.Listener.Start()
	bg, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Feed.Run(bg); close(done) }()
	t.Cleanup(func() { stop(); <-done; w.Listener.Close(); w.Auth.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !w.Listener.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("listener never connected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx := context.Background()
	if err := w.Auth.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{Owner, Admin, Member, Viewer, Outsider, Platform} {
		u, err := w.Auth.UserCreate(ctx, auth.UserInput{Username: "tw_" + role, Password: "tw-" + role + "-password", IsAdmin: role == Platform})
		if err != nil {
			t.Fatal(err)
		}
		w.UserIDs[role] = u.ID
		w.ctx[role] = auth.WithPrincipal(ctx, &auth.Principal{UserID: u.ID, Username: u.Username, PlatformAdmin: u.IsAdmin, Method: auth.MethodBearer})
	}
	ten, err := w.Auth.TenantCreate(w.ctx[Owner], "world")
	if err != nil {
		t.Fatal(err)
	}
	other, err := w.Auth.TenantCreate(w.ctx[Outsider], "elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	w.Tenant, w.Other = ten.ID, other.ID
	for _, role := range []string{Admin, Member, Viewer} {
		if _, err := w.Auth.MemberPut(w.ctx[Owner], w.Tenant, w.UserIDs[role], auth.MembershipInput{Role: auth.Role(role)}); err != nil {
			t.Fatal(err)
		}
	}
	_, secret, err := w.Auth.APIKeyCreate(w.ctx[Owner], w.Tenant, auth.APIKeyInput{Name: "world key", Role: auth.RoleMember})
	if err != nil {
		t.Fatal(err)
	}
	p, err := w.Auth.Authenticate(ctx, "Bearer "+secret, "")
	if err != nil {
		t.Fatal(err)
	}
	w.ctx[APIKey] = auth.WithPrincipal(ctx, p)
	return w
}

// As returns a context acting as the identity with that role; "" is anonymous.
func (w *World) As(role string) context.Context {
	if role == "" {
		return context.Background()
	}
	return w.ctx[role]
}

// Roles lists every identity, anonymous ("") included, for tenant-wall tables.
func Roles() []string {
	return []string{"", Owner, Admin, Member, Viewer, Outsider, Platform, APIKey}
}

// WantProblem fails the test unless err is a problem with this status and code, and
// returns it.
func WantProblem(t testing.TB, err error, status int, code string) *problem.Error {
	t.Helper()
	p, ok := problem.As(err)
	if !ok || p.Status != status || p.Code != code {
		t.Fatalf("err = %v, want %d %s", err, status, code)
	}
	return p
}

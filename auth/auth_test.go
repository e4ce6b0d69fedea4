package auth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// cheap keeps argon2 fast in tests; production defaults are 64 MiB.
var cheap = auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}

type fixture struct {
	t     *testing.T
	pool  *pgxpool.Pool
	svc   *auth.Service
	audit *audit.Log
	clock *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newService(t testing.TB, pool *pgxpool.Pool, c *clock, cfg auth.Config) *auth.Service {
	t.Helper()
	l := db.NewListener(pool, nil)
	l.Start()
	t.Cleanup(l.Close)
	cfg.Argon2 = cheap
	if c != nil {
		cfg.Now = c.now
	}
	s := auth.New(pool, l, audit.New(pool, nil), cfg)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	// Listening on the service's channels, not merely connected: a revocation sent
	// before that would be missed by this node's caches.
	deadline := time.Now().Add(10 * time.Second)
	for !l.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("listener never listened")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

func setupB(b *testing.B) *fixture {
	b.Helper()
	pool := testdb.New(b, auth.Schema)
	f := &fixture{pool: pool, audit: audit.New(pool, nil)}
	f.svc = newService(b, pool, nil, auth.Config{SignInPerMinute: 1000, SignInPerMinutePerIP: 1000})
	if _, err := f.svc.UserCreate(context.Background(), auth.UserInput{Username: "ada", Password: "ada-password"}); err != nil {
		b.Fatal(err)
	}
	return f
}

func setup(t *testing.T) *fixture {
	t.Helper()
	pool := testdb.New(t, auth.Schema)
	c := &clock{t: time.Now()}
	f := &fixture{t: t, pool: pool, clock: c, audit: audit.New(pool, nil)}
	f.svc = newService(t, pool, c, auth.Config{SignInPerMinute: 1000, SignInPerMinutePerIP: 1000})
	return f
}

// user creates a user and returns a context signed in as them (through a real token).
func (f *fixture) user(name string, admin bool) (auth.User, context.Context) {
	f.t.Helper()
	ctx := context.Background()
	u, err := f.svc.UserCreate(ctx, auth.UserInput{Username: name, Password: name + "-password", IsAdmin: admin})
	if err != nil {
		f.t.Fatal(err)
	}
	return u, f.signIn(name, name+"-password")
}

func (f *fixture) signIn(name, password string) context.Context {
	f.t.Helper()
	tok, err := f.svc.SignIn(context.Background(), name, password, "192.0.2.1")
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := f.svc.Authenticate(context.Background(), "Bearer "+tok.AccessToken, "192.0.2.1")
	if err != nil {
		f.t.Fatal(err)
	}
	return auth.WithPrincipal(context.Background(), p)
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	p, ok := problem.As(err)
	if !ok || p.Status != status || (code != "" && p.Code != code) {
		t.Fatalf("err = %v, want %d %s", err, status, code)
	}
}

func TestUsernamesAreCaseInsensitiveAndPasswordsChecked(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	f.user("Ada", false)
	_, err := f.svc.UserCreate(ctx, auth.UserInput{Username: "ada", Password: "another-password"})
	wantCode(t, err, 409, "username_taken")
	_, err = f.svc.UserCreate(ctx, auth.UserInput{Username: "bob", Password: "short"})
	wantCode(t, err, 422, "weak_password")
	_, err = f.svc.UserCreate(ctx, auth.UserInput{Username: "carol carol", Password: "long-enough-pw"})
	wantCode(t, err, 422, "invalid_username")
	if _, err := f.svc.SignIn(ctx, "ADA", "Ada-password", ""); err != nil {
		t.Fatalf("sign in with another case: %v", err)
	}
}

func TestSignInFailuresLookAlike(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.user("ada", false)
	ctx := context.Background()
	_, errWrong := f.svc.SignIn(ctx, "ada", "wrong-password", "")
	_, errUnknown := f.svc.SignIn(ctx, "nobody", "wrong-password", "")
	pw, _ := problem.As(errWrong)
	pu, _ := problem.As(errUnknown)
	if pw == nil || pu == nil || pw.Error() != pu.Error() || pw.Status != 401 {
		t.Fatalf("wrong password → %v; unknown user → %v; want the same 401", errWrong, errUnknown)
	}
	// Both cost one argon2 verification.
	before := f.svc.PasswordVerifications()
	_, _ = f.svc.SignIn(ctx, "nobody-else", "x-password", "")
	if f.svc.PasswordVerifications() != before+1 {
		t.Error("an unknown user did not cost a password verification")
	}
	rows, _, _ := f.audit.List(ctx, "", audit.Filter{Action: "auth.signin_failed"})
	if len(rows) != 3 {
		t.Errorf("%d failed sign-ins audited, want 3", len(rows))
	}
}

func TestTokensRefreshRotationAndReuse(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.user("ada", false)
	ctx := context.Background()
	t1, err := f.svc.SignIn(ctx, "ada", "ada-password", "")
	if err != nil {
		t.Fatal(err)
	}
	t2, err := f.svc.Refresh(ctx, t1.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if t2.RefreshToken == t1.RefreshToken || t2.SessionID != t1.SessionID {
		t.Fatal("refresh did not rotate within the session")
	}
	if _, err := f.svc.Authenticate(ctx, "Bearer "+t2.AccessToken, ""); err != nil {
		t.Fatalf("new access token refused: %v", err)
	}
	// Replaying the spent token ends the session: the newer tokens die with it.
	_, err = f.svc.Refresh(ctx, t1.RefreshToken)
	wantCode(t, err, 401, "refresh_token_reused")
	_, err = f.svc.Refresh(ctx, t2.RefreshToken)
	wantCode(t, err, 401, "refresh_token_invalid")
	_, err = f.svc.Authenticate(ctx, "Bearer "+t2.AccessToken, "")
	wantCode(t, err, 401, "token_revoked")
	rows, _, _ := f.audit.List(ctx, "", audit.Filter{Action: "auth.refresh_reuse"})
	if len(rows) != 1 {
		t.Errorf("refresh reuse audited %d times, want 1", len(rows))
	}
	_, err = f.svc.Refresh(ctx, "srt_forged")
	wantCode(t, err, 401, "refresh_token_invalid")
}

func TestSignOutEndsAccessAtOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.user("ada", false)
	ctx := context.Background()
	tok, _ := f.svc.SignIn(ctx, "ada", "ada-password", "")
	if _, err := f.svc.Authenticate(ctx, "Bearer "+tok.AccessToken, ""); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SignOut(ctx, tok.SessionID); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Authenticate(ctx, "Bearer "+tok.AccessToken, "")
	wantCode(t, err, 401, "token_revoked")
	_, err = f.svc.Refresh(ctx, tok.RefreshToken)
	wantCode(t, err, 401, "refresh_token_invalid")
}

func TestExpiredAndForgedTokens(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.user("ada", false)
	ctx := context.Background()
	tok, _ := f.svc.SignIn(ctx, "ada", "ada-password", "")
	parts := strings.Split(tok.AccessToken, ".")

	// Signed with another key, claiming the same kid.
	var claims jwt.MapClaims
	_, _, _ = jwt.NewParser().ParseUnverified(tok.AccessToken, &claims)
	forged := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	forged.Header["kid"] = headerKID(t, tok.AccessToken)
	forgedStr, _ := forged.SignedString([]byte("not the key"))
	// alg=none.
	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
	noneStr, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	// Payload swapped (admin claims in someone's token).
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"strata","sub":"00000000-0000-0000-0000-000000000001","exp":9999999999,"sid":"x","ver":1}`)) + "." + parts[2]
	for name, token := range map[string]string{"forged": forgedStr, "alg none": noneStr, "tampered": tampered, "garbage": "abc.def.ghi"} {
		_, err := f.svc.Authenticate(ctx, "Bearer "+token, "")
		wantCode(t, err, 401, "token_invalid")
		_ = name
	}
	f.clock.advance(16 * time.Minute)
	_, err := f.svc.Authenticate(ctx, "Bearer "+tok.AccessToken, "")
	wantCode(t, err, 401, "token_expired")
}

func headerKID(t *testing.T, token string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

func TestSigningKeyRotationKeepsIssuedTokens(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.user("ada", false)
	ctx := context.Background()
	old, _ := f.svc.SignIn(ctx, "ada", "ada-password", "")
	kid, err := f.svc.SigningKeyRotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := f.svc.SignIn(ctx, "ada", "ada-password", "")
	if headerKID(t, fresh.AccessToken) != kid || headerKID(t, old.AccessToken) == kid {
		t.Fatal("new tokens are not signed with the new key")
	}
	for _, tok := range []string{old.AccessToken, fresh.AccessToken} {
		if _, err := f.svc.Authenticate(ctx, "Bearer "+tok, ""); err != nil {
			t.Fatalf("token refused after rotation: %v", err)
		}
	}
}

func TestBasicIsCachedAndPasswordChangeIsImmediate(t *testing.T) {
	t.Parallel()
	f := setup(t)
	u, _ := f.user("ada", false)
	ctx := context.Background()
	before := f.svc.PasswordVerifications()
	for range 5 {
		p, err := f.svc.Authenticate(ctx, basic("ada", "ada-password"), "")
		if err != nil || p.UserID != u.ID || p.Method != auth.MethodBasic {
			t.Fatalf("basic: %v %+v", err, p)
		}
	}
	if n := f.svc.PasswordVerifications() - before; n != 1 {
		t.Fatalf("5 Basic requests cost %d argon2 verifications, want 1", n)
	}
	tok, _ := f.svc.SignIn(ctx, "ada", "ada-password", "")
	if err := f.svc.PasswordSet(ctx, u.ID, "a-new-password"); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Authenticate(ctx, basic("ada", "ada-password"), "")
	wantCode(t, err, 401, "invalid_credentials")
	_, err = f.svc.Authenticate(ctx, "Bearer "+tok.AccessToken, "")
	wantCode(t, err, 401, "token_revoked")
	if _, err := f.svc.Authenticate(ctx, basic("ada", "a-new-password"), ""); err != nil {
		t.Fatalf("new password refused: %v", err)
	}
}

func TestDisableIsImmediate(t *testing.T) {
	t.Parallel()
	f := setup(t)
	u, _ := f.user("ada", false)
	f.user("root", true)
	ctx := context.Background()
	tok, _ := f.svc.SignIn(ctx, "ada", "ada-password", "")
	if _, err := f.svc.Authenticate(ctx, basic("ada", "ada-password"), ""); err != nil {
		t.Fatal(err)
	}
	yes := true
	if _, err := f.svc.UserUpdate(ctx, u.ID, auth.UserUpdate{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Bearer " + tok.AccessToken, basic("ada", "ada-password")} {
		if _, err := f.svc.Authenticate(ctx, h, ""); err == nil {
			t.Fatalf("%s still works for a disabled user", strings.Fields(h)[0])
		}
	}
	_, err := f.svc.SignIn(ctx, "ada", "ada-password", "")
	wantCode(t, err, 401, "invalid_credentials")
}

// Another node learns of a revocation through NOTIFY, not by a cache expiring.
func TestRevocationReachesOtherNodes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	other := newService(t, f.pool, f.clock, auth.Config{})
	u, _ := f.user("ada", false)
	ctx := context.Background()
	tok, _ := f.svc.SignIn(ctx, "ada", "ada-password", "")
	if _, err := other.Authenticate(ctx, "Bearer "+tok.AccessToken, ""); err != nil { // now cached on the other node
		t.Fatal(err)
	}
	if err := f.svc.PasswordSet(ctx, u.ID, "changed-password"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := other.Authenticate(ctx, "Bearer "+tok.AccessToken, "")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other node still accepts the token 5s after the password change")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSignInRateLimit(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t, auth.Schema)
	svc := newService(t, pool, nil, auth.Config{SignInPerMinute: 3, SignInPerMinutePerIP: 100})
	ctx := context.Background()
	if _, err := svc.UserCreate(ctx, auth.UserInput{Username: "ada", Password: "ada-password"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := svc.SignIn(ctx, "ada", "wrong-password", "192.0.2.9")
		wantCode(t, err, 401, "invalid_credentials")
	}
	_, err := svc.SignIn(ctx, "ADA", "ada-password", "192.0.2.10") // even the right password, from elsewhere
	wantCode(t, err, 429, "too_many_attempts")
	if p, _ := problem.As(err); p.GetHeaders().Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Another username is not limited by ada's bucket.
	_, err = svc.SignIn(ctx, "bob", "whatever-pw", "192.0.2.9")
	wantCode(t, err, 401, "invalid_credentials")
}

func TestFirstAdmin(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	created, pw, err := f.svc.EnsureAdmin(ctx, "")
	if err != nil || !created || len(pw) < 20 {
		t.Fatalf("EnsureAdmin = %v %q %v", created, pw, err)
	}
	p, err := f.svc.Authenticate(ctx, basic("admin", pw), "")
	if err != nil || !p.PlatformAdmin {
		t.Fatalf("first admin: %v %+v", err, p)
	}
	created, _, err = f.svc.EnsureAdmin(ctx, "")
	if err != nil || created {
		t.Fatalf("second EnsureAdmin created again: %v %v", created, err)
	}
	// The last enabled platform admin can be neither demoted, disabled nor deleted.
	no := false
	_, err = f.svc.UserUpdate(ctx, p.UserID, auth.UserUpdate{IsAdmin: &no})
	wantCode(t, err, 409, "last_admin")
	err = f.svc.UserDelete(ctx, p.UserID)
	wantCode(t, err, 409, "last_admin")
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, owner := f.user("owner", false)
	ten, err := f.svc.TenantCreate(owner, "acme")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := f.svc.TenantCreate(owner, "other")
	k, secret, err := f.svc.APIKeyCreate(owner, ten.ID, auth.APIKeyInput{Name: "ci", Role: auth.RoleViewer,
		Grants: []auth.GrantSpec{{Resource: "collection:builds", Permission: "write"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "sk_"+k.Prefix+"_") {
		t.Fatalf("key %q does not start with its prefix %q", secret, k.Prefix)
	}
	ctx := context.Background()
	p, err := f.svc.Authenticate(ctx, "Bearer "+secret, "")
	if err != nil || p.KeyTenant != ten.ID || p.KeyRole != auth.RoleViewer {
		t.Fatalf("key: %v %+v", err, p)
	}
	kctx := auth.WithPrincipal(ctx, p)
	if _, err := f.svc.Authorize(kctx, ten.ID, "collection:notes", auth.PermRead); err != nil {
		t.Errorf("viewer key cannot read: %v", err)
	}
	// A viewer is read-only, whatever its grants say.
	_, err = f.svc.Authorize(kctx, ten.ID, "collection:builds", auth.PermWrite)
	wantCode(t, err, 403, "forbidden")
	_, err = f.svc.Authorize(kctx, other.ID, "collection:notes", auth.PermRead)
	wantCode(t, err, 404, "tenant_not_found")
	// Tampered secret with the right prefix.
	_, err = f.svc.Authenticate(ctx, "Bearer sk_"+k.Prefix+"_AAAA", "")
	wantCode(t, err, 401, "api_key_invalid")
	keys, err := f.svc.APIKeyList(owner, ten.ID)
	if err != nil || len(keys) != 1 || keys[0].Prefix != k.Prefix || len(keys[0].Grants) != 1 {
		t.Fatalf("list: %v %+v", err, keys)
	}
	if err := f.svc.APIKeyRevoke(owner, ten.ID, k.ID); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Authenticate(ctx, "Bearer "+secret, "")
	wantCode(t, err, 401, "api_key_invalid")
}

func TestMembershipWindowAndLastOwner(t *testing.T) {
	t.Parallel()
	f := setup(t)
	owner, octx := f.user("owner", false)
	bob, bctx := f.user("bob", false)
	ten, _ := f.svc.TenantCreate(octx, "house")
	today := f.clock.now().UTC()
	d := func(days int) *auth.Date {
		s := auth.Date(today.AddDate(0, 0, days).Format(time.DateOnly))
		return &s
	}
	if _, err := f.svc.MemberPut(octx, ten.ID, bob.ID, auth.MembershipInput{Role: auth.RoleMember, StartsOn: d(-10), EndsOn: d(-1)}); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Authorize(bctx, ten.ID, "collection:x", auth.PermRead)
	wantCode(t, err, 404, "tenant_not_found")
	if _, err := f.svc.MemberPut(octx, ten.ID, bob.ID, auth.MembershipInput{Role: auth.RoleMember, StartsOn: d(1)}); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Authorize(bctx, ten.ID, "collection:x", auth.PermRead)
	wantCode(t, err, 404, "tenant_not_found")
	f.clock.advance(48 * time.Hour) // the window opens
	if _, err := f.svc.Authorize(bctx, ten.ID, "collection:x", auth.PermRead); err != nil {
		t.Fatalf("member within the window: %v", err)
	}
	// The last owner can be neither demoted, ended, nor removed.
	_, err = f.svc.MemberPut(octx, ten.ID, owner.ID, auth.MembershipInput{Role: auth.RoleAdmin})
	wantCode(t, err, 409, "last_owner")
	past := auth.Date("2000-01-01")
	_, err = f.svc.MemberPut(octx, ten.ID, owner.ID, auth.MembershipInput{Role: auth.RoleOwner, StartsOn: &past, EndsOn: &past})
	wantCode(t, err, 409, "last_owner")
	err = f.svc.MemberRemove(octx, ten.ID, owner.ID)
	wantCode(t, err, 409, "last_owner")
	// With a second owner, the first may step down.
	if _, err := f.svc.MemberPut(octx, ten.ID, bob.ID, auth.MembershipInput{Role: auth.RoleOwner}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.MemberPut(octx, ten.ID, owner.ID, auth.MembershipInput{Role: auth.RoleViewer}); err != nil {
		t.Fatalf("stepping down with another owner: %v", err)
	}
}

// Seed 003: grant, check, revoke read/write/admin on a collection for a user.
func TestSeed003Permissions(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, owner := f.user("owner", false)
	john, jctx := f.user("john_doe", false)
	ten, _ := f.svc.TenantCreate(owner, "vectors")
	if _, err := f.svc.MemberPut(owner, ten.ID, john.ID, auth.MembershipInput{Role: auth.RoleMember}); err != nil {
		t.Fatal(err)
	}
	const coll = "collection:my_vectors"
	check := func(perm auth.Permission) bool {
		t.Helper()
		res, err := f.svc.GrantCheck(owner, ten.ID, auth.GrantInput{UserID: john.ID}, coll, perm)
		if err != nil {
			t.Fatal(err)
		}
		return res.Allowed
	}
	if !check(auth.PermRead) || check(auth.PermWrite) || check(auth.PermAdmin) {
		t.Fatal("a member should read, not write or administer, without grants")
	}
	g, created, err := f.svc.GrantCreate(owner, ten.ID, auth.GrantInput{UserID: john.ID, Resource: coll, Permission: "write"})
	if err != nil || !created {
		t.Fatal(err)
	}
	if !check(auth.PermWrite) || check(auth.PermAdmin) {
		t.Fatal("write grant not effective, or too strong")
	}
	if _, err := f.svc.Authorize(jctx, ten.ID, coll, auth.PermWrite); err != nil {
		t.Fatalf("john cannot write after the grant: %v", err)
	}
	if _, err := f.svc.Authorize(jctx, ten.ID, "collection:other", auth.PermWrite); err == nil {
		t.Fatal("a grant on one collection allowed writing another")
	}
	if _, created, _ := f.svc.GrantCreate(owner, ten.ID, auth.GrantInput{UserID: john.ID, Resource: coll, Permission: "write"}); created {
		t.Error("granting twice created a second grant")
	}
	if _, _, err := f.svc.GrantCreate(owner, ten.ID, auth.GrantInput{UserID: john.ID, Resource: coll, Permission: "admin"}); err != nil {
		t.Fatal(err)
	}
	// Admin on the collection lets john manage that collection's grants, not others'.
	if _, _, err := f.svc.GrantCreate(jctx, ten.ID, auth.GrantInput{UserID: john.ID, Resource: coll, Permission: "read"}); err != nil {
		t.Fatalf("resource admin cannot grant on it: %v", err)
	}
	_, _, err = f.svc.GrantCreate(jctx, ten.ID, auth.GrantInput{UserID: john.ID, Resource: "collection:other", Permission: "write"})
	wantCode(t, err, 403, "forbidden")
	if err := f.svc.GrantRevokeMatching(owner, ten.ID, auth.GrantInput{UserID: john.ID, Resource: coll, Permission: "admin"}); err != nil {
		t.Fatal(err)
	}
	if check(auth.PermAdmin) || !check(auth.PermWrite) {
		t.Fatal("revoking admin should leave write")
	}
	if err := f.svc.GrantRevoke(owner, ten.ID, g.ID); err != nil {
		t.Fatal(err)
	}
	if check(auth.PermWrite) {
		t.Fatal("write still allowed after revoke")
	}
	rows, _, _ := f.audit.List(context.Background(), ten.ID, audit.Filter{Action: "grant.*"})
	if len(rows) != 5 { // 3 creates (write, admin, read) and 2 revokes
		t.Errorf("%d grant events audited, want 5", len(rows))
	}
}

func TestTenantDeleteRemovesEverything(t *testing.T) {
	t.Parallel()
	f := setup(t)
	_, owner := f.user("owner", false)
	ten, _ := f.svc.TenantCreate(owner, "doomed")
	if _, _, err := f.svc.APIKeyCreate(owner, ten.ID, auth.APIKeyInput{Name: "k", Role: auth.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.TenantDelete(owner, ten.ID); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, q := range []string{"SELECT count(*) FROM memberships WHERE tenant_id = $1", "SELECT count(*) FROM api_keys WHERE tenant_id = $1",
		"SELECT count(*) FROM audit_log WHERE chain = $1"} {
		var n int
		if err := f.pool.QueryRow(ctx, q, ten.ID).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s → %d (%v), want 0", q, n, err)
		}
	}
	_, err := f.svc.TenantGet(owner, ten.ID)
	wantCode(t, err, 404, "tenant_not_found")
	rows, _, _ := f.audit.List(ctx, "", audit.Filter{Action: "tenant.delete"})
	if len(rows) != 1 {
		t.Error("tenant deletion not recorded on the platform chain")
	}
}

func TestAuthenticateMalformedHeaders(t *testing.T) {
	t.Parallel()
	f := setup(t)
	ctx := context.Background()
	for h, code := range map[string]string{
		"":                    "unauthenticated",
		"Bearer":              "invalid_authorization",
		"Digest abc":          "invalid_authorization",
		"Basic !!!":           "invalid_authorization",
		basic("", "x"):        "invalid_authorization",
		"Bearer sk_short_x":   "api_key_invalid",
		"Bearer not-a-jwt":    "token_invalid",
		basic("ghost", "pw1"): "invalid_credentials",
	} {
		_, err := f.svc.Authenticate(ctx, h, "")
		if !problem.HasCode(err, code) || !errors.Is(err, problem.ErrUnauthenticated) {
			t.Errorf("%q: err = %v, want 401 %s", h, err, code)
		}
	}
}

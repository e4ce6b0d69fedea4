package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"
	"time"

	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/problem"
	"golang.org/x/time/rate"
)

// Method is how a principal authenticated.
type Method string

// Authentication methods.
const (
	MethodBearer Method = "bearer"  // a JWT access token
	MethodBasic  Method = "basic"   // HTTP Basic username and password
	MethodAPIKey Method = "api_key" // a tenant's API key
)

// Principal is who is making a request: a user (by token or Basic) or an API key.
type Principal struct {
	// UserID and Username are set for users.
	UserID   string
	Username string
	// PlatformAdmin is set for platform administrators (users only).
	PlatformAdmin bool
	// SessionID is set for bearer tokens.
	SessionID string
	// KeyID, KeyName, KeyTenant and KeyRole are set for API keys, which act only in their
	// tenant, with their role and grants.
	KeyID     string
	KeyName   string
	KeyTenant string
	KeyRole   Role
	// Method is how the principal authenticated.
	Method Method
}

// userID returns the principal's user id, or nil for API keys and the system.
func (p *Principal) userID() *string {
	if p == nil || p.IsKey() || p.UserID == "" {
		return nil
	}
	id := p.UserID
	return &id
}

// IsKey reports whether the principal is an API key.
func (p *Principal) IsKey() bool { return p.KeyID != "" }

// Actor names the principal in audit rows.
func (p *Principal) Actor() audit.Actor {
	if p.IsKey() {
		return audit.Actor{KeyID: p.KeyID, Name: "key:" + p.KeyName}
	}
	return audit.Actor{UserID: p.UserID, Name: p.Username}
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p, and p as the audit actor.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return audit.WithActor(context.WithValue(ctx, principalKey{}, p), p.Actor())
}

// MethodSystem marks the platform acting on its own behalf.
const MethodSystem Method = "system"

// System returns ctx acting as the platform itself: a platform administrator named
// "system", for library callers and background work done on behalf of no user.
func System(ctx context.Context) context.Context {
	return WithPrincipal(ctx, &Principal{Username: "system", PlatformAdmin: true, Method: MethodSystem})
}

// PrincipalFrom returns the principal in ctx, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// ErrNoCredentials is returned by Authenticate for a request without credentials.
var ErrNoCredentials = problem.Unauthenticated("unauthenticated", "this request needs credentials: a bearer token, an API key or HTTP Basic")

// Authenticate resolves an Authorization header value into a principal. ip is the client's
// address (for rate limiting and audit). Each failure is a 401 problem with a specific code.
func (s *Service) Authenticate(ctx context.Context, authorization, ip string) (*Principal, error) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if authorization == "" {
		return nil, ErrNoCredentials
	}
	if !ok {
		return nil, problem.Unauthenticated("invalid_authorization", "the Authorization header is malformed")
	}
	cred = strings.TrimSpace(cred)
	switch strings.ToLower(scheme) {
	case "bearer":
		if strings.HasPrefix(cred, apiKeyPrefix) {
			return s.authenticateKey(ctx, cred)
		}
		return s.authenticateToken(ctx, cred)
	case "basic":
		return s.authenticateBasic(ctx, cred, ip)
	default:
		return nil, problem.Unauthenticated("invalid_authorization", "unsupported authorization scheme %q; use Bearer or Basic", truncate(scheme, 20))
	}
}

var errRevoked = problem.Unauthenticated("token_revoked", "the session has ended (signed out, password changed, or user disabled)")

func (s *Service) authenticateToken(ctx context.Context, token string) (*Principal, error) {
	c, err := s.parseAccess(ctx, token)
	if err != nil {
		return nil, err
	}
	u, err := s.users.get(ctx, c.Subject, s.loadUser)
	if err != nil {
		return nil, err
	}
	if !u.exists || u.disabled || u.version != c.Version {
		return nil, errRevoked
	}
	sess, err := s.sessions.get(ctx, c.SessionID, s.loadSession)
	if err != nil {
		return nil, err
	}
	if sess.revoked || sess.userID != c.Subject {
		return nil, errRevoked
	}
	return &Principal{UserID: u.id, Username: u.username, PlatformAdmin: u.admin, SessionID: c.SessionID, Method: MethodBearer}, nil
}

func (s *Service) authenticateBasic(ctx context.Context, cred, ip string) (*Principal, error) {
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return nil, problem.Unauthenticated("invalid_authorization", "the Basic credentials are not valid base64")
	}
	username, password, ok := strings.Cut(string(raw), ":")
	if !ok || username == "" {
		return nil, problem.Unauthenticated("invalid_authorization", "Basic credentials must be username:password")
	}
	key := s.basic.key(username, password)
	if e, ok := s.basic.get(key); ok {
		u, err := s.users.get(ctx, e.userID, s.loadUser)
		if err != nil {
			return nil, err
		}
		if u.exists && !u.disabled && u.version == e.version {
			return &Principal{UserID: u.id, Username: u.username, PlatformAdmin: u.admin, Method: MethodBasic}, nil
		}
		s.basic.remove(key)
	}
	cu, err := s.checkCredentials(ctx, username, password, ip)
	if err != nil {
		return nil, err
	}
	u, err := s.users.get(ctx, cu.id, s.loadUser)
	if err != nil {
		return nil, err
	}
	if u.version != cu.version { // changed while we verified
		return nil, errBadCredentials
	}
	s.basic.put(key, basicEntry{userID: u.id, version: u.version})
	if _, err := s.pool.Exec(ctx, `UPDATE users SET last_login_at = $2 WHERE id = $1`, u.id, s.now()); err != nil {
		s.log.Warn("recording last login", "err", err)
	}
	return &Principal{UserID: u.id, Username: u.username, PlatformAdmin: u.admin, Method: MethodBasic}, nil
}

// basicCache remembers verified Basic credentials under a keyed hash (HMAC-SHA-256 with a
// per-process random key), never the password itself, so only the first request with a
// credential pays for argon2. An entry is honoured only while the user's credential
// version is unchanged.
type basicCache struct {
	secret []byte
	m      *ttlMap[string, basicEntry]
}

type basicEntry struct {
	userID  string
	version int64
}

func newBasicCache(ttl time.Duration) *basicCache {
	return &basicCache{secret: randomBytes(32), m: newTTLMap[string, basicEntry](100000, ttl)}
}

func (b *basicCache) key(username, password string) string {
	mac := hmac.New(sha256.New, b.secret)
	mac.Write([]byte(strings.ToLower(username)))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	return string(mac.Sum(nil))
}

func (b *basicCache) get(k string) (basicEntry, bool) { return b.m.get(k) }
func (b *basicCache) put(k string, e basicEntry)      { b.m.put(k, e) }
func (b *basicCache) remove(k string)                 { b.m.remove(k) }

// limiter rate-limits sign-in attempts per username and per client address, with token
// buckets refilled per minute. Buckets of idle keys are dropped when the map grows.
type limiter struct {
	mu      sync.Mutex
	perUser rate.Limit
	perIP   rate.Limit
	burstU  int
	burstIP int
	buckets map[string]*rate.Limiter
}

func newLimiter(userPerMin, ipPerMin int) *limiter {
	return &limiter{perUser: rate.Limit(float64(userPerMin) / 60), perIP: rate.Limit(float64(ipPerMin) / 60),
		burstU: userPerMin, burstIP: ipPerMin, buckets: map[string]*rate.Limiter{}}
}

// allow takes one attempt from both buckets, or reports how long to wait.
func (l *limiter) allow(username, ip string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) > 50000 {
		for k, b := range l.buckets {
			if b.Tokens() >= float64(b.Burst()) {
				delete(l.buckets, k)
			}
		}
	}
	now := time.Now()
	ru := l.bucket("u:"+strings.ToLower(username), l.perUser, l.burstU).ReserveN(now, 1)
	var rip *rate.Reservation
	if ip != "" {
		rip = l.bucket("ip:"+ip, l.perIP, l.burstIP).ReserveN(now, 1)
	}
	wait := ru.DelayFrom(now)
	if rip != nil {
		wait = max(wait, rip.DelayFrom(now))
	}
	if wait > 0 {
		ru.CancelAt(now)
		if rip != nil {
			rip.CancelAt(now)
		}
		return wait, false
	}
	return 0, true
}

func (l *limiter) bucket(key string, r rate.Limit, burst int) *rate.Limiter {
	b, ok := l.buckets[key]
	if !ok {
		b = rate.NewLimiter(r, burst)
		l.buckets[key] = b
	}
	return b
}

package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// issuer is the iss claim of every access token.
const issuer = "strata"

// keyRing holds the signing keys in memory: the newest unretired signs, every unretired
// one verifies.
type keyRing struct {
	mu      sync.RWMutex
	signing signingKey
	byKID   map[string]signingKey
}

type signingKey struct {
	kid     string
	secret  []byte
	retired *time.Time
}

func (r *keyRing) current() signingKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.signing
}

func (r *keyRing) lookup(kid string) (signingKey, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.byKID[kid]
	return k, ok
}

// keyLock serializes creating the first signing key across nodes.
const keyLock int64 = 0x537472617461534b // "StrataSK"

// loadKeys reads the signing keys; with create, it makes the first key if there is none.
func (s *Service) loadKeys(ctx context.Context, create bool) error {
	if create {
		err := s.inTx(ctx, "signing key", func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", keyLock); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, secret) SELECT $1, $2
				WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)`, newKID(), randomBytes(32))
			return err
		})
		if err != nil {
			return fmt.Errorf("creating the signing key: %w", err)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT kid, secret, retired_at FROM signing_keys
		WHERE retired_at IS NULL OR retired_at > now() ORDER BY created_at DESC`)
	if err != nil {
		return fmt.Errorf("loading signing keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (signingKey, error) {
		var k signingKey
		err := r.Scan(&k.kid, &k.secret, &k.retired)
		return k, err
	})
	if err != nil {
		return fmt.Errorf("loading signing keys: %w", err)
	}
	ring := map[string]signingKey{}
	var signing signingKey
	for _, k := range keys {
		ring[k.kid] = k
		if signing.kid == "" && k.retired == nil {
			signing = k
		}
	}
	if signing.kid == "" {
		return errors.New("no active signing key; run `strata admin rotate-signing-key`")
	}
	s.keys.mu.Lock()
	s.keys.signing, s.keys.byKID = signing, ring
	s.keys.mu.Unlock()
	return nil
}

// SigningKeyRotate makes a new signing key current. Tokens signed by the previous keys stay
// valid until they expire: the old keys retire after one access-token lifetime.
func (s *Service) SigningKeyRotate(ctx context.Context) (string, error) {
	kid := newKID()
	err := s.inTx(ctx, "signing key", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", keyLock); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET retired_at = now() + $1::interval WHERE retired_at IS NULL`,
			s.cfg.AccessTTL.String()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, secret) VALUES ($1, $2)`, kid, randomBytes(32)); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: "signing_key.rotate", ResourceType: "signing_key", ResourceID: kid}); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, 'keys')", notifyChannel)
		return err
	})
	if err != nil {
		return "", err
	}
	return kid, s.loadKeys(ctx, false)
}

func newKID() string { return hex.EncodeToString(randomBytes(6)) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// claims are the access token's claims: the standard ones plus the session and the
// user's credential version, so a password change or sign-out revokes tokens at once.
type claims struct {
	jwt.RegisteredClaims
	SessionID string `json:"sid"`
	Version   int64  `json:"ver"`
}

func (s *Service) signAccess(userID, sessionID string, version int64, now time.Time) (string, error) {
	k := s.keys.current()
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   userID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.AccessTTL)),
			ID:        uuid.NewString(),
		},
		SessionID: sessionID,
		Version:   version,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	t.Header["kid"] = k.kid
	return t.SignedString(k.secret)
}

// parseAccess verifies an access token: HS256 only, a known key, not expired, our issuer.
// A token verified once is remembered (it cannot change) until it expires, so repeated
// requests skip the signature and JSON work; user and session state are still checked on
// every request by the caller.
func (s *Service) parseAccess(ctx context.Context, token string) (*claims, error) {
	if c, ok := s.verified.get(token); ok {
		if s.now().Before(c.ExpiresAt.Add(30 * time.Second)) {
			return c, nil
		}
		s.verified.remove(token)
	}
	c, err := s.verifyAccess(ctx, token)
	if err == nil && len(token) <= 4096 {
		s.verified.put(token, c)
	}
	return c, err
}

func (s *Service) verifyAccess(ctx context.Context, token string) (*claims, error) {
	parser := s.parser
	var c claims
	_, err := parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := s.keys.lookup(kid)
		if !ok {
			// Perhaps rotated on another node a moment ago.
			if err := s.loadKeys(ctx, false); err == nil {
				k, ok = s.keys.lookup(kid)
			}
		}
		if !ok {
			return nil, errors.New("unknown key id")
		}
		return k.secret, nil
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, problem.Unauthenticated("token_expired", "the access token has expired; refresh it")
	case err != nil:
		return nil, problem.Unauthenticated("token_invalid", "the access token is not valid")
	}
	if _, err := uuid.Parse(c.Subject); err != nil || c.SessionID == "" {
		return nil, problem.Unauthenticated("token_invalid", "the access token is not valid")
	}
	return &c, nil
}

// Tokens is the answer to a sign-in or a refresh.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type" example:"Bearer"`
	ExpiresIn    int    `json:"expires_in" doc:"Seconds until the access token expires."`
	RefreshToken string `json:"refresh_token" doc:"Opaque; single use: each refresh returns a new one. Reusing a spent one ends the session."`
	SessionID    string `json:"session_id"`
}

const refreshPrefix = "srt_"

func newRefreshToken() (token string, hash []byte) {
	token = refreshPrefix + base64.RawURLEncoding.EncodeToString(randomBytes(32))
	sum := sha256.Sum256([]byte(token))
	return token, sum[:]
}

func hashRefresh(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// SignIn checks a username and password and starts a session. Unknown usernames and wrong
// passwords answer identically, in similar time; attempts are rate-limited per username
// and per ip. Success and failure are audited.
func (s *Service) SignIn(ctx context.Context, username, password, ip string) (*Tokens, error) {
	u, err := s.checkCredentials(ctx, username, password, ip)
	if err != nil {
		return nil, err
	}
	now := s.now()
	sessionID := uuid.NewString()
	refresh, hash := newRefreshToken()
	ctx = audit.WithActor(ctx, audit.Actor{UserID: u.id, Name: u.username})
	err = s.inTx(ctx, "session", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
			sessionID, u.id, now, now.Add(s.cfg.RefreshTTL)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES ($1, $2, $3)`, hash, sessionID, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE users SET last_login_at = $2 WHERE id = $1`, u.id, now); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: "auth.signin", ResourceType: "session", ResourceID: sessionID,
			Details: map[string]any{"method": "password"}})
	})
	if err != nil {
		return nil, err
	}
	return s.tokens(u.id, sessionID, u.version, refresh, now)
}

func (s *Service) tokens(userID, sessionID string, version int64, refresh string, now time.Time) (*Tokens, error) {
	access, err := s.signAccess(userID, sessionID, version, now)
	if err != nil {
		return nil, err
	}
	return &Tokens{AccessToken: access, TokenType: "Bearer", ExpiresIn: int(s.cfg.AccessTTL / time.Second),
		RefreshToken: refresh, SessionID: sessionID}, nil
}

var errBadRefresh = problem.Unauthenticated("refresh_token_invalid", "the refresh token is not valid")

// Refresh spends a refresh token for new tokens. A token that was already spent means it
// was stolen or replayed: the whole session is revoked, and the event audited.
func (s *Service) Refresh(ctx context.Context, token string) (*Tokens, error) {
	if !strings.HasPrefix(token, refreshPrefix) {
		return nil, errBadRefresh
	}
	now := s.now()
	var out *Tokens
	var reused bool
	err := s.inTx(ctx, "refresh token", func(tx pgx.Tx) error {
		var sessionID, userID, username string
		var usedAt, revokedAt *time.Time
		var expires time.Time
		var version int64
		var disabled bool
		err := tx.QueryRow(ctx, `SELECT r.session_id, r.used_at, s.user_id, s.expires_at, s.revoked_at, u.cred_version, u.disabled, u.username
			FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
			WHERE r.hash = $1 FOR UPDATE OF r, s`, hashRefresh(token)).
			Scan(&sessionID, &usedAt, &userID, &expires, &revokedAt, &version, &disabled, &username)
		if errors.Is(err, pgx.ErrNoRows) {
			return errBadRefresh
		}
		if err != nil {
			return err
		}
		actx := audit.WithActor(ctx, audit.Actor{UserID: userID, Name: username})
		switch {
		case usedAt != nil:
			reused = revokedAt == nil
			if !reused {
				return errBadRefresh
			}
			if _, err := tx.Exec(ctx, `UPDATE sessions SET revoked_at = $2, revoke_reason = 'refresh token reused' WHERE id = $1`, sessionID, now); err != nil {
				return err
			}
			if err := s.notify(ctx, tx, "session:"+sessionID); err != nil {
				return err
			}
			return audit.Record(actx, tx, audit.Entry{Action: "auth.refresh_reuse", ResourceType: "session", ResourceID: sessionID,
				Details: map[string]any{"effect": "session revoked"}})
		case revokedAt != nil, !now.Before(expires), disabled:
			return errBadRefresh
		}
		refresh, hash := newRefreshToken()
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1`, hashRefresh(token), now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES ($1, $2, $3)`, hash, sessionID, now); err != nil {
			return err
		}
		out, err = s.tokens(userID, sessionID, version, refresh, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	if reused {
		return nil, problem.Unauthenticated("refresh_token_reused", "this refresh token was already used; the session is ended for safety — sign in again")
	}
	return out, nil
}

// SignOut ends a session: its refresh tokens stop working and its access tokens are
// refused at once.
func (s *Service) SignOut(ctx context.Context, sessionID string) error {
	if _, err := uuid.Parse(sessionID); err != nil {
		return problem.NotFound("session_not_found", "session not found")
	}
	return s.inTx(ctx, "session", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE sessions SET revoked_at = $2, revoke_reason = 'signed out' WHERE id = $1 AND revoked_at IS NULL`,
			sessionID, s.now())
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		if err := s.notify(ctx, tx, "session:"+sessionID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: "auth.signout", ResourceType: "session", ResourceID: sessionID})
	})
}

// SessionOfRefresh returns the session a refresh token belongs to.
func (s *Service) SessionOfRefresh(ctx context.Context, token string) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT session_id FROM refresh_tokens WHERE hash = $1`, hashRefresh(token)).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errBadRefresh
	}
	return id, db.Translate(err, "refresh token")
}

type sessionState struct {
	userID  string
	revoked bool
	expires time.Time
}

func (s *Service) loadSession(ctx context.Context, id string) (sessionState, error) {
	var st sessionState
	var revoked *time.Time
	err := s.pool.QueryRow(ctx, `SELECT user_id, revoked_at, expires_at FROM sessions WHERE id = $1`, id).Scan(&st.userID, &revoked, &st.expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return sessionState{revoked: true}, nil
	}
	st.revoked = revoked != nil
	return st, err
}

package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// apiKeyPrefix starts every API key, so a bearer credential is recognizably a key.
const apiKeyPrefix = "sk_"

// APIKey is a tenant's API key, without its secret.
type APIKey struct {
	ID         string      `json:"id"`
	TenantID   string      `json:"tenant_id"`
	Name       string      `json:"name"`
	Prefix     string      `json:"prefix" doc:"Identifies the key in listings; the key itself starts with sk_<prefix>_."`
	Role       Role        `json:"role" enum:"admin,member,viewer"`
	Grants     []GrantSpec `json:"grants"`
	CreatedBy  *string     `json:"created_by,omitempty"`
	CreatedAt  time.Time   `json:"created_at"`
	ExpiresAt  *time.Time  `json:"expires_at,omitempty"`
	LastUsedAt *time.Time  `json:"last_used_at,omitempty" doc:"Updated at most once a minute."`
	RevokedAt  *time.Time  `json:"revoked_at,omitempty"`
}

// GrantSpec is a permission on a resource.
type GrantSpec struct {
	Resource   string `json:"resource" minLength:"1" maxLength:"300" example:"collection:notes"`
	Permission string `json:"permission" enum:"read,write,admin"`
}

// APIKeyInput creates an API key.
type APIKeyInput struct {
	Name      string      `json:"name" minLength:"1" maxLength:"200"`
	Role      Role        `json:"role" enum:"admin,member,viewer" doc:"The key acts in its tenant with this role."`
	Grants    []GrantSpec `json:"grants,omitempty" maxItems:"100" doc:"Extra permissions, as for a member."`
	ExpiresAt *time.Time  `json:"expires_at,omitempty"`
}

// APIKeyCreate creates a key for tenant (owners and admins) and returns it with its secret,
// which is shown this once: only a hash is stored.
func (s *Service) APIKeyCreate(ctx context.Context, tenant string, in APIKeyInput) (APIKey, string, error) {
	if _, err := s.Authorize(ctx, tenant, ResourceAPIKeys, PermWrite); err != nil {
		return APIKey{}, "", err
	}
	if in.Role != RoleAdmin && in.Role != RoleMember && in.Role != RoleViewer {
		return APIKey{}, "", problem.Unprocessable("invalid_role", "an API key's role is admin, member or viewer").WithField("body.role", "invalid")
	}
	if strings.TrimSpace(in.Name) == "" {
		return APIKey{}, "", problem.Unprocessable("invalid_name", "the key needs a name").WithField("body.name", "empty")
	}
	if in.ExpiresAt != nil && !in.ExpiresAt.After(s.now()) {
		return APIKey{}, "", problem.Unprocessable("invalid_expiry", "expires_at is in the past").WithField("body.expires_at", "in the past")
	}
	for i, g := range in.Grants {
		if err := checkGrant(g, i); err != nil {
			return APIKey{}, "", err
		}
	}
	prefix := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(randomBytes(8)))
	secret := base64.RawURLEncoding.EncodeToString(randomBytes(32))
	token := apiKeyPrefix + prefix + "_" + secret
	sum := sha256.Sum256([]byte(secret))
	p := PrincipalFrom(ctx)
	k := APIKey{ID: uuid.Must(uuid.NewV7()).String(), TenantID: tenant, Name: in.Name, Prefix: prefix, Role: in.Role,
		Grants: in.Grants, ExpiresAt: in.ExpiresAt}
	if k.Grants == nil {
		k.Grants = []GrantSpec{}
	}
	k.CreatedBy = p.userID()
	err := s.inTx(ctx, "API key", func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, role, created_by, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at`,
			k.ID, tenant, in.Name, prefix, sum[:], in.Role, k.CreatedBy, in.ExpiresAt).Scan(&k.CreatedAt); err != nil {
			return err
		}
		for _, g := range in.Grants {
			if _, err := tx.Exec(ctx, `INSERT INTO grants (id, tenant_id, api_key_id, resource, permission, granted_by)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
				uuid.Must(uuid.NewV7()).String(), tenant, k.ID, g.Resource, g.Permission, k.CreatedBy); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "api_key.create", ResourceType: "api_key", ResourceID: k.ID,
			Details: map[string]any{"name": in.Name, "prefix": prefix, "role": in.Role, "grants": len(in.Grants)}})
	})
	if err != nil {
		return APIKey{}, "", err
	}
	return k, token, nil
}

// APIKeyList lists a tenant's keys, revoked ones included (owners and admins).
func (s *Service) APIKeyList(ctx context.Context, tenant string) ([]APIKey, error) {
	if _, err := s.Authorize(ctx, tenant, ResourceAPIKeys, PermRead); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT k.id, k.tenant_id, k.name, k.prefix, k.role, k.created_by, k.created_at, k.expires_at,
			k.last_used_at, k.revoked_at,
			COALESCE((SELECT json_agg(json_build_object('resource', g.resource, 'permission', g.permission) ORDER BY g.resource, g.permission)
				FROM grants g WHERE g.api_key_id = k.id), '[]')
		FROM api_keys k WHERE k.tenant_id = $1 ORDER BY k.created_at, k.id`, tenant)
	if err != nil {
		return nil, db.Translate(err, "API keys")
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APIKey, error) {
		var k APIKey
		err := r.Scan(&k.ID, &k.TenantID, &k.Name, &k.Prefix, &k.Role, &k.CreatedBy, &k.CreatedAt, &k.ExpiresAt, &k.LastUsedAt,
			&k.RevokedAt, &k.Grants)
		return k, err
	})
	return keys, db.Translate(err, "API keys")
}

// APIKeyRevoke revokes a key at once, on every node (owners and admins).
func (s *Service) APIKeyRevoke(ctx context.Context, tenant, id string) error {
	if _, err := s.Authorize(ctx, tenant, ResourceAPIKeys, PermWrite); err != nil {
		return err
	}
	notFound := problem.NotFound("api_key_not_found", "API key not found")
	if _, err := uuid.Parse(id); err != nil {
		return notFound
	}
	return s.inTx(ctx, "API key", func(tx pgx.Tx) error {
		var prefix string
		err := tx.QueryRow(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND tenant_id = $2 RETURNING prefix`,
			id, tenant).Scan(&prefix)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound
		}
		if err != nil {
			return err
		}
		if err := s.notify(ctx, tx, "key:"+prefix); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "api_key.revoke", ResourceType: "api_key", ResourceID: id,
			Details: map[string]any{"prefix": prefix}})
	})
}

type keyState struct {
	exists  bool
	id      string
	tenant  string
	name    string
	role    Role
	hash    []byte
	revoked bool
	expires *time.Time
}

func (s *Service) loadKey(ctx context.Context, prefix string) (keyState, error) {
	var k keyState
	var revoked *time.Time
	err := s.pool.QueryRow(ctx, `SELECT id, tenant_id, name, role, secret_hash, revoked_at, expires_at FROM api_keys WHERE prefix = $1`, prefix).
		Scan(&k.id, &k.tenant, &k.name, &k.role, &k.hash, &revoked, &k.expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return k, nil
	}
	k.exists, k.revoked = err == nil, revoked != nil
	return k, err
}

var errBadKey = problem.Unauthenticated("api_key_invalid", "the API key is not valid (unknown, revoked or expired)")

func (s *Service) authenticateKey(ctx context.Context, token string) (*Principal, error) {
	rest := strings.TrimPrefix(token, apiKeyPrefix)
	prefix, secret, ok := strings.Cut(rest, "_")
	if !ok || len(prefix) != 13 || secret == "" {
		return nil, errBadKey
	}
	k, err := s.apiKeys.get(ctx, prefix, s.loadKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(secret))
	match := k.exists && subtle.ConstantTimeCompare(sum[:], k.hash) == 1
	if !match || k.revoked || (k.expires != nil && !s.now().Before(*k.expires)) {
		return nil, errBadKey
	}
	if s.touched.allow(k.id, s.now()) {
		s.bg.Go(func() { s.touchKey(k.id) })
	}
	return &Principal{KeyID: k.id, KeyName: k.name, KeyTenant: k.tenant, KeyRole: k.role, Method: MethodAPIKey}, nil
}

// touchKey records a key's last use; best effort, off the request's path.
func (s *Service) touchKey(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `UPDATE api_keys SET last_used_at = now() WHERE id = $1`, id); err != nil {
		s.log.Debug("recording an API key's last use", "err", err)
	}
}

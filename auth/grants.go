package auth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Grant gives a user or an API key a permission on a resource of a tenant.
type Grant struct {
	ID         string    `json:"id"`
	TenantID   string    `json:"tenant_id"`
	UserID     *string   `json:"user_id,omitempty"`
	APIKeyID   *string   `json:"api_key_id,omitempty"`
	Resource   string    `json:"resource" example:"collection:notes"`
	Permission string    `json:"permission" enum:"read,write,admin"`
	GrantedBy  *string   `json:"granted_by,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// GrantInput names a grant: exactly one of UserID and APIKeyID, a resource and a permission.
type GrantInput struct {
	UserID     string `json:"user_id,omitempty" doc:"The grantee when it is a user (a member of the tenant)."`
	APIKeyID   string `json:"api_key_id,omitempty" doc:"The grantee when it is one of the tenant's API keys."`
	Resource   string `json:"resource" minLength:"1" maxLength:"300" example:"collection:notes" doc:"type:name, type:* or *."`
	Permission string `json:"permission" enum:"read,write,admin"`
}

// resourceRE accepts "*", "type:*", "type:name" and the tenant-administration names.
var resourceRE = regexp.MustCompile(`^(\*|[a-z][a-z0-9_]{0,39}(:(\*|[^\s*][^\s]{0,254}))?)$`)

func checkGrant(g GrantSpec, i int) error {
	field := "body.resource"
	if i >= 0 {
		field = fmt.Sprintf("body.grants[%d].resource", i)
	}
	if !resourceRE.MatchString(g.Resource) {
		return problem.Unprocessable("invalid_resource", "a resource is *, type:*, or type:name (such as collection:notes)").WithField(field, "invalid")
	}
	if _, ok := ParsePermission(g.Permission); !ok {
		return problem.Unprocessable("invalid_permission", "permission must be read, write or admin").WithField("body.permission", "invalid")
	}
	return nil
}

func (in GrantInput) grantee() (col, id string, err error) {
	switch {
	case (in.UserID == "") == (in.APIKeyID == ""):
		return "", "", problem.Unprocessable("invalid_grantee", "give exactly one of user_id and api_key_id")
	case in.UserID != "":
		if _, err := uuid.Parse(in.UserID); err != nil {
			return "", "", problem.Unprocessable("grantee_not_in_tenant", "the user is not a member of this tenant").WithField("body.user_id", "unknown")
		}
		return "user_id", in.UserID, nil
	default:
		if _, err := uuid.Parse(in.APIKeyID); err != nil {
			return "", "", problem.Unprocessable("grantee_not_in_tenant", "the API key does not belong to this tenant").WithField("body.api_key_id", "unknown")
		}
		return "api_key_id", in.APIKeyID, nil
	}
}

// authorizeGrantAdmin lets owners and admins manage every grant, and holders of admin on a
// data resource manage that resource's grants.
func (s *Service) authorizeGrantAdmin(ctx context.Context, tenant, resource string) (*Access, error) {
	if isAdminResource(resource) {
		return s.Authorize(ctx, tenant, ResourceGrants, PermAdmin)
	}
	return s.Authorize(ctx, tenant, resource, PermAdmin)
}

// GrantCreate grants a permission; granting what already exists returns the existing
// grant with created=false.
func (s *Service) GrantCreate(ctx context.Context, tenant string, in GrantInput) (Grant, bool, error) {
	if _, err := s.authorizeGrantAdmin(ctx, tenant, in.Resource); err != nil {
		return Grant{}, false, err
	}
	if err := checkGrant(GrantSpec{Resource: in.Resource, Permission: in.Permission}, -1); err != nil {
		return Grant{}, false, err
	}
	col, id, err := in.grantee()
	if err != nil {
		return Grant{}, false, err
	}
	p := PrincipalFrom(ctx)
	by := p.userID()
	var g Grant
	created := false
	err = s.inTx(ctx, "grant", func(tx pgx.Tx) error {
		var member bool
		q := `SELECT EXISTS (SELECT 1 FROM memberships WHERE tenant_id = $1 AND user_id = $2)`
		if col == "api_key_id" {
			q = `SELECT EXISTS (SELECT 1 FROM api_keys WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL)`
		}
		if err := tx.QueryRow(ctx, q, tenant, id).Scan(&member); err != nil {
			return err
		}
		if !member {
			return problem.Unprocessable("grantee_not_in_tenant", "the grantee is not a member (or live API key) of this tenant").WithField("body."+col, "not in tenant")
		}
		gid := uuid.Must(uuid.NewV7()).String()
		tag, err := tx.Exec(ctx, `INSERT INTO grants (id, tenant_id, `+col+`, resource, permission, granted_by) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT DO NOTHING`, gid, tenant, id, in.Resource, in.Permission, by)
		if err != nil {
			return err
		}
		created = tag.RowsAffected() == 1
		g, err = scanGrant(tx.QueryRow(ctx, `SELECT `+grantColumns+` FROM grants WHERE tenant_id = $1 AND `+col+` = $2
			AND resource = $3 AND permission = $4`, tenant, id, in.Resource, in.Permission))
		if err != nil || !created {
			return err
		}
		if err := s.notify(ctx, tx, "access:"+tenant); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "grant.create", ResourceType: "grant", ResourceID: g.ID,
			Details: map[string]any{"grantee": id, "grantee_type": col, "resource": in.Resource, "permission": in.Permission}})
	})
	return g, created, err
}

const grantColumns = `id, tenant_id, user_id, api_key_id, resource, permission, granted_by, created_at`

func scanGrant(row pgx.Row) (Grant, error) {
	var g Grant
	err := row.Scan(&g.ID, &g.TenantID, &g.UserID, &g.APIKeyID, &g.Resource, &g.Permission, &g.GrantedBy, &g.CreatedAt)
	return g, err
}

// GrantFilter narrows GrantList.
type GrantFilter struct {
	UserID   string
	APIKeyID string
	Resource string
}

// GrantList lists grants: owners and admins see all; holders of admin on a resource see
// that resource's grants (Resource must then be given).
func (s *Service) GrantList(ctx context.Context, tenant string, f GrantFilter) ([]Grant, error) {
	if f.Resource == "" {
		if _, err := s.Authorize(ctx, tenant, ResourceGrants, PermAdmin); err != nil {
			return nil, err
		}
	} else if _, err := s.authorizeGrantAdmin(ctx, tenant, f.Resource); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+grantColumns+` FROM grants WHERE tenant_id = $1
		AND ($2 = '' OR user_id::text = $2) AND ($3 = '' OR api_key_id::text = $3) AND ($4 = '' OR resource = $4)
		ORDER BY resource, created_at, id`, tenant, f.UserID, f.APIKeyID, f.Resource)
	if err != nil {
		return nil, db.Translate(err, "grants")
	}
	gs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Grant, error) { return scanGrant(r) })
	return gs, db.Translate(err, "grants")
}

// GrantRevoke revokes a grant by id.
func (s *Service) GrantRevoke(ctx context.Context, tenant, id string) error {
	notFound := problem.NotFound("grant_not_found", "grant not found")
	if _, err := uuid.Parse(id); err != nil {
		return notFound
	}
	// Find the resource first: who may revoke depends on it. Another tenant's grant is
	// simply not found.
	if _, err := s.accessOf(ctx, tenant); err != nil {
		_, err = s.Authorize(ctx, tenant, ResourceGrants, PermAdmin) // audits the denial
		return err
	}
	g, err := scanGrant(s.pool.QueryRow(ctx, `SELECT `+grantColumns+` FROM grants WHERE tenant_id = $1 AND id = $2`, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound
	}
	if err != nil {
		return db.Translate(err, "grant")
	}
	if _, err := s.authorizeGrantAdmin(ctx, tenant, g.Resource); err != nil {
		return err
	}
	return s.deleteGrant(ctx, g)
}

// GrantRevokeMatching revokes the grant naming this grantee, resource and permission
// (seed 003's revoke_permission). A missing grant is not an error.
func (s *Service) GrantRevokeMatching(ctx context.Context, tenant string, in GrantInput) error {
	if _, err := s.authorizeGrantAdmin(ctx, tenant, in.Resource); err != nil {
		return err
	}
	col, id, err := in.grantee()
	if err != nil {
		return err
	}
	g, err := scanGrant(s.pool.QueryRow(ctx, `SELECT `+grantColumns+` FROM grants WHERE tenant_id = $1 AND `+col+` = $2
		AND resource = $3 AND permission = $4`, tenant, id, in.Resource, in.Permission))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return db.Translate(err, "grant")
	}
	return s.deleteGrant(ctx, g)
}

func (s *Service) deleteGrant(ctx context.Context, g Grant) error {
	return s.inTx(ctx, "grant", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM grants WHERE id = $1`, g.ID)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		if err := s.notify(ctx, tx, "access:"+g.TenantID); err != nil {
			return err
		}
		grantee := g.UserID
		if grantee == nil {
			grantee = g.APIKeyID
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: g.TenantID, Action: "grant.revoke", ResourceType: "grant", ResourceID: g.ID,
			Details: map[string]any{"grantee": grantee, "resource": g.Resource, "permission": g.Permission}})
	})
}

// CheckResult answers a permission check.
type CheckResult struct {
	Allowed bool   `json:"allowed"`
	Role    Role   `json:"role,omitempty" doc:"The subject's current role in the tenant, if any."`
	Reason  string `json:"reason" doc:"Why: platform_admin, role, grant, default_read, not_member or missing_permission."`
}

// GrantCheck answers whether a user (or one of the tenant's API keys) has perm on resource
// in tenant now. Owners and admins may check anyone; others only themselves.
func (s *Service) GrantCheck(ctx context.Context, tenant string, who GrantInput, resource string, perm Permission) (CheckResult, error) {
	caller := PrincipalFrom(ctx)
	col, id, err := who.grantee()
	if err != nil {
		return CheckResult{}, err
	}
	self := caller != nil && ((col == "user_id" && caller.UserID == id) || (col == "api_key_id" && caller.KeyID == id))
	if self {
		if _, err := s.Access(ctx, tenant); err != nil {
			return CheckResult{}, err
		}
	} else if _, err := s.Authorize(ctx, tenant, ResourceGrants, PermAdmin); err != nil {
		return CheckResult{}, err
	}
	key := tenant + "|" + id
	target := &Principal{UserID: id}
	if col == "api_key_id" {
		key, target = tenant+"|k:"+id, &Principal{KeyID: id, KeyTenant: tenant}
	} else {
		u, err := s.users.get(ctx, id, s.loadUser)
		if err != nil {
			return CheckResult{}, err
		}
		target.PlatformAdmin = u.exists && !u.disabled && u.admin
	}
	st, err := s.access.get(ctx, key, s.loadAccess)
	if err != nil {
		return CheckResult{}, err
	}
	a := &Access{Tenant: tenant, PlatformAdmin: target.PlatformAdmin}
	if st.member && (target.IsKey() || st.active(s.now())) {
		a.Role, a.grants = st.role, st.grants
	}
	res := CheckResult{Role: a.Role, Allowed: a.Can(resource, perm)}
	switch {
	case a.PlatformAdmin:
		res.Reason = "platform_admin"
	case a.Role == "":
		res.Reason = "not_member"
	case a.Role.manages():
		res.Reason = "role"
	case !res.Allowed:
		res.Reason = "missing_permission"
	case a.granted(resource) >= perm:
		res.Reason = "grant"
	default:
		res.Reason = "default_read"
	}
	return res, nil
}

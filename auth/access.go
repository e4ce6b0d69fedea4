package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/problem"
)

// Role is a member's (or API key's) role in a tenant.
type Role string

// Roles, strongest first. Owners and admins may do everything in their tenant (only owners
// may delete it or change owners); members and viewers read every data resource, and
// grants add write or admin on named resources — up to read only, for viewers.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
	RoleViewer Role = "viewer"
)

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool {
	return r == RoleOwner || r == RoleAdmin || r == RoleMember || r == RoleViewer
}

func (r Role) manages() bool { return r == RoleOwner || r == RoleAdmin }

// Permission is a level of access to a resource; each includes the ones below it.
type Permission int

// Permissions. Admin on a resource includes write and read and lets its holder manage that
// resource's grants.
const (
	PermRead Permission = iota + 1
	PermWrite
	PermAdmin
)

// ParsePermission reads "read", "write" or "admin".
func ParsePermission(s string) (Permission, bool) {
	switch s {
	case "read":
		return PermRead, true
	case "write":
		return PermWrite, true
	case "admin":
		return PermAdmin, true
	}
	return 0, false
}

func (p Permission) String() string {
	switch p {
	case PermRead:
		return "read"
	case PermWrite:
		return "write"
	case PermAdmin:
		return "admin"
	}
	return "none"
}

// Tenant-administration resources. Unlike data resources ("collection:notes",
// "queue:emails"), members and viewers do not read them by default, and the "*" grant does
// not cover them: only owners, admins and explicit grants on the exact name do.
const (
	ResourceTenant  = "tenant"   // the tenant's own settings (name)
	ResourceMembers = "members"  // memberships; every member may read them
	ResourceGrants  = "grants"   // grants are managed per resource; see GrantCreate
	ResourceAPIKeys = "api_keys" // the tenant's API keys
	ResourceAudit   = "audit"    // the tenant's audit log
)

func isAdminResource(r string) bool {
	switch r {
	case ResourceTenant, ResourceMembers, ResourceGrants, ResourceAPIKeys, ResourceAudit:
		return true
	}
	return false
}

// Access is what one principal may do in one tenant, resolved once per request.
type Access struct {
	// Tenant is the tenant's id.
	Tenant string
	// Role is the principal's role there; "" for a platform admin who is not a member.
	Role Role
	// PlatformAdmin may do everything everywhere.
	PlatformAdmin bool
	grants        []grantRule
}

type grantRule struct {
	resource string
	perm     Permission
}

// Can reports whether the access allows perm on resource.
func (a *Access) Can(resource string, perm Permission) bool {
	if a.PlatformAdmin || a.Role.manages() {
		return true
	}
	if a.Role == "" {
		return false
	}
	if perm == PermRead && (!isAdminResource(resource) || resource == ResourceMembers) {
		return true
	}
	if a.Role == RoleViewer && perm > PermRead {
		return false
	}
	return a.granted(resource) >= perm
}

// CanAll reports whether the access allows perm on every resource of a type (such as
// "collection"), whatever its name: by role, or by a "type:*" or "*" grant. (Grants only
// add rights, so nothing can take one resource of the type away.)
func (a *Access) CanAll(typ string, perm Permission) bool { return a.Can(typ+":*", perm) }

// granted is the strongest grant covering resource: exact, "type:*", or (for data
// resources) "*".
func (a *Access) granted(resource string) Permission {
	best := Permission(0)
	typ, _, hasType := strings.Cut(resource, ":")
	for _, g := range a.grants {
		covers := g.resource == resource ||
			(hasType && g.resource == typ+":*") ||
			(g.resource == "*" && !isAdminResource(resource))
		if covers && g.perm > best {
			best = g.perm
		}
	}
	return best
}

// accessState is the cached membership (or key) and grants of one principal in one tenant.
type accessState struct {
	member   bool
	role     Role
	startsOn *time.Time
	endsOn   *time.Time
	grants   []grantRule
	tenantOK bool // the tenant exists
}

// active reports whether the membership's date window includes today (UTC).
func (st accessState) active(now time.Time) bool {
	today := now.UTC().Truncate(24 * time.Hour)
	if st.startsOn != nil && today.Before(*st.startsOn) {
		return false
	}
	if st.endsOn != nil && today.After(*st.endsOn) {
		return false
	}
	return true
}

func accessKey(tenant string, p *Principal) string {
	if p.IsKey() {
		return tenant + "|k:" + p.KeyID
	}
	return tenant + "|" + p.UserID
}

func (s *Service) loadAccess(ctx context.Context, key string) (accessState, error) {
	tenant, who, _ := strings.Cut(key, "|")
	var st accessState
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)`, tenant).Scan(&st.tenantOK); err != nil || !st.tenantOK {
		return st, err
	}
	var rows pgx.Rows
	var err error
	if who == "" { // the system principal: no membership, only the tenant's existence
		return st, nil
	}
	if keyID, isKey := strings.CutPrefix(who, "k:"); isKey {
		var role string
		err := s.pool.QueryRow(ctx, `SELECT role FROM api_keys WHERE id = $1 AND tenant_id = $2`, keyID, tenant).Scan(&role)
		if errors.Is(err, pgx.ErrNoRows) {
			return st, nil
		}
		if err != nil {
			return st, err
		}
		st.member, st.role = true, Role(role)
		rows, err = s.pool.Query(ctx, `SELECT resource, permission FROM grants WHERE tenant_id = $1 AND api_key_id = $2`, tenant, keyID)
		if err != nil {
			return st, err
		}
	} else {
		var role string
		err = s.pool.QueryRow(ctx, `SELECT role, starts_on, ends_on FROM memberships WHERE tenant_id = $1 AND user_id = $2`, tenant, who).
			Scan(&role, &st.startsOn, &st.endsOn)
		if errors.Is(err, pgx.ErrNoRows) {
			return st, nil
		}
		if err != nil {
			return st, err
		}
		st.member, st.role = true, Role(role)
		rows, err = s.pool.Query(ctx, `SELECT resource, permission FROM grants WHERE tenant_id = $1 AND user_id = $2`, tenant, who)
		if err != nil {
			return st, err
		}
	}
	st.grants, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (grantRule, error) {
		var g grantRule
		var perm string
		err := r.Scan(&g.resource, &perm)
		g.perm, _ = ParsePermission(perm)
		return g, err
	})
	return st, err
}

// TenantNotFound is the answer for a tenant that does not exist or that the caller is not in:
// the two are indistinguishable, so existence is not leaked.
func TenantNotFound() *problem.Error {
	return problem.NotFound("tenant_not_found", "tenant not found")
}

// Access resolves what the principal in ctx may do in tenant: 401 without a principal, 404
// when the tenant does not exist or the principal has no (current) access to it. A 404
// is audited as a denied request, like Authorize's denials.
func (s *Service) Access(ctx context.Context, tenant string) (*Access, error) {
	a, err := s.accessOf(ctx, tenant)
	if err != nil && problem.HasCode(err, "tenant_not_found") {
		s.auditDenied(ctx, tenant, "tenant", PermRead, "not a member")
	}
	return a, err
}

// AccessRecheck is Access without auditing, for re-checking the access of a request
// already admitted (a long-lived stream): losing access midway ends the stream but is not
// a refused request.
func (s *Service) AccessRecheck(ctx context.Context, tenant string) (*Access, error) {
	return s.accessOf(ctx, tenant)
}

// accessOf is Access without auditing.
func (s *Service) accessOf(ctx context.Context, tenant string) (*Access, error) {
	p := PrincipalFrom(ctx)
	if p == nil {
		return nil, ErrNoCredentials
	}
	if _, err := uuid.Parse(tenant); err != nil {
		return nil, TenantNotFound()
	}
	if p.IsKey() && p.KeyTenant != tenant {
		return nil, TenantNotFound()
	}
	st, err := s.access.get(ctx, accessKey(tenant, p), s.loadAccess)
	if err != nil {
		return nil, err
	}
	if !st.tenantOK {
		return nil, TenantNotFound()
	}
	a := &Access{Tenant: tenant, PlatformAdmin: p.PlatformAdmin}
	if st.member && (p.IsKey() || st.active(s.now())) {
		a.Role, a.grants = st.role, st.grants
	}
	if a.Role == "" && !a.PlatformAdmin {
		return nil, TenantNotFound()
	}
	return a, nil
}

// Authorize is the one authorization check every module makes: may the principal in ctx
// have perm on resource in tenant? It answers 401 without a principal, 404 when the tenant
// is not the principal's, 403 when the principal lacks the right. Denials are audited.
func (s *Service) Authorize(ctx context.Context, tenant, resource string, perm Permission) (*Access, error) {
	a, err := s.accessOf(ctx, tenant)
	if err != nil {
		if problem.HasCode(err, "tenant_not_found") {
			s.auditDenied(ctx, tenant, resource, perm, "not a member")
		}
		return nil, err
	}
	if !a.Can(resource, perm) {
		s.auditDenied(ctx, tenant, resource, perm, "missing permission")
		return nil, problem.Forbidden("forbidden", "%s permission on %s is required", perm, resource)
	}
	return a, nil
}

// Deny returns a 403 for something Can does not express (such as an owner-only action)
// and audits it.
func (s *Service) Deny(ctx context.Context, tenant, resource, format string, args ...any) error {
	s.auditDenied(ctx, tenant, resource, PermAdmin, "owner only")
	return problem.Forbidden("forbidden", format, args...)
}

// auditDenied records a refused request on the tenant's chain when the tenant exists,
// otherwise on the platform's.
func (s *Service) auditDenied(ctx context.Context, tenant, resource string, perm Permission, reason string) {
	chain := ""
	if _, err := uuid.Parse(tenant); err == nil {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)`, tenant).Scan(&exists); err == nil && exists {
			chain = tenant
		}
	}
	err := s.audit.Record(ctx, audit.Entry{Tenant: chain, Action: "access.denied", ResourceType: "resource", ResourceID: resource,
		Details: map[string]any{"tenant": tenant, "permission": perm.String(), "reason": reason}})
	if err != nil {
		s.log.Warn("recording a denied request", "err", err)
	}
}

// RequirePlatformAdmin answers 401 without a principal and 403 (audited) unless the
// principal is a platform administrator.
func (s *Service) RequirePlatformAdmin(ctx context.Context, resource string) error {
	p := PrincipalFrom(ctx)
	if p == nil {
		return ErrNoCredentials
	}
	if !p.PlatformAdmin {
		s.auditDenied(ctx, "", resource, PermAdmin, "platform admin only")
		return problem.Forbidden("forbidden", "only a platform administrator may do this")
	}
	return nil
}

package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Tenant is a wall around data: an organization, a house, a workspace.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Role is the caller's role in the tenant, when the caller is a member.
	Role Role `json:"role,omitempty"`
}

func checkTenantName(name string) error {
	if strings.TrimSpace(name) == "" || len(name) > 200 {
		return problem.Unprocessable("invalid_name", "a tenant name is 1 to 200 characters, not only spaces").WithField("body.name", "invalid")
	}
	return nil
}

// TenantCreate creates a tenant whose owner is the user in ctx.
func (s *Service) TenantCreate(ctx context.Context, name string) (Tenant, error) {
	p := PrincipalFrom(ctx)
	if p == nil {
		return Tenant{}, ErrNoCredentials
	}
	if p.IsKey() {
		return Tenant{}, s.Deny(ctx, "", "tenants", "API keys act within their tenant and cannot create tenants")
	}
	if p.UserID == "" {
		return Tenant{}, problem.Forbidden("forbidden", "a tenant needs a user as its owner; create it as a user")
	}
	if err := checkTenantName(name); err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: uuid.Must(uuid.NewV7()).String(), Name: name, Role: RoleOwner}
	err := s.inTx(ctx, "tenant", func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO tenants (id, name, created_by) VALUES ($1, $2, $3) RETURNING created_at, updated_at`,
			t.ID, name, p.UserID).Scan(&t.CreatedAt, &t.UpdatedAt); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')`, t.ID, p.UserID); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: "tenant.create", ResourceType: "tenant", ResourceID: t.ID,
			Details: map[string]any{"name": name}}); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: t.ID, Action: "tenant.create", ResourceType: "tenant", ResourceID: t.ID,
			Details: map[string]any{"name": name}})
	})
	return t, err
}

// TenantList lists the tenants the principal in ctx has current access to, with its role
// in each; platform administrators see every tenant.
func (s *Service) TenantList(ctx context.Context) ([]Tenant, error) {
	p := PrincipalFrom(ctx)
	if p == nil {
		return nil, ErrNoCredentials
	}
	today := s.now().UTC().Format(time.DateOnly)
	var rows pgx.Rows
	var err error
	switch {
	case p.IsKey():
		rows, err = s.pool.Query(ctx, `SELECT t.id, t.name, t.created_at, t.updated_at, k.role FROM tenants t
			JOIN api_keys k ON k.tenant_id = t.id WHERE k.id = $1`, p.KeyID)
	case p.PlatformAdmin:
		rows, err = s.pool.Query(ctx, `SELECT t.id, t.name, t.created_at, t.updated_at, COALESCE(m.role, '') FROM tenants t
			LEFT JOIN memberships m ON m.tenant_id = t.id AND m.user_id = $1
				AND (m.starts_on IS NULL OR m.starts_on <= $2::date) AND (m.ends_on IS NULL OR m.ends_on >= $2::date)
			ORDER BY t.name, t.id`, p.userID(), today)
	default:
		rows, err = s.pool.Query(ctx, `SELECT t.id, t.name, t.created_at, t.updated_at, m.role FROM tenants t
			JOIN memberships m ON m.tenant_id = t.id WHERE m.user_id = $1
				AND (m.starts_on IS NULL OR m.starts_on <= $2::date) AND (m.ends_on IS NULL OR m.ends_on >= $2::date)
			ORDER BY t.name, t.id`, p.UserID, today)
	}
	if err != nil {
		return nil, db.Translate(err, "tenants")
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) {
		var t Tenant
		err := r.Scan(&t.ID, &t.Name, &t.CreatedAt, &t.UpdatedAt, &t.Role)
		return t, err
	})
	return ts, db.Translate(err, "tenants")
}

// TenantGet returns a tenant the caller has access to.
func (s *Service) TenantGet(ctx context.Context, id string) (Tenant, error) {
	a, err := s.Authorize(ctx, id, ResourceMembers, PermRead)
	if err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: id, Role: a.Role}
	err = s.pool.QueryRow(ctx, `SELECT name, created_at, updated_at FROM tenants WHERE id = $1`, id).Scan(&t.Name, &t.CreatedAt, &t.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, TenantNotFound()
	}
	return t, db.Translate(err, "tenant")
}

// TenantRename renames a tenant (owners and admins).
func (s *Service) TenantRename(ctx context.Context, id, name string) (Tenant, error) {
	a, err := s.Authorize(ctx, id, ResourceTenant, PermWrite)
	if err != nil {
		return Tenant{}, err
	}
	if err := checkTenantName(name); err != nil {
		return Tenant{}, err
	}
	t := Tenant{ID: id, Name: name, Role: a.Role}
	err = s.inTx(ctx, "tenant", func(tx pgx.Tx) error {
		var old string
		if err := tx.QueryRow(ctx, `SELECT name FROM tenants WHERE id = $1 FOR UPDATE`, id).Scan(&old); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `UPDATE tenants SET name = $2, updated_at = now() WHERE id = $1 RETURNING created_at, updated_at`,
			id, name).Scan(&t.CreatedAt, &t.UpdatedAt); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: id, Action: "tenant.rename", ResourceType: "tenant", ResourceID: id,
			Details: map[string]any{"from": old, "to": name}})
	})
	return t, err
}

// TenantDeleteHooks run inside the deleting transaction, before the tenant row goes, for
// modules whose data needs more than ON DELETE CASCADE (files in a store, derived indexes).
var tenantDeleteHooks []func(ctx context.Context, tx pgx.Tx, tenant string) error

// OnTenantDelete registers fn to run inside every tenant deletion's transaction.
func OnTenantDelete(fn func(ctx context.Context, tx pgx.Tx, tenant string) error) {
	tenantDeleteHooks = append(tenantDeleteHooks, fn)
}

// TenantDelete deletes a tenant and everything in it (owners, and platform admins). Its
// audit chain goes with it; the deletion is recorded on the platform chain.
func (s *Service) TenantDelete(ctx context.Context, id string) error {
	a, err := s.Authorize(ctx, id, ResourceTenant, PermAdmin)
	if err != nil {
		return err
	}
	if a.Role != RoleOwner && !a.PlatformAdmin {
		return s.Deny(ctx, id, ResourceTenant, "only an owner may delete the tenant")
	}
	return s.inTx(ctx, "tenant", func(tx pgx.Tx) error {
		var name string
		if err := tx.QueryRow(ctx, `SELECT name FROM tenants WHERE id = $1 FOR UPDATE`, id).Scan(&name); err != nil {
			return err
		}
		for _, hook := range tenantDeleteHooks {
			if err := hook(ctx, tx, id); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, id); err != nil {
			return err
		}
		if err := audit.DeleteChain(ctx, tx, id); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, "access:"+id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: "tenant.delete", ResourceType: "tenant", ResourceID: id,
			Details: map[string]any{"name": name}})
	})
}

// Membership is a user's role in a tenant, possibly limited to a date window.
type Membership struct {
	TenantID string `json:"tenant_id"`
	UserID   string `json:"user_id"`
	Username string `json:"username"`
	Role     Role   `json:"role" enum:"owner,admin,member,viewer"`
	// StartsOn and EndsOn bound access (UTC dates, inclusive); absent means open.
	StartsOn *Date     `json:"starts_on,omitempty" format:"date"`
	EndsOn   *Date     `json:"ends_on,omitempty" format:"date"`
	Active   bool      `json:"active" doc:"Whether today falls within the membership's dates."`
	Created  time.Time `json:"created_at"`
	Updated  time.Time `json:"updated_at"`
}

// MembershipInput sets a membership's role and dates.
type MembershipInput struct {
	Role     Role  `json:"role" enum:"owner,admin,member,viewer"`
	StartsOn *Date `json:"starts_on,omitempty" format:"date" doc:"First day of access (UTC), inclusive; absent: open."`
	EndsOn   *Date `json:"ends_on,omitempty" format:"date" doc:"Last day of access (UTC), inclusive; absent: open."`
}

// window parses and checks the input, returning its dates.
func (in MembershipInput) window() (starts, ends *time.Time, err error) {
	if !in.Role.Valid() {
		return nil, nil, problem.Unprocessable("invalid_role", "role must be owner, admin, member or viewer").WithField("body.role", "invalid")
	}
	if starts, err = in.StartsOn.parse("starts_on"); err != nil {
		return nil, nil, err
	}
	if ends, err = in.EndsOn.parse("ends_on"); err != nil {
		return nil, nil, err
	}
	if starts != nil && ends != nil && ends.Before(*starts) {
		return nil, nil, problem.Unprocessable("invalid_dates", "ends_on is before starts_on").WithField("body.ends_on", "before starts_on")
	}
	return starts, ends, nil
}

const membershipColumns = `m.tenant_id, m.user_id, u.username, m.role, m.starts_on, m.ends_on, m.created_at, m.updated_at`

func (s *Service) scanMembership(row pgx.Row) (Membership, error) {
	var m Membership
	var starts, ends *time.Time
	err := row.Scan(&m.TenantID, &m.UserID, &m.Username, &m.Role, &starts, &ends, &m.Created, &m.Updated)
	m.StartsOn, m.EndsOn = dateOrNil(starts), dateOrNil(ends)
	m.Active = accessState{startsOn: starts, endsOn: ends}.active(s.now())
	return m, err
}

// MemberList lists a tenant's memberships (any member may).
func (s *Service) MemberList(ctx context.Context, tenant string) ([]Membership, error) {
	if _, err := s.Authorize(ctx, tenant, ResourceMembers, PermRead); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+membershipColumns+` FROM memberships m JOIN users u ON u.id = m.user_id
		WHERE m.tenant_id = $1 ORDER BY lower(u.username)`, tenant)
	if err != nil {
		return nil, db.Translate(err, "members")
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Membership, error) { return s.scanMembership(r) })
	return ms, db.Translate(err, "members")
}

// MemberAdd adds a user to a tenant; 409 already_member if they are in it.
func (s *Service) MemberAdd(ctx context.Context, tenant, userID string, in MembershipInput) (Membership, error) {
	return s.memberWrite(ctx, tenant, userID, in, true)
}

// MemberPut adds a user to a tenant or changes their membership (owners and admins; only
// owners may make owners or change an owner's membership). The last current owner cannot
// be demoted or given an end date in the past.
func (s *Service) MemberPut(ctx context.Context, tenant, userID string, in MembershipInput) (Membership, error) {
	return s.memberWrite(ctx, tenant, userID, in, false)
}

func (s *Service) memberWrite(ctx context.Context, tenant, userID string, in MembershipInput, addOnly bool) (Membership, error) {
	a, err := s.Authorize(ctx, tenant, ResourceMembers, PermWrite)
	if err != nil {
		return Membership{}, err
	}
	starts, ends, err := in.window()
	if err != nil {
		return Membership{}, err
	}
	if _, err := uuid.Parse(userID); err != nil {
		return Membership{}, userNotFound()
	}
	var m Membership
	err = s.inTx(ctx, "membership", func(tx pgx.Tx) error {
		// One membership change at a time per tenant, so two owners cannot demote each other.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE`, tenant); err != nil {
			return err
		}
		var current *string
		err := tx.QueryRow(ctx, `SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2`, tenant, userID).Scan(&current)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if addOnly && current != nil {
			return problem.Conflict("already_member", "the user is already a member; change the membership with PUT")
		}
		touchesOwner := in.Role == RoleOwner || (current != nil && Role(*current) == RoleOwner)
		if touchesOwner && a.Role != RoleOwner && !a.PlatformAdmin {
			return s.Deny(ctx, tenant, ResourceMembers, "only an owner may make owners or change an owner's membership")
		}
		ended := ends != nil && ends.Before(s.now().UTC().Truncate(24*time.Hour))
		if current != nil && Role(*current) == RoleOwner && (in.Role != RoleOwner || ended) {
			if err := s.lastOwnerCheck(ctx, tx, tenant, userID); err != nil {
				return err
			}
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)`, userID).Scan(&exists); err != nil || !exists {
			if err == nil {
				err = userNotFound()
			}
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO memberships (tenant_id, user_id, role, starts_on, ends_on) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (tenant_id, user_id) DO UPDATE SET role = EXCLUDED.role, starts_on = EXCLUDED.starts_on,
				ends_on = EXCLUDED.ends_on, updated_at = now()`, tenant, userID, in.Role, starts, ends); err != nil {
			return err
		}
		m, err = s.scanMembership(tx.QueryRow(ctx, `SELECT `+membershipColumns+` FROM memberships m JOIN users u ON u.id = m.user_id
			WHERE m.tenant_id = $1 AND m.user_id = $2`, tenant, userID))
		if err != nil {
			return err
		}
		if err := s.notify(ctx, tx, "access:"+tenant); err != nil {
			return err
		}
		action := "member.update"
		if current == nil {
			action = "member.add"
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: action, ResourceType: "member", ResourceID: userID,
			Details: map[string]any{"username": m.Username, "role": in.Role, "starts_on": in.StartsOn, "ends_on": in.EndsOn}})
	})
	return m, err
}

// lastOwnerCheck refuses a change that would leave the tenant without an owner whose
// membership has not ended.
func (s *Service) lastOwnerCheck(ctx context.Context, tx pgx.Tx, tenant, exceptUser string) error {
	var others int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM memberships WHERE tenant_id = $1 AND role = 'owner' AND user_id <> $2
		AND (ends_on IS NULL OR ends_on >= $3::date)`, tenant, exceptUser, s.now().UTC().Format(time.DateOnly)).Scan(&others)
	if err != nil {
		return err
	}
	if others == 0 {
		return problem.Conflict("last_owner", "this is the tenant's last owner; make another owner first")
	}
	return nil
}

// MemberRemove removes a user from a tenant: owners and admins may remove others (only
// owners remove owners); anyone may leave. The last owner cannot be removed.
func (s *Service) MemberRemove(ctx context.Context, tenant, userID string) error {
	p := PrincipalFrom(ctx)
	self := p != nil && !p.IsKey() && p.UserID == userID
	perm := PermWrite
	if self {
		perm = PermRead
	}
	a, err := s.Authorize(ctx, tenant, ResourceMembers, perm)
	if err != nil {
		return err
	}
	if _, err := uuid.Parse(userID); err != nil {
		return problem.NotFound("member_not_found", "member not found")
	}
	return s.inTx(ctx, "membership", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE`, tenant); err != nil {
			return err
		}
		var role Role
		err := tx.QueryRow(ctx, `SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2`, tenant, userID).Scan(&role)
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.NotFound("member_not_found", "member not found")
		}
		if err != nil {
			return err
		}
		if role == RoleOwner {
			if !self && a.Role != RoleOwner && !a.PlatformAdmin {
				return s.Deny(ctx, tenant, ResourceMembers, "only an owner may remove an owner")
			}
			if err := s.lastOwnerCheck(ctx, tx, tenant, userID); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`, tenant, userID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM grants WHERE tenant_id = $1 AND user_id = $2`, tenant, userID); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, "access:"+tenant); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "member.remove", ResourceType: "member", ResourceID: userID,
			Details: map[string]any{"role": role, "self": self}})
	})
}

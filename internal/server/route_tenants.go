package server

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
)

// TenantPath is embedded by every tenant-scoped operation's input.
type TenantPath struct {
	Tenant string `path:"tenant" doc:"Tenant id. A tenant the caller is not in answers 404, like one that does not exist."`
}

type tenantOut struct{ Body auth.Tenant }

type tenantNameIn struct {
	Body struct {
		Name string `json:"name" minLength:"1" maxLength:"200"`
	}
}

type tenantRenameIn struct {
	TenantPath
	Body struct {
		Name string `json:"name" minLength:"1" maxLength:"200"`
	}
}

type tenantListOut struct {
	Body struct {
		Items []auth.Tenant `json:"items"`
	}
}

type MemberPath struct {
	TenantPath
	User string `path:"user" doc:"User id."`
}

type memberAddIn struct {
	TenantPath
	Body struct {
		UserID   string     `json:"user_id,omitempty" doc:"The user to add; or give username."`
		Username string     `json:"username,omitempty" maxLength:"64"`
		Role     auth.Role  `json:"role" enum:"owner,admin,member,viewer"`
		StartsOn *auth.Date `json:"starts_on,omitempty" format:"date"`
		EndsOn   *auth.Date `json:"ends_on,omitempty" format:"date"`
	}
}

type memberPutIn struct {
	MemberPath
	Body auth.MembershipInput
}

type memberOut struct{ Body auth.Membership }

type memberListOut struct {
	Body struct {
		Items []auth.Membership `json:"items"`
	}
}

func (s *Server) routesTenants() {
	tags := []string{"Tenants"}
	a := s.deps.Auth
	huma.Register(s.api, huma.Operation{
		OperationID: "tenant-create", Method: http.MethodPost, Path: "/v1/tenants", Tags: tags,
		Summary: "Create a tenant; you become its owner", Security: signedIn, DefaultStatus: http.StatusCreated,
		Errors: []int{401, 403, 422},
	}, func(ctx context.Context, in *tenantNameIn) (*tenantOut, error) {
		t, err := a.TenantCreate(ctx, in.Body.Name)
		return &tenantOut{Body: t}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "tenant-list", Method: http.MethodGet, Path: "/v1/tenants", Tags: tags,
		Summary:     "List your tenants",
		Description: "The tenants you have access to today, with your role in each. Platform admins see every tenant.",
		Security:    signedIn, Errors: []int{401},
	}, func(ctx context.Context, _ *struct{}) (*tenantListOut, error) {
		ts, err := a.TenantList(ctx)
		out := &tenantListOut{}
		out.Body.Items = ts
		if out.Body.Items == nil {
			out.Body.Items = []auth.Tenant{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "tenant-get", Method: http.MethodGet, Path: "/v1/t/{tenant}", Tags: tags,
		Summary: "Get a tenant", Security: signedIn, Errors: []int{401, 404},
	}, func(ctx context.Context, in *TenantPath) (*tenantOut, error) {
		t, err := a.TenantGet(ctx, in.Tenant)
		return &tenantOut{Body: t}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "tenant-rename", Method: http.MethodPatch, Path: "/v1/t/{tenant}", Tags: tags,
		Summary: "Rename a tenant (owners and admins)", Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *tenantRenameIn) (*tenantOut, error) {
		t, err := a.TenantRename(ctx, in.Tenant, in.Body.Name)
		return &tenantOut{Body: t}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "tenant-delete", Method: http.MethodDelete, Path: "/v1/t/{tenant}", Tags: tags,
		Summary: "Delete a tenant and everything in it (owners)", Security: signedIn,
		DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*struct{}, error) {
		return nil, a.TenantDelete(ctx, in.Tenant)
	})

	mtags := []string{"Members"}
	huma.Register(s.api, huma.Operation{
		OperationID: "member-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/members", Tags: mtags,
		Summary: "List members (any member)", Security: signedIn, Errors: []int{401, 404},
	}, func(ctx context.Context, in *TenantPath) (*memberListOut, error) {
		ms, err := a.MemberList(ctx, in.Tenant)
		out := &memberListOut{}
		out.Body.Items = ms
		if out.Body.Items == nil {
			out.Body.Items = []auth.Membership{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "member-add", Method: http.MethodPost, Path: "/v1/t/{tenant}/members", Tags: mtags,
		Summary:     "Add a member (owners and admins; only owners add owners)",
		Description: "starts_on and ends_on (UTC dates, inclusive) limit when the membership gives access.",
		Security:    signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *memberAddIn) (*memberOut, error) {
		if _, err := a.Authorize(ctx, in.Tenant, auth.ResourceMembers, auth.PermWrite); err != nil {
			return nil, err
		}
		userID := in.Body.UserID
		switch {
		case (userID == "") == (in.Body.Username == ""):
			return nil, problem.Unprocessable("invalid_member", "give exactly one of user_id and username")
		case userID == "":
			u, err := a.UserByName(ctx, in.Body.Username)
			if err != nil {
				return nil, err
			}
			userID = u.ID
		}
		m, err := a.MemberAdd(ctx, in.Tenant, userID, auth.MembershipInput{Role: in.Body.Role, StartsOn: in.Body.StartsOn, EndsOn: in.Body.EndsOn})
		return &memberOut{Body: m}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "member-put", Method: http.MethodPut, Path: "/v1/t/{tenant}/members/{user}", Tags: mtags,
		Summary:     "Set a member's role and dates (owners and admins; only owners change owners)",
		Description: "Creates the membership if needed. The tenant's last owner cannot be demoted or given an end date in the past (409 last_owner).",
		Security:    signedIn, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *memberPutIn) (*memberOut, error) {
		m, err := a.MemberPut(ctx, in.Tenant, in.User, in.Body)
		return &memberOut{Body: m}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "member-remove", Method: http.MethodDelete, Path: "/v1/t/{tenant}/members/{user}", Tags: mtags,
		Summary:     "Remove a member, or leave",
		Description: "Owners and admins remove others (only owners remove owners); anyone may remove themselves. The last owner cannot be removed.",
		Security:    signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 409},
	}, func(ctx context.Context, in *MemberPath) (*struct{}, error) {
		return nil, a.MemberRemove(ctx, in.Tenant, in.User)
	})
}

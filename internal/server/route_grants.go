package server

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
)

type grantCreateIn struct {
	TenantPath
	Body auth.GrantInput
}

type grantOut struct {
	Status int
	Body   auth.Grant
}

type grantListIn struct {
	TenantPath
	UserID   string `query:"user_id" doc:"Only this user's grants."`
	APIKeyID string `query:"api_key_id" doc:"Only this API key's grants."`
	Resource string `query:"resource" maxLength:"300" doc:"Only grants on this resource (required unless you are an owner or admin)."`
}

type grantListOut struct {
	Body struct {
		Items []auth.Grant `json:"items"`
	}
}

type grantIDIn struct {
	TenantPath
	Grant string `path:"grant" doc:"Grant id."`
}

type grantRevokeIn struct {
	TenantPath
	UserID     string `query:"user_id"`
	APIKeyID   string `query:"api_key_id"`
	Resource   string `query:"resource" required:"true" minLength:"1" maxLength:"300"`
	Permission string `query:"permission" required:"true" enum:"read,write,admin"`
}

type grantCheckIn struct {
	TenantPath
	User       string `query:"user" doc:"The user to check."`
	APIKey     string `query:"api_key" doc:"Or the API key to check."`
	Resource   string `query:"resource" required:"true" minLength:"1" maxLength:"300" example:"collection:notes"`
	Permission string `query:"permission" required:"true" enum:"read,write,admin"`
}

type grantCheckOut struct{ Body auth.CheckResult }

type apiKeyCreateIn struct {
	TenantPath
	Body auth.APIKeyInput
}

type apiKeyCreated struct {
	Body struct {
		APIKey auth.APIKey `json:"api_key"`
		Key    string      `json:"key" doc:"The key itself, shown only now: send it as Authorization: Bearer <key>."`
	}
}

type apiKeyListOut struct {
	Body struct {
		Items []auth.APIKey `json:"items"`
	}
}

type apiKeyIn struct {
	TenantPath
	Key string `path:"key" doc:"API key id."`
}

func (s *Server) routesGrants() {
	tags := []string{"Permissions"}
	a := s.deps.Auth
	huma.Register(s.api, huma.Operation{
		OperationID: "grant-create", Method: http.MethodPost, Path: "/v1/t/{tenant}/grants", Tags: tags,
		Summary: "Grant a permission on a resource",
		Description: "Owners and admins grant anything; a holder of `admin` on a resource grants on that resource. " +
			"Resources are `type:name` (collection:notes, queue:emails), `type:*`, or `*` (every data resource). " +
			"201 when created, 200 when the grant already existed.",
		Security: signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *grantCreateIn) (*grantOut, error) {
		g, created, err := a.GrantCreate(ctx, in.Tenant, in.Body)
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		return &grantOut{Status: status, Body: g}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "grant-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/grants", Tags: tags,
		Summary: "List grants", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *grantListIn) (*grantListOut, error) {
		gs, err := a.GrantList(ctx, in.Tenant, auth.GrantFilter{UserID: in.UserID, APIKeyID: in.APIKeyID, Resource: in.Resource})
		out := &grantListOut{}
		out.Body.Items = gs
		if out.Body.Items == nil {
			out.Body.Items = []auth.Grant{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "grant-revoke", Method: http.MethodDelete, Path: "/v1/t/{tenant}/grants/{grant}", Tags: tags,
		Summary: "Revoke a grant by id", Security: signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *grantIDIn) (*struct{}, error) {
		return nil, a.GrantRevoke(ctx, in.Tenant, in.Grant)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "grant-revoke-matching", Method: http.MethodDelete, Path: "/v1/t/{tenant}/grants", Tags: tags,
		Summary:     "Revoke the grant of a permission on a resource for a user or key",
		Description: "Succeeds (204) whether or not such a grant existed.",
		Security:    signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *grantRevokeIn) (*struct{}, error) {
		return nil, a.GrantRevokeMatching(ctx, in.Tenant, auth.GrantInput{UserID: in.UserID, APIKeyID: in.APIKeyID,
			Resource: in.Resource, Permission: in.Permission})
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "grant-check", Method: http.MethodGet, Path: "/v1/t/{tenant}/grants/check", Tags: tags,
		Summary:     "Does a user (or key) have a permission on a resource now?",
		Description: "Owners and admins may check anyone; others only themselves.",
		Security:    signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *grantCheckIn) (*grantCheckOut, error) {
		perm, ok := auth.ParsePermission(in.Permission)
		if !ok {
			return nil, problem.Unprocessable("invalid_permission", "permission must be read, write or admin")
		}
		res, err := a.GrantCheck(ctx, in.Tenant, auth.GrantInput{UserID: in.User, APIKeyID: in.APIKey}, in.Resource, perm)
		return &grantCheckOut{Body: res}, err
	})

	ktags := []string{"API keys"}
	huma.Register(s.api, huma.Operation{
		OperationID: "api-key-create", Method: http.MethodPost, Path: "/v1/t/{tenant}/api-keys", Tags: ktags,
		Summary:     "Create an API key (owners and admins)",
		Description: "The answer holds the key itself, shown this once; only its hash is kept.",
		Security:    signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *apiKeyCreateIn) (*apiKeyCreated, error) {
		k, secret, err := a.APIKeyCreate(ctx, in.Tenant, in.Body)
		out := &apiKeyCreated{}
		out.Body.APIKey, out.Body.Key = k, secret
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "api-key-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/api-keys", Tags: ktags,
		Summary: "List API keys: prefix, name, role, created, last used (owners and admins)", Security: signedIn,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*apiKeyListOut, error) {
		ks, err := a.APIKeyList(ctx, in.Tenant)
		out := &apiKeyListOut{}
		out.Body.Items = ks
		if out.Body.Items == nil {
			out.Body.Items = []auth.APIKey{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "api-key-revoke", Method: http.MethodDelete, Path: "/v1/t/{tenant}/api-keys/{key}", Tags: ktags,
		Summary: "Revoke an API key at once (owners and admins)", Security: signedIn, DefaultStatus: http.StatusNoContent,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *apiKeyIn) (*struct{}, error) {
		return nil, a.APIKeyRevoke(ctx, in.Tenant, in.Key)
	})
}

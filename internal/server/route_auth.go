package server

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
)

type tokenIn struct {
	Body struct {
		Username string `json:"username" minLength:"1" maxLength:"64"`
		Password string `json:"password" minLength:"1" maxLength:"1024"`
	}
}

type tokensOut struct {
	CacheControl string `header:"Cache-Control"`
	Body         *auth.Tokens
}

type refreshIn struct {
	Body struct {
		RefreshToken string `json:"refresh_token" minLength:"1" maxLength:"200"`
	}
}

type logoutIn struct {
	Body *struct {
		RefreshToken string `json:"refresh_token,omitempty" maxLength:"200" doc:"Ends this token's session; without it, the session of the bearer token used."`
	}
}

// whoami describes the caller.
type whoami struct {
	Method  string        `json:"method,omitempty" doc:"bearer, basic or api_key; absent for anonymous callers."`
	User    *auth.User    `json:"user,omitempty"`
	APIKey  *keyIdentity  `json:"api_key,omitempty"`
	Tenants []auth.Tenant `json:"tenants,omitempty" doc:"The tenants the caller has access to now, with its role in each."`
}

type keyIdentity struct {
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Tenant string    `json:"tenant_id"`
	Role   auth.Role `json:"role"`
}

type whoamiOut struct{ Body whoami }

type passwordChangeIn struct {
	Body struct {
		CurrentPassword string `json:"current_password" minLength:"1" maxLength:"1024"`
		NewPassword     string `json:"new_password" minLength:"1" maxLength:"1024"`
	}
}

func (s *Server) routesAuth() {
	tags := []string{"Authentication"}
	huma.Register(s.api, huma.Operation{
		OperationID: "auth-token", Method: http.MethodPost, Path: "/v1/auth/token", Tags: tags,
		Summary: "Sign in with a username and password",
		Description: "Returns a short-lived access token (a JWT to send as `Authorization: Bearer …`) and a refresh token. " +
			"Unknown usernames and wrong passwords answer alike (401 `invalid_credentials`); attempts are rate-limited " +
			"per username and per client address (429 with Retry-After).",
		Errors: []int{401, 429},
	}, func(ctx context.Context, in *tokenIn) (*tokensOut, error) {
		t, err := s.deps.Auth.SignIn(ctx, in.Body.Username, in.Body.Password, audit.RequestFrom(ctx).IP)
		if err != nil {
			return nil, err
		}
		return &tokensOut{CacheControl: "no-store", Body: t}, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "auth-refresh", Method: http.MethodPost, Path: "/v1/auth/refresh", Tags: tags,
		Summary: "Trade a refresh token for new tokens",
		Description: "Each refresh token works once. Presenting one that was already used ends its whole session " +
			"(401 `refresh_token_reused`), since it must have been copied.",
		Errors: []int{401},
	}, func(ctx context.Context, in *refreshIn) (*tokensOut, error) {
		t, err := s.deps.Auth.Refresh(ctx, in.Body.RefreshToken)
		if err != nil {
			return nil, err
		}
		return &tokensOut{CacheControl: "no-store", Body: t}, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "auth-logout", Method: http.MethodPost, Path: "/v1/auth/logout", Tags: tags,
		Summary:       "End a session",
		Description:   "Ends the session of the given refresh token, or of the bearer token used. Its access tokens stop working at once.",
		Security:      optionalAuth,
		DefaultStatus: http.StatusNoContent,
		Errors:        []int{400, 401},
	}, func(ctx context.Context, in *logoutIn) (*struct{}, error) {
		sessionID := ""
		if in.Body != nil && in.Body.RefreshToken != "" {
			id, err := s.deps.Auth.SessionOfRefresh(ctx, in.Body.RefreshToken)
			if err != nil {
				return nil, err
			}
			sessionID = id
		} else if p := principal(ctx); p != nil && p.SessionID != "" {
			sessionID = p.SessionID
		}
		if sessionID == "" {
			return nil, problem.Invalid("no_session", "give a refresh_token, or call with the bearer token of the session to end")
		}
		return nil, s.deps.Auth.SignOut(ctx, sessionID)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "ping", Method: http.MethodGet, Path: "/v1/ping", Tags: tags,
		Summary:     "Check credentials (a no-op)",
		Description: "Answers who the caller is. Anonymous callers are welcome; credentials, when sent, must be valid.",
		Security:    optionalAuth,
	}, func(ctx context.Context, _ *struct{}) (*whoamiOut, error) {
		out := &whoamiOut{}
		if p := principal(ctx); p != nil {
			out.Body = identity(p)
		}
		return out, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "me", Method: http.MethodGet, Path: "/v1/me", Tags: tags,
		Summary:  "The signed-in user (or API key) and its tenants",
		Security: signedIn,
	}, func(ctx context.Context, _ *struct{}) (*whoamiOut, error) {
		p := principal(ctx)
		out := &whoamiOut{Body: identity(p)}
		if !p.IsKey() {
			u, err := s.deps.Auth.UserGet(ctx, p.UserID)
			if err != nil {
				return nil, err
			}
			out.Body.User = &u
		}
		ts, err := s.deps.Auth.TenantList(ctx)
		if err != nil {
			return nil, err
		}
		out.Body.Tenants = ts
		return out, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "me-password", Method: http.MethodPost, Path: "/v1/me/password", Tags: tags,
		Summary:       "Change your own password",
		Description:   "Every session of the user ends and every cached credential stops working, on every node, at once.",
		Security:      signedIn,
		DefaultStatus: http.StatusNoContent,
		Errors:        []int{403, 422},
	}, func(ctx context.Context, in *passwordChangeIn) (*struct{}, error) {
		p := principal(ctx)
		if p.IsKey() {
			return nil, problem.Forbidden("forbidden", "API keys have no password")
		}
		return nil, s.deps.Auth.PasswordChange(ctx, p.UserID, in.Body.CurrentPassword, in.Body.NewPassword, audit.RequestFrom(ctx).IP)
	})
}

func identity(p *auth.Principal) whoami {
	w := whoami{Method: string(p.Method)}
	if p.IsKey() {
		w.APIKey = &keyIdentity{ID: p.KeyID, Name: p.KeyName, Tenant: p.KeyTenant, Role: p.KeyRole}
	} else {
		w.User = &auth.User{ID: p.UserID, Username: p.Username, IsAdmin: p.PlatformAdmin}
	}
	return w
}

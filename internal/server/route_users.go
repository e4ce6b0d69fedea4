package server

import (
	"context"
	"encoding/base64"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
)

type UserPath struct {
	User string `path:"user" doc:"User id."`
}

type userOut struct{ Body auth.User }

type userCreateIn struct{ Body auth.UserInput }

type userUpdateIn struct {
	UserPath
	Body auth.UserUpdate
}

type userPasswordIn struct {
	UserPath
	Body struct {
		Password string `json:"password" minLength:"1" maxLength:"1024"`
	}
}

type PageQuery struct {
	Limit  int    `query:"limit" minimum:"1" maximum:"1000" default:"50" doc:"Page size."`
	Cursor string `query:"cursor" maxLength:"500" doc:"next_cursor of the previous page."`
}

type userListIn struct {
	PageQuery
	Username string `query:"username" maxLength:"64" doc:"Only the user with this username (any case)."`
}

type userListOut struct {
	Body struct {
		Items      []auth.User `json:"items"`
		NextCursor string      `json:"next_cursor,omitempty"`
	}
}

func (s *Server) routesUsers() {
	tags := []string{"Users"}
	adminOnly := func(ctx context.Context) error { return s.deps.Auth.RequirePlatformAdmin(ctx, "users") }
	huma.Register(s.api, huma.Operation{
		OperationID: "user-create", Method: http.MethodPost, Path: "/v1/users", Tags: tags,
		Summary: "Create a user (platform admins)", Security: signedIn, DefaultStatus: http.StatusCreated,
		Errors: []int{401, 403, 409, 422},
	}, func(ctx context.Context, in *userCreateIn) (*userOut, error) {
		if err := adminOnly(ctx); err != nil {
			return nil, err
		}
		u, err := s.deps.Auth.UserCreate(ctx, in.Body)
		return &userOut{Body: u}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "user-list", Method: http.MethodGet, Path: "/v1/users", Tags: tags,
		Summary: "List users by username (platform admins)", Security: signedIn, Errors: []int{401, 403},
	}, func(ctx context.Context, in *userListIn) (*userListOut, error) {
		if err := adminOnly(ctx); err != nil {
			return nil, err
		}
		out := &userListOut{}
		if in.Username != "" {
			u, err := s.deps.Auth.UserByName(ctx, in.Username)
			if problem.HasCode(err, "user_not_found") {
				out.Body.Items = []auth.User{}
				return out, nil
			}
			out.Body.Items = []auth.User{u}
			return out, err
		}
		after, err := decodeTextCursor(in.Cursor)
		if err != nil {
			return nil, err
		}
		users, err := s.deps.Auth.UserList(ctx, after, in.Limit+1)
		if err != nil {
			return nil, err
		}
		if len(users) > in.Limit {
			users = users[:in.Limit]
			out.Body.NextCursor = encodeTextCursor(users[len(users)-1].Username)
		}
		out.Body.Items = users
		return out, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "user-get", Method: http.MethodGet, Path: "/v1/users/{user}", Tags: tags,
		Summary: "Get a user (platform admins, or the user)", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *UserPath) (*userOut, error) {
		if p := principal(ctx); p.IsKey() || p.UserID != in.User {
			if err := adminOnly(ctx); err != nil {
				return nil, err
			}
		}
		u, err := s.deps.Auth.UserGet(ctx, in.User)
		return &userOut{Body: u}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "user-update", Method: http.MethodPatch, Path: "/v1/users/{user}", Tags: tags,
		Summary:     "Change a user's email, admin flag, or disable/enable them (platform admins)",
		Description: "Disabling a user ends their sessions and cached credentials at once. The last enabled platform admin cannot be demoted or disabled.",
		Security:    signedIn, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *userUpdateIn) (*userOut, error) {
		if err := adminOnly(ctx); err != nil {
			return nil, err
		}
		u, err := s.deps.Auth.UserUpdate(ctx, in.User, in.Body)
		return &userOut{Body: u}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "user-delete", Method: http.MethodDelete, Path: "/v1/users/{user}", Tags: tags,
		Summary: "Delete a user, their memberships, grants and sessions (platform admins)", Security: signedIn,
		DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 409},
	}, func(ctx context.Context, in *UserPath) (*struct{}, error) {
		if err := adminOnly(ctx); err != nil {
			return nil, err
		}
		return nil, s.deps.Auth.UserDelete(ctx, in.User)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "user-password", Method: http.MethodPut, Path: "/v1/users/{user}/password", Tags: tags,
		Summary:     "Set a user's password (platform admins)",
		Description: "Ends every session of the user and invalidates cached credentials at once.",
		Security:    signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *userPasswordIn) (*struct{}, error) {
		if err := adminOnly(ctx); err != nil {
			return nil, err
		}
		return nil, s.deps.Auth.PasswordSet(ctx, in.User, in.Body.Password)
	})
}

func encodeTextCursor(s string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("u1:" + s))
}

func decodeTextCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 3 || string(b[:3]) != "u1:" {
		return "", problem.Invalid("invalid_cursor", "the cursor is not one this listing returned").WithField("query.cursor", "malformed")
	}
	return string(b[3:]), nil
}

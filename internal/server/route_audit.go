package server

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
)

type AuditQuery struct {
	PageQuery
	Actor        string    `query:"actor" doc:"Acting user's or API key's id."`
	Action       string    `query:"action" maxLength:"100" doc:"Exact action, or a prefix ending in .* (member.*)."`
	ResourceType string    `query:"resource_type" maxLength:"100"`
	ResourceID   string    `query:"resource_id" maxLength:"300"`
	From         time.Time `query:"from" doc:"From this time (RFC 3339), inclusive."`
	To           time.Time `query:"to" doc:"Until this time (RFC 3339), exclusive."`
}

func (q AuditQuery) filter() audit.Filter {
	return audit.Filter{Actor: q.Actor, Action: q.Action, ResourceType: q.ResourceType, ResourceID: q.ResourceID,
		From: q.From, To: q.To, Limit: q.Limit, Cursor: q.Cursor}
}

type tenantAuditIn struct {
	TenantPath
	AuditQuery
}

type auditListOut struct {
	Body struct {
		Items      []audit.Row `json:"items"`
		NextCursor string      `json:"next_cursor,omitempty"`
	}
}

type verifyOut struct{ Body audit.Report }

func (s *Server) routesAudit() {
	tags := []string{"Audit"}
	list := func(ctx context.Context, tenant string, q AuditQuery) (*auditListOut, error) {
		rows, next, err := s.deps.Audit.List(ctx, tenant, q.filter())
		out := &auditListOut{}
		out.Body.Items, out.Body.NextCursor = rows, next
		if out.Body.Items == nil {
			out.Body.Items = []audit.Row{}
		}
		return out, err
	}
	verify := func(ctx context.Context, tenant string) (*verifyOut, error) {
		rep, err := s.deps.Audit.Verify(ctx, tenant)
		return &verifyOut{Body: rep}, err
	}
	huma.Register(s.api, huma.Operation{
		OperationID: "audit-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/audit", Tags: tags,
		Summary:     "List a tenant's audit log, newest first (owners, admins, or a grant on audit)",
		Description: "Entries are sealed into the tenant's hash chain (their seq) within moments of commit.",
		Security:    signedIn, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *tenantAuditIn) (*auditListOut, error) {
		if _, err := s.deps.Auth.Authorize(ctx, in.Tenant, auth.ResourceAudit, auth.PermRead); err != nil {
			return nil, err
		}
		return list(ctx, in.Tenant, in.AuditQuery)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "audit-verify", Method: http.MethodGet, Path: "/v1/t/{tenant}/audit/verify", Tags: tags,
		Summary:     "Verify a tenant's audit hash chain",
		Description: "Recomputes every link and reports the first entry modified, removed or reordered.",
		Security:    signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*verifyOut, error) {
		if _, err := s.deps.Auth.Authorize(ctx, in.Tenant, auth.ResourceAudit, auth.PermRead); err != nil {
			return nil, err
		}
		return verify(ctx, in.Tenant)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "platform-audit-list", Method: http.MethodGet, Path: "/v1/audit", Tags: tags,
		Summary: "List the platform audit log: users, sign-ins, tenants (platform admins)", Security: signedIn,
		Errors: []int{400, 401, 403},
	}, func(ctx context.Context, in *AuditQuery) (*auditListOut, error) {
		if err := s.deps.Auth.RequirePlatformAdmin(ctx, "audit"); err != nil {
			return nil, err
		}
		return list(ctx, "", *in)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "platform-audit-verify", Method: http.MethodGet, Path: "/v1/audit/verify", Tags: tags,
		Summary: "Verify the platform audit hash chain (platform admins)", Security: signedIn, Errors: []int{401, 403},
	}, func(ctx context.Context, _ *struct{}) (*verifyOut, error) {
		if err := s.deps.Auth.RequirePlatformAdmin(ctx, "audit"); err != nil {
			return nil, err
		}
		return verify(ctx, "")
	})
}

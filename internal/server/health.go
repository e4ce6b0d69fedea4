package server

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/problem"
)

type statusBody struct {
	Body struct {
		Status string `json:"status" example:"ok" doc:"Always \"ok\" when the answer is 200."`
	}
}

func (s *Server) routesHealth() {
	huma.Register(s.api, huma.Operation{
		OperationID: "healthz",
		Method:      http.MethodGet,
		Path:        "/healthz",
		Summary:     "Liveness: the process is up",
		Tags:        []string{"Operations"},
	}, func(context.Context, *struct{}) (*statusBody, error) {
		out := &statusBody{}
		out.Body.Status = "ok"
		return out, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "readyz",
		Method:      http.MethodGet,
		Path:        "/readyz",
		Summary:     "Readiness: the database is reachable and migrated",
		Description: "Answers 503 (code `not_ready`) while the database cannot be reached; " +
			"load balancers should stop routing to the node until it answers 200 again.",
		Tags:   []string{"Operations"},
		Errors: []int{http.StatusServiceUnavailable},
	}, func(ctx context.Context, _ *struct{}) (*statusBody, error) {
		if s.deps.Ready != nil {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := s.deps.Ready(ctx); err != nil {
				return nil, problem.Unavailable("not_ready", "not ready: %v", err)
			}
		}
		out := &statusBody{}
		out.Body.Status = "ok"
		return out, nil
	})
}

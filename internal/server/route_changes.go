package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/problem"
)

type changesIn struct {
	TenantPath
	After string `query:"after" maxLength:"40" doc:"Resume after this position (absent: from the oldest kept)."`
	Limit int    `query:"limit" minimum:"1" maximum:"10000" default:"1000"`
}

type changesOut struct {
	Body struct {
		Items []feed.Change `json:"items"`
		// NextAfter is where to resume: the last position read (changes the caller may not
		// read are skipped, but still advance it).
		NextAfter string `json:"next_after" example:"1042"`
	}
}

type changesStreamIn struct {
	TenantPath
	After       string `query:"after" maxLength:"40" doc:"Resume after this position."`
	LastEventID string `header:"Last-Event-ID" maxLength:"40" doc:"Set by reconnecting EventSource clients: resume after it."`
}

// ping is sent on an idle stream every 15 s, so proxies keep it open.
type ping struct {
	At time.Time `json:"at"`
}

// resourceOf names the resource a change belongs to, for read checks.
func resourceOf(c feed.Change) string {
	switch {
	case c.Kind == "doc":
		return "collection:" + c.Scope
	case c.Scope != "":
		return c.Kind + ":" + c.Scope
	default:
		return c.Kind + ":" + c.Key
	}
}

func (s *Server) readable(a *auth.Access, cs []feed.Change) []feed.Change {
	out := cs[:0:0]
	for _, c := range cs {
		if a.Can(resourceOf(c), auth.PermRead) {
			out = append(out, c)
		}
	}
	return out
}

func (s *Server) routesChanges() {
	f := s.deps.Feed
	tags := []string{"Change feed"}
	huma.Register(s.api, huma.Operation{
		OperationID: "changes", Method: http.MethodGet, Path: "/v1/t/{tenant}/changes", Tags: tags,
		Summary: "Read the tenant's change feed after a position (polling)",
		Description: "Every committed write of documents, key-value entries and other modules gets a position. Reading after a " +
			"position never misses a committed change nor shows an uncommitted one, however concurrent writers commit. " +
			"Only changes the caller may read are returned. A position older than the feed keeps answers 410 position_expired.",
		Security: signedIn, Errors: []int{400, 401, 404, 410},
	}, func(ctx context.Context, in *changesIn) (*changesOut, error) {
		a, err := s.deps.Auth.Access(ctx, in.Tenant)
		if err != nil {
			return nil, err
		}
		after, err := feed.ParsePosition(in.After)
		if err != nil {
			return nil, err
		}
		cs, next, err := f.Read(ctx, in.Tenant, after, in.Limit)
		if err != nil {
			return nil, err
		}
		out := &changesOut{}
		out.Body.Items, out.Body.NextAfter = s.readable(a, cs), next.String()
		return out, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "changes-stream", Method: http.MethodGet, Path: "/v1/t/{tenant}/changes/stream", Tags: tags,
		Summary: "Follow the tenant's change feed as Server-Sent Events",
		Description: "Each change is an event `change` whose id is its position, so EventSource clients resume by themselves " +
			"(Last-Event-ID). Woken across nodes within milliseconds; a `ping` at once and every 15 s when idle. The stream " +
			"ends when the caller loses access to the tenant.",
		Security: signedIn, Middlewares: huma.Middlewares{s.tenantAccess, noWriteDeadline}, Errors: []int{400, 401, 404, 410},
		Responses: map[string]*huma.Response{"200": {Description: "An event stream: `event: change` with a change as data, or `event: ping`.",
			Content: map[string]*huma.MediaType{"text/event-stream": {Schema: &huma.Schema{Type: huma.TypeString}}}}},
	}, func(ctx context.Context, in *changesStreamIn) (*huma.StreamResponse, error) {
		after, err := feed.ParsePosition(in.After)
		if err != nil {
			return nil, err
		}
		if in.LastEventID != "" {
			if after, err = feed.ParsePosition(in.LastEventID); err != nil {
				return nil, err
			}
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			hctx.SetHeader("Content-Type", "text/event-stream")
			hctx.SetHeader("Cache-Control", "no-store")
			s.streamChanges(hctx.Context(), hctx.BodyWriter(), in.Tenant, after)
		}}, nil
	})
}

// streamChanges writes Server-Sent Events until the client leaves or loses access.
func (s *Server) streamChanges(ctx context.Context, w io.Writer, tenant string, after feed.Position) {
	f := s.deps.Feed
	flush := func() {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	event := func(name, id string, data any) error {
		b, err := json.Marshal(data)
		if err != nil {
			return err
		}
		if id != "" {
			if _, err := fmt.Fprintf(w, "id: %s\n", id); err != nil {
				return err
			}
		}
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
		flush()
		return err
	}
	// A first ping sends the headers at once, so clients know the stream is live.
	if event("ping", "", ping{At: time.Now().UTC()}) != nil {
		return
	}
	for ctx.Err() == nil {
		a, err := s.deps.Auth.AccessRecheck(ctx, tenant)
		if err != nil {
			return // access revoked, or the tenant is gone: end the stream
		}
		known := f.Known()
		cs, next, err := f.Read(ctx, tenant, after, 500)
		if err != nil {
			if p, ok := problem.As(err); ok {
				_ = event("error", "", stamp(ctx, p))
			}
			return
		}
		for _, c := range s.readable(a, cs) {
			if event("change", c.Position, c) != nil {
				return
			}
		}
		if len(cs) > 0 {
			after = next
			continue
		}
		if !f.Wait(ctx, known, 15*time.Second) && ctx.Err() == nil {
			if event("ping", "", ping{At: time.Now().UTC()}) != nil {
				return
			}
		}
	}
}

// tenantAccess answers with a problem before a stream starts when the caller has no access
// to the path's tenant (a stream's status is sent before its handler runs).
func (s *Server) tenantAccess(ctx huma.Context, next func(huma.Context)) {
	if _, err := s.deps.Auth.Access(ctx.Context(), ctx.Param("tenant")); err != nil {
		p, ok := problem.As(err)
		if !ok {
			p = problem.Internal(err)
		}
		writeHumaProblem(ctx, p)
		return
	}
	next(ctx)
}

// unwrap returns the request and response writer under a huma context.
func unwrap(ctx huma.Context) (*http.Request, http.ResponseWriter) { return humago.Unwrap(ctx) }

package server

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/search"
)

type searchSettingsIn struct {
	CollectionPath
	Body search.Settings
}

type searchSettingsOut struct{ Body search.Settings }

type searchIn struct {
	CollectionPath
	Body search.Query
}

type searchOut struct{ Body search.Results }

type indexesOut struct {
	Body struct {
		Items []search.IndexState `json:"items"`
	}
}

type searchStatsIn struct {
	CollectionPath
	Since time.Time `query:"since" doc:"Statistics of searches since this time (default: the last 24 hours)."`
}

type searchStatsOut struct{ Body search.Stats }

func (s *Server) routesSearch() {
	st := s.deps.Search
	tags := []string{"Search"}
	base := "/v1/t/{tenant}/collections/{collection}"
	huma.Register(s.api, huma.Operation{
		OperationID: "search-settings-put", Method: http.MethodPut, Path: base + "/search-settings", Tags: tags,
		Summary: "Set how a collection is searched: text fields, vector fields, partitions", Security: signedIn,
		Description: "Needs admin on the collection. Existing documents are indexed in the background (see the indexes); " +
			"documents written from now on are indexed with their write.",
		Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *searchSettingsIn) (*searchSettingsOut, error) {
		out, err := st.SettingsPut(ctx, in.Tenant, in.Collection, in.Body)
		return &searchSettingsOut{Body: out}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "search-settings-get", Method: http.MethodGet, Path: base + "/search-settings", Tags: tags,
		Summary: "A collection's search settings", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *CollectionPath) (*searchSettingsOut, error) {
		out, err := st.SettingsGet(ctx, in.Tenant, in.Collection)
		return &searchSettingsOut{Body: out}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "search-settings-delete", Method: http.MethodDelete, Path: base + "/search-settings", Tags: tags,
		Summary: "Stop searching a collection: its settings and indexes go", Security: signedIn,
		DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *CollectionPath) (*struct{}, error) {
		return nil, st.SettingsDelete(ctx, in.Tenant, in.Collection)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "search", Method: http.MethodPost, Path: base + "/search", Tags: tags,
		Summary: "Search a collection: full-text, semantic, hybrid or by vector", Security: signedIn,
		Description: "Needs read on the collection. Text queries take words (all must match; the last may be unfinished), " +
			"\"phrases\", -exclusions and OR; words of 5+ letters match with a typo. Vector searches return k results whenever k " +
			"documents match the filter; the answer's path says how they were found (exact, index, index+widened).",
		Errors: []int{400, 401, 403, 404, 422, 503},
	}, func(ctx context.Context, in *searchIn) (*searchOut, error) {
		r, err := st.Search(ctx, in.Tenant, in.Collection, in.Body)
		return &searchOut{Body: r}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "search-indexes", Method: http.MethodGet, Path: base + "/indexes", Tags: tags,
		Summary: "A collection's search indexes: status, progress, rows indexed, build time", Security: signedIn,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *CollectionPath) (*indexesOut, error) {
		list, err := st.Indexes(ctx, in.Tenant, in.Collection)
		out := &indexesOut{}
		out.Body.Items = list
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "search-indexes-rebuild", Method: http.MethodPost, Path: base + "/indexes/rebuild", Tags: tags,
		Summary: "Rebuild a collection's search indexes", Security: signedIn, DefaultStatus: http.StatusAccepted,
		Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *CollectionPath) (*indexesOut, error) {
		list, err := st.Rebuild(ctx, in.Tenant, in.Collection)
		out := &indexesOut{}
		out.Body.Items = list
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "search-stats", Method: http.MethodGet, Path: base + "/search-stats", Tags: tags,
		Summary: "Query and performance statistics of a collection's searches", Security: signedIn,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *searchStatsIn) (*searchStatsOut, error) {
		out, err := st.Stats(ctx, in.Tenant, in.Collection, in.Since)
		return &searchStatsOut{Body: out}, err
	})
}

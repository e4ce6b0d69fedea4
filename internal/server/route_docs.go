package server

import (
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/problem"
)

// CollectionPath is embedded by operations on one collection.
type CollectionPath struct {
	TenantPath
	Collection string `path:"collection" doc:"Collection name."`
}

// DocPath is embedded by operations on one document.
type DocPath struct {
	CollectionPath
	ID string `path:"id" doc:"Document id."`
}

type collectionOut struct{ Body doc.Collection }

type collectionListOut struct {
	Body struct {
		Items []doc.Collection `json:"items"`
	}
}

type collectionCreateIn struct {
	TenantPath
	Body doc.CollectionInput
}

type collectionUpdateIn struct {
	CollectionPath
	Body doc.CollectionUpdate
}

// maxDocRequest bounds a document request body; each collection's own limit (at most
// 16 MiB) is checked after.
const maxDocRequest = 16<<20 + 4096

// WaitQuery lets a document write wait for its search vectors.
type WaitQuery struct {
	Wait string `query:"wait" enum:"indexed" doc:"indexed: answer once the search vectors computed from this document (by an embedder) are stored, up to 30 seconds; the Strata-Indexed header says whether they are (true) or still pending."`
}

type docCreateIn struct {
	CollectionPath
	WaitQuery
	ID             string `query:"id" maxLength:"256" doc:"The new document's id; absent: a server-made, time-ordered id."`
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Retrying with the same key returns the first answer instead of creating again."`
	RawBody        []byte `contentType:"application/json" doc:"The document: a JSON object."`
}

type docWriteIn struct {
	DocPath
	WaitQuery
	IfMatch string `header:"If-Match" doc:"The version (an ETag) the document must be at; * for any existing version."`
	RawBody []byte `contentType:"application/json"`
}

type docPatchIn struct {
	DocPath
	WaitQuery
	IfMatch     string `header:"If-Match"`
	ContentType string `header:"Content-Type" doc:"application/merge-patch+json (RFC 7396) or application/json-patch+json (RFC 6902)."`
	RawBody     []byte `contentType:"application/merge-patch+json"`
}

type docOut struct {
	ETag     string `header:"ETag"`
	Location string `header:"Location"`
	Indexed  string `header:"Strata-Indexed"`
	Status   int
	Body     doc.Document
}

type docGetIn struct {
	DocPath
	Version int64     `query:"version" minimum:"1" doc:"Read this version instead of the current one."`
	AsOf    time.Time `query:"as_of" doc:"Read the version current at this time (RFC 3339)."`
}

type docDeleteIn struct {
	DocPath
	IfMatch string `header:"If-Match"`
}

type docDeleteOut struct {
	ETag string `header:"ETag"`
}

type docRevertIn struct {
	DocPath
	IfMatch string `header:"If-Match"`
	Body    struct {
		Version int64 `json:"version" minimum:"1" doc:"The version to bring back, as a new version."`
	}
}

type docRestoreIn struct {
	DocPath
	IfMatch string `header:"If-Match"`
}

type versionsIn struct {
	DocPath
	Before int64 `query:"before" minimum:"0" doc:"Versions older than this one (the previous page's last version)."`
	Limit  int   `query:"limit" minimum:"1" maximum:"1000" default:"100"`
}

type versionsOut struct {
	Body struct {
		Items      []doc.Version `json:"items"`
		NextCursor string        `json:"next_cursor,omitempty" doc:"Pass as before= for the next page."`
	}
}

type diffIn struct {
	DocPath
	From int64 `query:"from" required:"true" minimum:"1"`
	To   int64 `query:"to" required:"true" minimum:"1"`
}

type diffOut struct {
	Body struct {
		From  int64           `json:"from"`
		To    int64           `json:"to"`
		Patch json.RawMessage `json:"patch" doc:"RFC 6902 operations turning version from into version to."`
	}
}

type docListIn struct {
	CollectionPath
	PageQuery
	Filter string    `query:"filter" maxLength:"8192" doc:"A filter (docs/filters.md), e.g. status = \"active\" and age >= 30."`
	Sort   string    `query:"sort" maxLength:"300" doc:"@id (default) or a declared indexed path; prefix - for descending."`
	Fields string    `query:"fields" maxLength:"4000" doc:"Comma-separated paths to keep of each document."`
	AsOf   time.Time `query:"as_of" doc:"List the collection as it was at this time."`
}

type docListOut struct{ Body doc.Page }

type countIn struct {
	CollectionPath
	Filter string `query:"filter" maxLength:"8192"`
	Limit  int64  `query:"limit" minimum:"1" maximum:"10000000" default:"10000" doc:"Stop counting here; the answer says whether it was capped."`
}

type countOut struct {
	Body struct {
		Count  int64 `json:"count"`
		Capped bool  `json:"capped" doc:"True when there are more than limit."`
	}
}

type importIn struct {
	CollectionPath
	Mode   string `query:"mode" enum:"atomic,partial" default:"atomic" doc:"atomic: one bad line imports nothing; partial: good lines are imported, bad ones reported."`
	Format string `query:"format" enum:"docs,export" default:"docs" doc:"docs: each line is a document; export: lines as written by export."`
	Accept string `header:"Accept" doc:"application/x-ndjson streams progress lines before the report."`
}

type exportIn struct {
	CollectionPath
	Filter string    `query:"filter" maxLength:"8192"`
	AsOf   time.Time `query:"as_of"`
}

// ifMatch reads an If-Match header: a version number, quoted or not, weak or not.
func ifMatch(h string) (int64, bool, error) {
	h = strings.TrimSpace(h)
	switch h {
	case "":
		return 0, false, nil
	case "*":
		return 0, true, nil
	}
	h = strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	v, err := strconv.ParseInt(h, 10, 64)
	if err != nil || v < 1 {
		return 0, false, problem.Invalid("invalid_if_match", "If-Match must be a version ETag such as \"3\"").WithField("header.If-Match", "invalid")
	}
	return v, false, nil
}

func docResponse(d doc.Document, status int, tenant string) *docOut {
	out := &docOut{Status: status, Body: d, ETag: `"` + strconv.FormatInt(d.Version, 10) + `"`}
	if status == http.StatusCreated {
		out.Location = "/v1/t/" + tenant + "/collections/" + url.PathEscape(d.Collection) + "/docs/" + url.PathEscape(d.ID)
	}
	return out
}

// waitIndexed answers a write that asked to wait for its search vectors.
func (s *Server) waitIndexed(ctx context.Context, w WaitQuery, tenant string, out *docOut) (*docOut, error) {
	if w.Wait == "" || s.deps.Search == nil {
		return out, nil
	}
	done, err := s.deps.Search.WaitIndexed(ctx, tenant, out.Body.Collection, out.Body.ID, out.Body.Version, 30*time.Second)
	if err != nil {
		return nil, err
	}
	out.Indexed = strconv.FormatBool(done)
	if !done {
		out.Indexed = "pending"
	}
	return out, nil
}

func (s *Server) routesDocs() {
	st := s.deps.Docs
	ctags := []string{"Collections"}
	huma.Register(s.api, huma.Operation{
		OperationID: "collection-create", Method: http.MethodPost, Path: "/v1/t/{tenant}/collections", Tags: ctags,
		Summary: "Create a collection", Security: signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 409, 422},
		Description: "Needs admin on collection:<name>. Options: a JSON Schema enforced on every write, declared indexed paths (built " +
			"in the background without blocking writes; their status is in the answer), a history retention, a document size limit.",
	}, func(ctx context.Context, in *collectionCreateIn) (*collectionOut, error) {
		c, err := st.CollectionCreate(ctx, in.Tenant, in.Body)
		return &collectionOut{Body: c}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "collection-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections", Tags: ctags,
		Summary: "List collections", Security: signedIn, Errors: []int{401, 404},
	}, func(ctx context.Context, in *TenantPath) (*collectionListOut, error) {
		cs, err := st.CollectionList(ctx, in.Tenant)
		out := &collectionListOut{}
		out.Body.Items = cs
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "collection-get", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections/{collection}", Tags: ctags,
		Summary: "Get a collection with its indexes' status", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *CollectionPath) (*collectionOut, error) {
		c, err := st.CollectionGet(ctx, in.Tenant, in.Collection)
		return &collectionOut{Body: c}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "collection-update", Method: http.MethodPatch, Path: "/v1/t/{tenant}/collections/{collection}", Tags: ctags,
		Summary: "Change a collection's options", Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *collectionUpdateIn) (*collectionOut, error) {
		c, err := st.CollectionUpdate(ctx, in.Tenant, in.Collection, in.Body)
		return &collectionOut{Body: c}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "collection-delete", Method: http.MethodDelete, Path: "/v1/t/{tenant}/collections/{collection}", Tags: ctags,
		Summary: "Delete a collection with all its documents and their history", Security: signedIn,
		DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *CollectionPath) (*struct{}, error) {
		return nil, st.CollectionDelete(ctx, in.Tenant, in.Collection)
	})

	dtags := []string{"Documents"}
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-create", Method: http.MethodPost, Path: "/v1/t/{tenant}/collections/{collection}/docs", Tags: dtags,
		Summary: "Create a document", Security: signedIn, DefaultStatus: http.StatusCreated, MaxBodyBytes: maxDocRequest,
		SkipValidateBody: true, // the document is checked by the store: strict JSON, size, the collection's schema
		Errors:           []int{400, 401, 403, 404, 409, 413, 422},
	}, func(ctx context.Context, in *docCreateIn) (*docOut, error) {
		d, err := st.DocCreate(ctx, in.Tenant, in.Collection, doc.DocInput{ID: in.ID, Data: in.RawBody, IdempotencyKey: in.IdempotencyKey})
		if err != nil {
			return nil, err
		}
		return s.waitIndexed(ctx, in.WaitQuery, in.Tenant, docResponse(d, http.StatusCreated, in.Tenant))
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-get", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}", Tags: dtags,
		Summary: "Get a document, now or at a version or time", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *docGetIn) (*docOut, error) {
		var d doc.Document
		var err error
		if in.Version != 0 || !in.AsOf.IsZero() {
			d, err = st.DocGetAt(ctx, in.Tenant, in.Collection, in.ID, doc.At{Version: in.Version, AsOf: in.AsOf})
		} else {
			d, err = st.DocGet(ctx, in.Tenant, in.Collection, in.ID)
		}
		if err != nil {
			return nil, err
		}
		return docResponse(d, http.StatusOK, in.Tenant), nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-replace", Method: http.MethodPut, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}", Tags: dtags,
		Summary:     "Replace a document (creating it when absent)",
		Description: "With If-Match, the write happens only at that version (412 version_mismatch with current_version otherwise).",
		Security:    signedIn, MaxBodyBytes: maxDocRequest, SkipValidateBody: true, Errors: []int{400, 401, 403, 404, 412, 413, 422},
	}, func(ctx context.Context, in *docWriteIn) (*docOut, error) {
		v, any, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		if any {
			cur, err := st.DocGet(ctx, in.Tenant, in.Collection, in.ID)
			if err != nil && !problem.HasCode(err, "document_deleted") {
				return nil, problem.PreconditionFailed("precondition_failed", "If-Match: * but the document does not exist")
			}
			v = cur.Version
		}
		d, err := st.DocReplace(ctx, in.Tenant, in.Collection, in.ID, in.RawBody, &doc.WriteOptions{IfMatch: v})
		if err != nil {
			return nil, err
		}
		status := http.StatusOK
		if d.Version == 1 {
			status = http.StatusCreated
		}
		return s.waitIndexed(ctx, in.WaitQuery, in.Tenant, docResponse(d, status, in.Tenant))
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-patch", Method: http.MethodPatch, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}", Tags: dtags,
		Summary:  "Patch a document: JSON Merge Patch (RFC 7396) or JSON Patch (RFC 6902), by Content-Type",
		Security: signedIn, MaxBodyBytes: maxDocRequest, SkipValidateBody: true, Errors: []int{400, 401, 403, 404, 412, 413, 415, 422},
	}, func(ctx context.Context, in *docPatchIn) (*docOut, error) {
		v, _, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		kind := doc.MergePatch
		mt, _, _ := mime.ParseMediaType(in.ContentType)
		switch mt {
		case "application/merge-patch+json", "application/json", "":
		case "application/json-patch+json":
			kind = doc.JSONPatch
		default:
			return nil, problem.New(http.StatusUnsupportedMediaType, "unsupported_media_type",
				"send application/merge-patch+json or application/json-patch+json")
		}
		d, err := st.DocPatch(ctx, in.Tenant, in.Collection, in.ID, kind, in.RawBody, &doc.WriteOptions{IfMatch: v})
		if err != nil {
			return nil, err
		}
		return s.waitIndexed(ctx, in.WaitQuery, in.Tenant, docResponse(d, http.StatusOK, in.Tenant))
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-delete", Method: http.MethodDelete, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}", Tags: dtags,
		Summary:     "Delete a document (a restorable tombstone version)",
		Description: "The ETag of the answer is the tombstone's version. Deleting a deleted document succeeds without a new version.",
		Security:    signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 412},
	}, func(ctx context.Context, in *docDeleteIn) (*docDeleteOut, error) {
		v, _, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		d, err := st.DocDelete(ctx, in.Tenant, in.Collection, in.ID, &doc.WriteOptions{IfMatch: v})
		if err != nil {
			return nil, err
		}
		return &docDeleteOut{ETag: `"` + strconv.FormatInt(d.Version, 10) + `"`}, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-restore", Method: http.MethodPost, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}/restore", Tags: dtags,
		Summary: "Bring a deleted document back as it was", Security: signedIn, Errors: []int{401, 403, 404, 409, 412, 422},
	}, func(ctx context.Context, in *docRestoreIn) (*docOut, error) {
		v, _, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		d, err := st.DocRestore(ctx, in.Tenant, in.Collection, in.ID, &doc.WriteOptions{IfMatch: v})
		if err != nil {
			return nil, err
		}
		return docResponse(d, http.StatusOK, in.Tenant), nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-revert", Method: http.MethodPost, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}/revert", Tags: dtags,
		Summary: "Write a new version equal to an old one", Security: signedIn, Errors: []int{401, 403, 404, 412, 422},
	}, func(ctx context.Context, in *docRevertIn) (*docOut, error) {
		v, _, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		d, err := st.DocRevert(ctx, in.Tenant, in.Collection, in.ID, in.Body.Version, &doc.WriteOptions{IfMatch: v})
		if err != nil {
			return nil, err
		}
		return docResponse(d, http.StatusOK, in.Tenant), nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-versions", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}/versions", Tags: dtags,
		Summary: "List a document's versions: who, when, what", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *versionsIn) (*versionsOut, error) {
		vs, err := st.DocVersions(ctx, in.Tenant, in.Collection, in.ID, in.Before, in.Limit)
		out := &versionsOut{}
		out.Body.Items = vs
		if len(vs) == in.Limit {
			out.Body.NextCursor = strconv.FormatInt(vs[len(vs)-1].Version, 10)
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-diff", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections/{collection}/docs/{id}/diff", Tags: dtags,
		Summary: "The difference between two versions, as a JSON Patch", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *diffIn) (*diffOut, error) {
		p, err := st.DocDiff(ctx, in.Tenant, in.Collection, in.ID, in.From, in.To)
		out := &diffOut{}
		out.Body.From, out.Body.To, out.Body.Patch = in.From, in.To, p
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections/{collection}/docs", Tags: dtags,
		Summary: "List documents: filter, sort, project, page; or the collection as of a time", Security: signedIn,
		Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *docListIn) (*docListOut, error) {
		var fields []string
		if in.Fields != "" {
			fields = strings.Split(in.Fields, ",")
		}
		p, err := st.DocList(ctx, in.Tenant, in.Collection, doc.Query{Filter: in.Filter, Sort: in.Sort, Fields: fields,
			Limit: in.Limit, Cursor: in.Cursor, AsOf: in.AsOf})
		if p.Items == nil {
			p.Items = []doc.Document{}
		}
		return &docListOut{Body: p}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-count", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections/{collection}/count", Tags: dtags,
		Summary: "Count documents matching a filter, up to a cap", Security: signedIn, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *countIn) (*countOut, error) {
		n, capped, err := st.DocCount(ctx, in.Tenant, in.Collection, in.Filter, in.Limit)
		out := &countOut{}
		out.Body.Count, out.Body.Capped = n, capped
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-import", Method: http.MethodPost, Path: "/v1/t/{tenant}/collections/{collection}/import", Tags: dtags,
		Summary: "Import NDJSON documents through COPY",
		Description: "The body is NDJSON, streamed (any size). The answer is a report with every failing line's number (the first 1000). " +
			"With Accept: application/x-ndjson, progress lines {\"type\":\"progress\",…} stream before the final {\"type\":\"result\",…}.",
		Security: signedIn, BodyReadTimeout: -1, Middlewares: huma.Middlewares{keepBody, noWriteDeadline},
		RequestBody: &huma.RequestBody{Content: map[string]*huma.MediaType{"application/x-ndjson": {Schema: &huma.Schema{Type: huma.TypeString}}}},
		Errors:      []int{401, 403, 404, 409},
	}, func(ctx context.Context, in *importIn) (*huma.StreamResponse, error) {
		opts := doc.ImportOptions{Partial: in.Mode == "partial", Envelopes: in.Format == "export"}
		return importResponse(ctx, in.Accept, func(ctx context.Context, body io.Reader, progress func(lines, imported int64)) (any, error) {
			opts.Progress = progress
			return st.DocImport(ctx, in.Tenant, in.Collection, body, opts)
		})
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "doc-export", Method: http.MethodGet, Path: "/v1/t/{tenant}/collections/{collection}/export", Tags: dtags,
		Summary:     "Export documents as NDJSON, streamed, optionally as of a time",
		Description: "Each line is {\"id\", \"version\", \"created_at\", \"updated_at\", \"data\"}; import them back with format=export.",
		Security:    signedIn, Middlewares: huma.Middlewares{noWriteDeadline}, Errors: []int{400, 401, 403, 404},
		Responses: map[string]*huma.Response{"200": {Description: "NDJSON lines", Content: map[string]*huma.MediaType{
			"application/x-ndjson": {Schema: &huma.Schema{Type: huma.TypeString}}}}},
	}, func(ctx context.Context, in *exportIn) (*huma.StreamResponse, error) {
		// Check access and the filter before the 200 goes out.
		if _, err := st.DocList(ctx, in.Tenant, in.Collection, doc.Query{Filter: in.Filter, Limit: 1, AsOf: in.AsOf}); err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			hctx.SetHeader("Content-Type", "application/x-ndjson")
			if _, err := st.DocExport(hctx.Context(), in.Tenant, in.Collection, hctx.BodyWriter(), doc.ExportOptions{Filter: in.Filter, AsOf: in.AsOf}); err != nil {
				logger(ctx).Warn("export ended early", "err", err)
			}
		}}, nil
	})
	s.documentBodies()
}

// documentBodies corrects the OpenAPI document for operations whose raw body is a JSON
// document (huma describes raw bodies as binary strings).
func (s *Server) documentBodies() {
	object := &huma.Schema{Type: huma.TypeObject, Description: "A JSON object (the document, or a merge patch)."}
	patch := &huma.Schema{Type: huma.TypeArray, Description: "RFC 6902 operations.", Items: &huma.Schema{Type: huma.TypeObject}}
	paths := s.api.OpenAPI().Paths
	for _, p := range []string{"/v1/t/{tenant}/collections/{collection}/docs", "/v1/t/{tenant}/collections/{collection}/docs/{id}"} {
		item := paths[p]
		if item == nil {
			continue
		}
		for _, op := range []*huma.Operation{item.Post, item.Put, item.Patch} {
			if op == nil || op.RequestBody == nil {
				continue
			}
			for ct, mt := range op.RequestBody.Content {
				if ct != "application/octet-stream" {
					mt.Schema = object
				}
			}
			if op == item.Patch {
				op.RequestBody.Content["application/json-patch+json"] = &huma.MediaType{Schema: patch}
			}
		}
	}
}

// importResponse answers an NDJSON import (the request body, kept unread by keepBody):
// the report as JSON, or — when accept asks for application/x-ndjson — progress lines
// {"type":"progress",…} as the import goes, then {"type":"result","report":…} or
// {"type":"error","problem":…}.
func importResponse(ctx context.Context, accept string,
	run func(ctx context.Context, body io.Reader, progress func(lines, imported int64)) (any, error)) (*huma.StreamResponse, error) {
	body, _ := ctx.Value(keyBody).(io.Reader)
	if body == nil {
		return nil, problem.Invalid("invalid_request", "no body")
	}
	if !strings.Contains(accept, "application/x-ndjson") {
		rep, err := run(ctx, body, nil)
		if err != nil {
			return nil, err
		}
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			hctx.SetHeader("Content-Type", "application/json")
			_ = json.NewEncoder(hctx.BodyWriter()).Encode(rep)
		}}, nil
	}
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		hctx.SetHeader("Content-Type", "application/x-ndjson")
		w := hctx.BodyWriter()
		enc := json.NewEncoder(w)
		rep, err := run(hctx.Context(), body, func(lines, imported int64) {
			_ = enc.Encode(map[string]any{"type": "progress", "lines": lines, "imported": imported})
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
		})
		if err != nil {
			p, ok := problem.As(err)
			if !ok {
				p = problem.Internal(err)
			}
			_ = enc.Encode(map[string]any{"type": "error", "problem": stamp(ctx, p)})
			return
		}
		_ = enc.Encode(map[string]any{"type": "result", "report": rep})
	}}, nil
}

// keepBody is an operation middleware that hands the request body, unread, to a handler
// that streams it (huma reads bodies whole otherwise).
func keepBody(ctx huma.Context, next func(huma.Context)) {
	next(huma.WithValue(ctx, keyBody, ctx.BodyReader()))
}

// noWriteDeadline lifts the server's write timeout for streaming operations.
func noWriteDeadline(ctx huma.Context, next func(huma.Context)) {
	if _, w := unwrap(ctx); w != nil {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	}
	next(ctx)
}

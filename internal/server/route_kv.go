package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/kv"
	"github.com/stratadb/strata/problem"
)

// KVPath is embedded by operations on one key. The key is the rest of the path, so it
// may contain slashes ("settings/theme").
type KVPath struct {
	TenantPath
	Key string `path:"key" maxLength:"1024" doc:"The key: 1 to 1024 bytes; may contain /."`
}

type kvGetIn struct {
	KVPath
	Meta bool `query:"meta" doc:"Answer the entry as JSON (metadata, and the value as JSON or base64) instead of the raw value."`
}

type kvValueOut struct {
	ContentType  string `header:"Content-Type"`
	ETag         string `header:"ETag"`
	LastModified string `header:"Last-Modified"`
	Expires      string `header:"Expires"`
	Body         []byte
}

type kvEntryOut struct {
	Status int
	ETag   string `header:"ETag"`
	Body   kv.Entry
}

type kvPutIn struct {
	KVPath
	IfMatch          string `header:"If-Match" doc:"Write only if the key is at this version (an ETag): compare-and-set."`
	IfNoneMatch      string `header:"If-None-Match" doc:"* writes only if the key does not exist."`
	ContentType      string `header:"Content-Type" doc:"The value's media type, kept and answered with it; application/json values must be JSON."`
	TTLSeconds       int64  `query:"ttl_seconds" minimum:"0" doc:"The key expires this many seconds from now; absent or 0: never."`
	Description      string `query:"description" maxLength:"1000" doc:"Describes the entry (a setting's meaning); absent keeps the current one."`
	ClearDescription bool   `query:"clear_description" doc:"Remove the description."`
	RawBody          []byte `contentType:"application/octet-stream" doc:"The value: any bytes."`
}

type kvDeleteIn struct {
	KVPath
	IfMatch string `header:"If-Match" doc:"Delete only if the key is at this version."`
}

type kvListIn struct {
	TenantPath
	Limit  int    `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"Page size."`
	Cursor string `query:"cursor" maxLength:"2000" doc:"next_cursor of the previous page."`
	Prefix string `query:"prefix" maxLength:"1024" doc:"Only keys starting with this."`
	Values bool   `query:"values" doc:"Include each value (JSON values as JSON, others as value_base64)."`
}

type kvListOut struct{ Body kv.KeyPage }

func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

func (s *Server) routesKV() {
	st := s.deps.KV
	if st == nil {
		return
	}
	tags := []string{"Key-value"}
	path := "/v1/t/{tenant}/kv/{key...}"
	huma.Register(s.api, huma.Operation{
		OperationID: "kv-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/kv", Tags: tags,
		Summary: "List keys by key, with a prefix and cursors", Security: signedIn, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *kvListIn) (*kvListOut, error) {
		p, err := st.KeyList(ctx, in.Tenant, &kv.ListOptions{Prefix: in.Prefix, Limit: in.Limit, Cursor: in.Cursor, Values: in.Values})
		return &kvListOut{Body: p}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "kv-get", Method: http.MethodGet, Path: path, Tags: tags,
		Summary:     "Read a key's value",
		Description: "The raw value with its content type and its version as ETag; with meta=true, the entry as JSON. An expired key answers 404.",
		Security:    signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *kvGetIn) (*kvValueOut, error) {
		e, err := st.KeyGet(ctx, in.Tenant, in.Key)
		if err != nil {
			return nil, err
		}
		out := &kvValueOut{ContentType: e.ContentType, ETag: etag(e.Version), LastModified: e.UpdatedAt.UTC().Format(http.TimeFormat), Body: e.Value}
		if e.ExpiresAt != nil {
			out.Expires = e.ExpiresAt.UTC().Format(http.TimeFormat)
		}
		if in.Meta {
			b, err := e.MarshalJSON()
			if err != nil {
				return nil, err
			}
			out.ContentType, out.Body = "application/json", b
		}
		return out, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "kv-put", Method: http.MethodPut, Path: path, Tags: tags,
		Summary: "Write a key's value (write)",
		Description: "Any bytes, kept with the request's Content-Type. If-Match makes it a compare-and-set on the version, " +
			"If-None-Match: * a create; 412 version_mismatch (with current_version) and nothing written otherwise. " +
			"201 when the key was created, 200 when replaced. Every write is published on the change feed (kind kv).",
		Security: signedIn, Errors: []int{400, 401, 403, 404, 412, 413, 422}, MaxBodyBytes: 2 << 20,
	}, func(ctx context.Context, in *kvPutIn) (*kvEntryOut, error) {
		ifMatch, _, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		put := kv.PutInput{Value: in.RawBody, ContentType: in.ContentType, TTL: time.Duration(in.TTLSeconds) * time.Second, IfMatch: ifMatch}
		switch in.IfNoneMatch {
		case "":
		case "*":
			put.IfNoneMatch = true
		default:
			return nil, problem.Invalid("invalid_if_none_match", "If-None-Match must be *").WithField("header.If-None-Match", "invalid")
		}
		switch {
		case in.ClearDescription:
			empty := ""
			put.Description = &empty
		case in.Description != "":
			put.Description = &in.Description
		}
		e, created, err := st.KeyPut(ctx, in.Tenant, in.Key, put)
		if err != nil {
			return nil, err
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		return &kvEntryOut{Status: status, ETag: etag(e.Version), Body: e}, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "kv-delete", Method: http.MethodDelete, Path: path, Tags: tags,
		Summary: "Delete a key (write)", Security: signedIn, DefaultStatus: http.StatusNoContent,
		Errors: []int{401, 403, 404, 412, 422},
	}, func(ctx context.Context, in *kvDeleteIn) (*struct{}, error) {
		v, _, err := ifMatch(in.IfMatch)
		if err != nil {
			return nil, err
		}
		return nil, st.KeyDelete(ctx, in.Tenant, in.Key, v)
	})
}

package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/media"
	"github.com/stratadb/strata/problem"
)

// MediaPath is embedded by operations on one alias.
type MediaPath struct {
	TenantPath
	Alias string `path:"alias" maxLength:"80" doc:"The upload's alias, <uuid>.<ext>."`
}

type mediaUploadIn struct {
	TenantPath
	ContentType    string `header:"Content-Type" doc:"multipart/form-data with the content in the part named file."`
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"200" doc:"A retry with the same key and bytes (within 24 h) answers the first upload's result instead of adding an alias (inline uploads only)."`
}

// mediaRequestKey carries the upload's *http.Request (for its body and length) from
// keepRequest to the handler.
type mediaRequestKey struct{}

// keepRequest hands the request, its body unread, to a handler that streams it.
func keepRequest(ctx huma.Context, next func(huma.Context)) {
	r, _ := unwrap(ctx)
	next(huma.WithValue(ctx, mediaRequestKey{}, r))
}

type mediaUploadOut struct {
	Status int
	Body   media.Upload
}

type mediaOut struct{ Body media.Media }

type mediaNotFoundIn struct {
	TenantPath
	Body struct {
		Alias string `json:"alias" maxLength:"80" doc:"One of the tenant's aliases; empty unsets the not-found image."`
	}
}

type mediaDetailsIn struct {
	MediaPath
	Blurhash bool `query:"blurhash" doc:"Include the image's blurhash (computed on the first request, then kept)."`
}

type mediaBackgroundOut struct {
	Body struct {
		UploadID string `json:"upload_id" doc:"Claim the result with it."`
	}
}

type mediaClaimIn struct {
	TenantPath
	ID          string `path:"id" maxLength:"36" doc:"The backgrounded upload's id."`
	WaitSeconds int    `query:"wait_seconds" minimum:"0" maximum:"60" default:"10" doc:"How long to wait for the result."`
}

type mediaVariantIn struct {
	MediaPath
	Spec       string `path:"spec" maxLength:"500" doc:"Processing spec, operations separated by /: thumbnail=N, resize=fit:WxH, resize=fill:WxH, crop=X,Y,W,H, blur=R, format=png|jpeg|gif."`
	Background bool   `query:"background" doc:"Do not wait: 202 when the variant is still being generated."`
}

type mediaVariantHeadIn struct {
	MediaPath
	Spec string `path:"spec" maxLength:"500" doc:"Processing spec."`
}

type mediaProxyIn struct {
	TenantPath
	URL string `query:"url" required:"true" maxLength:"4096" doc:"The http(s) URL to fetch (once) and serve."`
}

type mediaDeleteIn struct {
	MediaPath
	Token string `header:"Delete-Token" required:"true" maxLength:"200" doc:"The delete token the upload answered."`
}

type mediaHashesIn struct {
	TenantPath
	Limit  int       `query:"limit" minimum:"1" maximum:"1000" default:"100" doc:"Page size."`
	Cursor string    `query:"cursor" maxLength:"200" doc:"next_cursor of the previous page."`
	Before time.Time `query:"before" doc:"Start at the newest hash created at or before this instant (RFC 3339)."`
}

type mediaHashesOut struct{ Body media.HashPage }

type mediaHashIn struct {
	TenantPath
	Hash string `path:"hash" maxLength:"64" doc:"SHA-256 of the bytes, hex."`
}

type mediaPruneOut struct {
	Body struct {
		Removed int `json:"removed" doc:"How many records were removed."`
	}
}

// multipartOverhead is what a multipart body may carry beyond the file's bytes (the
// boundaries, part headers and small fields) before a Content-Length counts as oversize.
const multipartOverhead = 64 << 10

func (s *Server) routesMedia() {
	svc := s.deps.Media
	if svc == nil {
		return
	}
	tags := []string{"Media"}
	huma.Register(s.api, huma.Operation{
		OperationID: "media-upload", Method: http.MethodPost, Path: "/v1/t/{tenant}/media", Tags: tags,
		Summary: "Upload a file (write on media:*)",
		Description: "A multipart/form-data body with the content in the part named `file`, streamed to disk and hashed " +
			"as it arrives, then checked against the limits (bytes, width, height, area, frames, kinds). Bytes the tenant " +
			"already has are stored once: the answer is a new alias and delete token either way. The delete token is " +
			"shown only in this answer. A Content-Length over the limit answers 413 before the body is read.",
		Security: signedIn, DefaultStatus: http.StatusCreated, BodyReadTimeout: -1,
		Middlewares: huma.Middlewares{keepRequest},
		Errors:      []int{400, 401, 403, 404, 413, 415, 422, 503},
	}, func(ctx context.Context, in *mediaUploadIn) (*mediaUploadOut, error) {
		part, done, err := uploadPart(ctx, svc, in.ContentType)
		if err != nil {
			return nil, err
		}
		defer done()
		up, err := svc.Upload(ctx, in.Tenant, media.UploadInput{Body: part, ContentType: part.Header.Get("Content-Type"),
			IdempotencyKey: in.IdempotencyKey})
		if err != nil {
			return nil, err
		}
		return &mediaUploadOut{Status: http.StatusCreated, Body: up}, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-upload-background", Method: http.MethodPost, Path: "/v1/t/{tenant}/media/uploads", Tags: tags,
		Summary: "Upload a file, processed in the background (write on media:*)",
		Description: "Like the upload, but the bytes are only received (streamed, hashed, bounded) before answering 202 with " +
			"an upload id; checking and keeping them is a queue job. Claim the result (once) at " +
			"/media/uploads/{id}/claim before it expires.",
		Security: signedIn, DefaultStatus: http.StatusAccepted, BodyReadTimeout: -1,
		Middlewares: huma.Middlewares{keepRequest},
		Errors:      []int{400, 401, 403, 404, 413, 415, 503},
	}, func(ctx context.Context, in *mediaUploadIn) (*mediaBackgroundOut, error) {
		part, done, err := uploadPart(ctx, svc, in.ContentType)
		if err != nil {
			return nil, err
		}
		defer done()
		id, err := svc.UploadBackground(ctx, in.Tenant, media.UploadInput{Body: part, ContentType: part.Header.Get("Content-Type")})
		out := &mediaBackgroundOut{}
		out.Body.UploadID = id
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-upload-claim", Method: http.MethodPost, Path: "/v1/t/{tenant}/media/uploads/{id}/claim", Tags: tags,
		Summary: "Claim a backgrounded upload's result, once (write on media:*)",
		Description: "Waits up to wait_seconds for the result: 201 with the upload (alias, delete token, details), or the " +
			"problem that refused it; 503 upload_pending (Retry-After) when still processing; 404 upload_not_found when " +
			"claimed already or expired.",
		Security: signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 413, 422, 503},
	}, func(ctx context.Context, in *mediaClaimIn) (*mediaUploadOut, error) {
		up, err := svc.UploadClaim(ctx, in.Tenant, in.ID, time.Duration(in.WaitSeconds)*time.Second)
		if err != nil {
			return nil, err
		}
		return &mediaUploadOut{Status: http.StatusCreated, Body: up}, nil
	})
	// Documented only: huma would read (and refuse) a multipart body it knew of, and the
	// upload streams the body itself.
	for _, p := range []string{"/v1/t/{tenant}/media", "/v1/t/{tenant}/media/uploads"} {
		if pi := s.api.OpenAPI().Paths[p]; pi != nil && pi.Post != nil {
			pi.Post.RequestBody = &huma.RequestBody{Required: true, Content: map[string]*huma.MediaType{"multipart/form-data": {
				Schema: &huma.Schema{Type: huma.TypeObject, Required: []string{"file"},
					Properties: map[string]*huma.Schema{"file": {Type: huma.TypeString, Format: "binary"}}}}}}
		}
	}
	huma.Register(s.api, huma.Operation{
		OperationID: "media-original", Method: http.MethodGet, Path: "/v1/t/{tenant}/media/{alias}", Tags: tags,
		Summary:     "Download an upload's original bytes (read)",
		Description: "With its content type, the hash as ETag, ranges and conditional requests.",
		Security:    signedIn, Errors: []int{401, 403, 404},
		Responses: map[string]*huma.Response{"200": {Description: "The original bytes.",
			Content: map[string]*huma.MediaType{"application/octet-stream": {Schema: &huma.Schema{Type: huma.TypeString, Format: "binary"}}}}},
	}, func(ctx context.Context, in *MediaPath) (*huma.StreamResponse, error) {
		blob, m, err := svc.MediaOpen(ctx, in.Tenant, in.Alias)
		if problem.HasCode(err, "alias_not_found") {
			// Authorized, and no such alias: the tenant's not-found image, if any, with 404.
			if nb, nm, ok, nerr := svc.NotFoundOpen(ctx, in.Tenant); nerr == nil && ok {
				return serveNotFound(nb, nm), nil
			}
		}
		if err != nil {
			return nil, err
		}
		return serveBlob(blob, m), nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-not-found-set", Method: http.MethodPut, Path: "/v1/t/{tenant}/media/not-found", Tags: tags,
		Summary:  "Choose the image answered (with 404) for unknown aliases; an empty alias unsets it (admin on media:*)",
		Security: signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *mediaNotFoundIn) (*struct{}, error) {
		return nil, svc.NotFoundSet(ctx, in.Tenant, in.Body.Alias)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-variant", Method: http.MethodGet, Path: "/v1/t/{tenant}/media/{alias}/variants/{spec...}", Tags: tags,
		Summary: "Download a processed variant (read)",
		Description: "Generated on first request by a queue job — one per bytes and spec across all nodes — and waited for " +
			"up to a bound (then 503 variant_pending with Retry-After); with background=true, 202 at once while it is " +
			"generated. 422 invalid_spec for a malformed spec.",
		Security: signedIn, Errors: []int{401, 403, 404, 422, 503},
		Responses: map[string]*huma.Response{"200": {Description: "The variant's bytes.",
			Content: map[string]*huma.MediaType{"application/octet-stream": {Schema: &huma.Schema{Type: huma.TypeString, Format: "binary"}}}},
			"202": {Description: "Backgrounded: the variant is being generated."}},
	}, func(ctx context.Context, in *mediaVariantIn) (*huma.StreamResponse, error) {
		blob, v, err := svc.VariantOpen(ctx, in.Tenant, in.Alias, in.Spec, &media.VariantOptions{NoWait: in.Background})
		if in.Background && problem.HasCode(err, "variant_pending") {
			return &huma.StreamResponse{Body: func(hctx huma.Context) {
				hctx.SetHeader("Content-Type", "application/json")
				hctx.SetHeader("Retry-After", "1")
				hctx.SetStatus(http.StatusAccepted)
				_, _ = hctx.BodyWriter().Write([]byte(`{"status":"pending"}` + "\n"))
			}}, nil
		}
		if err != nil {
			return nil, err
		}
		return serveBlob(blob, media.Media{Alias: v.Alias, Hash: v.Hash, Details: v.Details}), nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-variant-head", Method: http.MethodHead, Path: "/v1/t/{tenant}/media/{alias}/variants/{spec...}", Tags: tags,
		Summary: "Whether a variant exists (read): 200 or 404 variant_not_found, without generating it", Security: signedIn,
		Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *mediaVariantHeadIn) (*struct{}, error) {
		b, _, err := svc.VariantOpen(ctx, in.Tenant, in.Alias, in.Spec, &media.VariantOptions{ExistsOnly: true})
		if b != nil {
			_ = b.Close()
		}
		return nil, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-variants-delete", Method: http.MethodDelete, Path: "/v1/t/{tenant}/media/variants", Tags: tags,
		Summary: "Delete every variant of the tenant (admin on media:*); they are generated again on request", Security: signedIn,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*mediaPruneOut, error) {
		n, err := svc.VariantsDeleteAll(ctx, in.Tenant)
		out := &mediaPruneOut{}
		out.Body.Removed = n
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-proxy", Method: http.MethodGet, Path: "/v1/t/{tenant}/media/proxy", Tags: tags,
		Summary: "Fetch a remote URL once, keep it and serve it (write on media:*)",
		Description: "The first request for a URL (compared normalized) fetches it — once, however many requests arrive " +
			"together — and keeps it under an alias like an upload; later requests serve the kept bytes. Loopback, " +
			"private, link-local and other non-public addresses are refused (403 proxy_address_forbidden), also after " +
			"redirects and DNS resolution. Unused proxied media are evicted after the configured age.",
		Security: signedIn, Errors: []int{401, 403, 404, 413, 422, 502, 503},
		Responses: map[string]*huma.Response{"200": {Description: "The proxied bytes.",
			Content: map[string]*huma.MediaType{"application/octet-stream": {Schema: &huma.Schema{Type: huma.TypeString, Format: "binary"}}}}},
	}, func(ctx context.Context, in *mediaProxyIn) (*huma.StreamResponse, error) {
		blob, m, err := svc.ProxyOpen(ctx, in.Tenant, in.URL)
		if err != nil {
			return nil, err
		}
		return serveBlob(blob, m), nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-details", Method: http.MethodGet, Path: "/v1/t/{tenant}/media/{alias}/details", Tags: tags,
		Summary: "An upload's details: width, height, frames, content type, format (read)", Security: signedIn,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *mediaDetailsIn) (*mediaOut, error) {
		get := svc.MediaGet
		if in.Blurhash {
			get = svc.MediaBlurhash
		}
		m, err := get(ctx, in.Tenant, in.Alias)
		return &mediaOut{Body: m}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-delete", Method: http.MethodDelete, Path: "/v1/t/{tenant}/media/{alias}", Tags: tags,
		Summary: "Delete an upload with its delete token (write)",
		Description: "A wrong token answers 403 wrong_delete_token; an alias that does not exist counts as deleted (204). " +
			"The last alias of some bytes takes their variants, details and blob with it.",
		Security: signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *mediaDeleteIn) (*struct{}, error) {
		return nil, svc.MediaDelete(ctx, in.Tenant, in.Alias, in.Token)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-hashes", Method: http.MethodGet, Path: "/v1/t/{tenant}/media", Tags: tags,
		Summary: "List stored blobs newest first (admin on media:*)", Security: signedIn,
		Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *mediaHashesIn) (*mediaHashesOut, error) {
		p, err := svc.HashList(ctx, in.Tenant, &media.HashListOptions{Limit: in.Limit, Cursor: in.Cursor, Before: in.Before})
		return &mediaHashesOut{Body: p}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-hash-purge", Method: http.MethodDelete, Path: "/v1/t/{tenant}/media/hashes/{hash}", Tags: tags,
		Summary: "Purge stored bytes with all their aliases, variants and proxies (admin on media:*)", Security: signedIn,
		DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *mediaHashIn) (*struct{}, error) {
		return nil, svc.HashPurge(ctx, in.Tenant, in.Hash)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "media-prune-missing", Method: http.MethodPost, Path: "/v1/t/{tenant}/media/prune-missing", Tags: tags,
		Summary: "Remove the records of blobs missing from the store (admin on media:*)", Security: signedIn,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*mediaPruneOut, error) {
		n, err := svc.HashPruneMissing(ctx, in.Tenant)
		out := &mediaPruneOut{}
		out.Body.Removed = n
		return out, err
	})
}

// serveBlob answers a blob with its type, the hash as ETag, ranges and conditional
// requests, and closes it.
func serveBlob(blob media.Blob, m media.Media) *huma.StreamResponse {
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		defer blob.Close()
		r, w := unwrap(hctx)
		w.Header().Set("Content-Type", m.Details.ContentType)
		w.Header().Set("ETag", `"`+m.Hash+`"`)
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Media-Alias", m.Alias)
		http.ServeContent(w, r, "", m.Details.CreatedAt, blob)
	}}
}

// uploadPart refuses an oversize Content-Length before reading anything, then reads the
// multipart body up to its file part. The caller calls done once it has read the part.
func uploadPart(ctx context.Context, svc *media.Service, contentType string) (part *multipart.Part, done func(), err error) {
	r, _ := ctx.Value(mediaRequestKey{}).(*http.Request)
	if r == nil {
		return nil, nil, problem.Internal(errors.New("media upload: no request in context"))
	}
	max := svc.Limits().MaxBytes
	if r.ContentLength > max+multipartOverhead {
		return nil, nil, problem.TooLarge("upload_too_large", "the upload is larger than %d bytes", max)
	}
	// multipart reads through a 4 KiB buffer; a larger one underneath turns 256 socket
	// reads per MiB into a few. The buffers are reused across uploads.
	br := uploadReaders.Get().(*bufio.Reader)
	br.Reset(r.Body)
	done = func() {
		br.Reset(nil)
		uploadReaders.Put(br)
	}
	part, err = filePart(contentType, br)
	if err != nil {
		done()
		return nil, nil, err
	}
	return part, done, nil
}

var uploadReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 256<<10) }}

// serveNotFound answers the not-found image with status 404.
func serveNotFound(blob media.Blob, m media.Media) *huma.StreamResponse {
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		defer blob.Close()
		hctx.SetHeader("Content-Type", m.Details.ContentType)
		hctx.SetHeader("Cache-Control", "no-store")
		hctx.SetHeader("X-Content-Type-Options", "nosniff")
		hctx.SetHeader("Content-Length", strconv.FormatInt(m.Details.Size, 10))
		hctx.SetStatus(http.StatusNotFound)
		_, _ = io.Copy(hctx.BodyWriter(), blob)
	}}
}

// filePart reads a multipart body up to its part named "file", without buffering it.
func filePart(contentType string, body io.Reader) (*multipart.Part, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" || body == nil {
		return nil, problem.New(http.StatusUnsupportedMediaType, "unsupported_media_type", "uploads are multipart/form-data with a part named file")
	}
	mr := multipart.NewReader(body, params["boundary"])
	for range 20 {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, problem.Invalid("invalid_multipart", "the multipart body is malformed").WithCause(err)
		}
		if part.FormName() == "file" {
			return part, nil
		}
		if _, err := io.Copy(io.Discard, io.LimitReader(part, multipartOverhead)); err != nil {
			return nil, problem.Invalid("invalid_multipart", "the multipart body is malformed").WithCause(err)
		}
	}
	return nil, problem.Invalid("missing_file", "the multipart body has no part named file").WithField("body.file", "required")
}

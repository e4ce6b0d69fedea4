package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/series"
)

// DevicePath is embedded by operations on one device.
type DevicePath struct {
	TenantPath
	Device string `path:"device" doc:"Device id."`
}

type deviceCreateIn struct {
	TenantPath
	Body series.DeviceInput
}

type deviceCreated struct {
	Body struct {
		Device      series.Device      `json:"device"`
		Credentials series.Credentials `json:"credentials" doc:"MQTT credentials for the embedded broker; the password is shown only now."`
	}
}

type deviceOut struct{ Body series.Device }

type deviceListIn struct {
	TenantPath
	PageQuery
	Kind string `query:"kind" maxLength:"100" doc:"Only devices of this kind."`
}

type deviceListOut struct{ Body series.DeviceList }

type deviceUpdateIn struct {
	DevicePath
	Body series.DeviceUpdate
}

type credentialsIn struct {
	DevicePath
	Body *struct {
		GraceSeconds int `json:"grace_seconds,omitempty" minimum:"0" maximum:"2592000" doc:"How long the current password keeps working beside the new one."`
	}
}

type credentialsOut struct{ Body series.Credentials }

type keyCreateIn struct {
	TenantPath
	Body series.KeyInput
}

type deviceKeyCreateIn struct {
	DevicePath
	Body series.KeyInput
}

type keyCreated struct {
	Body struct {
		Key    series.Key `json:"key"`
		Secret string     `json:"secret" doc:"The Fernet key (URL-safe base64), shown only now: give it to the device."`
	}
}

type keyListOut struct {
	Body struct {
		Items []series.Key `json:"items"`
	}
}

type keyRetireIn struct {
	TenantPath
	Key          string `path:"key" doc:"Key id."`
	AfterSeconds int    `query:"after_seconds" minimum:"0" maximum:"2592000" doc:"Keep decrypting this long, then stop; 0: at once."`
}

type latestOut struct{ Body series.DeviceLatest }

type latestTenantOut struct {
	Body struct {
		Items []series.DeviceLatest `json:"items"`
	}
}

type historyIn struct {
	DevicePath
	Metric []string  `query:"metric" doc:"Metrics to return (repeat, or comma-separated); default every declared metric."`
	From   time.Time `query:"from" doc:"Start (inclusive, RFC 3339); default 24 hours before to."`
	To     time.Time `query:"to" doc:"End (exclusive, RFC 3339); default now."`
	Bucket string    `query:"bucket" maxLength:"16" example:"1h" doc:"raw, auto (default), or a width: 10s, 1m, 5m, 1h, 1d…"`
	Agg    string    `query:"agg" enum:"avg,min,max,sum,count,last" doc:"How a bucket's readings combine; default avg."`
	Limit  int       `query:"limit" minimum:"1" maximum:"10000" doc:"Points per series, at most; default 1000."`
}

type historyOut struct{ Body series.History }

type ingestIn struct {
	TenantPath
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Marks a retry: readings already stored (same device, metric and time) are not stored again."`
	RawBody        []byte `contentType:"application/json"`
}

type deviceIngestIn struct {
	DevicePath
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Marks a retry: readings already stored (same device, metric and time) are not stored again."`
	RawBody        []byte `contentType:"application/json"`
}

type ingestOut struct{ Body series.IngestResult }

type statsOut struct{ Body series.Stats }

type rejectsIn struct {
	TenantPath
	PageQuery
	Reason   string `query:"reason" maxLength:"64" doc:"Only rejections for this reason."`
	DeviceID string `query:"device_id" maxLength:"64" doc:"Only this device's."`
}

type rejectsOut struct{ Body series.RejectList }

type settingsOut struct{ Body series.Settings }

type settingsIn struct {
	TenantPath
	Body series.SettingsInput
}

type streamTenantIn struct {
	TenantPath
}

type streamDeviceIn struct {
	DevicePath
}

// ingestItem documents an ingest item (the Go type embeds the payload's fields).
type ingestItem struct {
	DeviceID  string             `json:"device_id" doc:"The device (optional on the per-device route)."`
	Payload   string             `json:"payload,omitempty" doc:"A Fernet token or JSON text, as the device publishes it; or give the fields below."`
	SensorID  any                `json:"sensor_id,omitempty"`
	Timestamp any                `json:"timestamp,omitempty" doc:"RFC 3339, or Unix seconds; default the time received."`
	Values    map[string]float64 `json:"values,omitempty" doc:"Metric name to number (booleans count as 1 and 0)."`
}

type ingestRequest struct {
	Items []ingestItem `json:"items" maxItems:"50000"`
}

// maxIngestBody bounds an HTTP batch.
const maxIngestBody = 64 << 20

func (s *Server) routesSeries() {
	svc := s.deps.Series
	if svc == nil {
		return
	}
	s.metrics.reg.MustRegister(svc.Collector())
	tags := []string{"Devices"}
	huma.Register(s.api, huma.Operation{
		OperationID: "device-create", Method: http.MethodPost, Path: "/v1/t/{tenant}/devices", Tags: tags,
		Summary:     "Register a device",
		Description: "Write on device:* is required. The answer carries the device's MQTT credentials for the embedded broker; the password is shown only now.",
		Security:    signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *deviceCreateIn) (*deviceCreated, error) {
		d, c, err := svc.DeviceCreate(ctx, in.Tenant, in.Body)
		out := &deviceCreated{}
		out.Body.Device, out.Body.Credentials = d, c
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices", Tags: tags,
		Summary: "List devices", Security: signedIn, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *deviceListIn) (*deviceListOut, error) {
		l, err := svc.DeviceList(ctx, in.Tenant, &series.DeviceListOptions{Kind: in.Kind, Limit: in.Limit, Cursor: in.Cursor})
		return &deviceListOut{Body: l}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-get", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/{device}", Tags: tags,
		Summary: "Get a device", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *DevicePath) (*deviceOut, error) {
		d, err := svc.DeviceGet(ctx, in.Tenant, in.Device)
		return &deviceOut{Body: d}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-update", Method: http.MethodPatch, Path: "/v1/t/{tenant}/devices/{device}", Tags: tags,
		Summary: "Change a device", Description: "Fields left out are unchanged; metrics, when given, is the new full list.",
		Security: signedIn, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *deviceUpdateIn) (*deviceOut, error) {
		d, err := svc.DeviceUpdate(ctx, in.Tenant, in.Device, in.Body)
		return &deviceOut{Body: d}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-delete", Method: http.MethodDelete, Path: "/v1/t/{tenant}/devices/{device}", Tags: tags,
		Summary:     "Delete a device",
		Description: "Its keys and latest values go at once; its history and rollups are purged within minutes.",
		Security:    signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *DevicePath) (*struct{}, error) {
		return nil, svc.DeviceDelete(ctx, in.Tenant, in.Device)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-credentials-rotate", Method: http.MethodPost, Path: "/v1/t/{tenant}/devices/{device}/credentials", Tags: tags,
		Summary:     "Give a device a new MQTT password",
		Description: "Admin on the device is required. The old password works for grace_seconds more (default 0).",
		Security:    signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *credentialsIn) (*credentialsOut, error) {
		o := &series.CredentialRotateOptions{}
		if in.Body != nil {
			o.Grace = time.Duration(in.Body.GraceSeconds) * time.Second
		}
		c, err := svc.DeviceCredentialsRotate(ctx, in.Tenant, in.Device, o)
		return &credentialsOut{Body: c}, err
	})

	ktags := []string{"Device keys"}
	created := func(k series.Key, secret string, err error) (*keyCreated, error) {
		out := &keyCreated{}
		out.Body.Key, out.Body.Secret = k, secret
		return out, err
	}
	huma.Register(s.api, huma.Operation{
		OperationID: "device-key-create", Method: http.MethodPost, Path: "/v1/t/{tenant}/devices/keys", Tags: ktags,
		Summary: "Add a Fernet key (tenant-wide, or for the device in device_id)",
		Description: "Every unexpired key of a scope decrypts, so keys rotate without a gap: add the new key with " +
			"retire_others_after_seconds, move the devices to it, and the old keys expire. A device with keys of its own " +
			"accepts only those; other devices accept the tenant-wide keys. Admin on the device (or device:*) is required.",
		Security: signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *keyCreateIn) (*keyCreated, error) {
		return created(svc.KeyCreate(ctx, in.Tenant, in.Body))
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-key-create-for-device", Method: http.MethodPost, Path: "/v1/t/{tenant}/devices/{device}/keys", Tags: ktags,
		Summary: "Add a Fernet key for one device", Security: signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *deviceKeyCreateIn) (*keyCreated, error) {
		in.Body.DeviceID = in.Device
		return created(svc.KeyCreate(ctx, in.Tenant, in.Body))
	})
	keyList := func(ctx context.Context, tenant, device string) (*keyListOut, error) {
		ks, err := svc.KeyList(ctx, tenant, device)
		out := &keyListOut{}
		out.Body.Items = ks
		return out, err
	}
	huma.Register(s.api, huma.Operation{
		OperationID: "device-key-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/keys", Tags: ktags,
		Summary: "List every Fernet key of the tenant (without secrets)", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*keyListOut, error) {
		return keyList(ctx, in.Tenant, "")
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-key-list-for-device", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/{device}/keys", Tags: ktags,
		Summary: "List a device's own Fernet keys (without secrets)", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *DevicePath) (*keyListOut, error) {
		return keyList(ctx, in.Tenant, in.Device)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "device-key-retire", Method: http.MethodDelete, Path: "/v1/t/{tenant}/devices/keys/{key}", Tags: ktags,
		Summary: "Retire a Fernet key, at once or after_seconds from now", Security: signedIn, DefaultStatus: http.StatusNoContent,
		Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *keyRetireIn) (*struct{}, error) {
		return nil, svc.KeyRetire(ctx, in.Tenant, in.Key, time.Duration(in.AfterSeconds)*time.Second)
	})

	rtags := []string{"Readings"}
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-latest", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/latest", Tags: rtags,
		Summary:     "Latest readings of every device of the tenant",
		Description: "Seed 002's /houses/{id}/data: each device with its name, kind and latest value per metric.",
		Security:    signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*latestTenantOut, error) {
		items, err := svc.LatestTenant(ctx, in.Tenant)
		out := &latestTenantOut{}
		out.Body.Items = items
		if out.Body.Items == nil {
			out.Body.Items = []series.DeviceLatest{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-latest-device", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/{device}/latest", Tags: rtags,
		Summary: "A device's latest readings", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *DevicePath) (*latestOut, error) {
		l, err := svc.LatestDevice(ctx, in.Tenant, in.Device)
		return &latestOut{Body: l}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-history", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/{device}/history", Tags: rtags,
		Summary: "A device's readings over a time range, raw or in buckets",
		Description: "bucket=auto picks raw readings up to an hour, then the narrowest bucket keeping each series within limit. " +
			"Buckets of whole hours read the per-hour rollups, of whole minutes the per-minute rollups.",
		Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *historyIn) (*historyOut, error) {
		var metrics []string
		for _, m := range in.Metric {
			for _, part := range strings.Split(m, ",") {
				if part = strings.TrimSpace(part); part != "" {
					metrics = append(metrics, part)
				}
			}
		}
		h, err := svc.History(ctx, in.Tenant, in.Device, series.HistoryQuery{Metrics: metrics, From: in.From, To: in.To,
			Bucket: in.Bucket, Agg: in.Agg, Limit: in.Limit})
		return &historyOut{Body: h}, err
	})
	ingestOp := func(id, path, summary string) huma.Operation {
		return huma.Operation{
			OperationID: id, Method: http.MethodPost, Path: path, Tags: rtags, Summary: summary,
			Description: "Stores messages through the same pipeline as MQTT and Redis and answers once they are committed. " +
				"Each item is a device's payload (a Fernet token or JSON text) or its fields inline; invalid, forged, expired or " +
				"out-of-range items are rejected one by one, listed in rejected with their reason. Write on each device is required.",
			Security: signedIn, MaxBodyBytes: maxIngestBody, SkipValidateBody: true, Errors: []int{400, 401, 403, 404, 413, 503},
		}
	}
	// The body is parsed by hand (a batch of 50,000 items is too large to validate
	// generically); its schema is documented all the same.
	documentBody := func(path string) {
		if item := s.api.OpenAPI().Paths[path]; item != nil && item.Post != nil && item.Post.RequestBody != nil {
			item.Post.RequestBody.Required = true
			item.Post.RequestBody.Content["application/json"] = &huma.MediaType{
				Schema: s.api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[ingestRequest](), true, "IngestRequest")}
		}
	}
	defer documentBody("/v1/t/{tenant}/devices/readings")
	defer documentBody("/v1/t/{tenant}/devices/{device}/readings")
	huma.Register(s.api, ingestOp("readings-ingest", "/v1/t/{tenant}/devices/readings", "Store a batch of messages of several devices"),
		func(ctx context.Context, in *ingestIn) (*ingestOut, error) {
			return ingest(ctx, svc, in.Tenant, "", in.IdempotencyKey, in.RawBody)
		})
	huma.Register(s.api, ingestOp("readings-ingest-device", "/v1/t/{tenant}/devices/{device}/readings", "Store a batch of one device's messages"),
		func(ctx context.Context, in *deviceIngestIn) (*ingestOut, error) {
			return ingest(ctx, svc, in.Tenant, in.Device, in.IdempotencyKey, in.RawBody)
		})
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-stats", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/stats", Tags: rtags,
		Summary:  "Ingest statistics: messages and readings stored, rejections by reason, this node's pipeline",
		Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*statsOut, error) {
		st, err := svc.Stats(ctx, in.Tenant)
		return &statsOut{Body: st}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-rejects", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/rejects", Tags: rtags,
		Summary:     "Rejected messages (the dead-letter ring), newest first",
		Description: "The last 1000 rejected messages per tenant are kept, with their payload as received (ciphertext stays ciphertext).",
		Security:    signedIn, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *rejectsIn) (*rejectsOut, error) {
		l, err := svc.Rejects(ctx, in.Tenant, &series.RejectListOptions{Reason: in.Reason, DeviceID: in.DeviceID, Limit: in.Limit, Cursor: in.Cursor})
		return &rejectsOut{Body: l}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-settings-get", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/settings", Tags: rtags,
		Summary: "Retentions and Fernet TTL of the tenant", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*settingsOut, error) {
		st, err := svc.SettingsGet(ctx, in.Tenant)
		return &settingsOut{Body: st}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-settings-update", Method: http.MethodPatch, Path: "/v1/t/{tenant}/devices/settings", Tags: rtags,
		Summary:     "Change the tenant's retentions and Fernet TTL (admin on device:*)",
		Description: "A new retention applies to data written from then on.",
		Security:    signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *settingsIn) (*settingsOut, error) {
		st, err := svc.SettingsUpdate(ctx, in.Tenant, in.Body)
		return &settingsOut{Body: st}, err
	})
	streamDoc := "Server-sent events: `event: reading` with {device_id, metric, value, time} as each reading commits " +
		"(readings committed by another node arrive as that series' latest value); `event: dropped` with a count when " +
		"this client fell behind and events were skipped; a comment every 15 s keeps the connection open. The stream " +
		"ends when the caller loses access."
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-stream", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/stream", Tags: rtags,
		Summary: "Live readings of every device of the tenant", Description: streamDoc, Security: signedIn, Errors: []int{401, 403, 404},
		Responses: map[string]*huma.Response{"200": {Description: "An event stream", Content: map[string]*huma.MediaType{"text/event-stream": {}}}},
	}, func(ctx context.Context, in *streamTenantIn) (*huma.StreamResponse, error) {
		return s.streamReadings(ctx, in.Tenant, "")
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "readings-stream-device", Method: http.MethodGet, Path: "/v1/t/{tenant}/devices/{device}/stream", Tags: rtags,
		Summary: "Live readings of one device", Description: streamDoc, Security: signedIn, Errors: []int{401, 403, 404},
		Responses: map[string]*huma.Response{"200": {Description: "An event stream", Content: map[string]*huma.MediaType{"text/event-stream": {}}}},
	}, func(ctx context.Context, in *streamDeviceIn) (*huma.StreamResponse, error) {
		return s.streamReadings(ctx, in.Tenant, in.Device)
	})
}

func ingest(ctx context.Context, svc *series.Service, tenant, device, idemKey string, body []byte) (*ingestOut, error) {
	var req series.IngestRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, problem.Invalid("malformed_json", "the body is not a JSON object with items").WithField("body", "malformed")
	}
	if device != "" {
		for i := range req.Items {
			if req.Items[i].DeviceID == "" {
				req.Items[i].DeviceID = device
			} else if req.Items[i].DeviceID != device {
				return nil, problem.Unprocessable("device_mismatch", "item %d names another device than the path", i).
					WithField(fmt.Sprintf("body.items[%d].device_id", i), "not the path's device")
			}
		}
	}
	res, err := svc.Ingest(ctx, tenant, req.Items, &series.IngestOptions{Retry: idemKey != ""})
	return &ingestOut{Body: res}, err
}

// streamHeartbeat keeps idle event streams (and proxies) from timing out; access is
// checked again every streamRecheck.
const (
	streamHeartbeat = 15 * time.Second
	streamRecheck   = 30 * time.Second
)

func (s *Server) streamReadings(ctx context.Context, tenant, device string) (*huma.StreamResponse, error) {
	sub, err := s.deps.Series.Subscribe(ctx, tenant, device)
	if err != nil {
		return nil, err
	}
	resource := "device:*"
	if device != "" {
		resource = "device:" + device
	}
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		defer sub.Close()
		_, w := humago.Unwrap(hctx)
		rc := http.NewResponseController(w)
		hctx.SetHeader("Content-Type", "text/event-stream")
		hctx.SetHeader("Cache-Control", "no-cache")
		hctx.SetHeader("X-Accel-Buffering", "no")
		hctx.SetStatus(http.StatusOK)
		write := func(b []byte) bool {
			_ = rc.SetWriteDeadline(time.Now().Add(streamHeartbeat + 10*time.Second))
			if _, err := w.Write(b); err != nil {
				return false
			}
			return rc.Flush() == nil
		}
		if !write([]byte(": connected\n\n")) {
			return
		}
		reqCtx := hctx.Context()
		beat := time.NewTicker(streamHeartbeat)
		defer beat.Stop()
		recheck := time.NewTicker(streamRecheck)
		defer recheck.Stop()
		var buf []byte
		for {
			select {
			case <-reqCtx.Done():
				return
			case <-beat.C:
				if !write([]byte(": keep-alive\n\n")) {
					return
				}
			case <-recheck.C:
				if _, err := s.deps.Auth.Authorize(reqCtx, tenant, resource, auth.PermRead); err != nil {
					_ = write([]byte("event: end\ndata: {\"reason\":\"access ended\"}\n\n"))
					return
				}
			case evs, ok := <-sub.C:
				if !ok {
					return
				}
				buf = buf[:0]
				if n := sub.Dropped(); n > 0 {
					buf = fmt.Appendf(buf, "event: dropped\ndata: {\"count\":%d}\n\n", n)
				}
				for _, e := range evs {
					b, _ := json.Marshal(e)
					buf = append(buf, "event: reading\ndata: "...)
					buf = append(buf, b...)
					buf = append(buf, "\n\n"...)
				}
				if !write(buf) {
					return
				}
			}
		}
	}}, nil
}

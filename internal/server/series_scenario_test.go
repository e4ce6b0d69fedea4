package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/stratadb/strata/series"
)

// newDevice registers a device of T as its owner, with a Fernet key.
func (w *world) newDevice() (series.Device, series.Credentials, *fernet.Key) {
	w.t.Helper()
	r := w.must(201, "POST", "/v1/t/"+w.T+"/devices", w.authz[owner],
		`{"name":"sensor","kind":"climate","metrics":{"temperature":{"min":-40,"max":85,"unit":"°C"},"humidity":{"min":0,"max":100}}}`)
	var out struct {
		Device      series.Device
		Credentials series.Credentials
	}
	r.json(w.t, &out)
	r = w.must(201, "POST", "/v1/t/"+w.T+"/devices/"+out.Device.ID+"/keys", w.authz[owner], `{}`)
	var k struct{ Secret string }
	r.json(w.t, &k)
	key, err := fernet.DecodeKey(k.Secret)
	if err != nil {
		w.t.Fatal(err)
	}
	return out.Device, out.Credentials, key
}

// seriesDigest fingerprints the series tables, to prove a denied request changed nothing.
func (w *world) seriesDigest() string {
	w.t.Helper()
	var d string
	err := w.s.Pool().QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'd' || id || name || kind || metadata::text || metrics::text || disabled || encode(secret_hash, 'hex') FROM strata.devices
		UNION ALL SELECT 'k' || id || coalesce(expires_at::text, '') FROM strata.device_keys
		UNION ALL SELECT 's' || tenant_id || raw_keep_days || fernet_ttl_seconds FROM strata.series_settings
		UNION ALL SELECT 'r' || count(*) FROM strata.readings) d(x)`).Scan(&d)
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

func seriesEndpoints() []endpoint {
	t := func(w *world, rest string) string { return "/v1/t/" + w.T + "/devices" + rest }
	dev := func(w *world) string { d, _, _ := w.newDevice(); return d.ID }
	read := statuses(200, anon, 401, outsider, 404)
	write := func(ok int) map[string]int {
		return statuses(403, anon, 401, outsider, 404, owner+","+admin+","+platAdm, ok)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	return []endpoint{
		{"device create", "POST", func(w *world, _ string) (string, string) {
			return t(w, ""), `{"name":"new","metrics":{"temperature":{}}}`
		}, write(201)},
		{"device list", "GET", func(w *world, _ string) (string, string) { return t(w, ""), "" }, read},
		{"device get", "GET", func(w *world, _ string) (string, string) { return t(w, "/"+dev(w)), "" }, read},
		{"device update", "PATCH", func(w *world, _ string) (string, string) { return t(w, "/"+dev(w)), `{"name":"renamed"}` }, write(200)},
		{"device delete", "DELETE", func(w *world, _ string) (string, string) { return t(w, "/"+dev(w)), "" }, write(204)},
		{"device credentials", "POST", func(w *world, _ string) (string, string) {
			return t(w, "/"+dev(w)+"/credentials"), `{"grace_seconds":60}`
		}, write(200)},
		{"key create (tenant-wide)", "POST", func(w *world, _ string) (string, string) { return t(w, "/keys"), `{"name":"house"}` }, write(201)},
		{"key create (device)", "POST", func(w *world, _ string) (string, string) { return t(w, "/"+dev(w)+"/keys"), `{}` }, write(201)},
		{"key list", "GET", func(w *world, _ string) (string, string) { return t(w, "/keys"), "" }, read},
		{"key list (device)", "GET", func(w *world, _ string) (string, string) { return t(w, "/"+dev(w)+"/keys"), "" }, read},
		{"key retire", "DELETE", func(w *world, _ string) (string, string) {
			r := w.must(201, "POST", t(w, "/keys"), w.authz[owner], `{}`)
			var k struct{ Key series.Key }
			r.json(w.t, &k)
			return t(w, "/keys/"+k.Key.ID+"?after_seconds=60"), ""
		}, write(204)},
		{"latest (tenant)", "GET", func(w *world, _ string) (string, string) { return t(w, "/latest"), "" }, read},
		{"latest (device)", "GET", func(w *world, _ string) (string, string) { return t(w, "/"+dev(w)+"/latest"), "" }, read},
		{"history", "GET", func(w *world, _ string) (string, string) { return t(w, "/"+dev(w)+"/history?bucket=1h&agg=max"), "" }, read},
		{"ingest", "POST", func(w *world, _ string) (string, string) {
			return t(w, "/readings"), fmt.Sprintf(`{"items":[{"device_id":%q,"timestamp":%q,"values":{"temperature":20}}]}`, dev(w), now)
		}, write(200)},
		{"ingest (device)", "POST", func(w *world, _ string) (string, string) {
			return t(w, "/"+dev(w)+"/readings"), fmt.Sprintf(`{"items":[{"timestamp":%q,"values":{"temperature":20}}]}`, now)
		}, write(200)},
		{"stats", "GET", func(w *world, _ string) (string, string) { return t(w, "/stats"), "" }, read},
		{"rejects", "GET", func(w *world, _ string) (string, string) { return t(w, "/rejects"), "" }, read},
		{"settings get", "GET", func(w *world, _ string) (string, string) { return t(w, "/settings"), "" }, read},
		{"settings update", "PATCH", func(w *world, _ string) (string, string) { return t(w, "/settings"), `{"raw_keep_days":90}` }, write(200)},
	}
}

// Every device and readings endpoint × every identity: the status; a denied request
// changes nothing and leaves one audit row; an allowed write leaves an audit row.
func TestSeriesEndpointsByIdentity(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.checkEndpoints(t, seriesEndpoints(), func(*testing.T, *world) string { return w.seriesDigest() })
}

// Another tenant's device answers 404 on every device route, through the caller's own
// tenant, and never shows its data.
func TestSeriesOtherTenantsDevice(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d, _, _ := w.newDevice()
	u := w.tenant(w.authz[outsider], "U2")
	for _, path := range []string{"", "/latest", "/history", "/keys"} {
		r := w.do("GET", "/v1/t/"+u+"/devices/"+d.ID+path, w.authz[outsider], "")
		if r.status != 404 || strings.Contains(r.body, d.Name) {
			t.Errorf("GET %s through another tenant: %d %s", path, r.status, r.body)
		}
	}
	for _, c := range [][3]string{{"PATCH", "", `{"name":"x"}`}, {"DELETE", "", ""}, {"POST", "/credentials", `{}`}, {"POST", "/keys", `{}`}} {
		if r := w.do(c[0], "/v1/t/"+u+"/devices/"+d.ID+c[1], w.authz[outsider], c[2]); r.status != 404 {
			t.Errorf("%s %s through another tenant: %d %s", c[0], c[1], r.status, r.body)
		}
	}
	r := w.must(200, "POST", "/v1/t/"+u+"/devices/readings", w.authz[outsider],
		fmt.Sprintf(`{"items":[{"device_id":%q,"values":{"temperature":1}}]}`, d.ID))
	if !strings.Contains(r.body, `"reason":"unknown_device"`) {
		t.Errorf("ingest into another tenant's device: %s", r.body)
	}
}

// Seed 002 over HTTP: a device's encrypted readings go in as a batch (Fernet payloads and
// inline fields mixed), are rejected one by one when wrong, and come out as the tenant's
// latest data, history, statistics and dead letters; the OpenAPI document describes it.
func TestSeriesHTTPFlow(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d, _, key := w.newDevice()
	tok := func(v float64, at time.Time) string {
		b, _ := json.Marshal(map[string]any{"sensor_id": d.ID, "timestamp": at.UTC().Format(time.RFC3339), "values": map[string]any{"temperature": v, "humidity": 45}})
		s, _ := fernet.EncryptAndSign(b, key)
		return string(s)
	}
	now := time.Now().Truncate(time.Second)
	body := fmt.Sprintf(`{"items":[
		{"device_id":%q,"payload":%q},
		{"device_id":%q,"timestamp":%q,"values":{"temperature":22.5}},
		{"device_id":%q,"timestamp":%q,"values":{"temperature":500}},
		{"device_id":%q,"payload":"gAAAAAforged"}]}`,
		d.ID, tok(21, now.Add(-2*time.Minute)), d.ID, now.Add(-time.Minute).UTC().Format(time.RFC3339), d.ID, now.UTC().Format(time.RFC3339), d.ID)
	r := w.must(200, "POST", "/v1/t/"+w.T+"/devices/readings", w.authz[admin], body)
	var res series.IngestResult
	r.json(t, &res)
	if res.Accepted != 2 || res.Readings != 3 || len(res.Rejected) != 2 || res.Rejected[0].Index != 2 ||
		res.Rejected[0].Reason != "out_of_range" || res.Rejected[1].Reason != "malformed" {
		t.Fatalf("ingest result %+v", res)
	}
	r = w.must(200, "GET", "/v1/t/"+w.T+"/devices/latest", w.authz[viewer], "")
	var latest struct{ Items []series.DeviceLatest }
	r.json(t, &latest)
	if len(latest.Items) != 1 || len(latest.Items[0].Values) != 2 || latest.Items[0].Values[1].Value != 22.5 {
		t.Fatalf("latest %s", r.body)
	}
	q := url.Values{"metric": {"temperature,humidity"}, "bucket": {"raw"}}
	r = w.must(200, "GET", "/v1/t/"+w.T+"/devices/"+d.ID+"/history?"+q.Encode(), w.authz[viewer], "")
	var h series.History
	r.json(t, &h)
	if len(h.Series) != 2 || h.Series[1].Metric != "temperature" || len(h.Series[1].Points) != 2 || h.Series[1].Points[0].Value != 21 {
		t.Fatalf("history %s", r.body)
	}
	r = w.must(200, "GET", "/v1/t/"+w.T+"/devices/rejects?reason=out_of_range", w.authz[viewer], "")
	if !strings.Contains(r.body, `"reason":"out_of_range"`) || strings.Contains(r.body, "malformed") {
		t.Fatalf("rejects %s", r.body)
	}
	r = w.must(200, "GET", "/v1/t/"+w.T+"/devices/stats", w.authz[viewer], "")
	var st series.Stats
	r.json(t, &st)
	if st.Messages != 2 || st.Readings != 3 || st.Rejected["malformed"] != 1 || st.Devices != 1 {
		t.Fatalf("stats %s", r.body)
	}
	// A retry with the same Idempotency-Key stores nothing twice.
	req := httptest.NewRequest("POST", "/v1/t/"+w.T+"/devices/"+d.ID+"/readings",
		strings.NewReader(fmt.Sprintf(`{"items":[{"payload":%q}]}`, tok(21, now.Add(-2*time.Minute)))))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", w.authz[owner])
	req.Header.Set("Idempotency-Key", "retry-1")
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("retry: %d %s", rec.Code, rec.Body)
	}
	w.must(200, "GET", "/v1/t/"+w.T+"/devices/"+d.ID+"/history?bucket=raw&metric=temperature", w.authz[viewer], "").json(t, &h)
	if len(h.Series[0].Points) != 2 {
		t.Fatalf("after a retry: %d temperature readings, want 2", len(h.Series[0].Points))
	}
	if r := w.do("POST", "/v1/t/"+w.T+"/devices/readings", w.authz[owner], `{"items": 3}`); r.status != 400 || !strings.Contains(r.body, "malformed_json") {
		t.Fatalf("malformed batch: %d %s", r.status, r.body)
	}
	r = w.must(200, "GET", "/openapi.json", "", "")
	if !strings.Contains(r.body, `"IngestRequest"`) || !strings.Contains(r.body, "/v1/t/{tenant}/devices/{device}/history") {
		t.Fatal("the OpenAPI document lacks the series operations")
	}
	r = w.must(200, "GET", "/metrics", "", "")
	for _, m := range []string{"strata_series_messages_total", "strata_series_rejected_total", "strata_series_ingest_lag_seconds",
		"strata_series_batch_readings", "strata_series_queue_messages", "strata_series_dropped_total"} {
		if !strings.Contains(r.body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// The live stream: server-sent events as readings commit, for a device or the tenant.
func TestSeriesLiveStream(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d, _, _ := w.newDevice()
	srv := httptest.NewServer(w.h)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/t/"+w.T+"/devices/"+d.ID+"/stream", nil)
	req.Header.Set("Authorization", w.authz[viewer])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() || lines.Text() != ": connected" {
		t.Fatalf("first line %q", lines.Text())
	}
	w.must(200, "POST", "/v1/t/"+w.T+"/devices/"+d.ID+"/readings", w.authz[owner],
		fmt.Sprintf(`{"items":[{"timestamp":%q,"values":{"temperature":18.5}}]}`, time.Now().UTC().Format(time.RFC3339)))
	var event, data string
	for lines.Scan() {
		l := lines.Text()
		if v, ok := strings.CutPrefix(l, "event: "); ok {
			event = v
		}
		if v, ok := strings.CutPrefix(l, "data: "); ok {
			data = v
			break
		}
	}
	var ev series.Event
	if err := json.Unmarshal([]byte(data), &ev); err != nil || event != "reading" || ev.Value != 18.5 || ev.Metric != "temperature" {
		t.Fatalf("event %q %q (%v)", event, data, err)
	}
	if r := w.do("GET", "/v1/t/"+w.T+"/devices/"+d.ID+"/stream", w.authz[outsider], ""); r.status != 404 {
		t.Fatalf("the outsider's stream: %d", r.status)
	}
}

package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/internal/server"
	"github.com/stratadb/strata/queue"
)

// claimJob pushes a job as the owner and claims it, answering its id, lease and attempt.
func (w *world) claimJob(q string) (string, string, int) {
	w.t.Helper()
	t := "/v1/t/" + w.T + "/queues/" + q
	w.must(201, "POST", t+"/jobs", w.authz[owner], `{"kind":"k"}`)
	r := w.must(200, "POST", t+"/claim", w.authz[owner], `{"limit":1}`)
	var out struct{ Items []queue.Job }
	r.json(w.t, &out)
	if len(out.Items) != 1 {
		w.t.Fatalf("claimed %d jobs", len(out.Items))
	}
	j := out.Items[0]
	return fmt.Sprint(j.ID), j.Lease, j.Attempt
}

// deadJob makes a dead letter as the owner and answers its id.
func (w *world) deadJob(q string) string {
	w.t.Helper()
	t := "/v1/t/" + w.T + "/queues/" + q
	w.must(201, "POST", t+"/jobs", w.authz[owner], `{"kind":"k","max_attempts":1}`)
	r := w.must(200, "POST", t+"/claim", w.authz[owner], `{"limit":1000}`)
	var out struct{ Items []queue.Job }
	r.json(w.t, &out)
	id := ""
	for _, j := range out.Items {
		w.must(200, "POST", fmt.Sprintf("%s/jobs/%d/fail", t, j.ID), w.authz[owner],
			fmt.Sprintf(`{"lease":%q,"attempt":%d,"error":"boom","dead":true}`, j.Lease, j.Attempt))
		id = fmt.Sprint(j.ID)
	}
	return id
}

// queueDigest fingerprints the queue and key-value tables.
func (p *platform) queueDigest() string {
	p.t.Helper()
	var d string
	err := p.s.Pool().QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'j' || id || state || attempt || coalesce(owner, '') || coalesce(lease_until::text, '') || run_at FROM strata.jobs
		UNION ALL SELECT 'h' || id || state FROM strata.job_history
		UNION ALL SELECT 'q' || id || paused || coalesce(max_running, 0) || coalesce(max_starts_per_second, 0) FROM strata.queues
		UNION ALL SELECT 's' || name || spec || updated_at FROM strata.queue_schedules
		UNION ALL SELECT 'k' || key || version FROM strata.kv) d(x)`).Scan(&d)
	if err != nil {
		p.t.Fatal(err)
	}
	return d
}

type qEndpoint struct {
	endpoint
	audited bool // a success leaves an audit row (worker transitions do not: the job's record is theirs)
}

func queueEndpoints() []qEndpoint {
	t := func(w *world, rest string) string { return "/v1/t/" + w.T + rest }
	q := func(w *world, rest string) string { return "/v1/t/" + w.T + "/queues/wall" + rest }
	// Limits and pauses go to a queue of their own, so the others keep working.
	qa := func(w *world, rest string) string { return "/v1/t/" + w.T + "/queues/wall-admin" + rest }
	read, write, adm := statuses(200, anon, 401, outsider, 404), statuses(403, anon, 401, outsider, 404, admin+","+owner+","+platAdm, 200),
		statuses(403, anon, 401, outsider, 404, admin+","+owner+","+platAdm, 200)
	with := func(m map[string]int, ok int) map[string]int {
		out := map[string]int{}
		for k, v := range m {
			if v == 200 {
				v = ok
			}
			out[k] = v
		}
		return out
	}
	lease := func(w *world, verb, extra string) (string, string) {
		id, l, a := w.claimJob("wall")
		return q(w, "/jobs/"+id+"/"+verb), fmt.Sprintf(`{"lease":%q,"attempt":%d%s}`, l, a, extra)
	}
	return []qEndpoint{
		{endpoint{"queue list", "GET", func(w *world, _ string) (string, string) { return t(w, "/queues"), "" }, read}, false},
		{endpoint{"queue get", "GET", func(w *world, _ string) (string, string) {
			w.must(201, "POST", q(w, "/jobs"), w.authz[owner], `{"kind":"k"}`)
			return q(w, ""), ""
		}, read}, false},
		{endpoint{"queue update", "PATCH", fixedFor(qa, "", `{"max_running":5}`), adm}, true},
		{endpoint{"queue pause", "POST", fixedFor(qa, "/pause", ""), adm}, true},
		{endpoint{"queue resume", "POST", fixedFor(qa, "/resume", ""), adm}, true},
		{endpoint{"job push", "POST", fixedFor(q, "/jobs", `{"kind":"k","payload":{"n":1}}`), with(write, 201)}, true},
		{endpoint{"job push batch", "POST", fixedFor(q, "/jobs/batch", `{"jobs":[{"kind":"k"},{"kind":"k","delay_ms":60000}]}`), with(write, 201)}, true},
		{endpoint{"job list", "GET", fixedFor(q, "/jobs?state=available", ""), read}, false},
		{endpoint{"job get", "GET", func(w *world, _ string) (string, string) {
			r := w.must(201, "POST", q(w, "/jobs"), w.authz[owner], `{"kind":"k"}`)
			var p queue.Pushed
			r.json(w.t, &p)
			return q(w, fmt.Sprintf("/jobs/%d", p.ID)), ""
		}, read}, false},
		{endpoint{"job cancel", "POST", func(w *world, _ string) (string, string) {
			r := w.must(201, "POST", q(w, "/jobs"), w.authz[owner], `{"kind":"k"}`)
			var p queue.Pushed
			r.json(w.t, &p)
			return q(w, fmt.Sprintf("/jobs/%d/cancel", p.ID)), ""
		}, with(write, 204)}, true},
		{endpoint{"job claim", "POST", func(w *world, _ string) (string, string) {
			w.must(201, "POST", q(w, "/jobs"), w.authz[owner], `{"kind":"k"}`)
			return q(w, "/claim"), `{"limit":1}`
		}, write}, false},
		{endpoint{"job complete", "POST", func(w *world, _ string) (string, string) { return lease(w, "complete", `,"result":{"ok":1}`) },
			with(write, 204)}, false},
		{endpoint{"job fail", "POST", func(w *world, _ string) (string, string) { return lease(w, "fail", `,"error":"x"`) }, write}, false},
		{endpoint{"job snooze", "POST", func(w *world, _ string) (string, string) { return lease(w, "snooze", `,"delay_ms":1000`) },
			with(write, 204)}, false},
		{endpoint{"job heartbeat", "POST", func(w *world, _ string) (string, string) {
			id, l, a := w.claimJob("wall")
			return q(w, "/heartbeat"), fmt.Sprintf(`{"jobs":[{"id":%q,"lease":%q,"attempt":%d}]}`, id, l, a)
		}, write}, false},
		{endpoint{"job release", "POST", func(w *world, _ string) (string, string) {
			id, l, a := w.claimJob("wall")
			return q(w, "/release"), fmt.Sprintf(`{"jobs":[{"id":%q,"lease":%q,"attempt":%d}]}`, id, l, a)
		}, write}, false},
		{endpoint{"dead list", "GET", fixedFor(q, "/dead", ""), read}, false},
		{endpoint{"dead retry", "POST", func(w *world, _ string) (string, string) {
			return q(w, "/dead/retry"), fmt.Sprintf(`{"ids":[%q]}`, w.deadJob("wall"))
		}, write}, true},
		{endpoint{"dead purge", "POST", func(w *world, _ string) (string, string) {
			return q(w, "/dead/purge"), fmt.Sprintf(`{"ids":[%q]}`, w.deadJob("wall"))
		}, adm}, true},
		{endpoint{"schedule put", "PUT", func(w *world, _ string) (string, string) {
			return q(w, "/schedules/"+w.fresh("nightly")), `{"spec":"0 3 * * *","kind":"k"}`
		}, with(adm, 201)}, true},
		{endpoint{"schedule list", "GET", fixedFor(q, "/schedules", ""), read}, false},
		{endpoint{"schedule delete", "DELETE", func(w *world, _ string) (string, string) {
			name := w.fresh("s")
			w.must(201, "PUT", q(w, "/schedules/"+name), w.authz[owner], `{"spec":"@hourly","kind":"k"}`)
			return q(w, "/schedules/"+name), ""
		}, with(adm, 204)}, true},
		{endpoint{"kv list", "GET", fixedFor(t, "/kv?prefix=a/", ""), read}, false},
		{endpoint{"kv get", "GET", func(w *world, _ string) (string, string) {
			w.must(201, "PUT", t(w, "/kv/a/"+w.fresh("k")), w.authz[owner], `{"v":1}`)
			return t(w, "/kv/a/k"+fmt.Sprint(w.counter)), ""
		}, read}, false},
		{endpoint{"kv put", "PUT", func(w *world, _ string) (string, string) { return t(w, "/kv/a/"+w.fresh("n")), `{"v":2}` },
			with(write, 201)}, true},
		{endpoint{"kv delete", "DELETE", func(w *world, _ string) (string, string) {
			k := w.fresh("d")
			w.must(201, "PUT", t(w, "/kv/"+k), w.authz[owner], `1`)
			return t(w, "/kv/"+k), ""
		}, with(write, 204)}, true},
	}
}

func fixedFor(base func(*world, string) string, rest, body string) func(*world, string) (string, string) {
	return func(w *world, _ string) (string, string) { return base(w, rest), body }
}

// Every queue and key-value endpoint × every identity: the status; a refused request
// changes nothing and leaves one audit row; an audited success leaves one with its
// request id.
func TestQueueKVEndpointsByIdentity(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	var eps []endpoint
	var unaudited []string
	for _, ep := range queueEndpoints() {
		eps = append(eps, ep.endpoint)
		if !ep.audited {
			unaudited = append(unaudited, ep.name)
		}
	}
	w.checkEndpoints(t, eps, func(*testing.T, *world) string { return w.queueDigest() }, checkOptions{unaudited: unaudited})
}

// A worker in any language over HTTP: a long-poll claim on one node is woken by a push
// on another within milliseconds; heartbeat, fail with retry, complete with a result; a
// late call from a lost lease is refused and changes nothing.
func TestQueueHTTPWorkerAcrossNodes(t *testing.T) {
	t.Parallel()
	a := newPlatform(t)
	// A second node on the same database.
	s2, err := strata.Open(context.Background(), strata.Config{DatabaseURL: a.s.Pool().Config().ConnString(), Auth: cheapAuth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	b := &platform{t: t, s: s2, root: a.root}
	b.h = server.New(server.Deps{Pool: s2.Pool(), Ready: s2.Ready, Version: "test", Auth: s2.Auth(), Audit: s2.Audit(),
		Feed: s2.Feed(), Queue: s2.Queue(), KV: s2.KV()})
	ten := a.tenant(bearer(a.root), "nodes")
	base := "/v1/t/" + ten + "/queues/work"
	root := bearer(a.root)

	type claimed struct {
		jobs []queue.Job
		at   time.Time
	}
	got := make(chan claimed, 1)
	go func() {
		r := b.do("POST", base+"/claim", root, `{"limit":10,"wait_ms":10000,"lease_ms":5000,"worker":"w1"}`)
		var out struct{ Items []queue.Job }
		_ = json.Unmarshal([]byte(r.body), &out)
		got <- claimed{out.Items, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	pushed := time.Now()
	r := a.must(201, "POST", base+"/jobs", root, `{"kind":"resize","payload":{"w":100}}`)
	var p queue.Pushed
	r.json(t, &p)
	c := <-got
	if len(c.jobs) != 1 || c.jobs[0].ID != p.ID || !strings.HasPrefix(c.jobs[0].Lease, "w1/") {
		t.Fatalf("long poll claimed %+v", c.jobs)
	}
	if d := c.at.Sub(pushed); d > 500*time.Millisecond {
		t.Fatalf("the other node's long poll was woken %s after the push", d)
	}
	j := c.jobs[0]
	claimBody := func(j queue.Job, extra string) string {
		return fmt.Sprintf(`{"lease":%q,"attempt":%d%s}`, j.Lease, j.Attempt, extra)
	}
	hb := b.must(200, "POST", base+"/heartbeat", root, fmt.Sprintf(`{"jobs":[{"id":"%d","lease":%q,"attempt":%d},{"id":"999","lease":"x","attempt":1}]}`,
		j.ID, j.Lease, j.Attempt))
	if !strings.Contains(hb.body, fmt.Sprintf(`"held":["%d"]`, j.ID)) || !strings.Contains(hb.body, `"lost":["999"]`) {
		t.Fatalf("heartbeat: %s", hb.body)
	}
	f := b.must(200, "POST", fmt.Sprintf("%s/jobs/%d/fail", base, j.ID), root, claimBody(j, `,"error":"disk full","retry_in_ms":0`))
	if !strings.Contains(f.body, `"dead":false`) {
		t.Fatalf("fail: %s", f.body)
	}
	r = b.do("POST", fmt.Sprintf("%s/jobs/%d/complete", base, j.ID), root, claimBody(j, ""))
	if r.status != 409 || !strings.Contains(r.body, "lease_lost") {
		t.Fatalf("complete after losing the lease: %d %s", r.status, r.body)
	}
	r = a.must(200, "POST", base+"/claim", root, `{"wait_ms":5000}`)
	var again struct{ Items []queue.Job }
	r.json(t, &again)
	if len(again.Items) != 1 || again.Items[0].Attempt != 2 || len(again.Items[0].Errors) != 1 {
		t.Fatalf("retry: %s", r.body)
	}
	a.must(204, "POST", fmt.Sprintf("%s/jobs/%d/complete", base, j.ID), root, claimBody(again.Items[0], `,"result":{"url":"/x.png"}`))
	r = b.must(200, "GET", fmt.Sprintf("%s/jobs/%d", base, j.ID), root, "")
	if !strings.Contains(r.body, `"state":"completed"`) || !strings.Contains(r.body, `"result":{"url":"/x.png"}`) {
		t.Fatalf("job: %s", r.body)
	}
	// Idempotency-Key: a retried push answers the first push.
	hdr := map[string]string{"Idempotency-Key": "push-1"}
	first := a.doHeaders("POST", base+"/jobs", root, `{"kind":"once"}`, hdr)
	second := b.doHeaders("POST", base+"/jobs", root, `{"kind":"once"}`, hdr)
	if first.status != 201 || second.body != first.body {
		t.Fatalf("idempotent push: %d %s / %d %s", first.status, first.body, second.status, second.body)
	}
	r = a.doHeaders("POST", base+"/jobs", root, `{"kind":"other"}`, hdr)
	if r.status != 422 || !strings.Contains(r.body, "idempotency_key_reused") {
		t.Fatalf("reused key: %d %s", r.status, r.body)
	}
	r = a.must(200, "GET", base+"/jobs?state=available", root, "")
	if n := strings.Count(r.body, `"kind":"once"`); n != 1 {
		t.Fatalf("%d jobs pushed with one idempotency key", n)
	}
	// Metrics per queue on /metrics.
	r = a.must(200, "GET", "/metrics", "", "")
	if !strings.Contains(r.body, `strata_queue_jobs{queue="work",state="available",tenant="`+ten+`"} 1`) ||
		!strings.Contains(r.body, `strata_queue_jobs_total{outcome="completed",queue="work",tenant="`+ten+`"} 1`) {
		t.Fatalf("metrics lack the queue's series")
	}
}

// Key-value over HTTP: raw bytes in and out with their content type and version ETag,
// compare-and-set with If-Match / If-None-Match, TTL, descriptions, prefix pages.
func TestKVHTTP(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	root := bearer(p.root)
	ten := p.tenant(root, "kv")
	k := "/v1/t/" + ten + "/kv/"
	bin := string([]byte{0, 1, 2, 0xff, 0xfe, '\n'})
	r := p.doHeaders("PUT", k+"blobs/one?description=raw%20bytes", root, bin, map[string]string{"Content-Type": "image/x-test"})
	if r.status != 201 || r.header.Get("ETag") == "" {
		t.Fatalf("put: %d %s", r.status, r.body)
	}
	etag := r.header.Get("ETag")
	r = p.must(200, "GET", k+"blobs/one", root, "")
	if r.body != bin || r.header.Get("Content-Type") != "image/x-test" || r.header.Get("ETag") != etag {
		t.Fatalf("get: %q %v", r.body, r.header)
	}
	r = p.must(200, "GET", k+"blobs/one?meta=true", root, "")
	if !strings.Contains(r.body, `"value_base64":"`+base64.StdEncoding.EncodeToString([]byte(bin))+`"`) ||
		!strings.Contains(r.body, `"description":"raw bytes"`) {
		t.Fatalf("meta: %s", r.body)
	}
	// Compare-and-set.
	r = p.doHeaders("PUT", k+"blobs/one", root, "x", map[string]string{"If-Match": `"999999"`, "Content-Type": "text/plain"})
	if r.status != 412 || !strings.Contains(r.body, "version_mismatch") || !strings.Contains(r.body, `"current_version":`) {
		t.Fatalf("stale If-Match: %d %s", r.status, r.body)
	}
	r = p.doHeaders("PUT", k+"blobs/one", root, "x", map[string]string{"If-None-Match": "*", "Content-Type": "text/plain"})
	if r.status != 412 {
		t.Fatalf("If-None-Match on an existing key: %d %s", r.status, r.body)
	}
	r = p.doHeaders("PUT", k+"blobs/one", root, "x", map[string]string{"If-Match": etag, "Content-Type": "text/plain"})
	if r.status != 200 || r.header.Get("ETag") == etag || !strings.Contains(r.body, `"description":"raw bytes"`) {
		t.Fatalf("cas: %d %s", r.status, r.body)
	}
	r = p.doHeaders("PUT", k+"cfg/json", root, `{"a":`, map[string]string{"Content-Type": "application/json"})
	if r.status != 422 || !strings.Contains(r.body, "invalid_json") {
		t.Fatalf("bad json: %d %s", r.status, r.body)
	}
	// TTL: gone at once when it passes.
	p.doHeaders("PUT", k+"tmp?ttl_seconds=1", root, `"soon gone"`, map[string]string{"Content-Type": "application/json"})
	p.must(200, "GET", k+"tmp", root, "")
	time.Sleep(1100 * time.Millisecond)
	r = p.do("GET", k+"tmp", root, "")
	if r.status != 404 || !strings.Contains(r.body, "key_not_found") {
		t.Fatalf("expired: %d %s", r.status, r.body)
	}
	// Prefix pages.
	for i := range 5 {
		p.must(201, "PUT", fmt.Sprintf("%scfg/k%d", k, i), root, fmt.Sprint(i))
	}
	var keys []string
	cursor := ""
	for range 10 {
		r = p.must(200, "GET", "/v1/t/"+ten+"/kv?prefix=cfg/&limit=2&values=true&cursor="+cursor, root, "")
		var page struct {
			Items []struct {
				Key   string          `json:"key"`
				Value json.RawMessage `json:"value"`
			} `json:"items"`
			NextCursor string `json:"next_cursor"`
		}
		r.json(t, &page)
		for _, it := range page.Items {
			keys = append(keys, it.Key+"="+string(it.Value))
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if strings.Join(keys, " ") != "cfg/k0=0 cfg/k1=1 cfg/k2=2 cfg/k3=3 cfg/k4=4" {
		t.Fatalf("pages: %v", keys)
	}
	r = p.doHeaders("DELETE", k+"cfg/k0", root, "", map[string]string{"If-Match": `"1"`})
	if r.status != 412 {
		t.Fatalf("delete with a stale If-Match: %d", r.status)
	}
	p.must(204, "DELETE", k+"cfg/k0", root, "")
	p.must(404, "GET", k+"cfg/k0", root, "")
}

// Command series measures device-readings ingest and reads, in one run on one machine,
// against an embedded PostgreSQL with production durability (fsync and synchronous
// commit on):
//
//   - end to end through the embedded broker: devices publish Fernet-encrypted JSON at
//     QoS 1; the clock stops when every message is acknowledged, and an acknowledgement
//     means the readings are committed (checked by counting them after);
//
//   - through Mosquitto: the same publishers publish to a Mosquitto started here; Strata
//     consumes with a shared subscription and acknowledges after commit; compared with
//     Mosquitto's own QoS 1 delivery of the same messages to one subscriber that decrypts
//     and decodes them and stores nothing (rounds alternate);
//
//   - HTTP batch ingest against binary COPY of the same rows into the same table;
//
//   - latest-value reads over HTTP (p50), and a 30-day hourly history query (p50).
//
// Tokens are encrypted before the clock starts, as devices would have done; the
// publishers are a minimal pipelined MQTT client so the numbers are the server's.
//
//	go run ./series [-messages 400000] [-devices 16] [-window 1000] [-rounds 3]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/fernet/fernet-go"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/bench/internal/harness"
	"github.com/stratadb/strata/internal/mqttpub"
	"github.com/stratadb/strata/internal/server"
	"github.com/stratadb/strata/series"
)

var (
	nMessages = flag.Int("messages", 400_000, "messages per MQTT run")
	nDevices  = flag.Int("devices", 16, "devices (one publishing connection each)")
	window    = flag.Int("window", 1000, "unacknowledged messages per publisher")
	rounds    = flag.Int("rounds", 3, "alternating rounds of each MQTT case")
	httpRows  = flag.Int("http-items", 200_000, "items (3 readings each) in the HTTP-versus-COPY comparison")
	httpBatch = flag.Int("http-batch", 2000, "items per HTTP request")
	skipMosq  = flag.Bool("no-mosquitto", false, "skip the Mosquitto cases")
	only      = flag.String("only", "", "run only this part: mqtt (embedded, via, baseline), http, reads")
	cpuprof   = flag.String("cpuprofile", "", "write a CPU profile of the MQTT runs to this file")
	verbose   = flag.Bool("v", false, "print the pipeline's batch sizes and commit times after each MQTT run")
	values    = flag.Int("values", 3, "readings a message in the MQTT runs: 3 (temperature, humidity, pressure) or 1 (temperature)")
)

// valuesPerMessage is how many readings a message carries (seed 002's thermostat sends
// temperature, humidity and pressure).
var valuesPerMessage = 3

func main() {
	flag.Parse()
	if *values != 1 && *values != 3 {
		log.Fatal("-values is 1 or 3")
	}
	valuesPerMessage = *values
	ctx := context.Background()
	mosqAddr := ""
	if !*skipMosq {
		addr, stop, err := startMosquitto()
		if err != nil {
			log.Fatalf("mosquitto: %v (use -no-mosquitto to skip)", err)
		}
		defer stop()
		mosqAddr = addr
	}
	cfg := strata.Config{AdminPassword: "bench-admin-password", Auth: auth.Config{SignInPerMinute: 1 << 20, SignInPerMinutePerIP: 1 << 20},
		Series: series.Config{MQTTAddr: "127.0.0.1:0", QueueSize: 50000}}
	if mosqAddr != "" {
		cfg.Series.BrokerURL = "mqtt://" + mosqAddr
		cfg.Series.BrokerClientID = "strata-bench"
	}
	s, cleanup, err := harness.Platform(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	api := server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Auth: s.Auth(), Audit: s.Audit(), Series: s.Series(), Version: "bench"})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := server.NewHTTPServer(server.Config{}, api, nil)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	b := &bench{s: s, base: "http://" + ln.Addr().String(), client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	b.setup(ctx)

	fmt.Printf("## Device readings (series), GOMAXPROCS=%d, %d devices, %d values a message, window %d\n\n",
		runtime.GOMAXPROCS(0), *nDevices, valuesPerMessage, *window)
	var embedded, viaMosq, mosqOwn []float64
	want := func(c string) bool { return *only == "" || *only == "mqtt" || *only == c }
	for r := range *rounds {
		if !want("embedded") && !want("via") && !want("baseline") {
			break
		}
		tokens := b.tokens(*nMessages, r)
		if *cpuprof != "" && r == 0 {
			f, err := os.Create(*cpuprof)
			if err != nil {
				log.Fatal(err)
			}
			_ = pprof.StartCPUProfile(f)
		}
		if want("embedded") {
			embedded = append(embedded, b.runEmbedded(ctx, tokens))
		}
		if mosqAddr != "" && want("via") {
			viaMosq = append(viaMosq, b.runViaMosquitto(ctx, mosqAddr, tokens))
		}
		if mosqAddr != "" && want("baseline") {
			mosqOwn = append(mosqOwn, b.runMosquittoBaseline(ctx, mosqAddr, tokens))
		}
	}
	if *cpuprof != "" {
		pprof.StopCPUProfile()
	}
	emb := median(embedded)
	fmt.Println("| case | messages/s | readings/s | ratio |")
	fmt.Println("|---|---:|---:|---:|")
	fmt.Printf("| embedded broker, QoS 1 + Fernet → committed (median of %d) | %.0f | %.0f | |\n", len(embedded), emb, emb*float64(valuesPerMessage))
	if len(viaMosq) > 0 && len(mosqOwn) > 0 {
		own, via := median(mosqOwn), median(viaMosq)
		fmt.Printf("| Mosquitto alone: QoS 1 delivery to a decrypting subscriber, nothing stored (baseline) | %.0f | %.0f | 1.00× |\n", own, own*float64(valuesPerMessage))
		fmt.Printf("| through Mosquitto → Strata (shared subscription, acknowledged after commit) | %.0f | %.0f | %.2f× |\n", via, via*float64(valuesPerMessage), via/own)
	}
	fmt.Printf("\nruns (messages/s): embedded %v", rounded(embedded))
	if len(viaMosq) > 0 {
		fmt.Printf("; via Mosquitto %v; Mosquitto alone %v", rounded(viaMosq), rounded(mosqOwn))
	}
	fmt.Println()
	fmt.Println()
	if *only == "" || *only == "http" {
		b.httpVersusCopy(ctx)
	}
	if *only == "" || *only == "reads" {
		b.latestReads(ctx)
		b.history(ctx)
	}
}

type bench struct {
	s       *strata.Strata
	base    string
	client  *http.Client
	token   string
	tenant  string
	devices []series.Device
	creds   []series.Credentials
	keys    []*fernet.Key

	lastStats map[string][2]float64
}

func (b *bench) call(method, path, body string) (int, []byte) {
	req, _ := http.NewRequestWithContext(context.Background(), method, b.base+path, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (b *bench) setup(ctx context.Context) {
	code, body := b.call("POST", "/v1/auth/token", `{"username":"admin","password":"bench-admin-password"}`)
	if code != 200 {
		log.Fatalf("sign in: %d %s", code, body)
	}
	var tok auth.Tokens
	_ = json.Unmarshal(body, &tok)
	b.token = tok.AccessToken
	_, body = b.call("POST", "/v1/tenants", `{"name":"bench house"}`)
	var ten auth.Tenant
	_ = json.Unmarshal(body, &ten)
	b.tenant = ten.ID
	sys := auth.System(ctx)
	lo, hi := -1000.0, 5000.0
	for i := range *nDevices {
		d, c, err := b.s.Series().DeviceCreate(sys, b.tenant, series.DeviceInput{Name: fmt.Sprintf("sensor %d", i), Kind: "climate",
			Metrics: map[string]series.Metric{"temperature": {Min: &lo, Max: &hi}, "humidity": {Min: &lo, Max: &hi}, "pressure": {Min: &lo, Max: &hi}}})
		if err != nil {
			log.Fatal(err)
		}
		_, secret, err := b.s.Series().KeyCreate(sys, b.tenant, series.KeyInput{DeviceID: d.ID})
		if err != nil {
			log.Fatal(err)
		}
		k, _ := fernet.DecodeKey(secret)
		b.devices, b.creds, b.keys = append(b.devices, d), append(b.creds, c), append(b.keys, k)
	}
}

// tokens encrypts n messages spread over the devices, with distinct timestamps.
func (b *bench) tokens(n, round int) [][][]byte {
	out := make([][][]byte, len(b.devices))
	base := time.Now().Add(-time.Hour).Add(time.Duration(round) * 10 * time.Minute)
	per := n / len(b.devices)
	var wg sync.WaitGroup
	for i := range b.devices {
		wg.Go(func() {
			toks := make([][]byte, per)
			for j := range per {
				r := rand.Float64() //nolint:gosec // sample data
				vals := map[string]float64{"temperature": 15 + r*10, "humidity": 30 + r*40, "pressure": 990 + r*30}
				if valuesPerMessage == 1 {
					vals = map[string]float64{"temperature": 15 + r*10}
				}
				p, _ := json.Marshal(map[string]any{"sensor_id": b.devices[i].ID,
					"timestamp": base.Add(time.Duration(j) * time.Millisecond).UTC().Format(time.RFC3339Nano), "values": vals})
				toks[j], _ = fernet.EncryptAndSign(p, b.keys[i])
			}
			out[i] = toks
		})
	}
	wg.Wait()
	return out
}

// publishAll publishes every device's tokens over its own connection (as that device, or
// anonymously to topic(i) when user is false) and returns when all are acknowledged.
func (b *bench) publishAll(ctx context.Context, addr string, tokens [][][]byte, asDevice bool, topic func(i int) string) (time.Duration, int64) {
	var acked atomic.Int64
	var wg sync.WaitGroup
	conns := make([]*mqttpub.Conn, len(tokens))
	for i := range tokens {
		user, pass := "", ""
		if asDevice {
			user, pass = b.creds[i].Username, b.creds[i].Password
		}
		c, err := mqttpub.Dial(ctx, addr, fmt.Sprintf("bench-%d-%d", i, rand.Int()), user, pass, *window) //nolint:gosec // a client id
		if err != nil {
			log.Fatal(err)
		}
		conns[i] = c
	}
	start := time.Now()
	for i, c := range conns {
		wg.Go(func() {
			var mine sync.WaitGroup
			t := topic(i)
			for _, tok := range tokens[i] {
				mine.Add(1)
				if err := c.Publish(ctx, t, tok, func(reason byte) {
					if reason == 0 {
						acked.Add(1)
					}
					mine.Done()
				}); err != nil {
					log.Fatal(err)
				}
			}
			_ = c.Flush()
			mine.Wait()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, c := range conns {
		_ = c.Close()
	}
	return elapsed, acked.Load()
}

func total(tokens [][][]byte) int64 {
	n := 0
	for _, t := range tokens {
		n += len(t)
	}
	return int64(n)
}

func (b *bench) readingsStored(ctx context.Context) int64 {
	var n int64
	if err := b.s.Pool().QueryRow(ctx, `SELECT COALESCE((SELECT value FROM strata.series_counters WHERE tenant_id = $1 AND name = 'readings'), 0)`,
		b.tenant).Scan(&n); err != nil {
		log.Fatal(err)
	}
	return n
}

func (b *bench) runEmbedded(ctx context.Context, tokens [][][]byte) float64 {
	before := b.readingsStored(ctx)
	elapsed, acked := b.publishAll(ctx, b.s.Series().MQTTAddr(), tokens, true, func(i int) string { return b.creds[i].Topic })
	stored := b.readingsStored(ctx) - before
	if *verbose {
		b.pipelineStats("embedded")
	}
	if acked != total(tokens) || stored != acked*int64(valuesPerMessage) {
		log.Fatalf("embedded: %d of %d acknowledged, %d readings stored (want %d)", acked, total(tokens), stored, acked*int64(valuesPerMessage))
	}
	return float64(acked) / elapsed.Seconds()
}

func (b *bench) runViaMosquitto(ctx context.Context, addr string, tokens [][][]byte) float64 {
	before := b.readingsStored(ctx)
	want := before + total(tokens)*int64(valuesPerMessage)
	start := time.Now()
	if *verbose {
		defer b.pipelineStats("via Mosquitto")
	}
	_, acked := b.publishAll(ctx, addr, tokens, false, func(i int) string { return b.creds[i].Topic })
	if acked != total(tokens) {
		log.Fatalf("via Mosquitto: %d of %d acknowledged by Mosquitto", acked, total(tokens))
	}
	deadline := time.Now().Add(5 * time.Minute)
	for b.readingsStored(ctx) < want {
		if time.Now().After(deadline) {
			log.Fatalf("via Mosquitto: %d of %d readings stored after 5 minutes", b.readingsStored(ctx)-before, want-before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return float64(total(tokens)) / time.Since(start).Seconds()
}

// runMosquittoBaseline has one paho subscriber receive the same messages at QoS 1 from
// Mosquitto, decrypt and decode each, and store nothing.
func (b *bench) runMosquittoBaseline(ctx context.Context, addr string, tokens [][][]byte) float64 {
	want := total(tokens)
	var got atomic.Int64
	done := make(chan struct{})
	keys := map[string]*fernet.Key{}
	for i := range b.devices {
		keys["bench/"+strconv.Itoa(i)] = b.keys[i]
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	var bad atomic.Int64
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "baseline", OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			plain := fernet.VerifyAndDecrypt(pr.Packet.Payload, 0, []*fernet.Key{keys[pr.Packet.Topic]})
			var p struct {
				SensorID  string             `json:"sensor_id"`
				Timestamp string             `json:"timestamp"`
				Values    map[string]float64 `json:"values"`
			}
			if plain == nil || json.Unmarshal(plain, &p) != nil {
				bad.Add(1)
			}
			if got.Add(1) == want {
				close(done)
			}
			return true, nil
		}}})
	rm := uint16(2000)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "baseline", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "bench/#", QoS: 1}}}); err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	b.publishAll(ctx, addr, tokens, false, func(i int) string { return "bench/" + strconv.Itoa(i) })
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		log.Fatalf("baseline: %d of %d delivered", got.Load(), want)
	}
	elapsed := time.Since(start)
	_ = c.Disconnect(&paho.Disconnect{})
	if bad.Load() > 0 {
		log.Fatalf("baseline: %d messages did not decrypt", bad.Load())
	}
	return float64(want) / elapsed.Seconds()
}

func (b *bench) httpVersusCopy(ctx context.Context) {
	n := *httpRows / len(b.devices) * len(b.devices)
	base := time.Now().Add(-2 * time.Hour)
	type item struct {
		DeviceID  string             `json:"device_id"`
		Timestamp string             `json:"timestamp"`
		Values    map[string]float64 `json:"values"`
	}
	items := make([]item, n)
	for i := range items {
		items[i] = item{DeviceID: b.devices[i%len(b.devices)].ID, Timestamp: base.Add(time.Duration(i) * time.Millisecond).UTC().Format(time.RFC3339Nano),
			Values: map[string]float64{"temperature": 20 + float64(i%10), "humidity": 50, "pressure": 1000}}
	}
	var bodies [][]byte
	var copyRows [][][]any
	tenant := uuid.MustParse(b.tenant)
	for i := 0; i < n; i += *httpBatch {
		chunk := items[i:min(i+*httpBatch, n)]
		body, _ := json.Marshal(map[string]any{"items": chunk})
		bodies = append(bodies, body)
		var rows [][]any
		for _, it := range chunk {
			ts, _ := time.Parse(time.RFC3339Nano, it.Timestamp)
			for _, m := range []string{"humidity", "pressure", "temperature"} {
				rows = append(rows, []any{tenant, uuid.MustParse(it.DeviceID), ts, it.Values[m], int16(30), m})
			}
		}
		copyRows = append(copyRows, rows)
	}
	const clients = 2
	run := func(fn func(i int)) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= len(bodies) {
						return
					}
					fn(i)
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	var httpT, copyT []float64
	for range *rounds {
		t := run(func(i int) {
			code, out := b.call("POST", "/v1/t/"+b.tenant+"/devices/readings", string(bodies[i]))
			if code != 200 || !bytes.Contains(out, []byte(`"rejected":[]`)) {
				log.Fatalf("HTTP ingest: %d %.300s", code, out)
			}
		})
		httpT = append(httpT, float64(n*3)/t.Seconds())
		t = run(func(i int) {
			if _, err := b.s.Pool().CopyFrom(ctx, pgx.Identifier{"readings"}, []string{"tenant_id", "device_id", "ts", "value", "keep", "metric"},
				pgx.CopyFromRows(copyRows[i])); err != nil {
				log.Fatal(err)
			}
		})
		copyT = append(copyT, float64(n*3)/t.Seconds())
	}
	h, c := median(httpT), median(copyT)
	fmt.Printf("### HTTP batch ingest against binary COPY (%d items of 3 readings, %d a request, %d clients, median of %d)\n\n",
		n, *httpBatch, clients, len(httpT))
	fmt.Println("| case | readings/s | ratio |")
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| binary COPY of the same rows into the same table (baseline) | %.0f | 1.00× |\n", c)
	fmt.Printf("| POST /v1/t/{tenant}/devices/readings (JSON, validated, rollups, latest, counters, acknowledged after commit) | %.0f | %.2f× |\n\n", h, h/c)
}

func (b *bench) latestReads(ctx context.Context) {
	d := b.devices[0]
	path := "/v1/t/" + b.tenant + "/devices/" + d.ID + "/latest"
	var lat []time.Duration
	for i := range 3000 {
		t := time.Now()
		code, body := b.call("GET", path, "")
		if code != 200 || !bytes.Contains(body, []byte("temperature")) {
			log.Fatalf("latest: %d %s", code, body)
		}
		if i >= 500 {
			lat = append(lat, time.Since(t))
		}
	}
	var goLat []time.Duration
	sys := auth.System(ctx)
	for i := range 20000 {
		t := time.Now()
		if _, err := b.s.Series().LatestDevice(sys, b.tenant, d.ID); err != nil {
			log.Fatal(err)
		}
		if i >= 1000 {
			goLat = append(goLat, time.Since(t))
		}
	}
	fmt.Println("### Reads")
	fmt.Println()
	fmt.Println("| case | p50 | p99 |")
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| latest values of a device, GET over HTTP (bearer token, keep-alive) | %s | %s |\n", pct(lat, 0.5), pct(lat, 0.99))
	fmt.Printf("| latest values of a device, Go API | %s | %s |\n", pct(goLat, 0.5), pct(goLat, 0.99))
}

func (b *bench) history(ctx context.Context) {
	sys := auth.System(ctx)
	lo, hi := -1000.0, 1000.0
	d, _, err := b.s.Series().DeviceCreate(sys, b.tenant, series.DeviceInput{Name: "history", Metrics: map[string]series.Metric{"temperature": {Min: &lo, Max: &hi}}})
	if err != nil {
		log.Fatal(err)
	}
	now := time.Now()
	const perMinute = 1
	items := make([]series.IngestItem, 0, 10000)
	flush := func() {
		if _, err := b.s.Series().Ingest(sys, b.tenant, items, nil); err != nil {
			log.Fatal(err)
		}
		items = items[:0]
	}
	for m := 30 * 24 * 60; m > 0; m-- {
		var it series.IngestItem
		body := fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":%g}}`, d.ID,
			now.Add(-time.Duration(m)*time.Minute).UTC().Format(time.RFC3339), 20+float64(m%100)/10)
		if err := json.Unmarshal([]byte(body), &it); err != nil {
			log.Fatal(err)
		}
		items = append(items, it)
		if len(items) == cap(items) {
			flush()
		}
	}
	flush()
	_ = perMinute
	q := url.Values{"bucket": {"1h"}, "agg": {"avg"}, "from": {now.Add(-30 * 24 * time.Hour).UTC().Format(time.RFC3339)},
		"to": {now.UTC().Format(time.RFC3339)}}
	path := "/v1/t/" + b.tenant + "/devices/" + d.ID + "/history?" + q.Encode()
	var lat []time.Duration
	var points int
	for i := range 300 {
		t := time.Now()
		code, body := b.call("GET", path, "")
		if code != 200 {
			log.Fatalf("history: %d %s", code, body)
		}
		if i >= 50 {
			lat = append(lat, time.Since(t))
		}
		var h series.History
		_ = json.Unmarshal(body, &h)
		points = len(h.Series[0].Points)
	}
	fmt.Printf("| 30 days of one device, hourly buckets from the hour rollups (%d points), GET over HTTP | %s | %s |\n\n",
		points, pct(lat, 0.5), pct(lat, 0.99))
}

// pipelineStats prints the mean batch size and commit time since the last call.
func (b *bench) pipelineStats(name string) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(b.s.Series().Collector())
	mfs, _ := reg.Gather()
	vals := map[string][2]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				vals[mf.GetName()] = [2]float64{h.GetSampleSum(), float64(h.GetSampleCount())}
			}
		}
	}
	d := func(k string) (float64, float64) {
		cur := vals[k]
		prev := b.lastStats[k]
		return cur[0] - prev[0], cur[1] - prev[1]
	}
	rs, rn := d("strata_series_batch_readings")
	cs, cn := d("strata_series_commit_seconds")
	ls, ln := d("strata_series_ingest_lag_seconds")
	fmt.Printf("%s: %.0f batches, %.0f readings a batch, %.1f ms a commit, %.1f ms mean lag\n", name, rn, rs/max(rn, 1), 1000*cs/max(cn, 1), 1000*ls/max(ln, 1))
	b.lastStats = vals
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func rounded(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}

func pct(d []time.Duration, p float64) string {
	s := slices.Clone(d)
	slices.Sort(s)
	v := s[min(len(s)-1, int(p*float64(len(s))))]
	if v < time.Millisecond {
		return fmt.Sprintf("%.0f µs", float64(v)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%.2f ms", float64(v)/float64(time.Millisecond))
}

// startMosquitto runs the machine's Mosquitto on a free loopback port: no persistence,
// anonymous, in-flight and queue limits high enough for a consumer that acknowledges
// after commit (the defaults, 20 in flight and 1000 queued, throttle or drop).
func startMosquitto() (string, func(), error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/mosquitto"); e == nil {
			bin = "/usr/sbin/mosquitto"
		} else {
			return "", nil, errors.New("mosquitto is not installed (apt-get install mosquitto)")
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	dir, err := os.MkdirTemp("", "strata-bench-mosquitto-")
	if err != nil {
		return "", nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	user := ""
	if os.Getuid() == 0 {
		user = "user root\n"
	}
	if err := os.WriteFile(conf, []byte(user+"listener "+port+" 127.0.0.1\nallow_anonymous true\npersistence false\n"+
		"max_inflight_messages 2000\nmax_queued_messages 0\nset_tcp_nodelay true\nlog_dest none\n"), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(context.Background(), bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = os.RemoveAll(dir) }
	for i := 0; ; i++ {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
			return addr, stop, nil
		}
		if i > 100 {
			stop()
			return "", nil, fmt.Errorf("mosquitto did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

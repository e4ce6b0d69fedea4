package series_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/fernet/fernet-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stratadb/strata/internal/cli"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/series"
)

// With STRATA_CLI_MAIN=1 the test binary is the strata command, so fault tests can kill a
// real strata process.
func TestMain(m *testing.M) {
	if os.Getenv("STRATA_CLI_MAIN") == "1" {
		os.Exit(cli.Main())
	}
	testdb.Main(m)
}

// env is a started series service on a fresh database, with testworld's identities.
type env struct {
	t   testing.TB
	w   *testworld.World
	svc *series.Service
}

func newEnv(t testing.TB, cfg series.Config) *env {
	t.Helper()
	w := testworld.New(t, series.Schema)
	return startEnv(t, w, cfg)
}

func startEnv(t testing.TB, w *testworld.World, cfg series.Config) *env {
	t.Helper()
	svc := series.New(w.Pool, w.Auth, w.Listener, cfg)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return &env{t: t, w: w, svc: svc}
}

// climate is a device input like seed 002's sensors.
func climate(name string) series.DeviceInput {
	lo, hi, hlo, hhi := -40.0, 85.0, 0.0, 100.0
	return series.DeviceInput{Name: name, Kind: "thermostat", Metrics: map[string]series.Metric{
		"temperature": {Min: &lo, Max: &hi, Unit: "°C"}, "humidity": {Min: &hlo, Max: &hhi, Unit: "%"}}}
}

// device registers a device as the owner of the world's tenant, with a Fernet key of its own.
func (e *env) device(in series.DeviceInput) (series.Device, series.Credentials, *fernet.Key) {
	e.t.Helper()
	ctx := e.w.As(testworld.Owner)
	d, c, err := e.svc.DeviceCreate(ctx, e.w.Tenant, in)
	if err != nil {
		e.t.Fatal(err)
	}
	_, secret, err := e.svc.KeyCreate(ctx, e.w.Tenant, series.KeyInput{DeviceID: d.ID})
	if err != nil {
		e.t.Fatal(err)
	}
	k, err := fernet.DecodeKey(secret)
	if err != nil {
		e.t.Fatal(err)
	}
	return d, c, k
}

// seal encrypts a payload with k, as a device does.
func seal(t testing.TB, k *fernet.Key, payload any) []byte {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := fernet.EncryptAndSign(b, k)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func reading(sensor string, at time.Time, values map[string]any) map[string]any {
	return map[string]any{"sensor_id": sensor, "timestamp": at.UTC().Format(time.RFC3339Nano), "values": values}
}

// mqttClient connects to a broker with MQTT v5.
func mqttClient(t testing.TB, addr, clientID, user, pass string) *paho.Client {
	t.Helper()
	c, err := mqttConnect(addr, clientID, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func mqttConnect(addr, clientID, user, pass string) (*paho.Client, error) {
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: clientID})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != ""})
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if ca.ReasonCode != 0 {
		_ = conn.Close()
		return nil, &connackError{ca.ReasonCode}
	}
	return c, nil
}

type connackError struct{ code byte }

func (e *connackError) Error() string { return "connack " + string(rune('0'+e.code%10)) }

// publish sends at QoS 1 and returns the PUBACK's reason code.
func publish(t testing.TB, c *paho.Client, topic string, payload []byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if err != nil {
		if r != nil {
			return r.ReasonCode
		}
		t.Fatalf("publish: %v", err)
	}
	return r.ReasonCode
}

// eventually polls cond every 10ms for up to 60s (generous: CI runs every package at once
// on 2 cores; a condition that holds returns at once).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func count(t testing.TB, e *env, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.w.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// items reads HTTP ingest items from JSON.
func items(t testing.TB, jsons ...string) []series.IngestItem {
	t.Helper()
	out := make([]series.IngestItem, len(jsons))
	for i, j := range jsons {
		if err := json.Unmarshal([]byte(j), &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// metric returns the value of a series metric (counter or gauge, summed over labels), and
// whether it is exported at all.
func metric(t testing.TB, svc *series.Service, name string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(svc.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum, true
	}
	return 0, false
}

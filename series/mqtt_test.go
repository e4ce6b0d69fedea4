package series_test

import (
	"testing"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/series"
)

// A device publishes Fernet-encrypted readings at QoS 1 to the embedded broker: each
// PUBACK comes after the commit (so the reading is already in PostgreSQL when the device
// learns it was received); invalid, forged and out-of-range messages are refused with an
// MQTT v5 reason code, counted, kept as dead letters, and never stored.
func TestEmbeddedBrokerIngest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, series.Config{MQTTAddr: "127.0.0.1:0"})
	d, cred, key := e.device(climate("living room"))
	c := mqttClient(t, e.svc.MQTTAddr(), "dev-1", cred.Username, cred.Password)
	now := time.Now()

	if rc := publish(t, c, cred.Topic, seal(t, key, reading(d.ID, now, map[string]any{"temperature": 21.5, "humidity": 40}))); rc != 0 {
		t.Fatalf("valid reading: PUBACK reason %#x", rc)
	}
	// Acknowledged means committed: no waiting needed.
	if n := count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID); n != 2 {
		t.Fatalf("after the PUBACK, %d readings stored, want 2", n)
	}

	other := &fernet.Key{}
	_ = other.Generate()
	cases := []struct {
		name    string
		payload []byte
		code    byte
		reason  string
	}{
		{"out of range", seal(t, key, reading(d.ID, now, map[string]any{"temperature": 500})), 0x99, series.ReasonOutOfRange},
		{"unknown metric", seal(t, key, reading(d.ID, now, map[string]any{"pressure": 1})), 0x99, series.ReasonUnknownMetric},
		{"forged", seal(t, other, reading(d.ID, now, map[string]any{"temperature": 20})), 0x87, series.ReasonForged},
		{"plaintext", []byte(`{"values":{"temperature":20}}`), 0x87, series.ReasonPlaintext},
		{"garbage", []byte("gAAAAA-not-a-token"), 0x99, series.ReasonMalformed},
		{"other sensor", seal(t, key, reading("someone-else", now, map[string]any{"temperature": 20})), 0x99, series.ReasonSensorMismatch},
		{"future", seal(t, key, reading(d.ID, now.Add(time.Hour), map[string]any{"temperature": 20})), 0x99, series.ReasonFutureTimestamp},
		{"too old", seal(t, key, reading(d.ID, now.Add(-40*24*time.Hour), map[string]any{"temperature": 20})), 0x99, series.ReasonTooOld},
		{"not json", seal(t, key, "just a string"), 0x99, series.ReasonInvalidJSON},
		{"no values", seal(t, key, map[string]any{"sensor_id": d.ID}), 0x99, series.ReasonNoValues},
	}
	for _, tc := range cases {
		if rc := publish(t, c, cred.Topic, tc.payload); rc != tc.code {
			t.Errorf("%s: PUBACK reason %#x, want %#x", tc.name, rc, tc.code)
		}
	}
	if n := count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID); n != 2 {
		t.Fatalf("rejected messages were stored: %d readings", n)
	}
	ctx := e.w.As(testworld.Viewer)
	rejects, err := e.svc.Rejects(ctx, e.w.Tenant, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rejects.Items) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(rejects.Items), len(cases))
	}
	for i, tc := range cases { // newest first
		got := rejects.Items[len(cases)-1-i]
		if got.Reason != tc.reason || got.DeviceID != d.ID || got.Source != "mqtt" || string(got.Payload) != string(tc.payload) {
			t.Errorf("dead letter %d: %+v, want reason %s", i, got, tc.reason)
		}
	}
	st, err := e.svc.Stats(ctx, e.w.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 1 || st.Readings != 2 || st.Rejected[series.ReasonForged] != 1 || st.DeadLetters != len(cases) {
		t.Fatalf("stats %+v", st)
	}
	latest, err := e.svc.LatestDevice(ctx, e.w.Tenant, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(latest.Values) != 2 || latest.Values[0].Metric != "humidity" || latest.Values[1].Value != 21.5 {
		t.Fatalf("latest %+v", latest)
	}
}

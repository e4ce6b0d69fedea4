package series

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/google/uuid"
)

func testState(keys ...*fernet.Key) *deviceState {
	id := uuid.Must(uuid.NewV7())
	open := make([]*openKey, len(keys))
	for i, k := range keys {
		open[i] = prepareKey(k)
	}
	return &deviceState{exists: true, id: id, idStr: id.String(), sensorID: "thermo-1", keep: 30, keys: keys, open: open, ttl: 15 * time.Minute,
		metrics: map[string]metricRange{
			"temperature": {name: "temperature", min: -40, max: 85},
			"humidity":    {name: "humidity", min: 0, max: 100},
			"door":        {name: "door", min: math.Inf(-1), max: math.Inf(1)},
		}}
}

func testService() *Service { return &Service{cfg: Config{}.withDefaults()} }

func TestDecodeMessage(t *testing.T) {
	t.Parallel()
	s := testService()
	k := &fernet.Key{}
	_ = k.Generate()
	st := testState(k)
	now := time.Date(2025, 1, 20, 10, 0, 0, 0, time.UTC)
	seal := func(p string, at time.Time) []byte {
		tok, err := fernet.EncryptAndSignAtTime([]byte(p), k, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cases := []struct {
		name    string
		payload []byte
		trusted bool
		reason  string
		points  int
	}{
		{"token", seal(`{"sensor_id":"thermo-1","timestamp":"2025-01-20T09:59:00Z","values":{"temperature":21.5,"humidity":40}}`, now), false, "", 2},
		{"unix seconds and booleans", seal(`{"sensor_id":"thermo-1","timestamp":1737367140.5,"values":{"door":true}}`, now), false, "", 1},
		{"python isoformat", seal(`{"timestamp":"2025-01-20T09:59:00.123456","values":{"door":false}}`, now), false, "", 1},
		{"sensor by device id", seal(`{"sensor_id":"`+st.idStr+`","values":{"door":1}}`, now), false, "", 1},
		{"escaped names go the slow way", seal(`{"sensor_id":"thermo-1","values":{"temp\u0065rature":1}}`, now), false, "", 1},
		{"expired", seal(`{"values":{"door":1}}`, now.Add(-time.Hour)), false, ReasonExpired, 0},
		{"token from the future", seal(`{"values":{"door":1}}`, now.Add(10*time.Minute)), false, ReasonFutureToken, 0},
		{"plaintext refused", []byte(`{"values":{"door":1}}`), false, ReasonPlaintext, 0},
		{"plaintext over HTTP", []byte(`{"values":{"door":1}}`), true, "", 1},
		{"truncated token", seal(`{"values":{"door":1}}`, now)[:40], false, ReasonMalformed, 0},
		{"tampered token", tamper(seal(`{"values":{"door":1}}`, now)), false, ReasonForged, 0},
		{"wrong sensor", seal(`{"sensor_id":"thermo-2","values":{"door":1}}`, now), false, ReasonSensorMismatch, 0},
		{"numeric sensor id", seal(`{"sensor_id":7,"values":{"door":1}}`, now), false, ReasonSensorMismatch, 0},
		{"bad timestamp", seal(`{"timestamp":"yesterday","values":{"door":1}}`, now), false, ReasonInvalidTime, 0},
		{"string value", seal(`{"values":{"door":"open"}}`, now), false, ReasonInvalidValue, 0},
		{"nested value", seal(`{"values":{"door":{"open":true}}}`, now), false, ReasonInvalidValue, 0},
		{"out of range", seal(`{"values":{"humidity":101}}`, now), false, ReasonOutOfRange, 0},
		{"undeclared", seal(`{"values":{"co2":400}}`, now), false, ReasonUnknownMetric, 0},
		{"array", seal(`[1,2]`, now), false, ReasonInvalidJSON, 0},
		{"trailing garbage", seal(`{"values":{"door":1}} x`, now), false, ReasonInvalidJSON, 0},
		{"empty values", seal(`{"values":{}}`, now), false, ReasonNoValues, 0},
		{"too large", bytes.Repeat([]byte("a"), maxPayload+1), false, ReasonTooLarge, 0},
	}
	for _, c := range cases {
		pts, reason, _ := s.decodeMessage(st, c.payload, now, c.trusted)
		if reason != c.reason || len(pts) != c.points {
			t.Errorf("%s: reason %q with %d points, want %q with %d", c.name, reason, len(pts), c.reason, c.points)
		}
	}
	if _, reason, _ := s.decodeMessage(testState(), seal(`{"values":{"door":1}}`, now), now, false); reason != ReasonNoKey {
		t.Errorf("a device without keys: %q", reason)
	}
	other := &fernet.Key{}
	_ = other.Generate()
	if pts, reason, _ := s.decodeMessage(testState(other, k), seal(`{"values":{"door":1}}`, now), now, false); reason != "" || len(pts) != 1 {
		t.Errorf("while rotating, the older key must still decrypt: %q", reason)
	}
}

func tamper(tok []byte) []byte {
	raw, _ := decodeToken(tok)
	raw[len(raw)-40] ^= 1
	return encodeToken(raw)
}

// The fast scan and encoding/json agree on every payload: the scan accepts only what
// encoding/json accepts, and reads the same values.
func FuzzPayload(f *testing.F) {
	for _, seed := range []string{
		`{"sensor_id":"thermo-1","timestamp":"2025-01-20T09:59:00Z","values":{"temperature":21.5,"humidity":40}}`,
		`{"values":{"door":true,"x":-0.5e3}, "extra":[1,{"a":"\""}], "sensor_id": 12}`,
		`{"Values":{"a":1}}`, `{"values":{"a":1,"a":2}}`, `{"values":null}`, `{}`, `[]`, `{"values":{"a":01}}`,
		`{"values":{"a":1.}}`, `{"timestamp":1e400}`, `{"values":{"é":1}}`, ` { "values" : { "a" : 1 } } `,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast fields
		fastOK := scanPayload(b, &fast)
		var p rawPayload
		slowOK := json.Unmarshal(b, &p) == nil
		if fastOK && !slowOK {
			t.Fatalf("the scan accepted what encoding/json refuses: %q", b)
		}
		if !fastOK {
			return
		}
		slow := p.fields()
		if !bytes.Equal(fast.sensorID, slow.sensorID) || !bytes.Equal(fast.timestamp, slow.timestamp) || len(fast.values) != len(slow.values) {
			t.Fatalf("scan %+v, encoding/json %+v for %q", fast, slow, b)
		}
		sortFields := func(fs []field) {
			slices.SortFunc(fs, func(a, b field) int { return bytes.Compare(a.name, b.name) })
		}
		sortFields(fast.values)
		sortFields(slow.values)
		for i := range fast.values {
			if !bytes.Equal(fast.values[i].name, slow.values[i].name) || !bytes.Equal(fast.values[i].raw, slow.values[i].raw) {
				t.Fatalf("values differ for %q", b)
			}
		}
	})
}

// Every Fernet token the decoder accepts is authentic; arbitrary input never panics.
func FuzzDecrypt(f *testing.F) {
	k := &fernet.Key{}
	_ = k.Generate()
	tok, _ := fernet.EncryptAndSign([]byte(`{"values":{"door":1}}`), k)
	f.Add(tok)
	f.Add([]byte("gAAAAA"))
	f.Add([]byte{})
	st := testState(k)
	now := time.Now()
	f.Fuzz(func(t *testing.T, b []byte) {
		plain, reason, _ := decrypt(st, b, now)
		if reason == "" && fernet.VerifyAndDecrypt(b, 0, st.keys) == nil {
			t.Fatalf("accepted a token fernet-go refuses: %q", b)
		}
		if reason == "" && plain == nil {
			t.Fatal("accepted without a plaintext")
		}
	})
}

func BenchmarkDecodeMessage(b *testing.B) {
	s := testService()
	k := &fernet.Key{}
	_ = k.Generate()
	st := testState(k)
	now := time.Now()
	tok, _ := fernet.EncryptAndSign([]byte(`{"sensor_id":"thermo-1","timestamp":"`+now.UTC().Format(time.RFC3339Nano)+
		`","values":{"temperature":21.5,"humidity":40,"door":0}}`), k)
	b.ReportAllocs()
	for b.Loop() {
		if _, reason, _ := s.decodeMessage(st, tok, now, false); reason != "" {
			b.Fatal(reason)
		}
	}
}

func BenchmarkEncodeReadings(b *testing.B) {
	st := testState()
	batch := make([]*message, 1000)
	now := time.Now()
	for i := range batch {
		batch[i] = &message{st: st, tenant: st.id, device: st.id, points: []point{{"temperature", now, 21.5}, {"humidity", now, 40}, {"door", now, 1}}}
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = encodeReadings(batch, 3000)
	}
}

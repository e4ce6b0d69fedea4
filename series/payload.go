package series

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Reasons a message is rejected. They label the rejection counters, the dead-letter
// entries and the per-item errors of HTTP ingest.
const (
	ReasonUnknownDevice   = "unknown_device"        // no such device (or tenant) for the topic, key or item
	ReasonDisabled        = "device_disabled"       // the device is disabled
	ReasonTooLarge        = "too_large"             // the payload exceeds 64 KiB
	ReasonPlaintext       = "plaintext_not_allowed" // a JSON payload from a device that must encrypt
	ReasonNoKey           = "no_key"                // a Fernet token for a device without keys
	ReasonMalformed       = "malformed"             // neither JSON nor a well-formed Fernet token
	ReasonForged          = "forged"                // the token's signature matches none of the keys
	ReasonExpired         = "expired"               // the token is older than the tenant's Fernet TTL
	ReasonFutureToken     = "token_from_future"     //nolint:gosec // a reason, not a credential; the token was made more than a minute ahead of Strata's clock
	ReasonInvalidJSON     = "invalid_json"          // the (decrypted) payload is not the expected JSON
	ReasonSensorMismatch  = "sensor_mismatch"       // sensor_id names another device
	ReasonInvalidTime     = "invalid_timestamp"     // the timestamp cannot be read
	ReasonFutureTimestamp = "future_timestamp"      // the reading is dated too far ahead
	ReasonTooOld          = "too_old"               // the reading is older than the tenant keeps raw data
	ReasonNoValues        = "no_values"             // values is missing or empty
	ReasonUnknownMetric   = "unknown_metric"        // a metric the device does not declare
	ReasonInvalidValue    = "invalid_value"         // a value that is not a number or boolean
	ReasonOutOfRange      = "out_of_range"          // a value outside the metric's range
	ReasonTopic           = "invalid_topic"         // an external topic that names no tenant and device
	ReasonStorage         = "storage_error"         // PostgreSQL refused the reading itself (not an outage)
)

// Reasons lists every rejection reason.
var Reasons = []string{ReasonUnknownDevice, ReasonDisabled, ReasonTooLarge, ReasonPlaintext, ReasonNoKey, ReasonMalformed,
	ReasonForged, ReasonExpired, ReasonFutureToken, ReasonInvalidJSON, ReasonSensorMismatch, ReasonInvalidTime,
	ReasonFutureTimestamp, ReasonTooOld, ReasonNoValues, ReasonUnknownMetric, ReasonInvalidValue, ReasonOutOfRange,
	ReasonTopic, ReasonStorage}

const (
	maxPayload       = 64 << 10
	maxValues        = 100
	maxTokenSkew     = 60 * time.Second
	fernetVersion    = 0x80
	fernetMinDecoded = 1 + 8 + 16 + 16 + 32
)

// point is one reading: a metric's value at a time.
type point struct {
	metric string
	ts     time.Time
	value  float64
}

// rawPayload is decoded leniently, so that each problem gets its own reason.
type rawPayload struct {
	SensorID  json.RawMessage            `json:"sensor_id"`
	Timestamp json.RawMessage            `json:"timestamp"`
	Values    map[string]json.RawMessage `json:"values"`
}

// decodeMessage decrypts (when needed) and validates a message from device st, received
// at received. trusted messages (HTTP, from an authorized user) may be plaintext whatever
// the device's policy. It returns the readings, or a reason and a detail (never payload
// content).
func (s *Service) decodeMessage(st *deviceState, payload []byte, received time.Time, trusted bool) ([]point, string, string) {
	switch {
	case st == nil || !st.exists:
		return nil, ReasonUnknownDevice, ""
	case st.disabled:
		return nil, ReasonDisabled, ""
	case len(payload) > maxPayload:
		return nil, ReasonTooLarge, strconv.Itoa(len(payload)) + " bytes"
	}
	body := bytes.TrimSpace(payload)
	if len(body) > 0 && body[0] == '{' {
		if !trusted && !st.allowPlaintext {
			return nil, ReasonPlaintext, ""
		}
	} else {
		plain, reason, detail := decrypt(st, body, received)
		if reason != "" {
			return nil, reason, detail
		}
		body = plain
	}
	return s.parseReadings(st, body, received)
}

// decrypt verifies and decrypts a Fernet token with the device's keys. The signature is
// checked before the token's age, so only authentic tokens are called expired.
func decrypt(st *deviceState, tok []byte, received time.Time) ([]byte, string, string) {
	if len(st.open) == 0 {
		return nil, ReasonNoKey, ""
	}
	raw, ok := decodeToken(tok)
	if !ok || len(raw) < fernetMinDecoded || raw[0] != fernetVersion {
		return nil, ReasonMalformed, "not a Fernet token"
	}
	var plain []byte
	for _, k := range st.open {
		if k.authentic(raw) {
			plain, ok = k.decryptPayload(raw)
			if !ok {
				return nil, ReasonMalformed, "the token's ciphertext is malformed"
			}
			break
		}
	}
	if plain == nil {
		return nil, ReasonForged, "the signature matches no key of the device"
	}
	made := time.Unix(int64(binary.BigEndian.Uint64(raw[1:9])), 0)
	if st.ttl > 0 && received.After(made.Add(st.ttl)) {
		return nil, ReasonExpired, "token made " + received.Sub(made).Round(time.Second).String() + " before it arrived"
	}
	if made.After(received.Add(maxTokenSkew)) {
		return nil, ReasonFutureToken, "token dated " + made.Sub(received).Round(time.Second).String() + " ahead"
	}
	return plain, "", ""
}

func (s *Service) parseReadings(st *deviceState, body []byte, received time.Time) ([]point, string, string) {
	var f fields
	if !parsePayload(body, &f) {
		return nil, ReasonInvalidJSON, "not a JSON object with sensor_id, timestamp and values"
	}
	return s.validate(st, &f, received)
}

// validate checks a decoded payload against the device and returns its readings.
func (s *Service) validate(st *deviceState, p *fields, received time.Time) ([]point, string, string) {
	if len(p.sensorID) > 0 && string(p.sensorID) != "null" {
		if id, ok := scalarString(p.sensorID); !ok || (id != st.sensorID && id != st.idStr) {
			return nil, ReasonSensorMismatch, "sensor_id names another device"
		}
	}
	ts := received
	if len(p.timestamp) > 0 && string(p.timestamp) != "null" {
		t, ok := parseTimestamp(p.timestamp)
		if !ok {
			return nil, ReasonInvalidTime, "timestamp is neither RFC 3339 nor Unix seconds"
		}
		ts = t
	}
	ts = ts.UTC().Truncate(time.Microsecond)
	if ts.After(received.Add(s.cfg.MaxFuture)) {
		return nil, ReasonFutureTimestamp, "reading dated " + ts.Sub(received).Round(time.Second).String() + " ahead"
	}
	if ts.Before(received.Add(-time.Duration(st.keep) * 24 * time.Hour)) {
		return nil, ReasonTooOld, "older than the raw retention"
	}
	if len(p.values) == 0 {
		return nil, ReasonNoValues, ""
	}
	if len(p.values) > maxValues {
		return nil, ReasonInvalidJSON, "more than 100 values"
	}
	pts := make([]point, 0, len(p.values))
	for _, fv := range p.values {
		r, ok := st.metrics[string(fv.name)]
		if !ok {
			return nil, ReasonUnknownMetric, "metric " + strconv.Quote(truncate(string(fv.name), 64)) + " is not declared"
		}
		v, ok := scalarNumber(fv.raw)
		if !ok {
			return nil, ReasonInvalidValue, "metric " + strconv.Quote(r.name) + " is not a number"
		}
		if v < r.min || v > r.max {
			return nil, ReasonOutOfRange, "metric " + strconv.Quote(r.name) + " is out of its range"
		}
		pts = append(pts, point{metric: r.name, ts: ts, value: v})
	}
	return pts, "", ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func scalarString(raw []byte) (string, bool) {
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err == nil
	}
	if _, err := strconv.ParseFloat(string(raw), 64); err == nil {
		return string(raw), true
	}
	return "", false
}

func scalarNumber(raw []byte) (float64, bool) {
	switch string(raw) {
	case "true":
		return 1, true
	case "false":
		return 0, true
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || (len(raw) > 0 && (raw[0] == '"' || raw[0] == '[' || raw[0] == '{')) {
		return 0, false
	}
	return v, true
}

// timeLayouts are the string timestamps accepted: RFC 3339, and the zone-less forms of
// Python's datetime.isoformat() and str(datetime), read as UTC.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999"}

func parseTimestamp(raw []byte) (time.Time, bool) {
	if raw[0] == '"' {
		s, ok := scalarString(raw)
		if !ok {
			return time.Time{}, false
		}
		for _, layout := range timeLayouts {
			if t, err := time.Parse(layout, s); err == nil {
				return t, true
			}
		}
		return time.Time{}, false
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > 1e11 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

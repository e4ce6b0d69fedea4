package series

import (
	"bytes"
	"encoding/json"
)

// field is one value of a payload's "values": the metric name and the raw JSON value.
type field struct {
	name []byte
	raw  []byte
}

// fields are a payload's parts, raw: each JSON value as it appears in the payload.
type fields struct {
	sensorID  []byte
	timestamp []byte
	values    []field
}

// parsePayload reads a payload's fields: a fast scan for the common shape, and
// encoding/json for anything unusual (escapes in strings, duplicate names), so that what
// is accepted is exactly what encoding/json accepts. ok is false for invalid JSON or a
// JSON value that is not an object.
func parsePayload(b []byte, f *fields) bool {
	if scanPayload(b, f) {
		return true
	}
	var p rawPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return false
	}
	*f = p.fields()
	return true
}

func (p *rawPayload) fields() fields {
	f := fields{sensorID: p.SensorID, timestamp: p.Timestamp, values: make([]field, 0, len(p.Values))}
	for k, v := range p.Values {
		f.values = append(f.values, field{name: []byte(k), raw: v})
	}
	return f
}

// scanPayload is the fast path. It returns false whenever it is not sure, never for a
// payload it misreads.
func scanPayload(b []byte, f *fields) bool {
	*f = fields{values: f.values[:0]}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipWS(b, i+1) == len(b)
	}
	var seenSensor, seenTime, seenValues bool
	for {
		key, j, ok := scanString(b, i)
		if !ok {
			return false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		switch string(key) {
		case "sensor_id", "timestamp":
			if (key[0] == 's' && seenSensor) || (key[0] == 't' && seenTime) {
				return false // duplicate: let encoding/json decide
			}
			end, ok := scanScalar(b, i)
			if !ok {
				return false
			}
			if key[0] == 's' {
				f.sensorID, seenSensor = b[i:end], true
			} else {
				f.timestamp, seenTime = b[i:end], true
			}
			i = end
		case "values":
			if seenValues {
				return false
			}
			seenValues = true
			end, ok := scanValues(b, i, f)
			if !ok {
				return false
			}
			i = end
		default:
			if bytes.EqualFold(key, []byte("sensor_id")) || bytes.EqualFold(key, []byte("timestamp")) || bytes.EqualFold(key, []byte("values")) {
				return false // encoding/json matches names regardless of case
			}
			end, ok := skipValue(b, i, 0)
			if !ok {
				return false
			}
			i = end
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return skipWS(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return false
		}
		i = skipWS(b, i+1)
	}
}

func scanValues(b []byte, i int, f *fields) (int, bool) {
	if i < len(b) && b[i] == 'n' { // "values": null
		end, ok := scanScalar(b, i)
		return end, ok && string(b[i:end]) == "null"
	}
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		name, j, ok := scanString(b, i)
		if !ok {
			return 0, false
		}
		for _, prev := range f.values {
			if string(prev.name) == string(name) {
				return 0, false // duplicate metric: let encoding/json decide (last wins)
			}
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipWS(b, i+1)
		end, ok := scanScalar(b, i)
		if !ok {
			return 0, false
		}
		f.values = append(f.values, field{name: name, raw: b[i:end]})
		i = skipWS(b, end)
		if i >= len(b) {
			return 0, false
		}
		if b[i] == '}' {
			return i + 1, true
		}
		if b[i] != ',' {
			return 0, false
		}
		i = skipWS(b, i+1)
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString reads a string without escapes starting at b[i] == '"' and returns its
// contents and the index after it.
func scanString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, 0, false // escapes and non-ASCII: encoding/json validates them
		}
	}
	return nil, 0, false
}

// scanScalar reads a string (without escapes), number, true, false or null.
func scanScalar(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		_, end, ok := scanString(b, i)
		return end, ok
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	}
	return 0, false
}

func literal(b []byte, i int, lit string) (int, bool) {
	if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
		return i + len(lit), true
	}
	return 0, false
}

// scanNumber reads a number by JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return 0, false
		}
	}
	return i, true
}

// skipValue skips any JSON value (for fields the payload carries beyond ours); nested
// values and strings with escapes are handed to encoding/json.
func skipValue(b []byte, i, depth int) (int, bool) {
	if depth > 0 || i >= len(b) {
		return 0, false
	}
	return scanScalar(b, i)
}

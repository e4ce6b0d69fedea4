package jsonx_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/stratadb/strata/internal/jsonx"
	"github.com/stratadb/strata/problem"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65)
	okDeep := strings.Repeat(`{"a":`, 63) + "[1]" + strings.Repeat("}", 63)
	cases := []struct {
		in, code, pointer string
	}{
		{`{"a": 1, "b": [1, {"c": "é😀"}]}`, "", ""},
		{okDeep, "", ""},
		{`{"a": 1, "a": 2}`, "duplicate_key", "/a"},
		{`{"x": {"y": [0, {"k": 1, "k": 1}]}}`, "duplicate_key", "/x/y/1/k"},
		{`{"a/b": {"c~d": 1, "c~d": 2}}`, "duplicate_key", "/a~1b/c~0d"},
		{deep, "too_deep", ""},
		{`{"n": 1e400}`, "number_out_of_range", "/n"},
		{`{"arr": [1, -1e999]}`, "number_out_of_range", "/arr/1"},
		{`{"s": "nul\u0000here"}`, "nul_character", "/s"},
		{`{"a\u0000": 1}`, "nul_character", "/a\x00"},
		{`[1, 2]`, "not_an_object", ""},
		{`"text"`, "not_an_object", ""},
		{`{"a": 1} {"b": 2}`, "invalid_json", ""},
		{`{"a": }`, "invalid_json", ""},
		{`{"a": 1`, "invalid_json", ""},
		{`{"a": [1, 2`, "invalid_json", ""},
		{`{`, "invalid_json", ""},
		{``, "invalid_json", ""},
		{"{\"a\": \"\xff\"}", "invalid_json", ""},
	}
	for _, c := range cases {
		err := jsonx.Validate([]byte(c.in))
		if c.code == "" {
			if err != nil {
				t.Errorf("%.60q: %v", c.in, err)
			}
			continue
		}
		p, ok := problem.As(err)
		if !ok || p.Code != c.code {
			t.Errorf("%.60q: err %v, want %s", c.in, err, c.code)
			continue
		}
		if c.pointer != "" && (len(p.Errors) == 0 || p.Errors[0].Location != c.pointer) {
			t.Errorf("%.60q: pointer %v, want %s", c.in, p.Errors, c.pointer)
		}
	}
}

func random(r *rand.Rand, depth int) any {
	if depth > 3 || r.IntN(3) == 0 {
		return []any{json.Number("1"), json.Number("2.50"), json.Number("12345678901234567890123"), "x", "y", "", true, nil}[r.IntN(8)]
	}
	if r.IntN(2) == 0 {
		a := make([]any, r.IntN(5))
		for i := range a {
			a[i] = random(r, depth+1)
		}
		return a
	}
	m := map[string]any{}
	for _, k := range []string{"a", "b", "c/d", "e~f", "g"} {
		if r.IntN(2) == 0 {
			m[k] = random(r, depth+1)
		}
	}
	return m
}

func decode(t *testing.T, b []byte) any {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}

// Applying Diff(a, b) to a gives b exactly, numbers included, for random documents.
func TestDiffApplyRoundTrip(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 9))
	for i := range 2000 {
		a, b := map[string]any{"root": random(r, 0)}, map[string]any{"root": random(r, 0)}
		if i%3 == 0 {
			b = map[string]any{"root": a["root"], "extra": random(r, 1)}
		}
		ab, _ := json.Marshal(a)
		bb, _ := json.Marshal(b)
		patch, err := jsonx.Diff(ab, bb)
		if err != nil {
			t.Fatal(err)
		}
		got, err := jsonx.Apply(ab, patch)
		if err != nil {
			t.Fatalf("applying %s to %s: %v", patch, ab, err)
		}
		if !reflect.DeepEqual(decode(t, got), decode(t, bb)) {
			t.Fatalf("diff %s of %s → %s gives %s", patch, ab, bb, got)
		}
	}
}

// FuzzValidate: whatever Validate accepts is one valid JSON object (and PostgreSQL's jsonb
// input rules are stricter than encoding/json's only in what Validate checks besides).
func FuzzValidate(f *testing.F) {
	for _, s := range []string{`{}`, `{"a": [1, {"b": null}]}`, `{"a": 1`, `[1]`, `{"a": 1, "a": 2}`, `{"n": 1e400}`, "{\"a\": \"\\u0000\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if jsonx.Validate(b) != nil {
			return
		}
		var v map[string]any
		if !json.Valid(b) || json.Unmarshal(b, &v) != nil {
			t.Fatalf("accepted %q, which is not one JSON object", b)
		}
	})
}

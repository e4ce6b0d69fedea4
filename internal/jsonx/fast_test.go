package jsonx

import (
	"strings"
	"testing"
)

// The fast path must take the documents of ordinary shape (or it saves nothing) and refuse
// to decide anything the full check refuses.
func TestFastPath(t *testing.T) {
	deep := strings.Repeat(`{"a":`, MaxDepth) + "1" + strings.Repeat("}", MaxDepth) // the deepest allowed
	var many strings.Builder
	many.WriteString("{")
	for i := range 40 {
		if i > 0 {
			many.WriteString(", ")
		}
		many.WriteString(`"k` + strings.Repeat("x", i) + `": ` + "1")
	}
	many.WriteString("}")
	takes := []string{
		`{}`, ` { } `, "{\n\t\"a\": 1\r\n}", `{"a": [1, -2.5, 3e10, 0, -0, 1E-5, 0.5e+3, true, false, null, "x", [], {}]}`,
		`{"s": "caf\u00e9 \"quoted\" \\ \/ \b\f\n\r\t", "u": "é日本"}`, deep, `{"a": [` + strings.Repeat(`[`, MaxDepth-2) + strings.Repeat(`]`, MaxDepth-2) + `]}`,
		many.String(), `{"n": 1.7976931348623157e308}`, `{"big": ` + strings.Repeat("9", 300) + `}`,
	}
	for _, s := range takes {
		if !valid([]byte(s)) {
			t.Errorf("the fast path left %.80q to the full check", s)
		}
		if err := validateDecoded([]byte(s)); err != nil {
			t.Errorf("the full check refuses %.80q, which the fast path should not take: %v", s, err)
		}
	}
	leaves := []string{
		``, ` `, `[]`, `1`, `"x"`, `{"a": 1`, `{"a": 1,}`, `{"a" 1}`, `{a: 1}`, `{"a": 01}`, `{"a": 1.}`, `{"a": .5}`, `{"a": -}`,
		`{"a": 1e}`, `{"a": +1}`, `{"a": tru}`, `{"a": nul}`, `{"a": [1,]}`, `{"a": [1 2]}`, `{} {}`, `{}x`, `{"a": 1, "a": 2}`,
		`{"a\u0062": 1, "ab": 2}`, `{"n": 1e400}`, `{"n": -1e309}`, `{"s": "\u0000"}`, `{"s\u0000": 1}`, "{\"s\": \"a\x01\"}",
		`{"s": "\x"}`, `{"s": "\u12"}`, `{"s": "\u12g4"}`, `{"s": "abc}`, deep[:len(deep)-1],
		strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1),
		strings.Replace(many.String(), `"kxxxxxxxxxxxxxxxxxxxx"`, `"k"`, 1),
	}
	for _, s := range leaves {
		if valid([]byte(s)) {
			t.Errorf("the fast path took %.80q", s)
		}
		if validateDecoded([]byte(s)) == nil {
			t.Errorf("the full check accepts %.80q: the case belongs with those the fast path takes", s)
		}
	}
}

// FuzzFastPath: whatever the fast path takes, the full check accepts.
func FuzzFastPath(f *testing.F) {
	for _, s := range []string{`{}`, `{"a": [1, {"b": null}]}`, `{"a": 1, "a": 2}`, `{"n": 1e400}`, `{"s": "\u0000"}`, `{"a": "\u00e9", "b": [true, false]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if valid(b) {
			if err := validateDecoded(b); err != nil {
				t.Fatalf("the fast path took %q, which the full check refuses: %v", b, err)
			}
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	doc := []byte(`{"title": "document 1", "status": "s1", "n": 1, "tags": ["a", "b1"], "text": "` + strings.Repeat("lorem ipsum ", 10) + `"}`)
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if err := Validate(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		for b.Loop() {
			if err := validateDecoded(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Package jsonx is strict JSON for documents: validation stricter than encoding/json
// (duplicate keys, depth, number range, NUL characters, invalid UTF-8 are refused with
// the position and a stable code), and RFC 6902 diffs and patches that keep numbers exact.
package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/stratadb/strata/problem"
	"github.com/wI2L/jsondiff"
)

// MaxDepth is how deeply objects and arrays may nest in a document.
const MaxDepth = 64

// Validate checks that b is one JSON object that PostgreSQL's jsonb stores exactly: valid
// UTF-8, no duplicate keys, nesting at most MaxDepth, numbers within float64 range (what
// clients can read back), no NUL characters (jsonb refuses \u0000). Each failure is a 422
// problem naming the JSON pointer; malformed JSON is a 400 naming the byte offset.
func Validate(b []byte) error {
	if !utf8.Valid(b) {
		return problem.Invalid("invalid_json", "the document is not valid UTF-8")
	}
	if valid(b) {
		return nil
	}
	return validateDecoded(b)
}

// validateDecoded is Validate through encoding/json's token reader: slow, and the one
// that names each problem precisely.
func validateDecoded(b []byte) error {
	v := validator{d: json.NewDecoder(bytes.NewReader(b))}
	v.d.UseNumber()
	return v.run()
}

type frame struct {
	object    bool
	expectKey bool
	index     int
	keys      map[string]struct{}
}

type validator struct {
	d     *json.Decoder
	stack []*frame
	path  []string // JSON pointer segments of the value being read
}

// pointer is the JSON pointer of the value being read; built only to report an error.
func (v *validator) pointer() string {
	if len(v.path) == 0 {
		return "/"
	}
	esc := make([]string, len(v.path))
	for i, p := range v.path {
		esc[i] = escape(p)
	}
	return "/" + strings.Join(esc, "/")
}

func (v *validator) run() error {
	started := false
	for {
		tok, err := v.d.Token()
		if errors.Is(err, io.EOF) {
			if !started {
				return problem.Invalid("invalid_json", "the body is empty")
			}
			if len(v.stack) > 0 { // the decoder reports a truncated document as a plain EOF
				return problem.Invalid("invalid_json", "the document ends early (near byte %d): an object or array is not closed", v.d.InputOffset())
			}
			return nil
		}
		if err != nil {
			return problem.Invalid("invalid_json", "the document is not valid JSON near byte %d: %s", v.d.InputOffset(), cleanErr(err))
		}
		if len(v.stack) == 0 {
			if started {
				return problem.Invalid("invalid_json", "more than one JSON value (near byte %d)", v.d.InputOffset())
			}
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return problem.Unprocessable("not_an_object", "a document is a JSON object")
			}
			started = true
			v.stack = append(v.stack, &frame{object: true, expectKey: true, keys: map[string]struct{}{}})
			continue
		}
		top := v.stack[len(v.stack)-1]
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			v.stack = v.stack[:len(v.stack)-1]
			v.done()
			continue
		}
		if top.object && top.expectKey {
			k := tok.(string)
			v.path = append(v.path, k)
			if strings.ContainsRune(k, 0) {
				return problem.Unprocessable("nul_character", "keys may not contain the NUL character (\\u0000)").WithField(v.pointer(), "NUL in a key")
			}
			if _, dup := top.keys[k]; dup {
				return problem.Unprocessable("duplicate_key", "the key %q appears twice in one object", truncate(k, 100)).WithField(v.pointer(), "duplicate key")
			}
			top.keys[k] = struct{}{}
			top.expectKey = false
			continue
		}
		if !top.object {
			v.path = append(v.path, strconv.Itoa(top.index))
			top.index++
		}
		switch t := tok.(type) {
		case json.Delim: // '{' or '['
			if len(v.stack) >= MaxDepth {
				return problem.Unprocessable("too_deep", "the document nests deeper than %d levels", MaxDepth).WithField(v.pointer(), "too deep")
			}
			v.stack = append(v.stack, &frame{object: t == '{', expectKey: t == '{', keys: map[string]struct{}{}})
			continue
		case json.Number:
			if f, err := strconv.ParseFloat(string(t), 64); err != nil || f != f {
				return problem.Unprocessable("number_out_of_range", "the number %s does not fit in a 64-bit float", truncate(string(t), 40)).WithField(v.pointer(), "out of range")
			}
		case string:
			if strings.ContainsRune(t, 0) {
				return problem.Unprocessable("nul_character", "strings may not contain the NUL character (\\u0000), which PostgreSQL cannot store").WithField(v.pointer(), "NUL character")
			}
		}
		v.done()
	}
}

// done finishes a value inside the current container: its path segment goes, and an
// object expects its next key.
func (v *validator) done() {
	if len(v.stack) == 0 {
		return
	}
	if len(v.path) > 0 {
		v.path = v.path[:len(v.path)-1]
	}
	if top := v.stack[len(v.stack)-1]; top.object {
		top.expectKey = true
	}
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func escape(k string) string { return pointerEscaper.Replace(k) }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func cleanErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return se.Error()
	}
	return err.Error()
}

// Diff returns the RFC 6902 patch that turns from into to (numbers compared as written).
func Diff(from, to []byte) ([]byte, error) {
	p, err := jsondiff.CompareJSON(from, to, jsondiff.UnmarshalFunc(unmarshalNumbers))
	if err != nil {
		return nil, fmt.Errorf("diffing documents: %w", err)
	}
	if len(p) == 0 {
		return []byte("[]"), nil
	}
	return json.Marshal(p)
}

func unmarshalNumbers(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// Apply applies an RFC 6902 patch to doc.
func Apply(doc, patch []byte) ([]byte, error) {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, problem.Invalid("invalid_patch", "the JSON Patch is malformed: %v", err)
	}
	out, err := p.ApplyWithOptions(doc, &jsonpatch.ApplyOptions{SupportNegativeIndices: false, EnsurePathExistsOnAdd: false})
	if err != nil {
		return nil, problem.Unprocessable("patch_failed", "the JSON Patch does not apply to the document: %v", err)
	}
	return out, nil
}

// MergePatch applies an RFC 7396 merge patch to doc.
func MergePatch(doc, patch []byte) ([]byte, error) {
	out, err := jsonpatch.MergePatch(doc, patch)
	if err != nil {
		return nil, problem.Unprocessable("patch_failed", "the merge patch does not apply: %v", err)
	}
	return out, nil
}

package filter

import (
	"bytes"
	"cmp"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Decode reads a JSON document the way Eval expects it: numbers kept exact (json.Number).
func Decode(doc []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// Meta is a document's metadata for Eval.
type Meta struct {
	ID        string
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Eval reports whether doc (decoded by Decode) with meta matches e, with the same
// semantics as the SQL that SQL compiles (strings compare bytewise, as under the C
// collation). A nil e matches everything.
func Eval(e Expr, doc any, meta Meta) bool {
	if e == nil {
		return true
	}
	switch e := e.(type) {
	case And:
		for _, t := range e.Terms {
			if !Eval(t, doc, meta) {
				return false
			}
		}
		return true
	case Or:
		for _, t := range e.Terms {
			if Eval(t, doc, meta) {
				return true
			}
		}
		return false
	case Not:
		return !Eval(e.X, doc, meta)
	case Exists:
		if e.Path.Meta != "" {
			return true
		}
		_, ok := lookup(doc, e.Path)
		return ok
	case Contains:
		v, ok := lookup(doc, e.Path)
		want, err := Decode(e.Value)
		return ok && err == nil && contains(v, want, true)
	case In:
		for _, v := range e.Values {
			if Eval(Compare{Path: e.Path, Op: "=", Value: v}, doc, meta) {
				return true
			}
		}
		return false
	case Compare:
		if e.Path.Meta != "" {
			return compareMeta(e, meta)
		}
		v, ok := lookup(doc, e.Path)
		want, err := Decode(e.Value)
		if err != nil {
			return false
		}
		switch e.Op {
		case "=":
			if want == nil {
				return !ok || v == nil
			}
			return ok && equal(v, want)
		case "!=":
			if want == nil {
				return ok && v != nil
			}
			return !ok || !equal(v, want)
		}
		if !ok || typeOf(v) != typeOf(want) {
			return false
		}
		return holds(e.Op, order(v, want))
	}
	return false
}

func holds(op string, c int) bool {
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	default:
		return c >= 0
	}
}

func compareMeta(e Compare, m Meta) bool {
	var want any
	_ = json.Unmarshal(e.Value, &want)
	switch e.Path.Meta {
	case "id":
		s, _ := want.(string)
		return holds(e.Op, strings.Compare(m.ID, s))
	case "version":
		n, _ := strconv.ParseInt(strings.TrimSpace(string(e.Value)), 10, 64)
		return holds(e.Op, cmp.Compare(m.Version, n))
	default:
		s, _ := want.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return false
		}
		at := m.CreatedAt
		if e.Path.Meta == "updated_at" {
			at = m.UpdatedAt
		}
		return holds(e.Op, at.Compare(t))
	}
}

// lookup follows path like jsonb's #>: an index step reads an object's key of that
// number, and a key step made of digits indexes an array.
func lookup(doc any, p Path) (any, bool) {
	cur := doc
	for _, e := range p.Elems {
		switch c := cur.(type) {
		case map[string]any:
			k := e.Key
			if e.IsIndex {
				k = strconv.Itoa(e.Index)
			}
			v, ok := c[k]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i := e.Index
			if !e.IsIndex {
				n, err := strconv.Atoi(e.Key)
				if err != nil {
					return nil, false
				}
				i = n
			}
			if i < 0 {
				i += len(c)
			}
			if i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// typeOf is jsonb_typeof.
func typeOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	default:
		return "object"
	}
}

func rat(n json.Number) *big.Rat {
	r, ok := new(big.Rat).SetString(string(n))
	if !ok {
		return new(big.Rat)
	}
	return r
}

// order compares two values of the same type as jsonb does.
func order(a, b any) int {
	switch x := a.(type) {
	case json.Number:
		return rat(x).Cmp(rat(b.(json.Number)))
	case string:
		return strings.Compare(x, b.(string))
	case bool:
		y := b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	}
	return 0
}

// equal is jsonb equality: numbers by value, objects by content, arrays in order.
func equal(a, b any) bool {
	if typeOf(a) != typeOf(b) {
		return false
	}
	switch x := a.(type) {
	case nil:
		return true
	case json.Number, string, bool:
		return order(a, b) == 0
	case []any:
		y := b.([]any)
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equal(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y := b.(map[string]any)
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equal(v, w) {
				return false
			}
		}
		return true
	}
	return false
}

// contains is jsonb's @>: an object contains another whose every key it has with a value
// that contains the other's; an array contains another whose every element matches some
// element of its own (scalars by equality, containers by containment, of the same type);
// at the top level only, an array contains a scalar it holds.
func contains(a, b any, top bool) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return false
		}
		for k, w := range y {
			v, ok := x[k]
			if !ok || !contains(v, w, false) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok {
			if top && typeOf(b) != "object" {
				for _, e := range x {
					if typeOf(e) == typeOf(b) && equal(e, b) {
						return true
					}
				}
			}
			return false
		}
		for _, w := range y {
			found := false
			for _, v := range x {
				switch typeOf(w) {
				case "array", "object":
					found = typeOf(v) == typeOf(w) && contains(v, w, false)
				default:
					found = typeOf(v) == typeOf(w) && equal(v, w)
				}
				if found {
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	default:
		return typeOf(a) == typeOf(b) && equal(a, b)
	}
}

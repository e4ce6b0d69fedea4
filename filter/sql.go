package filter

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Target says how a filter's paths map onto SQL: the JSONB column (or expression) holding
// documents, and the SQL expressions of metadata fields.
type Target struct {
	// Body is the SQL expression of the document, such as "d.body".
	Body string
	// Meta maps metadata names ("id", "version", "created_at", "updated_at") to SQL
	// expressions; a filter naming one that is missing is refused.
	Meta map[string]string
}

// PathSQL is the SQL expression of the value at path in body: body #> '{k1,k2}' (or body
// itself for the root). Keys are written as an escaped text-array literal rather than a
// parameter, so the expression matches an expression index built with the same function
// whatever plan the server chooses; the escaping is exhaustive and fuzzed.
func PathSQL(body string, p Path) string {
	if len(p.Elems) == 0 {
		return body
	}
	var b strings.Builder
	b.WriteString("(")
	b.WriteString(body)
	b.WriteString(" #> ")
	b.WriteString(textArrayLiteral(p))
	b.WriteString(")")
	return b.String()
}

// textArrayLiteral writes '{"k1","k2"}'::text[] with every element double-quoted (\\ and
// \" escaped for the array syntax) and the whole single-quoted (' doubled).
func textArrayLiteral(p Path) string {
	var arr strings.Builder
	arr.WriteByte('{')
	for i, e := range p.Elems {
		if i > 0 {
			arr.WriteByte(',')
		}
		k := e.Key
		if e.IsIndex {
			k = strconv.Itoa(e.Index)
		}
		arr.WriteByte('"')
		arr.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(k))
		arr.WriteByte('"')
	}
	arr.WriteByte('}')
	return "'" + strings.ReplaceAll(arr.String(), "'", "''") + "'::text[]"
}

// SQL compiles e into a boolean SQL expression over t, with its values as parameters
// numbered from next ($next, $next+1, …). A nil e compiles to "true".
func SQL(e Expr, t Target, next int) (string, []any, error) {
	c := &compiler{t: t, next: next}
	if e == nil {
		return "true", nil, nil
	}
	s, err := c.expr(e)
	return s, c.args, err
}

type compiler struct {
	t    Target
	next int
	args []any
}

func (c *compiler) arg(v any) string {
	c.args = append(c.args, v)
	n := c.next
	c.next++
	return "$" + strconv.Itoa(n)
}

func (c *compiler) expr(e Expr) (string, error) {
	switch e := e.(type) {
	case And:
		return c.join(e.Terms, " AND ")
	case Or:
		return c.join(e.Terms, " OR ")
	case Not:
		x, err := c.expr(e.X)
		if err != nil {
			return "", err
		}
		// A comparison on a missing field is NULL, which NOT would keep NULL (false):
		// coalesce first, so "not (x = 1)" holds when x is missing.
		return "(NOT COALESCE(" + x + ", false))", nil
	case Compare:
		return c.compare(e)
	case In:
		return c.in(e)
	case Contains:
		return "(" + PathSQL(c.t.Body, e.Path) + " @> " + c.arg(string(e.Value)) + "::jsonb)", nil
	case Exists:
		if e.Path.Meta != "" || len(e.Path.Elems) == 0 {
			return "true", nil
		}
		return "(" + PathSQL(c.t.Body, e.Path) + " IS NOT NULL)", nil
	}
	return "", fmt.Errorf("unknown filter node %T", e)
}

func (c *compiler) join(terms []Expr, sep string) (string, error) {
	parts := make([]string, len(terms))
	for i, t := range terms {
		s, err := c.expr(t)
		if err != nil {
			return "", err
		}
		parts[i] = s
	}
	return "(" + strings.Join(parts, sep) + ")", nil
}

var sqlOps = map[string]string{"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}

func (c *compiler) compare(e Compare) (string, error) {
	if e.Path.Meta != "" {
		col, cast, err := c.meta(e.Path.Meta)
		if err != nil {
			return "", err
		}
		return "(" + col + " " + sqlOps[e.Op] + " " + c.arg(metaValue(e.Path.Meta, e.Value)) + "::text" + cast + ")", nil
	}
	p := PathSQL(c.t.Body, e.Path)
	isNull := kindOf(e.Value) == "null"
	switch e.Op {
	case "=":
		if isNull {
			return "(" + p + " IS NULL OR " + p + " = 'null'::jsonb)", nil
		}
		return "(" + p + " = " + c.arg(string(e.Value)) + "::jsonb)", nil
	case "!=":
		if isNull {
			return "(" + p + " IS NOT NULL AND " + p + " <> 'null'::jsonb)", nil
		}
		return "(" + p + " IS NULL OR " + p + " <> " + c.arg(string(e.Value)) + "::jsonb)", nil
	}
	return "(jsonb_typeof(" + p + ") = '" + kindOf(e.Value) + "' AND " + p + " " + sqlOps[e.Op] + " " + c.arg(string(e.Value)) + "::jsonb)", nil
}

func (c *compiler) in(e In) (string, error) {
	if e.Path.Meta != "" {
		col, cast, err := c.meta(e.Path.Meta)
		if err != nil {
			return "", err
		}
		vals := make([]string, len(e.Values))
		for i, v := range e.Values {
			vals[i] = metaValue(e.Path.Meta, v)
		}
		arr := "::text[]"
		if cast != "" {
			arr += cast + "[]"
		}
		return "(" + col + " = ANY(" + c.arg(vals) + arr + "))", nil
	}
	p := PathSQL(c.t.Body, e.Path)
	vals := make([]string, 0, len(e.Values))
	null := false
	for _, v := range e.Values {
		if kindOf(v) == "null" {
			null = true
		}
		vals = append(vals, string(v))
	}
	s := p + " = ANY(" + c.arg(vals) + "::text[]::jsonb[])"
	if null {
		s += " OR " + p + " IS NULL"
	}
	return "(" + s + ")", nil
}

func (c *compiler) meta(name string) (col, cast string, err error) {
	col, ok := c.t.Meta[name]
	if !ok {
		return "", "", &Error{Msg: fmt.Sprintf("@%s is not available here", name)}
	}
	switch name {
	case "version":
		return col, "::bigint", nil
	case "created_at", "updated_at":
		return col, "::timestamptz", nil
	}
	return col, "", nil
}

// metaValue turns a checked JSON value into the text the SQL cast expects.
func metaValue(name string, v json.RawMessage) string {
	var x any
	_ = json.Unmarshal(v, &x)
	switch t := x.(type) {
	case string:
		if name == "created_at" || name == "updated_at" {
			if tm, err := time.Parse(time.RFC3339Nano, t); err == nil {
				return tm.UTC().Format(time.RFC3339Nano)
			}
		}
		return t
	default:
		return string(v)
	}
}

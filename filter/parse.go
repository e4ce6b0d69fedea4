// Package filter is Strata's one filter language, used by every module that lists JSON
// documents (documents, graph nodes and edges, search). A filter is parsed into an AST,
// then compiled into parameterized SQL over a JSONB column — values only ever travel as
// parameters — or evaluated in memory with the same semantics.
//
// Grammar (keywords are case-insensitive):
//
//	expr     = or
//	or       = and { "or" and }
//	and      = unary { "and" unary }
//	unary    = "not" unary | atom
//	atom     = "(" expr ")"
//	         | "exists" "(" path ")"
//	         | path ( "=" | "!=" | "<" | "<=" | ">" | ">=" ) value
//	         | path "in" list
//	         | path "contains" value
//	path     = "$" | seg { "." seg | "[" index "]" } | "@" meta
//	seg      = name | "`" any text, with `` for a backtick "`"
//	meta     = "id" | "version" | "created_at" | "updated_at"
//	value    = JSON value: string, number, true, false, null, array, object
//
// Examples:
//
//	status = "active" and priority >= 3
//	address.city in ["Boston", "New York"] and not exists(archived_at)
//	tags contains "urgent" or `odd key`[0] != null
//	@updated_at >= "2025-01-01T00:00:00Z"
//
// Semantics follow PostgreSQL's jsonb: "=" compares JSON values (1 = 1.0; objects by
// content); "<", "<=", ">", ">=" compare numbers with numbers and strings with strings
// (bytewise), and are false across types; "= null" matches a JSON null or a missing
// field, "!=" is the negation of "="; "contains" is jsonb containment (@>); "exists"
// is true when the path is present, even holding null.
package filter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits keep filters cheap to parse and to run.
const (
	MaxLength = 8192 // bytes of filter text
	MaxDepth  = 32   // nesting of parentheses and "not"
	MaxTerms  = 128  // comparisons in one filter
	MaxList   = 1000 // values in one "in" list
	MaxPath   = 32   // segments in one path
)

// Expr is a parsed filter.
type Expr interface{ isExpr() }

// And holds when every term holds.
type And struct{ Terms []Expr }

// Or holds when any term holds.
type Or struct{ Terms []Expr }

// Not negates X.
type Not struct{ X Expr }

// Compare compares the value at Path with Value by Op ("=", "!=", "<", "<=", ">", ">=").
type Compare struct {
	Path  Path
	Op    string
	Value json.RawMessage
}

// In holds when the value at Path equals one of Values.
type In struct {
	Path   Path
	Values []json.RawMessage
}

// Contains holds when the value at Path contains Value (jsonb @>).
type Contains struct {
	Path  Path
	Value json.RawMessage
}

// Exists holds when Path is present in the document.
type Exists struct{ Path Path }

func (And) isExpr()      {}
func (Or) isExpr()       {}
func (Not) isExpr()      {}
func (Compare) isExpr()  {}
func (In) isExpr()       {}
func (Contains) isExpr() {}
func (Exists) isExpr()   {}

// Path addresses a value in a document, or a metadata field (@id, @version…).
type Path struct {
	// Meta names a metadata field ("id", "version", "created_at", "updated_at"), or is "".
	Meta string
	// Elems descend from the document's root; empty with Meta "" is the whole document.
	Elems []Elem
}

// Elem is one step of a path: an object key, or an array index when IsIndex.
type Elem struct {
	Key     string
	Index   int
	IsIndex bool
}

// String writes the path back in filter syntax.
func (p Path) String() string {
	if p.Meta != "" {
		return "@" + p.Meta
	}
	if len(p.Elems) == 0 {
		return "$"
	}
	var b strings.Builder
	for i, e := range p.Elems {
		switch {
		case e.IsIndex:
			fmt.Fprintf(&b, "[%d]", e.Index)
		case isName(e.Key):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e.Key)
		default:
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString("`" + strings.ReplaceAll(e.Key, "`", "``") + "`")
		}
	}
	return b.String()
}

// MetaFields are the metadata a filter may name with "@".
var MetaFields = []string{"id", "version", "created_at", "updated_at"}

// Error is a filter that does not parse: what is wrong, and where (a byte offset).
type Error struct {
	Pos int
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("filter error at position %d: %s", e.Pos, e.Msg) }

// Parse parses a filter. The empty filter (all spaces) is nil, which matches everything.
func Parse(src string) (Expr, error) {
	if len(src) > MaxLength {
		return nil, &Error{Pos: MaxLength, Msg: fmt.Sprintf("the filter is longer than %d bytes", MaxLength)}
	}
	if !utf8.ValidString(src) {
		return nil, &Error{Pos: 0, Msg: "the filter is not valid UTF-8"}
	}
	p := &parser{src: src}
	p.next()
	if p.tok.kind == tEOF {
		return nil, nil
	}
	e, err := p.or(0)
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.errf("unexpected %s after a complete filter", p.tok.describe())
	}
	return e, nil
}

// ParsePath parses a path on its own, such as "owner.team" or "tags[0]".
func ParsePath(src string) (Path, error) {
	if len(src) > MaxLength {
		return Path{}, &Error{Pos: MaxLength, Msg: fmt.Sprintf("the path is longer than %d bytes", MaxLength)}
	}
	if !utf8.ValidString(src) {
		return Path{}, &Error{Pos: 0, Msg: "the path is not valid UTF-8"}
	}
	p := &parser{src: src}
	p.next()
	path, err := p.path()
	if err != nil {
		return Path{}, err
	}
	if p.tok.kind != tEOF {
		return Path{}, p.errf("unexpected %s after a path", p.tok.describe())
	}
	return path, nil
}

type tokKind int

const (
	tEOF tokKind = iota
	tName
	tQuoted // `key`
	tString
	tNumber
	tOp
	tLParen
	tRParen
	tLBrack
	tRBrack
	tLBrace
	tRBrace
	tComma
	tColon
	tDot
	tDollar
	tAt
	tErr
)

type token struct {
	kind tokKind
	text string // names, operators, raw JSON of strings and numbers, decoded quoted keys
	pos  int
	err  string
}

func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of filter"
	case tString:
		return "string " + t.text
	case tNumber:
		return "number " + t.text
	default:
		return strconv.Quote(t.text)
	}
}

type parser struct {
	src   string
	pos   int
	tok   token
	terms int
}

func (p *parser) errf(format string, args ...any) error {
	return &Error{Pos: p.tok.pos, Msg: fmt.Sprintf(format, args...)}
}

// next reads the next token into p.tok.
func (p *parser) next() {
	for p.pos < len(p.src) {
		r, n := utf8.DecodeRuneInString(p.src[p.pos:])
		if !unicode.IsSpace(r) {
			break
		}
		p.pos += n
	}
	start := p.pos
	if p.pos >= len(p.src) {
		p.tok = token{kind: tEOF, pos: start}
		return
	}
	c := p.src[p.pos]
	single := map[byte]tokKind{'(': tLParen, ')': tRParen, '[': tLBrack, ']': tRBrack, '{': tLBrace, '}': tRBrace,
		',': tComma, ':': tColon, '.': tDot, '$': tDollar, '@': tAt}
	switch {
	case single[c] != 0:
		p.pos++
		p.tok = token{kind: single[c], text: string(c), pos: start}
	case c == '=':
		p.pos++
		if p.pos < len(p.src) && p.src[p.pos] == '=' { // "==" is accepted as "="
			p.pos++
		}
		p.tok = token{kind: tOp, text: "=", pos: start}
	case c == '!' || c == '<' || c == '>':
		p.pos++
		op := string(c)
		if p.pos < len(p.src) && p.src[p.pos] == '=' {
			p.pos++
			op += "="
		} else if c == '<' && p.pos < len(p.src) && p.src[p.pos] == '>' {
			p.pos++
			op = "!="
		}
		if op == "!" {
			p.tok = token{kind: tErr, pos: start, err: `"!" must be followed by "=" (use "not" to negate)`}
			return
		}
		p.tok = token{kind: tOp, text: op, pos: start}
	case c == '"':
		p.lexString(start)
	case c == '`':
		p.lexQuoted(start)
	case c == '-' || (c >= '0' && c <= '9'):
		p.lexNumber(start)
	case c == '_' || isLetter(c):
		for p.pos < len(p.src) && (p.src[p.pos] == '_' || isLetter(p.src[p.pos]) || isDigit(p.src[p.pos])) {
			p.pos++
		}
		p.tok = token{kind: tName, text: p.src[start:p.pos], pos: start}
	default:
		r, _ := utf8.DecodeRuneInString(p.src[p.pos:])
		p.tok = token{kind: tErr, pos: start, err: fmt.Sprintf("unexpected character %q", r)}
	}
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

func isName(s string) bool {
	if s == "" || (s[0] != '_' && !isLetter(s[0])) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] != '_' && !isLetter(s[i]) && !isDigit(s[i]) {
			return false
		}
	}
	return !isKeyword(s)
}

func isKeyword(s string) bool {
	switch strings.ToLower(s) {
	case "and", "or", "not", "in", "contains", "exists", "true", "false", "null":
		return true
	}
	return false
}

// lexString reads a JSON string literal, validated by encoding/json.
func (p *parser) lexString(start int) {
	i := p.pos + 1
	for i < len(p.src) {
		switch p.src[i] {
		case '\\':
			i += 2
			continue
		case '"':
			raw := p.src[start : i+1]
			var s string
			if err := json.Unmarshal([]byte(raw), &s); err != nil {
				p.tok = token{kind: tErr, pos: start, err: "invalid string literal"}
				return
			}
			if strings.ContainsRune(s, 0) {
				p.tok = token{kind: tErr, pos: start, err: `strings may not contain \u0000`}
				return
			}
			p.pos = i + 1
			p.tok = token{kind: tString, text: raw, pos: start}
			return
		}
		i++
	}
	p.tok = token{kind: tErr, pos: start, err: "unterminated string"}
}

// lexQuoted reads a `quoted key`, where “ stands for a backtick.
func (p *parser) lexQuoted(start int) {
	var b strings.Builder
	i := p.pos + 1
	for i < len(p.src) {
		if p.src[i] == '`' {
			if i+1 < len(p.src) && p.src[i+1] == '`' {
				b.WriteByte('`')
				i += 2
				continue
			}
			p.pos = i + 1
			key := b.String()
			if strings.ContainsRune(key, 0) {
				p.tok = token{kind: tErr, pos: start, err: "keys may not contain NUL"}
				return
			}
			p.tok = token{kind: tQuoted, text: key, pos: start}
			return
		}
		b.WriteByte(p.src[i])
		i++
	}
	p.tok = token{kind: tErr, pos: start, err: "unterminated quoted key"}
}

// lexNumber reads a JSON number.
func (p *parser) lexNumber(start int) {
	i := p.pos
	for i < len(p.src) && strings.IndexByte("+-0123456789.eE", p.src[i]) >= 0 {
		i++
	}
	raw := p.src[start:i]
	if !json.Valid([]byte(raw)) {
		p.tok = token{kind: tErr, pos: start, err: fmt.Sprintf("invalid number %q", raw)}
		return
	}
	if f, err := strconv.ParseFloat(raw, 64); err != nil || f != f {
		p.tok = token{kind: tErr, pos: start, err: fmt.Sprintf("number %s is out of range", raw)}
		return
	}
	p.pos = i
	p.tok = token{kind: tNumber, text: raw, pos: start}
}

func (p *parser) keyword(word string) bool {
	return p.tok.kind == tName && strings.EqualFold(p.tok.text, word)
}

func (p *parser) or(depth int) (Expr, error) {
	first, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	terms := []Expr{first}
	for p.keyword("or") {
		p.next()
		t, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		terms = append(terms, t)
	}
	if len(terms) == 1 {
		return first, nil
	}
	return Or{Terms: terms}, nil
}

func (p *parser) and(depth int) (Expr, error) {
	first, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	terms := []Expr{first}
	for p.keyword("and") {
		p.next()
		t, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		terms = append(terms, t)
	}
	if len(terms) == 1 {
		return first, nil
	}
	return And{Terms: terms}, nil
}

func (p *parser) unary(depth int) (Expr, error) {
	if depth >= MaxDepth {
		return nil, p.errf("the filter nests deeper than %d levels", MaxDepth)
	}
	if p.keyword("not") {
		p.next()
		x, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return Not{X: x}, nil
	}
	return p.atom(depth)
}

func (p *parser) atom(depth int) (Expr, error) {
	switch {
	case p.tok.kind == tErr:
		return nil, p.errf("%s", p.tok.err)
	case p.tok.kind == tLParen:
		p.next()
		e, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.errf(`expected ")" but found %s`, p.tok.describe())
		}
		p.next()
		return e, nil
	case p.keyword("exists"):
		p.next()
		if p.tok.kind != tLParen {
			return nil, p.errf(`expected "(" after exists`)
		}
		p.next()
		path, err := p.path()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.errf(`expected ")" to close exists( but found %s`, p.tok.describe())
		}
		p.next()
		return Exists{Path: path}, p.countTerm()
	}
	pathPos := p.tok.pos
	path, err := p.path()
	if err != nil {
		return nil, err
	}
	switch {
	case p.tok.kind == tOp:
		op := p.tok.text
		p.next()
		v, err := p.value(0)
		if err != nil {
			return nil, err
		}
		if err := checkMetaValue(path, op, v, pathPos); err != nil {
			return nil, err
		}
		if op != "=" && op != "!=" && path.Meta == "" {
			switch kindOf(v) {
			case "number", "string", "boolean":
			default:
				return nil, &Error{Pos: pathPos, Msg: fmt.Sprintf("%s compares numbers, strings or booleans, not %s", op, kindOf(v))}
			}
		}
		return Compare{Path: path, Op: op, Value: v}, p.countTerm()
	case p.keyword("in"):
		p.next()
		if p.tok.kind != tLBrack {
			return nil, p.errf(`expected a list "[...]" after in`)
		}
		list, err := p.value(0)
		if err != nil {
			return nil, err
		}
		var values []json.RawMessage
		if err := json.Unmarshal(list, &values); err != nil {
			return nil, &Error{Pos: pathPos, Msg: "in needs a list"}
		}
		if len(values) > MaxList {
			return nil, &Error{Pos: pathPos, Msg: fmt.Sprintf("an in list may hold at most %d values", MaxList)}
		}
		for _, v := range values {
			if err := checkMetaValue(path, "=", v, pathPos); err != nil {
				return nil, err
			}
		}
		return In{Path: path, Values: values}, p.countTerm()
	case p.keyword("contains"):
		if path.Meta != "" {
			return nil, p.errf("contains does not apply to @%s", path.Meta)
		}
		p.next()
		v, err := p.value(0)
		if err != nil {
			return nil, err
		}
		return Contains{Path: path, Value: v}, p.countTerm()
	default:
		return nil, p.errf(`expected an operator (=, !=, <, <=, >, >=, in, contains) after %s but found %s`, path, p.tok.describe())
	}
}

func (p *parser) countTerm() error {
	p.terms++
	if p.terms > MaxTerms {
		return p.errf("the filter has more than %d comparisons", MaxTerms)
	}
	return nil
}

func (p *parser) path() (Path, error) {
	switch p.tok.kind {
	case tErr:
		return Path{}, p.errf("%s", p.tok.err)
	case tDollar:
		p.next()
		return Path{}, nil
	case tAt:
		p.next()
		if p.tok.kind != tName {
			return Path{}, p.errf("expected a metadata field after @ (%s)", strings.Join(MetaFields, ", "))
		}
		name := strings.ToLower(p.tok.text)
		for _, m := range MetaFields {
			if m == name {
				p.next()
				return Path{Meta: name}, nil
			}
		}
		return Path{}, p.errf("unknown metadata field @%s (known: %s)", p.tok.text, strings.Join(MetaFields, ", "))
	}
	var path Path
	seg := func() error {
		switch {
		case p.tok.kind == tQuoted:
			path.Elems = append(path.Elems, Elem{Key: p.tok.text})
		case p.tok.kind == tName && !isKeyword(p.tok.text):
			path.Elems = append(path.Elems, Elem{Key: p.tok.text})
		case p.tok.kind == tName:
			return p.errf("%q is a keyword; quote it as `%s` to use it as a field name", p.tok.text, p.tok.text)
		default:
			return p.errf("expected a field name but found %s", p.tok.describe())
		}
		p.next()
		return nil
	}
	if err := seg(); err != nil {
		return Path{}, err
	}
	for {
		switch p.tok.kind {
		case tDot:
			p.next()
			if err := seg(); err != nil {
				return Path{}, err
			}
		case tLBrack:
			p.next()
			if p.tok.kind != tNumber {
				return Path{}, p.errf("expected an array index")
			}
			n, err := strconv.Atoi(p.tok.text)
			if err != nil || n < 0 || n > 1<<20 {
				return Path{}, p.errf("array index %s is not a small non-negative integer", p.tok.text)
			}
			p.next()
			if p.tok.kind != tRBrack {
				return Path{}, p.errf(`expected "]"`)
			}
			p.next()
			path.Elems = append(path.Elems, Elem{Index: n, IsIndex: true})
		default:
			return path, nil
		}
		if len(path.Elems) > MaxPath {
			return Path{}, p.errf("a path may have at most %d segments", MaxPath)
		}
	}
}

// value reads a JSON value and returns it compact.
func (p *parser) value(depth int) (json.RawMessage, error) {
	if depth > MaxDepth {
		return nil, p.errf("the value nests deeper than %d levels", MaxDepth)
	}
	switch p.tok.kind {
	case tErr:
		return nil, p.errf("%s", p.tok.err)
	case tString, tNumber:
		raw := p.tok.text
		p.next()
		return json.RawMessage(raw), nil
	case tName:
		switch strings.ToLower(p.tok.text) {
		case "true", "false", "null":
			v := strings.ToLower(p.tok.text)
			p.next()
			return json.RawMessage(v), nil
		}
		return nil, p.errf("expected a value (a string needs double quotes) but found %s", p.tok.describe())
	case tLBrack:
		p.next()
		var b bytes.Buffer
		b.WriteByte('[')
		for n := 0; p.tok.kind != tRBrack; n++ {
			if n > 0 {
				if p.tok.kind != tComma {
					return nil, p.errf(`expected "," or "]" in a list but found %s`, p.tok.describe())
				}
				p.next()
				b.WriteByte(',')
			}
			if n >= MaxList {
				return nil, p.errf("a list may hold at most %d values", MaxList)
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			b.Write(v)
		}
		p.next()
		b.WriteByte(']')
		return b.Bytes(), nil
	case tLBrace:
		p.next()
		var b bytes.Buffer
		b.WriteByte('{')
		seen := map[string]bool{}
		for n := 0; p.tok.kind != tRBrace; n++ {
			if n > 0 {
				if p.tok.kind != tComma {
					return nil, p.errf(`expected "," or "}" in an object but found %s`, p.tok.describe())
				}
				p.next()
				b.WriteByte(',')
			}
			if p.tok.kind != tString {
				return nil, p.errf("expected a quoted key in an object")
			}
			var key string
			_ = json.Unmarshal([]byte(p.tok.text), &key)
			if seen[key] {
				return nil, p.errf("duplicate key %q in an object", key)
			}
			seen[key] = true
			b.WriteString(p.tok.text)
			p.next()
			if p.tok.kind != tColon {
				return nil, p.errf(`expected ":" after an object key`)
			}
			p.next()
			b.WriteByte(':')
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			b.Write(v)
		}
		p.next()
		b.WriteByte('}')
		return b.Bytes(), nil
	default:
		return nil, p.errf("expected a value but found %s", p.tok.describe())
	}
}

// checkMetaValue makes sure a metadata field is compared with a value of its type.
func checkMetaValue(path Path, op string, v json.RawMessage, pos int) error {
	if path.Meta == "" {
		return nil
	}
	var x any
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	_ = d.Decode(&x)
	switch path.Meta {
	case "id":
		if _, ok := x.(string); !ok {
			return &Error{Pos: pos, Msg: "@id compares with a string"}
		}
	case "version":
		n, ok := x.(json.Number)
		if _, err := n.Int64(); !ok || err != nil {
			return &Error{Pos: pos, Msg: "@version compares with an integer"}
		}
	case "created_at", "updated_at":
		s, ok := x.(string)
		if !ok || !isTime(s) {
			return &Error{Pos: pos, Msg: fmt.Sprintf("@%s compares with an RFC 3339 time string", path.Meta)}
		}
	}
	return nil
}

// kindOf names a JSON value's type as jsonb_typeof does.
func kindOf(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "null"
	}
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

func isTime(s string) bool {
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

package search

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Query is a search.
type Query struct {
	// Q is the text searched: words (all must match; the last may be the start of a word),
	// "quoted phrases", -excluded words, and OR between alternatives.
	Q string `json:"q,omitempty" maxLength:"2000" example:"fast car -red"`
	// Mode is text (default), semantic (Q embedded and matched by vector), hybrid (both,
	// fused by reciprocal rank), or vector (Vector given).
	Mode string `json:"mode,omitempty" enum:"text,semantic,hybrid,vector"`
	// Vector is the query vector of mode vector.
	Vector []float32 `json:"vector,omitempty"`
	// Field is the vector field searched (default: the first with an embedder for semantic
	// and hybrid, the first for vector).
	Field string `json:"field,omitempty"`
	// K is how many results to return (a page): default 10.
	K int `json:"k,omitempty" minimum:"0"`
	// Filter narrows the documents (the filter language).
	Filter string `json:"filter,omitempty" maxLength:"8192"`
	// Partitions limits the search to these partitions.
	Partitions []string `json:"partitions,omitempty" maxItems:"100"`
	// Facets are declared facet paths to count over all matches (text and hybrid).
	Facets []string `json:"facets,omitempty" maxItems:"16"`
	// Sort is relevance (default) or, in text mode, a path (prefix - for descending).
	Sort string `json:"sort,omitempty" maxLength:"300"`
	// Cursor continues from the previous page's next_cursor.
	Cursor string `json:"cursor,omitempty" maxLength:"1000"`
	// Highlight marks the matched words in each text field's value with <mark>.
	Highlight bool `json:"highlight,omitempty"`
	// Fields projects each document onto these paths; empty returns them whole, and
	// ["-"] returns no data.
	Fields []string `json:"fields,omitempty" maxItems:"100"`
	// Weight is the semantic side's share in hybrid mode, 0 to 1: default 0.5.
	Weight *float64 `json:"weight,omitempty" minimum:"0" maximum:"1"`
	// Plan forces a vector search's path: exact or index (default: the planner's choice).
	Plan string `json:"plan,omitempty" enum:"auto,exact,index"`
}

// Hit is a result.
type Hit struct {
	ID      string  `json:"id"`
	Version int64   `json:"version"`
	Score   float64 `json:"score" doc:"Text rank, vector similarity (cosine, inner product) or -distance (l2), or the fused score."`
	// Data is the document (or its projection).
	Data       json.RawMessage   `json:"data,omitempty"`
	Highlights map[string]string `json:"highlights,omitempty"`
}

// FacetCount is one value of a facet and how many matches have it.
type FacetCount struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
}

// Results is a page of search results.
type Results struct {
	Items      []Hit                   `json:"items"`
	Facets     map[string][]FacetCount `json:"facets,omitempty"`
	NextCursor string                  `json:"next_cursor,omitempty"`
	// Path says how the results were found: text; exact (the matching vectors were
	// scanned); index (HNSW); index+widened (HNSW searched wider until enough matched the
	// filter); hybrid:… for both sides.
	Path   string  `json:"path"`
	TookMS float64 `json:"took_ms"`
}

// Search searches a collection (read on it).
func (s *Store) Search(ctx context.Context, tenant, coll string, q Query) (Results, error) {
	started := time.Now()
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return Results{}, err
	}
	st, err := s.settingsOf(ctx, collID)
	if err != nil {
		return Results{}, err
	}
	if st == nil {
		return Results{}, problem.Unprocessable("search_not_configured", "collection %q has no search settings; PUT its search settings first", coll)
	}
	p, err := s.plan(st, &q)
	if err != nil {
		return Results{}, err
	}
	var res Results
	switch q.Mode {
	case "text":
		res, err = s.textSearch(ctx, st, p)
	case "hybrid":
		res, err = s.hybrid(ctx, st, p)
	default:
		res, err = s.vectorSearch(ctx, st, p)
	}
	if err != nil {
		return Results{}, db.Translate(err, "search")
	}
	if err := s.fill(ctx, st, p, &res); err != nil {
		return Results{}, err
	}
	res.TookMS = float64(time.Since(started).Microseconds()) / 1000
	s.qlog.add(logEntry{tenant: tenant, coll: collID, mode: q.Mode, query: truncate(q.Q, 200), path: res.Path, k: p.k,
		results: len(res.Items), took: time.Since(started), at: started})
	return res, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// plan is a checked query.
type plan struct {
	Query
	k        int
	offset   int // for fused and vector pages
	filter   filter.Expr
	proj     []filter.Path
	noData   bool
	field    *VectorField
	sortPath *filter.Path
	sortDesc bool
	cursor   textCursor
	weight   float64
}

func (s *Store) plan(st *settings, q *Query) (*plan, error) {
	p := &plan{Query: *q, k: q.K, weight: 0.5}
	if p.k == 0 {
		p.k = 10
	}
	if p.k < 1 || p.k > s.cfg.MaxK {
		return nil, problem.Invalid("invalid_k", "k is 1 to %d", s.cfg.MaxK).WithField("body.k", "out of range")
	}
	if q.Weight != nil {
		p.weight = *q.Weight
	}
	if q.Mode == "" {
		q.Mode = "text"
		if q.Q == "" && len(q.Vector) > 0 {
			q.Mode = "vector"
		}
		p.Mode = q.Mode
	}
	switch q.Mode {
	case "text", "hybrid":
		if st.textSQL == "" {
			return nil, problem.Unprocessable("text_not_configured", "the collection's search settings have no text fields")
		}
		if strings.TrimSpace(q.Q) == "" {
			return nil, problem.Invalid("invalid_query", "give q, the text to search").WithField("body.q", "empty")
		}
	case "semantic":
		if strings.TrimSpace(q.Q) == "" {
			return nil, problem.Invalid("invalid_query", "give q, the text to search").WithField("body.q", "empty")
		}
	case "vector":
		if len(q.Vector) == 0 {
			return nil, problem.Invalid("invalid_query", "give vector, the query vector").WithField("body.vector", "empty")
		}
	default:
		return nil, problem.Invalid("invalid_mode", "mode is text, semantic, hybrid or vector").WithField("body.mode", q.Mode)
	}
	if q.Mode != "text" {
		for i := range st.Vectors {
			v := &st.Vectors[i]
			if q.Field == v.Name || (q.Field == "" && (q.Mode == "vector" || v.Embed != nil)) {
				p.field = v
				break
			}
		}
		if p.field == nil {
			if q.Field != "" {
				return nil, problem.Unprocessable("unknown_field", "no vector field %q", q.Field).WithField("body.field", q.Field)
			}
			return nil, problem.Unprocessable("semantic_not_configured", "the collection has no vector field computed by an embedder; add one to its search settings")
		}
		if q.Mode != "vector" && p.field.Embed == nil {
			return nil, problem.Unprocessable("semantic_not_configured", "vector field %q is given by clients, not computed from text: search it with mode vector", p.field.Name)
		}
		if q.Mode == "vector" && len(q.Vector) != p.field.Dimension {
			return nil, problem.Invalid("invalid_vector", "the query vector has %d dimensions; field %q has %d", len(q.Vector), p.field.Name, p.field.Dimension).
				WithField("body.vector", "dimension")
		}
	}
	if q.Filter != "" {
		e, err := doc.ParseFilterField(q.Filter, "body.filter")
		if err != nil {
			return nil, err
		}
		p.filter = e
	}
	if len(q.Partitions) > 0 && st.partition == nil {
		return nil, problem.Invalid("not_partitioned", "the collection is not partitioned").WithField("body.partitions", "not partitioned")
	}
	for _, f := range q.Facets {
		c, err := dataPath(f)
		if err != nil || st.Text == nil || !slices.Contains(st.Text.Facets, c.String()) {
			return nil, problem.Invalid("invalid_facet", "%q is not a declared facet", f).WithField("body.facets", f)
		}
	}
	if len(q.Facets) > 0 && q.Mode != "text" && q.Mode != "hybrid" {
		return nil, problem.Invalid("invalid_facet", "facets count text matches: use mode text or hybrid").WithField("body.facets", "mode")
	}
	if len(q.Fields) == 1 && q.Fields[0] == "-" {
		p.noData = true
	} else if len(q.Fields) > 0 {
		proj, err := doc.ParseFields(q.Fields)
		if err != nil {
			return nil, err
		}
		p.proj = proj
	}
	if q.Sort != "" {
		if q.Mode != "text" {
			return nil, problem.Invalid("invalid_sort", "sorting by a field is for text mode; other modes sort by relevance").WithField("body.sort", q.Sort)
		}
		src := strings.TrimPrefix(q.Sort, "-")
		sp, err := dataPath(src)
		if err != nil {
			return nil, problem.Invalid("invalid_sort", "%q is not a path: %v", src, err).WithField("body.sort", q.Sort)
		}
		p.sortPath, p.sortDesc = &sp, strings.HasPrefix(q.Sort, "-")
	}
	if q.Cursor != "" {
		if err := p.decodeCursor(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// textCursor is where a page stopped: after a score (or a sort value) and an id, or at an
// offset (fused and vector pages).
type textCursor struct {
	Fingerprint string          `json:"f"`
	Score       float64         `json:"s,omitempty"`
	Value       json.RawMessage `json:"v,omitempty"`
	ID          string          `json:"i,omitempty"`
	Offset      int             `json:"o,omitempty"`
}

func (p *plan) fingerprint() string {
	return fmt.Sprintf("%s|%s|%s|%s|%s|%v", p.Mode, p.Q, p.Filter, p.Sort, p.Field, p.Partitions)
}

func (p *plan) decodeCursor() error {
	bad := problem.Invalid("invalid_cursor", "the cursor is not one this search returned").WithField("body.cursor", "invalid")
	b, err := base64.RawURLEncoding.DecodeString(p.Cursor)
	if err != nil || json.Unmarshal(b, &p.cursor) != nil || p.cursor.Fingerprint != fingerprintHash(p.fingerprint()) {
		return bad
	}
	p.offset = p.cursor.Offset
	if p.offset < 0 || p.offset > 100000 {
		return bad
	}
	return nil
}

func (c textCursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func fingerprintHash(s string) string {
	return strconv.FormatUint(uint64(lockKey(s))<<32|uint64(lockKey(s+"x")), 36)
}

// sqlArgs numbers a query's values as they are added.
type sqlArgs []any

func (a *sqlArgs) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// term is one element of a text query.
type term struct {
	text   string
	phrase bool
	not    bool
	prefix bool
}

// parseText reads the query syntax into OR-groups of AND-ed terms.
func parseText(q string) [][]term {
	var groups [][]term
	var cur []term
	rs := []rune(q)
	for i := 0; i < len(rs); {
		r := rs[i]
		if unicode.IsSpace(r) {
			i++
			continue
		}
		not := false
		if r == '-' && i+1 < len(rs) && !unicode.IsSpace(rs[i+1]) {
			not = true
			i++
		}
		if i < len(rs) && rs[i] == '"' {
			j := i + 1
			for j < len(rs) && rs[j] != '"' {
				j++
			}
			if t := strings.TrimSpace(string(rs[i+1 : j])); t != "" {
				cur = append(cur, term{text: t, phrase: true, not: not})
			}
			i = j + 1
			continue
		}
		j := i
		for j < len(rs) && !unicode.IsSpace(rs[j]) {
			j++
		}
		word := string(rs[i:j])
		i = j
		if !not && strings.EqualFold(word, "or") && len(cur) > 0 {
			groups = append(groups, cur)
			cur = nil
			continue
		}
		cur = append(cur, term{text: word, not: not})
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	// The last word, when the query does not end with a space, may be unfinished.
	if n := len(groups); n > 0 && !strings.HasSuffix(q, " ") {
		last := &groups[n-1][len(groups[n-1])-1]
		if !last.phrase && !last.not {
			last.prefix = true
		}
	}
	return groups
}

// quoteLexeme writes a word as a tsquery operand.
func quoteLexeme(w string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(w) + "'"
}

// tsquery builds the SQL of a text query's tsquery, with typo alternatives from the
// collection's vocabulary for words that are not in it.
func (s *Store) tsquery(ctx context.Context, st *settings, q string, args *sqlArgs) (string, error) {
	groups := parseText(q)
	if len(groups) == 0 {
		return "", problem.Invalid("invalid_query", "the query has no words").WithField("body.q", "empty")
	}
	typos := map[string][]string{}
	if st.typos {
		var words []string
		for _, g := range groups {
			for _, t := range g {
				if !t.phrase && utf8.RuneCountInString(t.text) >= 5 {
					words = append(words, t.text)
				}
			}
		}
		var err error
		if typos, err = s.typoAlternatives(ctx, st, words); err != nil {
			return "", err
		}
	}
	cfg := "'" + st.lang + "'::regconfig"
	var ors []string
	for _, g := range groups {
		var ands []string
		for _, t := range g {
			var x string
			switch {
			case t.phrase:
				x = "phraseto_tsquery(" + cfg + ", " + args.add(t.text) + ")"
			default:
				if t.prefix {
					x = "to_tsquery(" + cfg + ", " + args.add(quoteLexeme(t.text)+":*") + ")"
				} else {
					x = "plainto_tsquery(" + cfg + ", " + args.add(t.text) + ")"
				}
				// A word being typed may be misspelled too.
				if alts := typos[t.text]; len(alts) > 0 {
					quoted := make([]string, len(alts))
					for i, a := range alts {
						quoted[i] = quoteLexeme(a)
					}
					x = "(" + x + " || " + args.add(strings.Join(quoted, " | ")) + "::tsquery)"
				}
			}
			if t.not {
				x = "!!" + x
			}
			ands = append(ands, x)
		}
		ors = append(ors, "("+strings.Join(ands, " && ")+")")
	}
	return strings.Join(ors, " || "), nil
}

// typoAlternatives finds, for each word whose stem is not in the collection's vocabulary,
// the vocabulary's words within one edit (words of 5 to 8 letters) or two (9 or more).
func (s *Store) typoAlternatives(ctx context.Context, st *settings, words []string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(words) == 0 {
		return out, nil
	}
	// The trigram search (milliseconds) runs only for words the vocabulary lacks: CASE
	// evaluates its branches lazily.
	rows, err := s.pool.Query(ctx, `SELECT u.term, x.lx, k.known,
			CASE WHEN k.known THEN '{}'::text[] ELSE
				ARRAY(SELECT w.word FROM search_words w WHERE w.collection_id = $1 AND w.word % x.lx ORDER BY w.word <-> x.lx LIMIT 24) END
		FROM unnest($2::text[]) AS u(term),
		LATERAL (SELECT (tsvector_to_array(to_tsvector($3::regconfig, u.term)))[1] AS lx) x,
		LATERAL (SELECT EXISTS (SELECT 1 FROM search_words w WHERE w.collection_id = $1 AND w.word = x.lx) AS known) k
		WHERE x.lx IS NOT NULL`, st.collID, words, st.lang)
	if err != nil {
		return nil, err
	}
	var t, lx string
	var known bool
	var cands []string
	_, err = pgx.ForEachRow(rows, []any{&t, &lx, &known, &cands}, func() error {
		if known {
			return nil
		}
		maxEdits := 1
		if utf8.RuneCountInString(t) >= 9 {
			maxEdits = 2
		}
		for _, c := range cands {
			if levenshtein(lx, c) <= maxEdits {
				out[t] = append(out[t], c)
			}
		}
		return nil
	})
	return out, err
}

// levenshtein is the edit distance between two words (insertions, deletions,
// substitutions, and transpositions of neighbours, each one edit).
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// matchSQL is the FROM and WHERE of the documents a text query matches: search_text s
// joined with documents d, the query as x.q.
func (s *Store) matchSQL(ctx context.Context, st *settings, p *plan, args *sqlArgs) (string, error) {
	tsq, err := s.tsquery(ctx, st, p.Q, args)
	if err != nil {
		return "", err
	}
	where := ` FROM search_text s JOIN documents d ON d.collection_id = s.collection_id AND d.id = s.doc_id,
		(SELECT ` + tsq + ` AS q) x
		WHERE s.collection_id = ` + args.add(st.collID) + ` AND d.collection_id = ` + doc.CollectionLiteral(st.collID) + `
			AND s.tsv @@ x.q AND d.body IS NOT NULL`
	extra, err := s.narrow(st, p, args)
	if err != nil {
		return "", err
	}
	return where + extra, nil
}

// narrow is the filter and the partitions, over documents d.
func (s *Store) narrow(st *settings, p *plan, args *sqlArgs) (string, error) {
	out := ""
	if p.filter != nil {
		cond, fargs, err := filter.SQL(p.filter, doc.FilterTarget, len(*args)+1)
		if err != nil {
			return "", problem.Invalid("invalid_filter", "%v", err)
		}
		*args = append(*args, fargs...)
		out += " AND (" + cond + ")"
	}
	if len(p.Partitions) > 0 {
		out += " AND coalesce(" + filter.PathSQL("d.body", *st.partition) + " #>> '{}', '') = ANY(" + args.add(p.Partitions) + "::text[])"
	}
	return out, nil
}

// textSearch ranks the matches (or sorts them by a field) and pages by keyset.
func (s *Store) textSearch(ctx context.Context, st *settings, p *plan) (Results, error) {
	var args sqlArgs
	from, err := s.matchSQL(ctx, st, p, &args)
	if err != nil {
		return Results{}, err
	}
	rank := "ts_rank_cd(s.tsv, x.q, 1)"
	order, after := rank+" DESC, d.id", ""
	if p.sortPath != nil {
		val := filter.PathSQL("d.body", *p.sortPath)
		dir, cmpOp := "ASC", ">"
		if p.sortDesc {
			dir, cmpOp = "DESC", "<"
		}
		order = val + " " + dir + " NULLS LAST, d.id"
		if p.Cursor != "" {
			if p.cursor.Value == nil {
				after = " AND " + val + " IS NULL AND d.id > " + args.add(p.cursor.ID)
			} else {
				v := args.add(string(p.cursor.Value))
				after = " AND ((" + val + " " + cmpOp + " " + v + "::jsonb OR " + val + " IS NULL) OR (" + val + " = " + v + "::jsonb AND d.id > " +
					args.add(p.cursor.ID) + "))"
			}
		}
	} else if p.Cursor != "" {
		sc := args.add(float32(p.cursor.Score))
		after = " AND (" + rank + " < " + sc + "::real OR (" + rank + " = " + sc + "::real AND d.id > " + args.add(p.cursor.ID) + "))"
	}
	sortCol := "NULL::jsonb"
	if p.sortPath != nil {
		sortCol = filter.PathSQL("d.body", *p.sortPath)
	}
	sql := `SELECT d.id, ` + rank + `, ` + sortCol + from + after + ` ORDER BY ` + order + ` LIMIT ` + args.add(p.k+1)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return Results{}, err
	}
	type row struct {
		id    string
		score float32
		val   []byte
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.id, &x.score, &x.val)
		return x, err
	})
	if err != nil {
		return Results{}, err
	}
	res := Results{Items: []Hit{}, Path: "text"}
	if len(list) > p.k {
		list = list[:p.k]
		last := list[len(list)-1]
		c := textCursor{Fingerprint: fingerprintHash(p.fingerprint()), Score: float64(last.score), ID: last.id}
		if p.sortPath != nil {
			c.Value = last.val
		}
		res.NextCursor = c.encode()
	}
	for _, x := range list {
		res.Items = append(res.Items, Hit{ID: x.id, Score: float64(x.score)})
	}
	if len(p.Facets) > 0 && p.Cursor == "" {
		if res.Facets, err = s.facets(ctx, st, p); err != nil {
			return Results{}, err
		}
	}
	return res, nil
}

// facets counts the values of facet paths over every match (array values count each
// element).
func (s *Store) facets(ctx context.Context, st *settings, p *plan) (map[string][]FacetCount, error) {
	var args sqlArgs
	from, err := s.matchSQL(ctx, st, p, &args)
	if err != nil {
		return nil, err
	}
	var parts []string
	for i, f := range p.Facets {
		fp, _ := dataPath(f)
		val := filter.PathSQL("m.body", fp)
		parts = append(parts, fmt.Sprintf(`SELECT %d AS f, v, count(*) AS n FROM m,
			jsonb_array_elements_text(CASE WHEN jsonb_typeof(%s) = 'array' THEN %s ELSE jsonb_build_array(%s) END) v
			WHERE v IS NOT NULL GROUP BY v`, i, val, val, val))
	}
	sql := `WITH m AS (SELECT d.body` + from + ` LIMIT 100000) SELECT f, v, n FROM (` + strings.Join(parts, " UNION ALL ") + `) c
		ORDER BY f, n DESC, v`
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	out := map[string][]FacetCount{}
	var f int
	var v string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&f, &v, &n}, func() error {
		name := p.Facets[f]
		if len(out[name]) < 50 {
			out[name] = append(out[name], FacetCount{Value: v, Count: n})
		}
		return nil
	})
	for _, f := range p.Facets {
		if out[f] == nil {
			out[f] = []FacetCount{}
		}
	}
	return out, err
}

// fill loads the hits' documents (dropping any deleted meanwhile), projects them, and
// adds highlights.
func (s *Store) fill(ctx context.Context, st *settings, p *plan, res *Results) error {
	if len(res.Items) == 0 {
		return nil
	}
	ids := make([]string, len(res.Items))
	for i, h := range res.Items {
		ids[i] = h.ID
	}
	var args sqlArgs
	cols := "d.id, d.version, " + map[bool]string{true: "NULL::jsonb", false: "d.body"}[p.noData]
	hl := ""
	if p.Highlight && st.Text != nil && p.Q != "" {
		tsq, err := s.tsquery(ctx, st, p.Q, &args)
		if err != nil {
			return err
		}
		var parts []string
		for _, f := range st.Text.Fields {
			fp, _ := dataPath(f.Path)
			parts = append(parts, fmt.Sprintf(`%s::text, ts_headline('%s'::regconfig, coalesce(%s, ''), x.q,
				'StartSel=<mark>, StopSel=</mark>, MaxWords=30, MinWords=10, MaxFragments=2, HighlightAll=false')`,
				args.add(f.Path), st.lang, filter.PathSQL("d.body", fp)+" #>> '{}'"))
		}
		hl = ", jsonb_build_object(" + strings.Join(parts, ", ") + ")"
		cols += hl
		hl = ", (SELECT " + tsq + " AS q) x"
	} else {
		cols += ", NULL::jsonb"
	}
	sql := `SELECT ` + cols + ` FROM documents d` + hl + ` WHERE d.collection_id = ` + args.add(st.collID) +
		` AND d.id = ANY(` + args.add(ids) + `) AND d.body IS NOT NULL`
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return db.Translate(err, "search")
	}
	type row struct {
		version int64
		body    []byte
		hl      map[string]string
	}
	found := map[string]row{}
	var id string
	var r row
	if _, err := pgx.ForEachRow(rows, []any{&id, &r.version, &r.body, &r.hl}, func() error {
		found[id] = row{version: r.version, body: append([]byte(nil), r.body...), hl: r.hl}
		r = row{}
		return nil
	}); err != nil {
		return db.Translate(err, "search")
	}
	kept := res.Items[:0]
	for _, h := range res.Items {
		x, ok := found[h.ID]
		if !ok {
			continue
		}
		h.Version = x.version
		if x.body != nil {
			data, err := doc.Project(x.body, p.proj)
			if err != nil {
				return err
			}
			h.Data = data
		}
		if len(x.hl) > 0 {
			h.Highlights = map[string]string{}
			for k, v := range x.hl {
				if strings.Contains(v, "<mark>") {
					h.Highlights[k] = v
				}
			}
		}
		kept = append(kept, h)
	}
	res.Items = kept
	return nil
}

// round3 keeps scores readable.
func round3(f float64) float64 { return math.Round(f*1e6) / 1e6 }

package doc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Query asks for a page of a collection's documents.
type Query struct {
	// Filter selects documents, in the filter language (docs/filters.md); "" selects all.
	Filter string
	// Sort is "@id" (the default), or a declared indexed path, prefixed with "-" for
	// descending order. Documents missing the path come last.
	Sort string
	// Fields projects each document's data onto these paths; empty returns it whole.
	Fields []string
	// Limit is the page size: default 50, at most 1000.
	Limit int
	// Cursor continues from a previous page's NextCursor.
	Cursor string
	// AsOf, when set, lists the collection as it was at that time (sorted by id).
	AsOf time.Time
}

// Page is a page of documents.
type Page struct {
	Items      []Document `json:"items"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// cursor is where a page ended, bound to the query it belongs to.
type cursor struct {
	Query string          `json:"q"`           // fingerprint of filter and sort
	ID    string          `json:"id"`          // last document id
	Value json.RawMessage `json:"v,omitempty"` // last sort value
	Nulls bool            `json:"n,omitempty"` // in the part without the sort path
}

func fingerprint(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s, query string) (cursor, error) {
	var c cursor
	if s == "" {
		return c, nil
	}
	bad := problem.Invalid("invalid_cursor", "the cursor does not belong to this query").WithField("query.cursor", "invalid")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Query != query {
		return cursor{}, bad
	}
	if c.Value != nil && !json.Valid(c.Value) {
		return cursor{}, bad
	}
	return c, nil
}

// FilterTarget is how filters address documents in SQL: the documents table as "d".
var FilterTarget = filter.Target{Body: "d.body", Meta: map[string]string{"id": "d.id", "version": "d.version",
	"created_at": "d.created_at", "updated_at": "d.updated_at"}}

// ParseFilter parses a filter, answering 400 invalid_filter with the position.
func ParseFilter(src string) (filter.Expr, error) { return ParseFilterField(src, "query.filter") }

// ParseFilterField is ParseFilter for a filter given in another field.
func ParseFilterField(src, field string) (filter.Expr, error) {
	e, err := filter.Parse(src)
	if err != nil {
		var fe *filter.Error
		p := problem.Invalid("invalid_filter", "%v", err).WithField(field, err.Error())
		if errors.As(err, &fe) {
			p = p.WithExtension("position", fe.Pos)
		}
		return nil, p
	}
	return e, nil
}

type sortSpec struct {
	byID bool
	path filter.Path
	key  string
	desc bool
}

func (c *collection) sortSpec(s string) (sortSpec, error) {
	spec := sortSpec{}
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-") {
		spec.desc, s = true, strings.TrimSpace(s[1:])
	}
	if s == "" || s == "@id" {
		spec.byID = true
		return spec, nil
	}
	p, canon, err := canonicalPath(s)
	if err != nil {
		return spec, problem.Invalid("invalid_sort", "sort by @id or a declared indexed path: %v", err).WithField("query.sort", s)
	}
	if _, declared := c.indexed[canon]; !declared {
		return spec, problem.Invalid("invalid_sort", "%q is not a declared indexed path of collection %q; declare it in the collection's indexes to sort by it", canon, c.name).
			WithField("query.sort", s)
	}
	spec.path, spec.key = p, canon
	return spec, nil
}

// DocList returns a page of documents (read on the collection): filtered, sorted on @id
// or a declared path, projected, with a keyset cursor; or, with AsOf, the collection as it
// was at a time.
func (s *Store) DocList(ctx context.Context, tenant, coll string, q Query) (Page, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return Page{}, err
	}
	if q.Limit <= 0 {
		q.Limit = 50
	}
	q.Limit = min(q.Limit, 1000)
	expr, err := ParseFilter(q.Filter)
	if err != nil {
		return Page{}, err
	}
	proj, err := ParseFields(q.Fields)
	if err != nil {
		return Page{}, err
	}
	var page Page
	if !q.AsOf.IsZero() {
		page, err = s.listAsOf(ctx, c, expr, q)
	} else {
		page, err = s.listCurrent(ctx, c, expr, q)
	}
	if err != nil {
		return Page{}, err
	}
	for i := range page.Items {
		if page.Items[i].Data, err = Project(page.Items[i].Data, proj); err != nil {
			return Page{}, err
		}
	}
	return page, nil
}

func (s *Store) listCurrent(ctx context.Context, c *collection, expr filter.Expr, q Query) (Page, error) {
	spec, err := c.sortSpec(q.Sort)
	if err != nil {
		return Page{}, err
	}
	fp := fingerprint(q.Filter, q.Sort)
	cur, err := decodeCursor(q.Cursor, fp)
	if err != nil {
		return Page{}, err
	}
	where, args, err := filter.SQL(expr, FilterTarget, 1)
	if err != nil {
		return Page{}, problem.Invalid("invalid_filter", "%v", err)
	}
	base := "d.collection_id = " + sqlLiteral(c.id) + "::uuid AND d.body IS NOT NULL AND " + where
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	const cols = `d.id, d.version, d.created_at, d.updated_at, d.body`
	var page Page
	run := func(sql string, args []any, sortCol bool) ([]Document, []json.RawMessage, error) {
		rows, err := s.pool.Query(ctx, sql, args...)
		if err != nil {
			return nil, nil, err
		}
		defer rows.Close()
		var docs []Document
		var keys []json.RawMessage
		for rows.Next() {
			d := Document{Collection: c.name}
			var key []byte
			dest := []any{&d.ID, &d.Version, &d.CreatedAt, &d.UpdatedAt, &d.Data}
			if sortCol {
				dest = append(dest, &key)
			}
			if err := rows.Scan(dest...); err != nil {
				return nil, nil, err
			}
			docs = append(docs, d)
			keys = append(keys, key)
		}
		return docs, keys, rows.Err()
	}
	if spec.byID {
		dir, cmp := "ASC", ">"
		if spec.desc {
			dir, cmp = "DESC", "<"
		}
		cond := ""
		if cur.ID != "" {
			cond = " AND d.id " + cmp + " " + arg(cur.ID)
		}
		sql := "SELECT " + cols + " FROM documents d WHERE " + base + cond + " ORDER BY d.id " + dir + " LIMIT " + arg(q.Limit+1)
		docs, _, err := run(sql, args, false)
		if err != nil {
			return Page{}, s.queryErr(err)
		}
		if len(docs) > q.Limit {
			docs = docs[:q.Limit]
			page.NextCursor = cursor{Query: fp, ID: docs[len(docs)-1].ID}.encode()
		}
		page.Items = docs
		return page, nil
	}
	// Sorted by a path: documents that have it, in order, then those that do not, by id.
	p := filter.PathSQL("d.body", spec.path)
	if !cur.Nulls {
		dir, cmp := "ASC", ">"
		if spec.desc {
			dir, cmp = "DESC", "<"
		}
		a := append([]any{}, args...)
		cond := " AND " + p + " IS NOT NULL"
		if cur.ID != "" {
			a = append(a, string(cur.Value), cur.ID)
			cond += fmt.Sprintf(" AND (%s, d.id) %s ($%d::jsonb, $%d)", p, cmp, len(a)-1, len(a))
		}
		a = append(a, q.Limit+1)
		sql := "SELECT " + cols + ", " + p + " FROM documents d WHERE " + base + cond +
			" ORDER BY " + p + " " + dir + ", d.id " + dir + " LIMIT $" + strconv.Itoa(len(a))
		docs, keys, err := run(sql, a, true)
		if err != nil {
			return Page{}, s.queryErr(err)
		}
		if len(docs) > q.Limit {
			docs = docs[:q.Limit]
			page.NextCursor = cursor{Query: fp, ID: docs[len(docs)-1].ID, Value: keys[q.Limit-1]}.encode()
			page.Items = docs
			return page, nil
		}
		page.Items = docs
		cur = cursor{Query: fp, Nulls: true}
	}
	room := q.Limit - len(page.Items)
	a := append([]any{}, args...)
	cond := " AND " + p + " IS NULL"
	if cur.ID != "" {
		a = append(a, cur.ID)
		cond += " AND d.id > $" + strconv.Itoa(len(a))
	}
	a = append(a, room+1)
	sql := "SELECT " + cols + " FROM documents d WHERE " + base + cond + " ORDER BY d.id LIMIT $" + strconv.Itoa(len(a))
	docs, _, err := run(sql, a, false)
	if err != nil {
		return Page{}, s.queryErr(err)
	}
	if len(docs) > room {
		docs = docs[:room]
		last := docs[len(docs)-1].ID
		if room == 0 && len(page.Items) > 0 {
			last = ""
		}
		page.NextCursor = cursor{Query: fp, ID: last, Nulls: true}.encode()
	}
	page.Items = append(page.Items, docs...)
	return page, nil
}

func (s *Store) queryErr(err error) error {
	if p, ok := problem.As(db.Translate(err, "documents")); ok && p.Code == "internal" {
		return p
	}
	return db.Translate(err, "documents")
}

// listAsOf lists documents as they were at q.AsOf, by id, filtering in memory with the
// same semantics as the SQL filter. It examines at most 20 pages' worth of documents per
// call, returning a cursor to continue when it has not filled a page.
func (s *Store) listAsOf(ctx context.Context, c *collection, expr filter.Expr, q Query) (Page, error) {
	if q.Sort != "" && q.Sort != "@id" {
		return Page{}, problem.Invalid("invalid_sort", "a point-in-time list is sorted by @id").WithField("query.sort", q.Sort)
	}
	fp := fingerprint(q.Filter, "asof", q.AsOf.UTC().Format(time.RFC3339Nano))
	cur, err := decodeCursor(q.Cursor, fp)
	if err != nil {
		return Page{}, err
	}
	var page Page
	last := cur.ID
	budget := 20 * q.Limit
	for budget > 0 && len(page.Items) < q.Limit {
		batch := min(budget, 500)
		rows, err := s.pool.Query(ctx, `SELECT d.id, v.version FROM documents d
			JOIN LATERAL (SELECT version, op FROM document_versions v WHERE v.collection_id = d.collection_id AND v.id = d.id AND v.at <= $2
				ORDER BY version DESC LIMIT 1) v ON v.op <> 'delete'
			WHERE d.collection_id = $1 AND d.id > $3 ORDER BY d.id LIMIT $4`, c.id, q.AsOf, last, batch)
		if err != nil {
			return Page{}, db.Translate(err, "documents")
		}
		type hit struct {
			id      string
			version int64
		}
		hits, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (hit, error) {
			var h hit
			err := r.Scan(&h.id, &h.version)
			return h, err
		})
		if err != nil {
			return Page{}, db.Translate(err, "documents")
		}
		budget -= batch
		for _, h := range hits {
			last = h.id
			d, err := s.getAt(ctx, s.pool, c, h.id, At{Version: h.version})
			if problem.HasCode(err, "version_not_found") {
				continue // pruned by retention
			}
			if err != nil {
				return Page{}, err
			}
			doc, err := filter.Decode(d.Data)
			if err != nil {
				return Page{}, err
			}
			if filter.Eval(expr, doc, filter.Meta{ID: d.ID, Version: d.Version, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}) {
				page.Items = append(page.Items, d)
				if len(page.Items) == q.Limit {
					page.NextCursor = cursor{Query: fp, ID: d.ID}.encode()
					return page, nil
				}
			}
		}
		if len(hits) < batch {
			return page, nil // the end
		}
	}
	// Out of budget before filling the page: continue from where the scan stopped.
	page.NextCursor = cursor{Query: fp, ID: last}.encode()
	return page, nil
}

// DocCount counts the documents matching filter, stopping at limit (read on the
// collection); capped reports that there are more.
func (s *Store) DocCount(ctx context.Context, tenant, coll, filterSrc string, limit int64) (count int64, capped bool, err error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return 0, false, err
	}
	if limit <= 0 || limit > 10_000_000 {
		limit = 10000
	}
	expr, err := ParseFilter(filterSrc)
	if err != nil {
		return 0, false, err
	}
	where, args, err := filter.SQL(expr, FilterTarget, 1)
	if err != nil {
		return 0, false, err
	}
	args = append(args, limit+1)
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM documents d WHERE d.collection_id = `+sqlLiteral(c.id)+
		`::uuid AND d.body IS NOT NULL AND `+where+` LIMIT $`+strconv.Itoa(len(args))+`) s`, args...).Scan(&count)
	if err != nil {
		return 0, false, s.queryErr(err)
	}
	if count > limit {
		return limit, true, nil
	}
	return count, false, nil
}

// ParseFields parses projection paths (object keys only), answering 400 invalid_fields.
func ParseFields(fields []string) ([]filter.Path, error) {
	var out []filter.Path
	for _, f := range fields {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, _, err := canonicalPath(f)
		if err != nil {
			return nil, problem.Invalid("invalid_fields", "%q is not a field path", f).WithField("query.fields", f)
		}
		for _, e := range p.Elems {
			if e.IsIndex {
				return nil, problem.Invalid("invalid_fields", "fields select object keys, not array elements (%q)", f).WithField("query.fields", f)
			}
		}
		out = append(out, p)
	}
	if len(out) > 100 {
		return nil, problem.Invalid("invalid_fields", "at most 100 fields")
	}
	return out, nil
}

// Project keeps only the given paths of data (missing ones are left out).
func Project(data json.RawMessage, paths []filter.Path) (json.RawMessage, error) {
	if len(paths) == 0 || data == nil {
		return data, nil
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var doc map[string]any
	if err := d.Decode(&doc); err != nil {
		return nil, err
	}
	out := map[string]any{}
	for _, p := range paths {
		var cur any = doc
		found := true
		for _, e := range p.Elems {
			m, ok := cur.(map[string]any)
			if !ok {
				found = false
				break
			}
			if cur, ok = m[e.Key]; !ok {
				found = false
				break
			}
		}
		if !found {
			continue
		}
		dst := out
		for i, e := range p.Elems {
			if i == len(p.Elems)-1 {
				dst[e.Key] = cur
				break
			}
			next, ok := dst[e.Key].(map[string]any)
			if !ok {
				next = map[string]any{}
				dst[e.Key] = next
			}
			dst = next
		}
	}
	return json.Marshal(out)
}

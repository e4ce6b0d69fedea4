package filter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestParseErrorsSayWhere(t *testing.T) {
	t.Parallel()
	cases := map[string]int{
		`a = `:                      4,
		`a = 1 and`:                 9,
		`(a = 1`:                    6,
		`a ~ 1`:                     2,
		`a = "unterminated`:         4,
		`a = 'single'`:              4,
		`a in 5`:                    5,
		`and = 1`:                   0,
		`a = 1 b = 2`:               6,
		`@nope = 1`:                 1,
		`@version = "x"`:            0,
		`a.`:                        2,
		`a[-1] = 1`:                 2,
		`a = {"k": 1, "k": 2}`:      13,
		`x < [1]`:                   0,
		`a = 1e999`:                 4,
		"a = \"nul\\u0000\"":        4,
		`exists(a`:                  8,
		strings.Repeat("(", 40):     32,
		`a != !b`:                   5,
		`a = 1 or`:                  8,
		`a.b contains`:              12,
		`@id contains "x"`:          4,
		`a = tru`:                   4,
		"`unterminated = 1":         0,
		`a = [1, 2`:                 9,
		`@updated_at > "yesterday"`: 0,
	}
	for src, pos := range cases {
		_, err := filter.Parse(src)
		var fe *filter.Error
		if err == nil || !errorsAs(err, &fe) {
			t.Errorf("%q parsed (err %v)", src, err)
			continue
		}
		if fe.Pos != pos {
			t.Errorf("%q: error at %d, want %d: %v", src, fe.Pos, pos, err)
		}
	}
	if e, err := filter.Parse("   "); e != nil || err != nil {
		t.Errorf("blank filter: %v %v", e, err)
	}
}

func errorsAs(err error, target **filter.Error) bool {
	return errors.As(err, target)
}

// randomDoc makes documents from a small vocabulary, so filters hit and miss.
func randomDoc(r *rand.Rand, depth int) any {
	scalars := []any{json.Number("1"), json.Number("1.0"), json.Number("2"), json.Number("-3.5"), json.Number("10"),
		json.Number("1e2"), json.Number("100"), "x", "y", "X", "é", "", "10", true, false, nil}
	if depth > 2 || r.IntN(3) > 0 {
		return scalars[r.IntN(len(scalars))]
	}
	if r.IntN(2) == 0 {
		n := r.IntN(4)
		a := make([]any, n)
		for i := range a {
			a[i] = randomDoc(r, depth+1)
		}
		return a
	}
	m := map[string]any{}
	for _, k := range []string{"a", "b", "c", "tags", "n", "it's"} {
		if r.IntN(2) == 0 {
			m[k] = randomDoc(r, depth+1)
		}
	}
	return m
}

func randomPath(r *rand.Rand) string {
	paths := []string{"a", "b", "c", "n", "tags", "a.b", "a.a", "tags[0]", "tags[1]", "`it's`", "a.tags[0]", "$", "a[0]", "b.`0`"}
	return paths[r.IntN(len(paths))]
}

func randomValue(r *rand.Rand) string {
	b, _ := json.Marshal(randomDoc(r, 1))
	return string(b)
}

func randomScalar(r *rand.Rand, ordering bool) string {
	vs := []string{`1`, `1.0`, `2`, `-3.5`, `1e2`, `"x"`, `"X"`, `"é"`, `""`, `"10"`, `true`, `false`}
	if !ordering {
		vs = append(vs, `null`)
	}
	return vs[r.IntN(len(vs))]
}

func randomFilter(r *rand.Rand, depth int) string {
	if depth < 3 && r.IntN(3) == 0 {
		switch r.IntN(3) {
		case 0:
			return "(" + randomFilter(r, depth+1) + " and " + randomFilter(r, depth+1) + ")"
		case 1:
			return "(" + randomFilter(r, depth+1) + " or " + randomFilter(r, depth+1) + ")"
		default:
			return "not " + randomFilter(r, depth+1)
		}
	}
	p := randomPath(r)
	switch r.IntN(6) {
	case 0:
		return p + " = " + randomScalar(r, false)
	case 1:
		return p + " != " + randomScalar(r, false)
	case 2:
		ops := []string{"<", "<=", ">", ">="}
		return p + " " + ops[r.IntN(4)] + " " + randomScalar(r, true)
	case 3:
		return p + " in [" + randomScalar(r, false) + ", " + randomScalar(r, false) + "]"
	case 4:
		return p + " contains " + randomValue(r)
	default:
		return "exists(" + p + ")"
	}
}

// The compiled SQL and the in-memory evaluator agree with each other on random documents
// and random filters: PostgreSQL's jsonb semantics are the reference.
func TestSQLAgreesWithEval(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE docs (id text PRIMARY KEY, version bigint, body jsonb NOT NULL,
		created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var docs []row
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	batch := &pgx.Batch{}
	fixed := []string{`{"a": {"b": [1, 2]}}`, `{"tags": ["x", "y"]}`, `{"a": [[1, 3], 2]}`, `{"a": [1, 3]}`, `{"n": "x"}`,
		`{"a": {"a": 1.0}, "n": [{"b": 2}]}`, `{"tags": [["x"]]}`}
	for i := range 300 {
		d := randomDoc(r, 0)
		if i < len(fixed) {
			d, _ = filter.Decode([]byte(fixed[i]))
		}
		b, _ := json.Marshal(d)
		m := filter.Meta{ID: fmt.Sprintf("d%03d", i), Version: int64(i % 7), CreatedAt: base.Add(time.Duration(i) * time.Hour),
			UpdatedAt: base.Add(time.Duration(i) * 2 * time.Hour)}
		batch.Queue(`INSERT INTO docs VALUES ($1, $2, $3, $4, $5)`, m.ID, m.Version, string(b), m.CreatedAt, m.UpdatedAt)
		// Keep the stored form: what jsonb normalized is what the filter sees.
		docs = append(docs, row{meta: m})
	}
	if err := pool.SendBatch(ctx, batch).Close(); err != nil {
		t.Fatal(err)
	}
	rows, _ := pool.Query(ctx, `SELECT id, body::text FROM docs ORDER BY id`)
	i := 0
	for rows.Next() {
		var id, body string
		if err := rows.Scan(&id, &body); err != nil {
			t.Fatal(err)
		}
		docs[i].doc, _ = filter.Decode([]byte(body))
		i++
	}
	target := filter.Target{Body: "body", Meta: map[string]string{"id": "id", "version": "version", "created_at": "created_at", "updated_at": "updated_at"}}
	metaFilters := []string{`a contains {"b": 1}`, `a contains {"b": [1]}`, `tags contains "x"`, `a contains [1, 3]`,
		`a contains [[1, 3]]`, `$ contains {"tags": "x"}`, `$ contains {"tags": ["x"]}`, `n contains "x"`, `tags contains ["x"]`,
		`a contains {"a": 1}`, `n contains [{}]`, `@id = "d010"`, `@id >= "d290"`, `@version in [1, 3]`, `@version > 5`,
		`@created_at < "2025-01-02T00:00:00Z"`, `@updated_at >= "2025-01-10T00:00:00+01:00"`, `not @id != "d001"`}
	checked := 0
	for n := range 600 {
		src := randomFilter(r, 0)
		if n < len(metaFilters) {
			src = metaFilters[n]
		}
		e, err := filter.Parse(src)
		if err != nil {
			t.Fatalf("generated filter %q does not parse: %v", src, err)
		}
		where, args, err := filter.SQL(e, target, 1)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := pool.Query(ctx, "SELECT id FROM docs WHERE "+where+" ORDER BY id", args...)
		if err != nil {
			t.Fatalf("%q → %s: %v", src, where, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%q → %s: %v", src, where, err)
		}
		var want []string
		for _, d := range docs {
			if filter.Eval(e, d.doc, d.meta) {
				want = append(want, d.meta.ID)
			}
		}
		if !slices.Equal(got, want) {
			diff := symmetricDiff(got, want)
			t.Errorf("filter %q: PostgreSQL and Eval disagree on %v (e.g. doc %v)", src, diff, docFor(docs, diff))
			if t.Failed() && checked > 0 {
				continue
			}
		}
		checked++
	}
	if checked < 500 {
		t.Fatalf("only %d filters agreed", checked)
	}
}

type row struct {
	doc  any
	meta filter.Meta
}

func docFor(docs []row, ids []string) string {
	for _, d := range docs {
		if len(ids) > 0 && d.meta.ID == strings.TrimLeft(ids[0], "+-") {
			b, _ := json.Marshal(d.doc)
			return string(b)
		}
	}
	return ""
}

func symmetricDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, "+"+x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, "-"+x)
		}
	}
	return out
}

// Hostile keys and values end up as SQL that runs, never as SQL that means something else.
func TestHostileInputsStayData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE docs (body jsonb)`); err != nil {
		t.Fatal(err)
	}
	hostile := []string{"'", "''", `\`, `"`, `\"`, `'); DROP TABLE docs; --`, "a}b", "a,b", "{", "$1", "`", "é'\\\""}
	for _, k := range hostile {
		key := strings.ReplaceAll(k, "`", "``")
		val, _ := json.Marshal(k)
		if _, err := pool.Exec(ctx, `INSERT INTO docs VALUES (jsonb_build_object($1::text, $1::text))`, k); err != nil {
			t.Fatal(err)
		}
		src := fmt.Sprintf("`%s` = %s", key, val)
		e, err := filter.Parse(src)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		where, args, _ := filter.SQL(e, filter.Target{Body: "body"}, 1)
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM docs WHERE "+where, args...).Scan(&n); err != nil {
			t.Fatalf("%q → %s: %v", src, where, err)
		}
		if n != 1 {
			t.Errorf("%q matched %d rows, want exactly its own", src, n)
		}
	}
}

// FuzzParse: any input either fails with a positioned error or parses into SQL whose
// literals are balanced; parsing never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`status = "active" and priority >= 3`, "`a'b` in [1, \"x\"]", `not exists(a.b[2])`,
		`$ contains {"a": [1, {"b": null}]}`, `@updated_at >= "2025-01-01T00:00:00Z"`, `((a = 1) or b != null)`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := filter.Parse(src)
		if err != nil {
			var fe *filter.Error
			if !errorsAs(err, &fe) || fe.Pos < 0 || fe.Pos > len(src) {
				t.Fatalf("%q: bad error %v", src, err)
			}
			return
		}
		where, args, err := filter.SQL(e, filter.Target{Body: "b", Meta: map[string]string{"id": "i", "version": "v", "created_at": "c", "updated_at": "u"}}, 1)
		if err != nil {
			t.Fatalf("%q parsed but did not compile: %v", src, err)
		}
		if strings.Count(where, "'")%2 != 0 {
			t.Fatalf("%q → unbalanced quotes in %s", src, where)
		}
		if strings.Count(where, "$") != len(args) {
			t.Fatalf("%q → %d placeholders for %d args in %s", src, strings.Count(where, "$"), len(args), where)
		}
	})
}

func TestParsePath(t *testing.T) {
	for src, want := range map[string]string{"a": "a", "a.b[2]": "a.b[2]", "`odd key`.x": "`odd key`.x", "$": "$", "@version": "@version"} {
		p, err := filter.ParsePath(src)
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if p.String() != want {
			t.Errorf("%q parsed as %q", src, p.String())
		}
	}
	for _, bad := range []string{"", "a b", "a = 1", "a.", "[1", "@nope"} {
		if _, err := filter.ParsePath(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

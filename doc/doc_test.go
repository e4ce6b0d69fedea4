package doc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type env struct {
	*testworld.World
	store *doc.Store
	ctx   context.Context // the tenant's owner
}

func setup(t *testing.T) *env { return setupTB(t) }

func setupTB(t testing.TB) *env {
	t.Helper()
	w := testworld.New(t, doc.Schema)
	s := doc.New(w.Pool, w.Auth, w.Feed, w.Listener, doc.Config{SnapshotEvery: 8})
	bg, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(bg); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return &env{World: w, store: s, ctx: w.As(testworld.Owner)}
}

func (e *env) collection(t testing.TB, in doc.CollectionInput) {
	t.Helper()
	if _, err := e.store.CollectionCreate(e.ctx, e.Tenant, in); err != nil {
		t.Fatal(err)
	}
}

var wantProblem = testworld.WantProblem

func TestDocumentLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "notes"})
	ctx := e.ctx

	d, err := e.store.DocCreate(ctx, e.Tenant, "notes", doc.DocInput{Data: json.RawMessage(`{"title": "first", "n": 1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := uuid.Parse(d.ID); err != nil || id.Version() != 7 || d.Version != 1 {
		t.Fatalf("server id %q (%v) version %d: want a UUIDv7 at version 1", d.ID, err, d.Version)
	}
	got, err := e.store.DocGet(ctx, e.Tenant, "notes", d.ID)
	if err != nil || got.Version != 1 || !jsonEqual(got.Data, `{"title":"first","n":1}`) {
		t.Fatalf("get: %+v %v", got, err)
	}
	_, err = e.store.DocCreate(ctx, e.Tenant, "notes", doc.DocInput{ID: d.ID, Data: json.RawMessage(`{}`)})
	wantProblem(t, err, 409, "document_exists")

	// Replace with a stale If-Match: 412 naming the current version; nothing changes.
	_, err = e.store.DocReplace(ctx, e.Tenant, "notes", d.ID, json.RawMessage(`{"title": "x"}`), &doc.WriteOptions{IfMatch: 7})
	p := wantProblem(t, err, 412, "version_mismatch")
	if p.Extensions["current_version"] != int64(1) {
		t.Errorf("412 lacks current_version: %v", p.Extensions)
	}
	d2, err := e.store.DocReplace(ctx, e.Tenant, "notes", d.ID, json.RawMessage(`{"title": "second", "n": 2}`), &doc.WriteOptions{IfMatch: 1})
	if err != nil || d2.Version != 2 {
		t.Fatalf("replace: %+v %v", d2, err)
	}
	d3, err := e.store.DocPatch(ctx, e.Tenant, "notes", d.ID, doc.MergePatch, json.RawMessage(`{"n": null, "tags": ["a"]}`), nil)
	if err != nil || d3.Version != 3 || !jsonEqual(d3.Data, `{"title":"second","tags":["a"]}`) {
		t.Fatalf("merge patch: %s %v", d3.Data, err)
	}
	d4, err := e.store.DocPatch(ctx, e.Tenant, "notes", d.ID, doc.JSONPatch, json.RawMessage(`[{"op":"add","path":"/tags/-","value":"b"},{"op":"test","path":"/title","value":"second"}]`), nil)
	if err != nil || d4.Version != 4 || !jsonEqual(d4.Data, `{"title":"second","tags":["a","b"]}`) {
		t.Fatalf("json patch: %s %v", d4.Data, err)
	}
	_, err = e.store.DocPatch(ctx, e.Tenant, "notes", d.ID, doc.JSONPatch, json.RawMessage(`[{"op":"test","path":"/title","value":"nope"}]`), nil)
	wantProblem(t, err, 422, "patch_failed")

	// Delete is a tombstone: 404 document_deleted, restorable.
	del, err := e.store.DocDelete(ctx, e.Tenant, "notes", d.ID, nil)
	if err != nil || del.Version != 5 || !del.Deleted {
		t.Fatalf("delete: %+v %v", del, err)
	}
	_, err = e.store.DocGet(ctx, e.Tenant, "notes", d.ID)
	wantProblem(t, err, 404, "document_deleted")
	r, err := e.store.DocRestore(ctx, e.Tenant, "notes", d.ID, nil)
	if err != nil || r.Version != 6 || !jsonEqual(r.Data, `{"title":"second","tags":["a","b"]}`) {
		t.Fatalf("restore: %+v %v", r, err)
	}
	// Revert to version 1.
	rv, err := e.store.DocRevert(ctx, e.Tenant, "notes", d.ID, 1, nil)
	if err != nil || rv.Version != 7 || !jsonEqual(rv.Data, `{"title":"first","n":1}`) {
		t.Fatalf("revert: %s %v", rv.Data, err)
	}
	vs, err := e.store.DocVersions(ctx, e.Tenant, "notes", d.ID, 0, 100)
	if err != nil || len(vs) != 7 {
		t.Fatalf("versions: %v %v", vs, err)
	}
	ops := []string{}
	for _, v := range vs {
		ops = append(ops, v.Op)
	}
	if strings.Join(ops, ",") != "revert,restore,delete,patch,patch,replace,create" || vs[0].Actor != "tw_owner" {
		t.Errorf("versions = %v (actor %q)", ops, vs[0].Actor)
	}
	diff, err := e.store.DocDiff(ctx, e.Tenant, "notes", d.ID, 2, 4)
	if err != nil || !strings.Contains(string(diff), `"op":"remove","path":"/n"`) {
		t.Errorf("diff 2→4: %s %v", diff, err)
	}
	// PUT to a new id creates.
	n, err := e.store.DocReplace(ctx, e.Tenant, "notes", "by-put", json.RawMessage(`{"x": 1}`), nil)
	if err != nil || n.Version != 1 {
		t.Fatalf("put-create: %+v %v", n, err)
	}
}

func jsonEqual(got json.RawMessage, want string) bool {
	var a, b any
	return json.Unmarshal(got, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && fmt.Sprint(a) == fmt.Sprint(b)
}

// Bad input gets a precise problem and writes nothing: no version, no feed entry, no
// audit row.
func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "things", MaxDocBytes: 200,
		Schema: json.RawMessage(`{"type": "object", "required": ["name"], "properties": {"name": {"type": "string"},
			"address": {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}}}}`)})
	ctx := e.ctx
	before := counts(t, e)
	cases := []struct {
		body   string
		status int
		code   string
		ptr    string
	}{
		{`{"name": "a", "name": "b"}`, 422, "duplicate_key", "/name"},
		{`{"name": "x", "n": 1e400}`, 422, "number_out_of_range", "/n"},
		{`{"name": "nul\u0000"}`, 422, "nul_character", "/name"},
		{`{"name": `, 400, "invalid_json", ""},
		{`[1]`, 422, "not_an_object", ""},
		{`{"name": "` + strings.Repeat("x", 300) + `"}`, 413, "document_too_large", ""},
		{`{"address": {"zip": "abc"}}`, 422, "schema_violation", "/"},
		{strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70), 413, "document_too_large", ""},
	}
	for _, c := range cases {
		_, err := e.store.DocCreate(ctx, e.Tenant, "things", doc.DocInput{Data: json.RawMessage(c.body)})
		p := wantProblem(t, err, c.status, c.code)
		if c.ptr != "" && (len(p.Errors) == 0 || p.Errors[0].Location != c.ptr) {
			t.Errorf("%.40s: locations %v, want %s", c.body, p.Errors, c.ptr)
		}
	}
	// The schema names every failing pointer.
	_, err := e.store.DocCreate(ctx, e.Tenant, "things", doc.DocInput{Data: json.RawMessage(`{"name": 5, "address": {"zip": "abc"}}`)})
	p := wantProblem(t, err, 422, "schema_violation")
	locs := map[string]bool{}
	for _, fe := range p.Errors {
		locs[fe.Location] = true
	}
	if !locs["/name"] || !locs["/address/zip"] {
		t.Errorf("schema violation locations %v, want /name and /address/zip", p.Errors)
	}
	if after := counts(t, e); after != before {
		t.Errorf("rejected writes changed the database: %v → %v", before, after)
	}
	// Deep nesting within the size limit.
	e.collection(t, doc.CollectionInput{Name: "big"})
	_, err = e.store.DocCreate(ctx, e.Tenant, "big", doc.DocInput{Data: json.RawMessage(strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat(`}`, 70))})
	wantProblem(t, err, 422, "too_deep")
	_, err = e.store.DocCreate(ctx, e.Tenant, "nope", doc.DocInput{Data: json.RawMessage(`{}`)})
	wantProblem(t, err, 404, "collection_not_found")
	_, err = e.store.DocCreate(ctx, e.Tenant, "big", doc.DocInput{ID: "bad/id", Data: json.RawMessage(`{}`)})
	wantProblem(t, err, 422, "invalid_id")
	// A lone surrogate escape is PostgreSQL's to refuse: 422, not 500.
	_, err = e.store.DocCreate(ctx, e.Tenant, "big", doc.DocInput{Data: json.RawMessage(`{"s": "\ud800"}`)})
	wantProblem(t, err, 422, "invalid_json")
}

func counts(t *testing.T, e *env) string {
	t.Helper()
	var docs, versions, changes int
	if err := e.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM document_versions),
		(SELECT count(*) FROM changes)`).Scan(&docs, &versions, &changes); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(docs, versions, changes)
}

func TestUnicodeRoundTrips(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "u"})
	s := "é 日本語 😀 \u200d \u202eRTL\u202c tab\tnewline\n quote\" backslash\\ \u2028"
	body, _ := json.Marshal(map[string]string{"s": s, "ключ": "значение"})
	d, err := e.store.DocCreate(e.ctx, e.Tenant, "u", doc.DocInput{Data: body})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.store.DocGet(e.ctx, e.Tenant, "u", d.ID)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(got.Data, &m); err != nil || m["s"] != s || m["ключ"] != "значение" {
		t.Fatalf("round trip: %q %v", m, err)
	}
}

func TestIdempotentCreate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "orders"})
	in := doc.DocInput{Data: json.RawMessage(`{"total": 10}`), IdempotencyKey: "order-42"}
	a, err := e.store.DocCreate(e.ctx, e.Tenant, "orders", in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.store.DocCreate(e.ctx, e.Tenant, "orders", in)
	if err != nil || b.ID != a.ID {
		t.Fatalf("retry created %q (first %q): %v", b.ID, a.ID, err)
	}
	_, err = e.store.DocCreate(e.ctx, e.Tenant, "orders", doc.DocInput{Data: json.RawMessage(`{"total": 11}`), IdempotencyKey: "order-42"})
	wantProblem(t, err, 422, "idempotency_key_reused")
	page, _ := e.store.DocList(e.ctx, e.Tenant, "orders", doc.Query{})
	if len(page.Items) != 1 {
		t.Fatalf("%d orders, want 1", len(page.Items))
	}
}

// A document write composes with the caller's own statements in one transaction.
func TestWritesComposeInCallersTransaction(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "c"})
	ctx := e.ctx
	boom := errors.New("caller changes its mind")
	err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		if _, err := e.store.DocCreateTx(ctx, tx, e.Tenant, "c", doc.DocInput{ID: "a", Data: json.RawMessage(`{}`)}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	_, err = e.store.DocGet(ctx, e.Tenant, "c", "a")
	wantProblem(t, err, 404, "document_not_found")
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		if _, err := e.store.DocCreateTx(ctx, tx, e.Tenant, "c", doc.DocInput{ID: "a", Data: json.RawMessage(`{"v": 1}`)}); err != nil {
			return err
		}
		_, err := e.store.DocReplaceTx(ctx, tx, e.Tenant, "c", "a", json.RawMessage(`{"v": 2}`), nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.store.DocGet(ctx, e.Tenant, "c", "a")
	if err != nil || d.Version != 2 {
		t.Fatalf("%+v %v", d, err)
	}
}

// Every operation, as every identity: members and viewers read, only writers write,
// another tenant's owner sees nothing (404), anonymous callers are told to authenticate.
func TestTenantWalls(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "walled"})
	seed, err := e.store.DocCreate(e.ctx, e.Tenant, "walled", doc.DocInput{ID: "seed", Data: json.RawMessage(`{"secret": 1}`)})
	if err != nil {
		t.Fatal(err)
	}
	_ = seed
	type op struct {
		name  string
		write bool
		admin bool
		run   func(ctx context.Context, tenant string) error
	}
	ops := []op{
		{"collection get", false, false, func(ctx context.Context, ten string) error {
			_, err := e.store.CollectionGet(ctx, ten, "walled")
			return err
		}},
		{"collection update", true, true, func(ctx context.Context, ten string) error {
			d := "x"
			_, err := e.store.CollectionUpdate(ctx, ten, "walled", doc.CollectionUpdate{Description: &d})
			return err
		}},
		{"collection create", true, true, func(ctx context.Context, ten string) error {
			_, err := e.store.CollectionCreate(ctx, ten, doc.CollectionInput{Name: "new-" + uuid.NewString()[:8]})
			return err
		}},
		{"get", false, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocGet(ctx, ten, "walled", "seed")
			return err
		}},
		{"get at", false, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocGetAt(ctx, ten, "walled", "seed", doc.At{Version: 1})
			return err
		}},
		{"versions", false, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocVersions(ctx, ten, "walled", "seed", 0, 10)
			return err
		}},
		{"list", false, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocList(ctx, ten, "walled", doc.Query{})
			return err
		}},
		{"count", false, false, func(ctx context.Context, ten string) error {
			_, _, err := e.store.DocCount(ctx, ten, "walled", "", 10)
			return err
		}},
		{"diff", false, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocDiff(ctx, ten, "walled", "seed", 1, 1)
			return err
		}},
		{"create", true, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocCreate(ctx, ten, "walled", doc.DocInput{Data: json.RawMessage(`{}`)})
			return err
		}},
		{"replace", true, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocReplace(ctx, ten, "walled", "seed", json.RawMessage(`{"secret": 1}`), nil)
			return err
		}},
		{"patch", true, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocPatch(ctx, ten, "walled", "seed", doc.MergePatch, json.RawMessage(`{}`), nil)
			return err
		}},
		{"export", false, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocExport(ctx, ten, "walled", discard{}, doc.ExportOptions{})
			return err
		}},
		{"import", true, false, func(ctx context.Context, ten string) error {
			_, err := e.store.DocImport(ctx, ten, "walled", strings.NewReader(`{"a":1}`), doc.ImportOptions{})
			return err
		}},
	}
	for _, o := range ops {
		for _, role := range testworld.Roles() {
			err := o.run(e.As(role), e.Tenant)
			var want int
			switch role {
			case "":
				want = 401
			case testworld.Outsider:
				want = 404
			case testworld.Owner, testworld.Admin, testworld.Platform:
				want = 0
			default: // member, viewer, member-role key: read, but write only with grants
				if o.write {
					want = 403
				}
			}
			got := 0
			if p, ok := problem.As(err); ok {
				got = p.Status
			} else if err != nil {
				t.Fatalf("%s as %q: %v", o.name, role, err)
			}
			if got != want {
				t.Errorf("%s as %q: status %d (%v), want %d", o.name, role, got, err, want)
			}
		}
		// The outsider, in its own tenant, finds no such collection.
		err := o.run(e.As(testworld.Outsider), e.Other)
		if o.name != "collection create" {
			if p, ok := problem.As(err); !ok || p.Status != 404 {
				t.Errorf("%s by the outsider in its own tenant: %v, want 404", o.name, err)
			}
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestCollectionsManaged(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := e.ctx
	_, err := e.store.CollectionCreate(ctx, e.Tenant, doc.CollectionInput{Name: "bad name"})
	wantProblem(t, err, 422, "invalid_name")
	_, err = e.store.CollectionCreate(ctx, e.Tenant, doc.CollectionInput{Name: "s", Schema: json.RawMessage(`{"type": "nonsense"}`)})
	wantProblem(t, err, 422, "invalid_schema")
	_, err = e.store.CollectionCreate(ctx, e.Tenant, doc.CollectionInput{Name: "s", Schema: json.RawMessage(`{"$ref": "file:///etc/passwd"}`)})
	wantProblem(t, err, 422, "invalid_schema")
	e.collection(t, doc.CollectionInput{Name: "a"})
	_, err = e.store.CollectionCreate(ctx, e.Tenant, doc.CollectionInput{Name: "a"})
	wantProblem(t, err, 409, "collection_exists")
	if _, err := e.store.DocCreate(ctx, e.Tenant, "a", doc.DocInput{ID: "x", Data: json.RawMessage(`{"k": 1}`)}); err != nil {
		t.Fatal(err)
	}
	// Adding a schema applies to later writes.
	if _, err := e.store.CollectionUpdate(ctx, e.Tenant, "a", doc.CollectionUpdate{Schema: json.RawMessage(`{"required": ["name"]}`)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.store.DocCreate(ctx, e.Tenant, "a", doc.DocInput{Data: json.RawMessage(`{"k": 2}`)})
	wantProblem(t, err, 422, "schema_violation")
	list, err := e.store.CollectionList(ctx, e.Tenant)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := e.store.CollectionDelete(ctx, e.Tenant, "a"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM documents`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d documents left after deleting their collection", n)
	}
	_, err = e.store.DocGet(ctx, e.Tenant, "a", "x")
	wantProblem(t, err, 404, "collection_not_found")
	_ = time.Second
}

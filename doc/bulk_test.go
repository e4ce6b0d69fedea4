package doc_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stratadb/strata/doc"
)

func TestImportAtomicRefusesEverythingOnOneBadLine(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "imp"})
	ndjson := "{\"a\": 1}\n\n{\"a\": 2, \"a\": 3}\n{\"b\": [1, 2]}\nnot json\n{\"c\": \"é\"}\n"
	rep, err := e.store.DocImport(e.ctx, e.Tenant, "imp", strings.NewReader(ndjson), doc.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 5 || rep.Imported != 0 || rep.Failed != 2 || len(rep.Errors) != 2 {
		t.Fatalf("report %+v", rep)
	}
	if rep.Errors[0].Line != 3 || rep.Errors[0].Code != "duplicate_key" || rep.Errors[1].Line != 5 || rep.Errors[1].Code != "invalid_json" {
		t.Errorf("errors %+v: want line 3 duplicate_key and line 5 invalid_json", rep.Errors)
	}
	n, _, _ := e.store.DocCount(e.ctx, e.Tenant, "imp", "", 100)
	if n != 0 {
		t.Fatalf("an atomic import with bad lines wrote %d documents", n)
	}
}

func TestImportPartialAndRoundTrip(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "src"})
	e.collection(t, doc.CollectionInput{Name: "dst"})
	var b strings.Builder
	for i := range 4500 {
		if i == 100 {
			b.WriteString("{broken\n")
			continue
		}
		fmt.Fprintf(&b, `{"n": %d, "s": "línea %d"}`+"\n", i, i)
	}
	var progress []int64
	rep, err := e.store.DocImport(e.ctx, e.Tenant, "src", strings.NewReader(b.String()),
		doc.ImportOptions{Partial: true, Progress: func(lines, _ int64) { progress = append(progress, lines) }})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Lines != 4500 || rep.Imported != 4499 || rep.Failed != 1 || rep.Errors[0].Line != 101 {
		t.Fatalf("report %+v", rep)
	}
	if len(progress) < 3 || progress[len(progress)-1] != 4500 {
		t.Errorf("progress %v", progress)
	}
	var out bytes.Buffer
	n, err := e.store.DocExport(e.ctx, e.Tenant, "src", &out, doc.ExportOptions{})
	if err != nil || n != 4499 {
		t.Fatalf("export %d %v", n, err)
	}
	rep, err = e.store.DocImport(e.ctx, e.Tenant, "dst", bytes.NewReader(out.Bytes()), doc.ImportOptions{Envelopes: true})
	if err != nil || rep.Imported != 4499 {
		t.Fatalf("re-import %+v %v", rep, err)
	}
	var again bytes.Buffer
	if _, err := e.store.DocExport(e.ctx, e.Tenant, "dst", &again, doc.ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	// Same ids and data; only timestamps differ.
	strip := func(s string) string {
		var kept []string
		for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
			i := strings.Index(line, `"created_at"`)
			j := strings.Index(line, `"data"`)
			kept = append(kept, line[:i]+line[j:])
		}
		return strings.Join(kept, "\n")
	}
	if strip(out.String()) != strip(again.String()) {
		t.Fatal("export → import → export changed ids or data")
	}
	// Importing the same envelopes again: atomic fails on the first existing id.
	_, err = e.store.DocImport(e.ctx, e.Tenant, "dst", bytes.NewReader(out.Bytes()), doc.ImportOptions{Envelopes: true})
	wantProblem(t, err, 409, "document_exists")
	// Partial reports each existing id as a failed line.
	rep, err = e.store.DocImport(e.ctx, e.Tenant, "dst", strings.NewReader(strings.SplitN(out.String(), "\n", 3)[0]+"\n"+`{"id": "fresh", "data": {"x": 1}}`+"\n"),
		doc.ImportOptions{Envelopes: true, Partial: true})
	if err != nil || rep.Imported != 1 || rep.Failed != 1 || rep.Errors[0].Code != "document_exists" {
		t.Fatalf("partial re-import %+v %v", rep, err)
	}
	// Every imported document is on the change feed.
	var feedRows int
	if err := e.Pool.QueryRow(context.Background(), `SELECT sum(coalesce(array_length(keys, 1), 1)) FROM changes WHERE scope = 'dst'`).Scan(&feedRows); err != nil || feedRows != 4500 {
		t.Errorf("%d feed entries for dst, want 4500", feedRows)
	}
}

func TestImportTooLongLine(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "small", MaxDocBytes: 100})
	long := `{"x": "` + strings.Repeat("y", 200000) + `"}`
	rep, err := e.store.DocImport(e.ctx, e.Tenant, "small", strings.NewReader(`{"a": 1}`+"\n"+long+"\n"+`{"b": 2}`), doc.ImportOptions{Partial: true})
	if err != nil || rep.Imported != 2 || rep.Failed != 1 || rep.Errors[0].Line != 2 || rep.Errors[0].Code != "document_too_large" {
		t.Fatalf("%+v %v", rep, err)
	}
}

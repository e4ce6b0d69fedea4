package doc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stratadb/strata/doc"
)

func benchBody(i int) string {
	return fmt.Sprintf(`{"title": "document %d", "status": "s%d", "n": %d, "tags": ["a", "b%d"], "text": "%s"}`,
		i, i%1000, i, i%7, strings.Repeat("lorem ipsum ", 10))
}

// BenchmarkDocCreate is one create (document, version, feed entry, audit row) per op.
func BenchmarkDocCreate(b *testing.B) {
	e := setupB(b)
	i := 0
	b.ResetTimer()
	for b.Loop() {
		i++
		if _, err := e.store.DocCreate(e.ctx, e.Tenant, "b", doc.DocInput{Data: json.RawMessage(benchBody(i))}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDocImport imports 10,000 lines per op.
func BenchmarkDocImport(b *testing.B) {
	e := setupB(b)
	var buf bytes.Buffer
	for i := range 10000 {
		buf.WriteString(benchBody(i) + "\n")
	}
	b.SetBytes(int64(buf.Len()))
	n := 0
	for b.Loop() {
		n++
		name := fmt.Sprintf("imp%d", n)
		if _, err := e.store.CollectionCreate(e.ctx, e.Tenant, doc.CollectionInput{Name: name}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.store.DocImport(e.ctx, e.Tenant, name, bytes.NewReader(buf.Bytes()), doc.ImportOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func setupB(b *testing.B) *env {
	e := setupTB(b)
	if _, err := e.store.CollectionCreate(e.ctx, e.Tenant, doc.CollectionInput{Name: "b"}); err != nil {
		b.Fatal(err)
	}
	_ = context.Background()
	return e
}

// BenchmarkDocGet is a get by id through the Go API against the same row read by a bare
// primary-key SELECT, on the same pool.
func BenchmarkDocGet(b *testing.B) {
	e := setupTB(b)
	e.collection(b, doc.CollectionInput{Name: "b"})
	for i := range 100 {
		if _, err := e.store.DocCreate(e.ctx, e.Tenant, "b", doc.DocInput{ID: fmt.Sprintf("d%d", i), Data: json.RawMessage(`{"title": "x", "n": 1}`)}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("strata", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := e.store.DocGet(e.ctx, e.Tenant, "b", fmt.Sprintf("d%d", i%100)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			var body []byte
			if err := e.Pool.QueryRow(e.ctx, `SELECT body FROM strata.documents WHERE id = $1 LIMIT 1`, fmt.Sprintf("d%d", i%100)).Scan(&body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package doc_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/problem"
)

func randomBody(r *rand.Rand, i int) json.RawMessage {
	m := map[string]any{"i": i}
	keys := []string{"a", "b", "c", "d", "nested"}
	for _, k := range keys {
		switch r.IntN(4) {
		case 0:
			m[k] = r.IntN(100)
		case 1:
			m[k] = fmt.Sprintf("s%d", r.IntN(10))
		case 2:
			m[k] = []any{r.IntN(3), "x", map[string]any{"deep": r.IntN(2) == 0, "n": nil}}
		}
	}
	if r.IntN(5) == 0 { // sometimes a big change, so snapshots replace deltas
		big := make([]int, 50)
		for j := range big {
			big[j] = r.IntN(1000)
		}
		m["big"] = big
	}
	b, _ := json.Marshal(m)
	return b
}

// Every version of a document with a long, random history (replaces, patches, deletes,
// restores) reads back exactly as it was written — by number and as of its time — and
// reverting to any of them reproduces it. The snapshot interval is 8 in these tests, so
// the history mixes snapshots and chains of reverse deltas.
func TestHistoryReconstructsEveryVersion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.collection(t, doc.CollectionInput{Name: "h"})
	ctx := e.ctx
	r := rand.New(rand.NewPCG(3, 4))
	type written struct {
		body    json.RawMessage // nil for a deletion
		at      time.Time
		deleted bool
	}
	var history []written
	first := randomBody(r, 0)
	d, err := e.store.DocCreate(ctx, e.Tenant, "h", doc.DocInput{ID: "doc", Data: first})
	if err != nil {
		t.Fatal(err)
	}
	history = append(history, written{body: first, at: d.UpdatedAt})
	deleted := false
	for i := 1; i < 120; i++ {
		var out doc.Document
		switch {
		case deleted:
			out, err = e.store.DocRestore(ctx, e.Tenant, "h", "doc", nil)
			deleted = false
			if err == nil {
				history = append(history, written{body: out.Data, at: out.UpdatedAt})
			}
		case r.IntN(12) == 0:
			out, err = e.store.DocDelete(ctx, e.Tenant, "h", "doc", nil)
			deleted = true
			history = append(history, written{at: out.UpdatedAt, deleted: true})
		case r.IntN(3) == 0:
			patch := fmt.Sprintf(`{"p%d": %d, "a": null}`, i%5, i)
			out, err = e.store.DocPatch(ctx, e.Tenant, "h", "doc", doc.MergePatch, json.RawMessage(patch), nil)
			history = append(history, written{body: out.Data, at: out.UpdatedAt})
		default:
			b := randomBody(r, i)
			out, err = e.store.DocReplace(ctx, e.Tenant, "h", "doc", b, nil)
			history = append(history, written{body: b, at: out.UpdatedAt})
		}
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if out.Version != int64(len(history)) {
			t.Fatalf("write %d made version %d, want %d", i, out.Version, len(history))
		}
		time.Sleep(time.Millisecond) // distinct commit times for as_of
	}
	for i, w := range history {
		v := int64(i + 1)
		got, err := e.store.DocGetAt(ctx, e.Tenant, "h", "doc", doc.At{Version: v})
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		if got.Deleted != w.deleted || (!w.deleted && !sameJSON(got.Data, w.body)) {
			t.Fatalf("version %d = %s (deleted %v), want %s (deleted %v)", v, got.Data, got.Deleted, w.body, w.deleted)
		}
		asOf, err := e.store.DocGetAt(ctx, e.Tenant, "h", "doc", doc.At{AsOf: w.at})
		if err != nil || asOf.Version != v {
			t.Fatalf("as of version %d's time: got version %d (%v)", v, asOf.Version, err)
		}
	}
	_, err = e.store.DocGetAt(ctx, e.Tenant, "h", "doc", doc.At{AsOf: history[0].at.Add(-time.Hour)})
	wantProblem(t, err, 404, "document_not_found")
	// Revert to a few old versions.
	for _, v := range []int64{1, 9, 33, 64} {
		if history[v-1].deleted {
			continue
		}
		out, err := e.store.DocRevert(ctx, e.Tenant, "h", "doc", v, nil)
		if err != nil {
			t.Fatalf("revert to %d: %v", v, err)
		}
		if !sameJSON(out.Data, history[v-1].body) {
			t.Fatalf("revert to %d gave %s", v, out.Data)
		}
	}
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

func TestRetentionPrunesOldVersions(t *testing.T) {
	t.Parallel()
	e := setup(t)
	keep := 3
	e.collection(t, doc.CollectionInput{Name: "r", Retention: &doc.Retention{KeepVersions: &keep}})
	ctx := e.ctx
	for i := range 10 {
		if _, err := e.store.DocReplace(ctx, e.Tenant, "r", "x", json.RawMessage(fmt.Sprintf(`{"n": %d}`, i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	var collID string
	if err := e.Pool.QueryRow(ctx, `SELECT id FROM collections WHERE name = 'r'`).Scan(&collID); err != nil {
		t.Fatal(err)
	}
	n, err := e.store.PruneCollection(ctx, collID, &keep, nil)
	if err != nil || n != 7 {
		t.Fatalf("pruned %d (%v), want 7", n, err)
	}
	vs, _ := e.store.DocVersions(ctx, e.Tenant, "r", "x", 0, 100)
	if len(vs) != 3 || vs[2].Version != 8 {
		t.Fatalf("kept %v", vs)
	}
	for v := int64(8); v <= 10; v++ {
		got, err := e.store.DocGetAt(ctx, e.Tenant, "r", "x", doc.At{Version: v})
		if err != nil || !sameJSON(got.Data, json.RawMessage(fmt.Sprintf(`{"n": %d}`, v-1))) {
			t.Fatalf("kept version %d reads %s (%v)", v, got.Data, err)
		}
	}
	_, err = e.store.DocGetAt(ctx, e.Tenant, "r", "x", doc.At{Version: 2})
	if p, ok := problem.As(err); !ok || p.Code != "version_not_found" {
		t.Fatalf("pruned version: %v", err)
	}
}

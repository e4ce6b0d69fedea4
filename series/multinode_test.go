package series_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/series"
)

// Two nodes on one database, each with its in-process latest-value cache: a reading
// committed on one node is what the other node serves next (its cached entry is dropped
// by the commit notification), and reaches the other node's live streams.
func TestTwoNodesStayCoherent(t *testing.T) {
	t.Parallel()
	w := testworld.New(t, series.Schema)
	a := startEnv(t, w, series.Config{NodeID: "a"})
	b := startEnv(t, w, series.Config{NodeID: "b"})
	d, _, _ := a.device(climate("shared"))
	owner := w.As(testworld.Owner)
	ingest := func(e *env, v float64) {
		t.Helper()
		body := fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":%g}}`, d.ID, time.Now().UTC().Format(time.RFC3339Nano), v)
		if res, err := e.svc.Ingest(owner, w.Tenant, items(t, body), nil); err != nil || res.Accepted != 1 {
			t.Fatalf("ingest: %+v %v", res, err)
		}
	}
	latest := func(e *env) float64 {
		t.Helper()
		l, err := e.svc.LatestDevice(owner, w.Tenant, d.ID)
		if err != nil || len(l.Values) != 1 {
			t.Fatalf("latest %+v %v", l, err)
		}
		return l.Values[0].Value
	}
	ingest(a, 1)
	for range 2 { // the second read is from b's cache
		if latest(b) != 1 {
			t.Fatal("b does not see a's reading")
		}
	}
	sub, err := b.svc.Subscribe(owner, w.Tenant, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ingest(a, 2)
	eventually(t, "b serving the new value", func() bool { return latest(b) == 2 })
	// b's stream may first replay value 1 (its commit notice from a can reach b after the
	// subscription opened); it must then deliver 2, and nothing else.
	timeout := time.After(30 * time.Second)
	for seen2 := false; !seen2; {
		select {
		case evs := <-sub.C:
			for _, ev := range evs {
				switch ev.Value {
				case 2:
					seen2 = true
				case 1:
				default:
					t.Fatalf("b's stream: %+v", evs)
				}
			}
		case <-timeout:
			t.Fatal("b's live stream never saw a's reading")
		}
	}
}

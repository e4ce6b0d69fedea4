package series_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/series"
)

// Rollups are maintained incrementally as readings commit, and a bucketed history read
// from them equals the same aggregation computed from the raw readings — across batches,
// late readings and redeliveries.
func TestHistoryRollupsMatchRaw(t *testing.T) {
	t.Parallel()
	e := newEnv(t, series.Config{BatchSize: 97}) // small batches: rollup rows are merged across many commits
	d, _, _ := e.device(climate("lab"))
	ctx := e.w.As(testworld.Owner)
	end := time.Now().UTC().Truncate(time.Hour)
	start := end.Add(-6 * time.Hour)
	var its []string
	for ts, i := start, 0; ts.Before(end); ts, i = ts.Add(37*time.Second), i+1 {
		its = append(its, fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":%g,"humidity":%d}}`,
			d.ID, ts.Format(time.RFC3339Nano), 20+10*math.Sin(float64(i)/10), i%100))
	}
	// Send the second half first, so the first half arrives late into existing buckets.
	half := len(its) / 2
	for _, part := range [][]string{its[half:], its[:half]} {
		if res, err := e.svc.Ingest(ctx, e.w.Tenant, items(t, part...), nil); err != nil || res.Accepted != len(part) {
			t.Fatalf("ingest: %+v %v", res, err)
		}
	}
	// A retry of a batch (Idempotency-Key over HTTP) stores nothing twice.
	if res, err := e.svc.Ingest(ctx, e.w.Tenant, items(t, its[:50]...), &series.IngestOptions{Retry: true}); err != nil || res.Accepted != 50 {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if n := count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID); n != 2*len(its) {
		t.Fatalf("%d readings, want %d: the retry stored duplicates", n, 2*len(its))
	}
	for _, bucket := range []string{"1m", "5m", "1h", "2h", "90s"} {
		for _, agg := range []string{"avg", "min", "max", "sum", "count", "last"} {
			h, err := e.svc.History(ctx, e.w.Tenant, d.ID, series.HistoryQuery{From: start, To: end, Bucket: bucket, Agg: agg,
				Metrics: []string{"temperature"}})
			if err != nil {
				t.Fatalf("%s %s: %v", bucket, agg, err)
			}
			want := rawBuckets(t, e, d.ID, start, end, bucket, agg)
			got := h.Series[0].Points
			if len(got) != len(want) {
				t.Fatalf("%s %s from %s: %d points, want %d", bucket, agg, h.Source, len(got), len(want))
			}
			for i := range got {
				if !got[i].Time.Equal(want[i].Time) || math.Abs(got[i].Value-want[i].Value) > 1e-9*math.Max(1, math.Abs(want[i].Value)) {
					t.Fatalf("%s %s from %s, point %d: %+v, want %+v", bucket, agg, h.Source, i, got[i], want[i])
				}
			}
		}
	}
	src := func(bucket string) string {
		h, err := e.svc.History(ctx, e.w.Tenant, d.ID, series.HistoryQuery{From: start, To: end, Bucket: bucket, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		return h.Source + " " + h.Bucket
	}
	for bucket, want := range map[string]string{"1h": "hour 1h", "5m": "minute 5m", "10s": "raw 10s", "raw": "raw raw", "auto": "minute 1m",
		"1d": "hour 1d"} {
		if got := src(bucket); got != want {
			t.Errorf("bucket %s read %q, want %q", bucket, got, want)
		}
	}
	// Raw series are capped per series and say so.
	h, err := e.svc.History(ctx, e.w.Tenant, d.ID, series.HistoryQuery{From: start, To: end, Bucket: "raw", Limit: 10})
	if err != nil || len(h.Series) != 2 || len(h.Series[0].Points) != 10 || !h.Series[0].Truncated {
		t.Fatalf("capped raw: %+v %v", h, err)
	}
	// A bucket that would exceed the cap is refused; auto widens instead.
	if _, err := e.svc.History(ctx, e.w.Tenant, d.ID, series.HistoryQuery{From: end.Add(-30 * 24 * time.Hour), To: end, Bucket: "1m"}); !problem.HasCode(err, "too_many_points") {
		t.Fatalf("too many points: %v", err)
	}
	h, err = e.svc.History(ctx, e.w.Tenant, d.ID, series.HistoryQuery{From: end.Add(-30 * 24 * time.Hour), To: end})
	if err != nil || h.Bucket != "1h" || h.Source != "hour" {
		t.Fatalf("auto over 30 days: %s from %s, %v", h.Bucket, h.Source, err)
	}
	for _, q := range []series.HistoryQuery{{Agg: "median"}, {Bucket: "1x"}, {From: end, To: start}, {Limit: 100000}, {Metrics: []string{"a b"}}} {
		if _, err := e.svc.History(ctx, e.w.Tenant, d.ID, q); !errors.Is(err, problem.ErrUnprocessable) {
			t.Errorf("%+v: %v, want 422", q, err)
		}
	}
}

// rawBuckets aggregates the raw readings with SQL, as the reference.
func rawBuckets(t *testing.T, e *env, device string, from, to time.Time, bucket, agg string) []series.Point {
	t.Helper()
	width := map[string]time.Duration{"1m": time.Minute, "5m": 5 * time.Minute, "1h": time.Hour, "2h": 2 * time.Hour, "90s": 90 * time.Second}[bucket]
	expr := map[string]string{"avg": "avg(value)", "min": "min(value)", "max": "max(value)", "sum": "sum(value)",
		"count": "count(*)::float8", "last": "(array_agg(value ORDER BY ts DESC))[1]"}[agg]
	rows, err := e.w.Pool.Query(context.Background(), `SELECT date_bin(make_interval(secs => $4), ts, 'epoch') AS b, `+expr+`
		FROM (SELECT DISTINCT ON (ts) ts, value FROM strata.readings WHERE device_id = $1 AND metric = 'temperature' AND ts >= $2 AND ts < $3) r
		GROUP BY b ORDER BY b`, device, from, to, width.Seconds())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []series.Point
	for rows.Next() {
		var p series.Point
		if err := rows.Scan(&p.Time, &p.Value); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

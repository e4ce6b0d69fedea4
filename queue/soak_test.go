package queue_test

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratadb/strata/queue"
)

// TestSoak pushes and works jobs steadily for STRATA_QUEUE_SOAK (a duration, such as
// 10m; the test is skipped without it) and shows that the hot table and its indexes do
// not grow: finished jobs leave it, and the vacuum keeps its space reused. It logs the
// table's size, dead rows and the throughput every 30 seconds.
//
//	STRATA_QUEUE_SOAK=10m go test -run TestSoak -v -timeout 30m ./queue/
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("STRATA_QUEUE_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set STRATA_QUEUE_SOAK=10m to run the soak test")
	}
	e := setup(t, queue.Config{HistoryRetention: time.Minute})
	ctx := e.ctx
	const rate, batch = 2000, 200 // jobs a second offered
	var worked atomic.Int64
	w := e.q.NewWorker(queue.WorkerConfig{Tenant: e.Tenant, Queues: map[string]int{"soak": 50}})
	w.Handle("noop", func(context.Context, *queue.Job) error { worked.Add(1); return nil })
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop(context.Background()) }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pushed atomic.Int64
	wg.Go(func() {
		in := make([]queue.JobInput, batch)
		for i := range in {
			in[i] = queue.JobInput{Kind: "noop", Payload: []byte(`{"pad":"0123456789012345678901234567890123456789"}`)}
		}
		tick := time.NewTicker(time.Second / (rate / batch))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := e.q.JobPushMany(ctx, e.Tenant, "soak", in); err != nil {
				t.Error(err)
				return
			}
			pushed.Add(batch)
		}
	})
	type sample struct {
		at                       time.Duration
		heap, index, live, dead  int64
		histRows, worked, pushed int64
	}
	var samples []sample
	start := time.Now()
	last := int64(0)
	for time.Since(start) < d {
		time.Sleep(30 * time.Second)
		var s sample
		s.at = time.Since(start).Round(time.Second)
		if err := e.Pool.QueryRow(ctx, `SELECT pg_relation_size('jobs'), pg_indexes_size('jobs'),
				pg_stat_get_live_tuples('jobs'::regclass), pg_stat_get_dead_tuples('jobs'::regclass),
				(SELECT count(*) FROM job_history)`).Scan(&s.heap, &s.index, &s.live, &s.dead, &s.histRows); err != nil {
			t.Fatal(err)
		}
		s.worked, s.pushed = worked.Load(), pushed.Load()
		samples = append(samples, s)
		t.Logf("%6s  hot table %6d kB + indexes %6d kB  live %6d dead %7d  history %7d rows  %5.0f jobs/s worked (%d pushed, %d worked)",
			s.at, s.heap/1024, s.index/1024, s.live, s.dead, s.histRows, float64(s.worked-last)/30, s.pushed, s.worked)
		last = s.worked
	}
	close(stop)
	wg.Wait()
	if len(samples) < 6 {
		t.Fatalf("only %d samples; run for at least 3 minutes", len(samples))
	}
	// After the first minutes' warm-up, the table stays within a quarter of its early
	// peak (and never beyond 8 MB of growth), and the workers keep up.
	early := int64(0)
	for _, s := range samples[1:4] {
		early = max(early, s.heap+s.index)
	}
	for _, s := range samples[4:] {
		if size := s.heap + s.index; size > early*5/4 && size > early+8<<20 {
			t.Errorf("at %s the hot table is %d kB, after %d kB early on: it grows", s.at, size/1024, early/1024)
		}
	}
	if lag := samples[len(samples)-1].pushed - samples[len(samples)-1].worked; lag > rate*5 {
		t.Errorf("the workers fell %d jobs behind", lag)
	}
}

package queue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/queue"
)

// node starts another queue client on the same database, as a second strata process
// would: its own notification listener and background work.
func (e *env) node(t *testing.T, cfg queue.Config) *queue.Client {
	t.Helper()
	l := db.NewListener(e.Pool, nil)
	l.Start()
	c := queue.New(e.Pool, e.Auth, l, cfg)
	bg, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(bg); close(done) }()
	t.Cleanup(func() { stop(); <-done; l.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !l.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("listener never connected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c
}

func TestFIFOGroups(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	// Two groups interleaved, and an ungrouped job.
	var in []queue.JobInput
	for i := range 3 {
		in = append(in, queue.JobInput{Kind: "a", GroupKey: "A", Payload: json.RawMessage(fmt.Sprint(i))},
			queue.JobInput{Kind: "b", GroupKey: "B", Payload: json.RawMessage(fmt.Sprint(i))})
	}
	in = append(in, queue.JobInput{Kind: "free"})
	if _, err := e.q.JobPushMany(ctx, e.Tenant, "g", in); err != nil {
		t.Fatal(err)
	}
	// Only each group's head is runnable.
	jobs, err := e.q.JobClaim(ctx, e.Tenant, "g", &queue.ClaimOptions{Limit: 100})
	if err != nil || len(jobs) != 3 {
		t.Fatalf("first claim: %d jobs %v", len(jobs), err)
	}
	heads := map[string]*queue.Job{}
	for _, j := range jobs {
		heads[j.GroupKey] = j
	}
	if string(heads["A"].Payload) != "0" || string(heads["B"].Payload) != "0" || heads[""] == nil {
		t.Fatalf("heads: %+v", heads)
	}
	page, err := e.q.JobList(ctx, e.Tenant, "g", &queue.JobFilter{State: queue.StateBlocked})
	if err != nil || len(page.Items) != 4 {
		t.Fatalf("blocked: %d %v", len(page.Items), err)
	}
	// A failed head retries before its group moves on; a completed one lets the next run.
	if _, err := e.q.JobFail(ctx, e.Tenant, "g", heads["A"].Claim(), "x", &queue.FailOptions{RetryIn: -1}); err != nil {
		t.Fatal(err)
	}
	if err := e.q.JobComplete(ctx, e.Tenant, "g", heads["B"].Claim(), nil); err != nil {
		t.Fatal(err)
	}
	jobs, err = e.q.JobClaim(ctx, e.Tenant, "g", &queue.ClaimOptions{Limit: 100})
	if err != nil || len(jobs) != 2 {
		t.Fatalf("second claim: %d jobs %v", len(jobs), err)
	}
	for _, j := range jobs {
		want := map[string]string{"A": "0", "B": "1"}[j.GroupKey]
		if string(j.Payload) != want {
			t.Fatalf("group %s ran %s, want %s", j.GroupKey, j.Payload, want)
		}
	}
	// Cancelling a group's running head lets the next one run.
	for _, j := range jobs {
		if j.GroupKey == "A" {
			if err := e.q.JobCancel(ctx, e.Tenant, "g", j.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	next, err := e.q.JobClaim(ctx, e.Tenant, "g", &queue.ClaimOptions{Limit: 100})
	if err != nil || len(next) != 1 || next[0].GroupKey != "A" || string(next[0].Payload) != "1" {
		t.Fatalf("after cancel: %v %v", next, err)
	}
	// A push to a group that is running waits behind it.
	p, err := e.q.JobPush(ctx, e.Tenant, "g", queue.JobInput{Kind: "a", GroupKey: "A", Payload: json.RawMessage("9")})
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := e.q.JobGet(ctx, e.Tenant, "g", p.ID); j.State != queue.StateBlocked {
		t.Fatalf("pushed behind a running group: %s", j.State)
	}
}

// Pause and resume take effect on every node; running and rate limits hold across them.
func TestPauseAndLimitsAcrossNodes(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{PollInterval: 50 * time.Millisecond})
	other := e.node(t, queue.Config{PollInterval: 50 * time.Millisecond})
	ctx := e.ctx
	if _, err := e.q.QueuePause(ctx, e.Tenant, "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.JobPush(ctx, e.Tenant, "p", queue.JobInput{Kind: "k"}); err != nil {
		t.Fatal(err)
	}
	if jobs, err := other.JobClaim(ctx, e.Tenant, "p", &queue.ClaimOptions{Wait: 300 * time.Millisecond}); err != nil || len(jobs) != 0 {
		t.Fatalf("claimed from a paused queue on another node: %v %v", jobs, err)
	}
	got := make(chan int, 1)
	go func() {
		jobs, _ := other.JobClaim(ctx, e.Tenant, "p", &queue.ClaimOptions{Wait: 5 * time.Second})
		got <- len(jobs)
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	info, err := e.q.QueueResume(ctx, e.Tenant, "p")
	if err != nil || info.Paused {
		t.Fatalf("resume: %+v %v", info, err)
	}
	if n := <-got; n != 1 || time.Since(start) > time.Second {
		t.Fatalf("after resume the other node claimed %d in %s", n, time.Since(start))
	}

	// max_running 2: a claim on either node gets at most what is left.
	two := 2
	if _, err := e.q.QueueUpdate(ctx, e.Tenant, "lim", queue.QueueSettings{MaxRunning: &two}); err != nil {
		t.Fatal(err)
	}
	in := make([]queue.JobInput, 10)
	for i := range in {
		in[i] = queue.JobInput{Kind: "k"}
	}
	if _, err := e.q.JobPushMany(ctx, e.Tenant, "lim", in); err != nil {
		t.Fatal(err)
	}
	a, _ := e.q.JobClaim(ctx, e.Tenant, "lim", &queue.ClaimOptions{Limit: 10})
	b, _ := other.JobClaim(ctx, e.Tenant, "lim", &queue.ClaimOptions{Limit: 10})
	if len(a) != 2 || len(b) != 0 {
		t.Fatalf("max_running 2: claimed %d and %d", len(a), len(b))
	}
	if err := e.q.JobComplete(ctx, e.Tenant, "lim", a[0].Claim(), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ = other.JobClaim(ctx, e.Tenant, "lim", &queue.ClaimOptions{Limit: 10}); len(b) != 1 {
		t.Fatalf("after one finished: claimed %d", len(b))
	}
	// Removing the cap and adding a rate of 3 a second.
	zero, three := 0, 3
	info, err = e.q.QueueUpdate(ctx, e.Tenant, "lim", queue.QueueSettings{MaxRunning: &zero, MaxStartsPerSecond: &three})
	if err != nil || info.MaxRunning != nil || info.MaxStartsPerSecond == nil || *info.MaxStartsPerSecond != 3 || info.Running != 2 {
		t.Fatalf("update: %+v %v", info, err)
	}
	c1, _ := e.q.JobClaim(ctx, e.Tenant, "lim", &queue.ClaimOptions{Limit: 2})
	c2, _ := other.JobClaim(ctx, e.Tenant, "lim", &queue.ClaimOptions{Limit: 10})
	if len(c1)+len(c2) != 3 {
		t.Fatalf("rate 3/s: claimed %d and %d at once", len(c1), len(c2))
	}
	c3, _ := other.JobClaim(ctx, e.Tenant, "lim", &queue.ClaimOptions{Limit: 10, Wait: 3 * time.Second})
	if len(c3) == 0 || len(c3) > 3 {
		t.Fatalf("a second later: claimed %d", len(c3))
	}
	wantProblem(t, func() error {
		bad := -1
		_, err := e.q.QueueUpdate(ctx, e.Tenant, "lim", queue.QueueSettings{MaxRunning: &bad})
		return err
	}(), 422, "invalid_limit")
	_, err = e.q.QueuePause(e.As(testworld.Member), e.Tenant, "lim")
	wantProblem(t, err, 403, "forbidden")
}

func TestQueueListCounts(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	_, _ = e.q.JobPushMany(ctx, e.Tenant, "c", []queue.JobInput{
		{Kind: "k"}, {Kind: "k"}, {Kind: "k", Delay: time.Hour}, {Kind: "k", GroupKey: "g"}, {Kind: "k", GroupKey: "g"},
	})
	if _, err := e.q.JobClaim(ctx, e.Tenant, "c", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.JobPush(ctx, e.Tenant, "other", queue.JobInput{Kind: "k"}); err != nil {
		t.Fatal(err)
	}
	qs, err := e.q.QueueList(e.As(testworld.Viewer), e.Tenant)
	if err != nil || len(qs) != 2 || qs[0].Name != "c" || qs[1].Name != "other" {
		t.Fatalf("list: %+v %v", qs, err)
	}
	c := qs[0]
	if c.Available != 2 || c.Scheduled != 1 || c.Blocked != 1 || c.Running != 1 || c.Dead != 0 || c.OldestWaiting <= 0 {
		t.Fatalf("counts: %+v", c)
	}
	// Another tenant sees none of them.
	qs, err = e.q.QueueList(e.As(testworld.Outsider), e.Other)
	if err != nil || len(qs) != 0 {
		t.Fatalf("other tenant: %+v %v", qs, err)
	}
	_, err = e.q.QueueList(e.As(testworld.Outsider), e.Tenant)
	wantProblem(t, err, 404, "tenant_not_found")
}

// One job per tick across two nodes.
func TestSchedulesOncePerTick(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	_ = e.node(t, queue.Config{})
	ctx := e.ctx
	s, created, err := e.q.ScheduleSet(ctx, e.Tenant, "cron", "tick", queue.ScheduleInput{Spec: "@every 1s", Kind: "tick",
		Payload: json.RawMessage(`{"x":1}`)})
	if err != nil || !created || s.NextRunAt.IsZero() {
		t.Fatalf("set: %+v %v %v", s, created, err)
	}
	if _, created, err = e.q.ScheduleSet(ctx, e.Tenant, "cron", "tick", queue.ScheduleInput{Spec: "@every 1s", Kind: "tick"}); err != nil || created {
		t.Fatalf("replace: %v %v", created, err)
	}
	_, _, err = e.q.ScheduleSet(ctx, e.Tenant, "cron", "bad", queue.ScheduleInput{Spec: "every minute", Kind: "tick"})
	wantProblem(t, err, 422, "invalid_schedule")
	_, _, err = e.q.ScheduleSet(ctx, e.Tenant, "cron", "t", queue.ScheduleInput{Spec: "* * * * *", Kind: ""})
	wantProblem(t, err, 422, "invalid_kind")
	time.Sleep(3300 * time.Millisecond)
	rows, err := e.Pool.Query(ctx, `SELECT created_at FROM jobs WHERE kind = 'tick' ORDER BY created_at`)
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for rows.Next() {
		var at time.Time
		_ = rows.Scan(&at)
		times = append(times, at)
	}
	rows.Close()
	if len(times) < 2 || len(times) > 4 {
		t.Fatalf("%d jobs in 3.3s of @every 1s", len(times))
	}
	for i := 1; i < len(times); i++ {
		if times[i].Sub(times[i-1]) < 500*time.Millisecond {
			t.Fatalf("two jobs for one tick: %v", times)
		}
	}
	list, err := e.q.ScheduleList(ctx, e.Tenant, "cron")
	if err != nil || len(list) != 1 || list[0].LastJobID == nil || list[0].LastRunAt == nil {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := e.q.ScheduleDelete(ctx, e.Tenant, "cron", "tick"); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, e.q.ScheduleDelete(ctx, e.Tenant, "cron", "tick"), 404, "schedule_not_found")
}

// A worker of every tenant's queues of a name runs each tenant's jobs, each knowing its
// tenant; only a platform administrator may start one.
func TestWorkerOfEveryTenant(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{PollInterval: 50 * time.Millisecond})
	var mu sync.Mutex
	seen := map[string]int{}
	w := e.q.NewWorker(queue.WorkerConfig{Queues: map[string]int{"media": 3}})
	w.Handle("thumb", func(_ context.Context, j *queue.Job) error {
		mu.Lock()
		seen[j.Tenant]++
		mu.Unlock()
		return nil
	})
	wantProblem(t, w.Start(e.ctx), 403, "forbidden")
	w = e.q.NewWorker(queue.WorkerConfig{Queues: map[string]int{"media": 3}})
	w.Handle("thumb", func(_ context.Context, j *queue.Job) error {
		mu.Lock()
		seen[j.Tenant]++
		mu.Unlock()
		return nil
	})
	if err := w.Start(auth.System(context.Background())); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := e.q.JobPush(e.ctx, e.Tenant, "media", queue.JobInput{Kind: "thumb"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.q.JobPush(e.As(testworld.Outsider), e.Other, "media", queue.JobInput{Kind: "thumb"}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "both tenants' jobs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[e.Tenant] == 5 && seen[e.Other] == 5
	})
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Stop lets running jobs finish within its grace; past it, they are released without
// counting the attempt. A lost lease (a cancelled job) cancels its handler.
func TestWorkerShutdownAndCancel(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{PollInterval: 50 * time.Millisecond})
	ctx := e.ctx
	var started atomic.Int32
	cancelled := make(chan queue.JobID, 10)
	w := e.q.NewWorker(queue.WorkerConfig{Tenant: e.Tenant, Queues: map[string]int{"s": 5}, Lease: 3 * time.Second})
	w.Handle("quick", func(context.Context, *queue.Job) error {
		started.Add(1)
		time.Sleep(200 * time.Millisecond)
		return nil
	})
	w.Handle("stuck", func(ctx context.Context, j *queue.Job) error {
		started.Add(1)
		<-ctx.Done()
		cancelled <- j.ID
		return ctx.Err()
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	quick, _ := e.q.JobPush(ctx, e.Tenant, "s", queue.JobInput{Kind: "quick"})
	stuck, _ := e.q.JobPush(ctx, e.Tenant, "s", queue.JobInput{Kind: "stuck"})
	doomed, _ := e.q.JobPush(ctx, e.Tenant, "s", queue.JobInput{Kind: "stuck"})
	waitFor(t, 5*time.Second, "three jobs to start", func() bool { return started.Load() == 3 })
	// Cancelling a running job: the worker's next heartbeat (a third of the lease) ends it.
	if err := e.q.JobCancel(ctx, e.Tenant, "s", doomed.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-cancelled:
		if id != doomed.ID {
			t.Fatalf("cancelled %d, want %d", id, doomed.ID)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the cancelled job's handler kept running")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := w.Stop(sctx); err == nil {
		t.Fatal("Stop past its grace with a stuck job reported no error")
	}
	if j, _ := e.q.JobGet(ctx, e.Tenant, "s", quick.ID); j.State != queue.StateCompleted {
		t.Fatalf("the quick job ended %s", j.State)
	}
	if j, _ := e.q.JobGet(ctx, e.Tenant, "s", stuck.ID); j.State != queue.StateAvailable || j.Attempt != 0 || len(j.Errors) != 0 {
		t.Fatalf("the stuck job was not released: %+v", j)
	}
	if j, _ := e.q.JobGet(ctx, e.Tenant, "s", doomed.ID); j.State != queue.StateCancelled {
		t.Fatalf("the cancelled job ended %s", j.State)
	}
}

func TestHousekeepingAndMetrics(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{HistoryRetention: time.Millisecond, DeadRetention: time.Hour})
	ctx := e.ctx
	for _, kind := range []string{"ok", "bad"} {
		if _, err := e.q.JobPush(ctx, e.Tenant, "h", queue.JobInput{Kind: kind, MaxAttempts: 1}); err != nil {
			t.Fatal(err)
		}
	}
	jobs, _ := e.q.JobClaim(ctx, e.Tenant, "h", &queue.ClaimOptions{Limit: 2})
	for _, j := range jobs {
		if j.Kind == "ok" {
			_ = e.q.JobComplete(ctx, e.Tenant, "h", j.Claim(), nil)
		} else {
			_, _ = e.q.JobFail(ctx, e.Tenant, "h", j.Claim(), "no", nil)
		}
	}
	if _, err := e.q.JobPush(ctx, e.Tenant, "h", queue.JobInput{Kind: "waiting"}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.q.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			fmt.Fprintf(&text, "%s %v\n", mf.GetName(), m.String())
		}
	}
	for _, want := range []string{"strata_queue_jobs_total", `value:"completed"`, `value:"dead"`, "strata_queue_run_seconds",
		"strata_queue_wait_seconds", "strata_queue_jobs ", "strata_queue_oldest_waiting_seconds", "strata_queue_paused"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, text.String())
		}
	}
	time.Sleep(10 * time.Millisecond)
	if err := e.q.Housekeep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, `SELECT count(*) FROM job_history WHERE state = 'completed'`); n != 0 {
		t.Fatalf("%d completed jobs kept past retention", n)
	}
	if n := e.count(t, `SELECT count(*) FROM job_history WHERE state = 'dead'`); n != 1 {
		t.Fatalf("%d dead letters kept; the dead retention is an hour", n)
	}
}

// Deleting a tenant deletes its queues' jobs and history.
func TestTenantDeletionCascades(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.As(testworld.Outsider)
	if _, err := e.q.JobPushMany(ctx, e.Other, "x", []queue.JobInput{{Kind: "a"}, {Kind: "b"}}); err != nil {
		t.Fatal(err)
	}
	jobs, _ := e.q.JobClaim(ctx, e.Other, "x", nil)
	_ = e.q.JobComplete(ctx, e.Other, "x", jobs[0].Claim(), nil)
	if err := e.Auth.TenantDelete(ctx, e.Other); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, `SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM job_history) + (SELECT count(*) FROM queues)`); n != 0 {
		t.Fatalf("%d rows of the deleted tenant's queue remain", n)
	}
}

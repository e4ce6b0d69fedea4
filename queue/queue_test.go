package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/queue"
)

func TestMain(m *testing.M) {
	if workerMain() {
		return
	}
	testdb.Main(m)
}

type env struct {
	*testworld.World
	q   *queue.Client
	ctx context.Context // the tenant's owner
}

func setup(t *testing.T, cfg queue.Config) *env {
	t.Helper()
	w := testworld.New(t, queue.Schema)
	c := queue.New(w.Pool, w.Auth, w.Listener, cfg)
	bg, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(bg); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return &env{World: w, q: c, ctx: w.As(testworld.Owner)}
}

func wantProblem(t *testing.T, err error, status int, code string) {
	t.Helper()
	p, ok := problem.As(err)
	if !ok || p.Status != status || p.Code != code {
		t.Fatalf("err = %v, want %d %s", err, status, code)
	}
}

func (e *env) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPushClaimComplete(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	p, err := e.q.JobPush(ctx, e.Tenant, "emails", queue.JobInput{Kind: "send", Payload: json.RawMessage(`{"to":"a@example.com"}`)})
	if err != nil || p.ID == 0 || p.Existing {
		t.Fatalf("push: %+v %v", p, err)
	}
	jobs, err := e.q.JobClaim(ctx, e.Tenant, "emails", &queue.ClaimOptions{Limit: 10})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	j := jobs[0]
	if j.ID != p.ID || j.Kind != "send" || j.Attempt != 1 || j.Lease == "" || j.Tenant != e.Tenant || string(j.Payload) != `{"to": "a@example.com"}` {
		t.Fatalf("claimed %+v", j)
	}
	// Nothing else to claim.
	if more, err := e.q.JobClaim(ctx, e.Tenant, "emails", nil); err != nil || len(more) != 0 {
		t.Fatalf("second claim: %v %v", more, err)
	}
	// A wrong lease or attempt changes nothing.
	bad := j.Claim()
	bad.Lease = "someone-else"
	wantProblem(t, e.q.JobComplete(ctx, e.Tenant, "emails", bad, nil), 409, "lease_lost")
	bad = j.Claim()
	bad.Attempt = 2
	wantProblem(t, e.q.JobComplete(ctx, e.Tenant, "emails", bad, nil), 409, "lease_lost")
	if err := e.q.JobComplete(ctx, e.Tenant, "emails", j.Claim(), json.RawMessage(`{"sent":true}`)); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, e.q.JobComplete(ctx, e.Tenant, "emails", j.Claim(), nil), 409, "lease_lost")
	got, err := e.q.JobGet(ctx, e.Tenant, "emails", p.ID)
	if err != nil || got.State != queue.StateCompleted || string(got.Result) != `{"sent": true}` || got.FinishedAt == nil {
		t.Fatalf("get: %+v %v", got, err)
	}
	if n := e.count(t, `SELECT count(*) FROM jobs`); n != 0 {
		t.Fatalf("hot table holds %d rows after completion", n)
	}
	_, err = e.q.JobGet(ctx, e.Tenant, "emails", p.ID+1000)
	wantProblem(t, err, 404, "job_not_found")
	_, err = e.q.JobGet(ctx, e.Tenant, "nope", p.ID)
	wantProblem(t, err, 404, "queue_not_found")
}

func TestPushManyAndUnique(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	// A large batch goes by COPY; ids come back in input order.
	in := make([]queue.JobInput, 1200)
	for i := range in {
		in[i] = queue.JobInput{Kind: "k", Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	}
	out, err := e.q.JobPushMany(ctx, e.Tenant, "bulk", in)
	if err != nil || len(out) != len(in) {
		t.Fatalf("push many: %d %v", len(out), err)
	}
	for i, p := range out {
		var i2 int
		if err := e.Pool.QueryRow(ctx, `SELECT (payload->>'i')::int FROM jobs WHERE id = $1`, p.ID).Scan(&i2); err != nil || i2 != i {
			t.Fatalf("job %d: payload %d %v", i, i2, err)
		}
	}
	// Unique keys: held while live, in a batch and across calls.
	u, err := e.q.JobPushMany(ctx, e.Tenant, "u", []queue.JobInput{
		{Kind: "k", UniqueKey: "a"}, {Kind: "k", UniqueKey: "b"}, {Kind: "k", UniqueKey: "a"}, {Kind: "k"},
	})
	if err != nil || u[0].Existing || u[1].Existing || !u[2].Existing || u[2].ID != u[0].ID || u[3].Existing {
		t.Fatalf("unique batch: %+v %v", u, err)
	}
	again, err := e.q.JobPush(ctx, e.Tenant, "u", queue.JobInput{Kind: "k", UniqueKey: "b"})
	if err != nil || !again.Existing || again.ID != u[1].ID {
		t.Fatalf("unique again: %+v %v", again, err)
	}
	// Running still holds the key; completion releases it.
	jobs, err := e.q.JobClaim(ctx, e.Tenant, "u", &queue.ClaimOptions{Limit: 10})
	if err != nil || len(jobs) != 3 {
		t.Fatalf("claim: %d %v", len(jobs), err)
	}
	again, err = e.q.JobPush(ctx, e.Tenant, "u", queue.JobInput{Kind: "k", UniqueKey: "b"})
	if err != nil || !again.Existing {
		t.Fatalf("unique while running: %+v %v", again, err)
	}
	for _, j := range jobs {
		if err := e.q.JobComplete(ctx, e.Tenant, "u", j.Claim(), nil); err != nil {
			t.Fatal(err)
		}
	}
	again, err = e.q.JobPush(ctx, e.Tenant, "u", queue.JobInput{Kind: "k", UniqueKey: "b"})
	if err != nil || again.Existing || again.ID == u[1].ID {
		t.Fatalf("unique after completion: %+v %v", again, err)
	}
	// Bad input is refused and changes nothing.
	before := e.count(t, `SELECT count(*) FROM jobs`)
	_, err = e.q.JobPushMany(ctx, e.Tenant, "u", []queue.JobInput{{Kind: "k"}, {Kind: ""}})
	wantProblem(t, err, 422, "invalid_kind")
	_, err = e.q.JobPush(ctx, e.Tenant, "u", queue.JobInput{Kind: "k", Payload: json.RawMessage(`{nope`)})
	wantProblem(t, err, 422, "invalid_payload")
	_, err = e.q.JobPush(ctx, e.Tenant, "bad name!", queue.JobInput{Kind: "k"})
	wantProblem(t, err, 422, "invalid_queue_name")
	if e.count(t, `SELECT count(*) FROM jobs`) != before {
		t.Fatal("a refused push changed the queue")
	}
}

// A push inside a transaction exists only if it commits, and wakes workers only then.
func TestPushTxOutbox(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	tx, err := e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.JobPushTx(ctx, tx, e.Tenant, "outbox", queue.JobInput{Kind: "k"}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if jobs, err := e.q.JobClaim(ctx, e.Tenant, "outbox", nil); err != nil || len(jobs) != 0 {
		t.Fatalf("rolled back push was claimed: %v %v", jobs, err)
	}
	// A waiting claim is woken by the commit.
	claimed := make(chan []*queue.Job, 1)
	go func() {
		jobs, _ := e.q.JobClaim(ctx, e.Tenant, "outbox", &queue.ClaimOptions{Wait: 10 * time.Second})
		claimed <- jobs
	}()
	time.Sleep(100 * time.Millisecond)
	tx, err = e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.q.JobPushTx(ctx, tx, e.Tenant, "outbox", queue.JobInput{Kind: "k"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case jobs := <-claimed:
		t.Fatalf("claimed before commit: %v", jobs)
	default:
	}
	start := time.Now()
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case jobs := <-claimed:
		if len(jobs) != 1 || jobs[0].ID != p.ID {
			t.Fatalf("claimed %v", jobs)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("woken %s after commit", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting claim was not woken")
	}
}

func TestFailRetryDead(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	ctx := e.ctx
	p, err := e.q.JobPush(ctx, e.Tenant, "f", queue.JobInput{Kind: "k", MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	claim := func() *queue.Job {
		t.Helper()
		jobs, err := e.q.JobClaim(ctx, e.Tenant, "f", &queue.ClaimOptions{Wait: 5 * time.Second})
		if err != nil || len(jobs) != 1 {
			t.Fatalf("claim: %v %v", jobs, err)
		}
		return jobs[0]
	}
	j := claim()
	dead, err := e.q.JobFail(ctx, e.Tenant, "f", j.Claim(), "boom 1", nil)
	if err != nil || dead {
		t.Fatalf("fail 1: %v %v", dead, err)
	}
	_, err = e.q.JobFail(ctx, e.Tenant, "f", j.Claim(), "late", nil)
	wantProblem(t, err, 409, "lease_lost")
	j = claim()
	if j.Attempt != 2 || len(j.Errors) != 1 || j.Errors[0].Error != "boom 1" {
		t.Fatalf("second attempt: %+v", j)
	}
	dead, err = e.q.JobFail(ctx, e.Tenant, "f", j.Claim(), "boom 2", nil)
	if err != nil || !dead {
		t.Fatalf("fail 2: %v %v", dead, err)
	}
	got, err := e.q.JobGet(ctx, e.Tenant, "f", p.ID)
	if err != nil || got.State != queue.StateDead || len(got.Errors) != 2 {
		t.Fatalf("dead: %+v %v", got, err)
	}
	page, err := e.q.DeadList(ctx, e.Tenant, "f", 10, "")
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != p.ID {
		t.Fatalf("dead list: %+v %v", page, err)
	}
	n, err := e.q.DeadRetry(ctx, e.Tenant, "f", nil)
	if err != nil || n != 1 {
		t.Fatalf("dead retry: %d %v", n, err)
	}
	j = claim()
	if j.ID != p.ID || j.Attempt != 1 {
		t.Fatalf("retried dead letter: %+v", j)
	}
	if _, err := e.q.JobFail(ctx, e.Tenant, "f", j.Claim(), "again", &queue.FailOptions{Dead: true}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.q.DeadPurge(ctx, e.Tenant, "f", nil); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	_, err = e.q.JobGet(ctx, e.Tenant, "f", p.ID)
	wantProblem(t, err, 404, "job_not_found")
	_, err = e.q.DeadPurge(e.As(testworld.Member), e.Tenant, "f", nil)
	wantProblem(t, err, 403, "forbidden")
}

// The reaper re-delivers a job whose worker stopped heart-beating within the lease (plus
// the reap interval), and a heartbeat keeps a slow job's lease.
func TestLeaseExpiryAndHeartbeat(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{ReapInterval: 100 * time.Millisecond, PollInterval: 50 * time.Millisecond})
	ctx := e.ctx
	if _, err := e.q.JobPushMany(ctx, e.Tenant, "l", []queue.JobInput{{Kind: "a"}, {Kind: "b"}}); err != nil {
		t.Fatal(err)
	}
	jobs, err := e.q.JobClaim(ctx, e.Tenant, "l", &queue.ClaimOptions{Limit: 2, Lease: time.Second})
	if err != nil || len(jobs) != 2 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	start := time.Now()
	// Keep the first alive with heartbeats; let the second expire.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			held, err := e.q.JobHeartbeat(ctx, e.Tenant, "l", []queue.Claim{jobs[0].Claim()}, time.Second)
			if err != nil || len(held) != 1 {
				t.Errorf("heartbeat: %v %v", held, err)
			}
		}
	})
	again, err := e.q.JobClaim(ctx, e.Tenant, "l", &queue.ClaimOptions{Wait: 5 * time.Second})
	close(stop)
	wg.Wait()
	if err != nil || len(again) != 1 || again[0].ID != jobs[1].ID || again[0].Attempt != 2 {
		t.Fatalf("re-delivered: %v %v", again, err)
	}
	if d := time.Since(start); d < time.Second || d > 2500*time.Millisecond {
		t.Fatalf("re-delivered after %s; lease 1s", d)
	}
	if len(again[0].Errors) != 1 {
		t.Fatalf("the lost attempt is not recorded: %+v", again[0].Errors)
	}
	// The old claim can no longer settle it; the heartbeat says it is lost.
	wantProblem(t, e.q.JobComplete(ctx, e.Tenant, "l", jobs[1].Claim(), nil), 409, "lease_lost")
	held, err := e.q.JobHeartbeat(ctx, e.Tenant, "l", []queue.Claim{jobs[0].Claim(), jobs[1].Claim()}, 0)
	if err != nil || len(held) != 1 || held[0] != jobs[0].ID {
		t.Fatalf("heartbeat after loss: %v %v", held, err)
	}
	if err := e.q.JobComplete(ctx, e.Tenant, "l", jobs[0].Claim(), nil); err != nil {
		t.Fatal(err)
	}
	if err := e.q.JobComplete(ctx, e.Tenant, "l", again[0].Claim(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestSnoozeCancelPriorityDelay(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{PollInterval: 50 * time.Millisecond})
	ctx := e.ctx
	low, _ := e.q.JobPush(ctx, e.Tenant, "p", queue.JobInput{Kind: "low", Priority: 5})
	high, _ := e.q.JobPush(ctx, e.Tenant, "p", queue.JobInput{Kind: "high", Priority: -5})
	later, _ := e.q.JobPush(ctx, e.Tenant, "p", queue.JobInput{Kind: "later", Delay: 400 * time.Millisecond})
	jobs, err := e.q.JobClaim(ctx, e.Tenant, "p", &queue.ClaimOptions{Limit: 10})
	if err != nil || len(jobs) != 2 || jobs[0].ID != high.ID || jobs[1].ID != low.ID {
		t.Fatalf("priority order: %v %v", jobs, err)
	}
	if j, _ := e.q.JobGet(ctx, e.Tenant, "p", later.ID); j.State != queue.StateScheduled {
		t.Fatalf("delayed job state %q", j.State)
	}
	// Snooze does not count the attempt.
	if err := e.q.JobSnooze(ctx, e.Tenant, "p", jobs[0].Claim(), 0); err != nil {
		t.Fatal(err)
	}
	re, err := e.q.JobClaim(ctx, e.Tenant, "p", nil)
	if err != nil || len(re) != 1 || re[0].ID != high.ID || re[0].Attempt != 1 {
		t.Fatalf("after snooze: %v %v", re, err)
	}
	// Cancelling a running job takes it away from its worker.
	if err := e.q.JobCancel(ctx, e.Tenant, "p", low.ID); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, e.q.JobComplete(ctx, e.Tenant, "p", jobs[1].Claim(), nil), 409, "lease_lost")
	wantProblem(t, e.q.JobCancel(ctx, e.Tenant, "p", low.ID), 409, "job_finished")
	if j, _ := e.q.JobGet(ctx, e.Tenant, "p", low.ID); j.State != queue.StateCancelled {
		t.Fatalf("cancelled job state %q", j.State)
	}
	start := time.Now()
	d, err := e.q.JobClaim(ctx, e.Tenant, "p", &queue.ClaimOptions{Wait: 5 * time.Second})
	if err != nil || len(d) != 1 || d[0].ID != later.ID || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("delayed job: %v %v after %s", d, err, time.Since(start))
	}
}

func TestWorkerRunsJobs(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{PollInterval: 50 * time.Millisecond, RetryBase: time.Millisecond, RetryMax: time.Millisecond})
	ctx := e.ctx
	var mu sync.Mutex
	ran := map[queue.JobID]int{}
	w := e.q.NewWorker(queue.WorkerConfig{Tenant: e.Tenant, Queues: map[string]int{"w": 4}})
	w.Handle("ok", func(_ context.Context, j *queue.Job) error {
		mu.Lock()
		ran[j.ID]++
		mu.Unlock()
		return nil
	})
	w.Handle("flaky", func(_ context.Context, j *queue.Job) error {
		if j.Attempt < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	w.Handle("panics", func(context.Context, *queue.Job) error { panic("kaboom") })
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	in := make([]queue.JobInput, 100)
	for i := range in {
		in[i] = queue.JobInput{Kind: "ok"}
	}
	if _, err := e.q.JobPushMany(ctx, e.Tenant, "w", in); err != nil {
		t.Fatal(err)
	}
	flaky, _ := e.q.JobPush(ctx, e.Tenant, "w", queue.JobInput{Kind: "flaky"})
	panics, _ := e.q.JobPush(ctx, e.Tenant, "w", queue.JobInput{Kind: "panics", MaxAttempts: 1})
	deadline := time.Now().Add(10 * time.Second)
	for e.count(t, `SELECT count(*) FROM job_history`) < 102 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d jobs finished", e.count(t, `SELECT count(*) FROM job_history`))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(ran) != 100 {
		t.Fatalf("%d ok jobs ran", len(ran))
	}
	if j, _ := e.q.JobGet(ctx, e.Tenant, "w", flaky.ID); j.State != queue.StateCompleted || j.Attempt != 3 {
		t.Fatalf("flaky: %+v", j)
	}
	j, _ := e.q.JobGet(ctx, e.Tenant, "w", panics.ID)
	if j.State != queue.StateDead || len(j.Errors) != 1 || !strings.HasPrefix(j.Errors[0].Error, "panic: kaboom\ngoroutine") {
		t.Fatalf("panicking job: %+v", j)
	}
}

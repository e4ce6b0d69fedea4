package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/queue"
)

// A completion or cancellation in the caller's transaction takes effect, with the caller's
// own writes, only if the transaction commits: a rollback leaves the job as it was (and
// its FIFO group's next job blocked), a commit settles it and moves the group on.
func TestCompleteAndCancelInTx(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	const q = "txq"
	if _, err := e.Pool.Exec(ctx, `CREATE TABLE public.effects (job bigint PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	pushed, err := e.q.JobPushMany(ctx, e.Tenant, q, []queue.JobInput{{Kind: "k", GroupKey: "g"}, {Kind: "k", GroupKey: "g"}})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := e.q.JobClaim(ctx, e.Tenant, q, &queue.ClaimOptions{Limit: 10})
	if err != nil || len(jobs) != 1 || jobs[0].ID != pushed[0].ID {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	j := jobs[0]
	// The handler's write and the completion, in one transaction.
	work := func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO public.effects VALUES ($1)`, j.ID); err != nil {
			return err
		}
		return e.q.JobCompleteTx(ctx, tx, e.Tenant, q, j.Claim(), json.RawMessage(`{"done":1}`))
	}

	// Rolled back: nothing happened; the job still runs under its claim, the group waits.
	tx, err := e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := work(tx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := e.q.JobGet(ctx, e.Tenant, q, j.ID); err != nil || got.State != queue.StateRunning {
		t.Fatalf("after a rolled-back completion: %+v %v", got, err)
	}
	if n := e.count(t, `SELECT count(*) FROM public.effects`); n != 0 {
		t.Fatalf("%d effects after a rollback", n)
	}
	if more, err := e.q.JobClaim(ctx, e.Tenant, q, &queue.ClaimOptions{Limit: 10}); err != nil || len(more) != 0 {
		t.Fatalf("the group moved on after a rolled-back completion: %v %v", more, err)
	}

	// Committed: completed once with its result, the effect written once, the group moves on.
	if err := pgx.BeginFunc(ctx, e.Pool, work); err != nil {
		t.Fatal(err)
	}
	got, err := e.q.JobGet(ctx, e.Tenant, q, j.ID)
	if err != nil || got.State != queue.StateCompleted || string(got.Result) != `{"done": 1}` {
		t.Fatalf("after a committed completion: %+v %v", got, err)
	}
	if n := e.count(t, `SELECT count(*) FROM public.effects`); n != 1 {
		t.Fatalf("%d effects after the commit", n)
	}
	// A second completion, in or out of a transaction, is refused and changes nothing.
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error { return e.q.JobCompleteTx(ctx, tx, e.Tenant, q, j.Claim(), nil) })
	wantProblem(t, err, 409, "lease_lost")
	wantProblem(t, e.q.JobComplete(ctx, e.Tenant, q, j.Claim(), nil), 409, "lease_lost")
	next, err := e.q.JobClaim(ctx, e.Tenant, q, &queue.ClaimOptions{Limit: 10})
	if err != nil || len(next) != 1 || next[0].ID != pushed[1].ID {
		t.Fatalf("the group's next job: %v %v", next, err)
	}
	// A wrong claim is refused inside a transaction too.
	bad := next[0].Claim()
	bad.Attempt++
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error { return e.q.JobCompleteTx(ctx, tx, e.Tenant, q, bad, nil) })
	wantProblem(t, err, 409, "lease_lost")
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		return e.q.JobCompleteTx(ctx, tx, e.Tenant, q, queue.Claim{ID: 1 << 40, Lease: "x", Attempt: 1}, nil)
	})
	wantProblem(t, err, 404, "job_not_found")

	// Cancel in a transaction: a rollback keeps the job; a commit cancels it, audited once.
	p, err := e.q.JobPush(ctx, e.Tenant, q, queue.JobInput{Kind: "k"})
	if err != nil {
		t.Fatal(err)
	}
	tx, err = e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.q.JobCancelTx(ctx, tx, e.Tenant, q, p.ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := e.q.JobGet(ctx, e.Tenant, q, p.ID); err != nil || got.State != queue.StateAvailable {
		t.Fatalf("after a rolled-back cancel: %+v %v", got, err)
	}
	audited := func() int {
		return e.count(t, `SELECT count(*) FROM audit_log WHERE action = 'queue.job_cancel' AND details->>'job' = $1`, p.ID.String())
	}
	if n := audited(); n != 0 {
		t.Fatalf("%d audit rows for a rolled-back cancel", n)
	}
	if err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error { return e.q.JobCancelTx(ctx, tx, e.Tenant, q, p.ID) }); err != nil {
		t.Fatal(err)
	}
	if got, err := e.q.JobGet(ctx, e.Tenant, q, p.ID); err != nil || got.State != queue.StateCancelled {
		t.Fatalf("after a committed cancel: %+v %v", got, err)
	}
	if n := audited(); n != 1 {
		t.Fatalf("%d audit rows for a committed cancel", n)
	}
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error { return e.q.JobCancelTx(ctx, tx, e.Tenant, q, p.ID) })
	wantProblem(t, err, 409, "job_finished")
	// Another tenant's job is not found through one's own tenant.
	other := e.As(testworld.Outsider)
	if _, err := e.q.JobPush(other, e.Other, q, queue.JobInput{Kind: "k"}); err != nil {
		t.Fatal(err)
	}
	live, err := e.q.JobPush(ctx, e.Tenant, q, queue.JobInput{Kind: "k"})
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(other, e.Pool, func(tx pgx.Tx) error { return e.q.JobCancelTx(other, tx, e.Other, q, live.ID) })
	wantProblem(t, err, 404, "job_not_found")
	if got, err := e.q.JobGet(ctx, e.Tenant, q, live.ID); err != nil || got.State != queue.StateAvailable {
		t.Fatalf("another tenant's cancel reached the job: %+v %v", got, err)
	}
}

// A Worker's handler that completes its job in its own transaction, with its writes:
// each job completes once, with the handler's result, and its effect is written once.
func TestWorkerCompletesInTx(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	const q, n = "txw", 50
	if _, err := e.Pool.Exec(ctx, `CREATE TABLE public.effects (job bigint PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	in := make([]queue.JobInput, n)
	for i := range in {
		in[i] = queue.JobInput{Kind: "k", GroupKey: []string{"a", "b", ""}[i%3]}
	}
	if _, err := e.q.JobPushMany(ctx, e.Tenant, q, in); err != nil {
		t.Fatal(err)
	}
	w := e.q.NewWorker(queue.WorkerConfig{Tenant: e.Tenant, Queues: map[string]int{q: 4}})
	w.Handle("k", func(ctx context.Context, j *queue.Job) error {
		return pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO public.effects VALUES ($1)`, j.ID); err != nil {
				return err
			}
			return e.q.JobCompleteTx(ctx, tx, j.Tenant, j.Queue, j.Claim(), json.RawMessage(`{"in_tx":true}`))
		})
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stop, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Stop(stop)
	}()
	waitFor(t, 20*time.Second, "every job to complete", func() bool {
		return e.count(t, `SELECT count(*) FROM job_history WHERE state = 'completed'`) == n
	})
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k := e.count(t, `SELECT count(*) FROM public.effects`); k != n {
		t.Fatalf("%d effects for %d jobs", k, n)
	}
	if k := e.count(t, `SELECT count(*) FROM job_history WHERE result = '{"in_tx": true}' AND attempt = 1`); k != n {
		t.Fatalf("%d of %d jobs completed by their handler's transaction on the first attempt", k, n)
	}
}

// The administrative …Tx twins change nothing when their transaction rolls back, and
// change (and audit) exactly what their plain versions do when it commits.
func TestAdminTxTwins(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	const q = "txa"
	if _, err := e.q.JobPush(ctx, e.Tenant, q, queue.JobInput{Kind: "d", MaxAttempts: 1}); err != nil {
		t.Fatal(err)
	}
	jobs, err := e.q.JobClaim(ctx, e.Tenant, q, nil)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	if _, err := e.q.JobFail(ctx, e.Tenant, q, jobs[0].Claim(), "boom", nil); err != nil {
		t.Fatal(err)
	}
	deadID := jobs[0].ID
	if _, _, err := e.q.ScheduleSet(ctx, e.Tenant, q, "old", queue.ScheduleInput{Spec: "@hourly", Kind: "k"}); err != nil {
		t.Fatal(err)
	}
	two := 2
	audits := func() int { return e.count(t, `SELECT count(*) FROM audit_log WHERE action LIKE 'queue.%'`) }
	ops := []struct {
		name  string
		call  func(tx pgx.Tx) error
		check func() bool // the change is visible
	}{
		{"queue update", func(tx pgx.Tx) error {
			return e.q.QueueUpdateTx(ctx, tx, e.Tenant, q, queue.QueueSettings{MaxRunning: &two})
		}, func() bool {
			info, err := e.q.QueueGet(ctx, e.Tenant, q)
			return err == nil && info.MaxRunning != nil && *info.MaxRunning == 2
		}},
		{"schedule set", func(tx pgx.Tx) error {
			_, created, err := e.q.ScheduleSetTx(ctx, tx, e.Tenant, q, "new", queue.ScheduleInput{Spec: "@daily", Kind: "k"})
			if err == nil && !created {
				t.Error("schedule set: not created")
			}
			return err
		}, func() bool { return e.count(t, `SELECT count(*) FROM queue_schedules WHERE name = 'new'`) == 1 }},
		{"schedule delete", func(tx pgx.Tx) error { return e.q.ScheduleDeleteTx(ctx, tx, e.Tenant, q, "old") },
			func() bool { return e.count(t, `SELECT count(*) FROM queue_schedules WHERE name = 'old'`) == 0 }},
		{"dead retry", func(tx pgx.Tx) error {
			n, err := e.q.DeadRetryTx(ctx, tx, e.Tenant, q, []queue.JobID{deadID})
			if err == nil && n != 1 {
				t.Errorf("dead retry requeued %d", n)
			}
			return err
		}, func() bool { return e.count(t, `SELECT count(*) FROM jobs WHERE id = $1`, deadID) == 1 }},
	}
	for _, op := range ops {
		before, audited := e.digest(t), audits()
		tx, err := e.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := op.call(tx); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if e.digest(t) != before || audits() != audited || op.check() {
			t.Fatalf("%s: a rolled-back call changed something", op.name)
		}
		if err := pgx.BeginFunc(ctx, e.Pool, op.call); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if !op.check() || audits() != audited+1 {
			t.Fatalf("%s: committed, yet not applied or not audited once (%d audit rows, %d before)", op.name, audits(), audited)
		}
	}
	// Purge: make the retried job dead again, then purge it in a transaction.
	again, err := e.q.JobClaim(ctx, e.Tenant, q, nil)
	if err != nil || len(again) != 1 || again[0].ID != deadID {
		t.Fatalf("claim of the retried job: %v %v", again, err)
	}
	if _, err := e.q.JobFail(ctx, e.Tenant, q, again[0].Claim(), "boom", &queue.FailOptions{Dead: true}); err != nil {
		t.Fatal(err)
	}
	tx, err := e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := e.q.DeadPurgeTx(ctx, tx, e.Tenant, q, nil); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, `SELECT count(*) FROM job_history WHERE id = $1 AND state = 'dead'`, deadID); n != 1 {
		t.Fatal("a rolled-back purge deleted the dead letter")
	}
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		_, err := e.q.DeadPurgeTx(ctx, tx, e.Tenant, q, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, `SELECT count(*) FROM job_history WHERE id = $1`, deadID); n != 0 {
		t.Fatal("a committed purge left the dead letter")
	}
}

// Failing and snoozing in the caller's transaction: a rollback leaves the job running
// under its claim; a commit records the attempt (or, snoozed, does not count it).
func TestFailAndSnoozeInTx(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	const q = "txf"
	p, err := e.q.JobPush(ctx, e.Tenant, q, queue.JobInput{Kind: "k", MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	claim := func(attempt int) *queue.Job {
		t.Helper()
		jobs, err := e.q.JobClaim(ctx, e.Tenant, q, &queue.ClaimOptions{Wait: 5 * time.Second})
		if err != nil || len(jobs) != 1 || jobs[0].ID != p.ID || jobs[0].Attempt != attempt {
			t.Fatalf("claim (attempt %d): %v %v", attempt, jobs, err)
		}
		return jobs[0]
	}
	state := func() string {
		t.Helper()
		j, err := e.q.JobGet(ctx, e.Tenant, q, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		return j.State
	}
	rolledBack := func(fn func(tx pgx.Tx) error) {
		t.Helper()
		tx, err := e.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := fn(tx); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if s := state(); s != queue.StateRunning {
			t.Fatalf("after a rollback the job is %s", s)
		}
	}
	j := claim(1)
	fail := func(j *queue.Job) func(tx pgx.Tx) error {
		return func(tx pgx.Tx) error {
			_, err := e.q.JobFailTx(ctx, tx, e.Tenant, q, j.Claim(), "boom", &queue.FailOptions{RetryIn: -1})
			return err
		}
	}
	rolledBack(fail(j))
	if err := pgx.BeginFunc(ctx, e.Pool, fail(j)); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, pgx.BeginFunc(ctx, e.Pool, fail(j)), 409, "lease_lost")
	j = claim(2)
	snooze := func(tx pgx.Tx) error { return e.q.JobSnoozeTx(ctx, tx, e.Tenant, q, j.Claim(), 0) }
	rolledBack(snooze)
	if err := pgx.BeginFunc(ctx, e.Pool, snooze); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, pgx.BeginFunc(ctx, e.Pool, snooze), 409, "lease_lost")
	j = claim(2) // a snooze does not count the attempt
	var dead bool
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		var err error
		dead, err = e.q.JobFailTx(ctx, tx, e.Tenant, q, j.Claim(), "boom again", nil)
		return err
	})
	if err != nil || !dead {
		t.Fatalf("last attempt's failure: dead %v, %v", dead, err)
	}
	got, err := e.q.JobGet(ctx, e.Tenant, q, p.ID)
	if err != nil || got.State != queue.StateDead || len(got.Errors) != 2 {
		t.Fatalf("dead letter: %+v %v", got, err)
	}
}

package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/queue"
)

// Every operation, as every identity: anonymous callers get 401, another tenant's owner
// 404, viewers and members (and member keys) read but neither write nor administer
// without grants; owners, admins and platform admins do everything. A refused call
// changes nothing.
func TestTenantWall(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	owner := e.ctx
	const q = "wall"
	job := func() queue.JobID {
		p, err := e.q.JobPush(owner, e.Tenant, q, queue.JobInput{Kind: "k"})
		if err != nil {
			t.Fatal(err)
		}
		return p.ID
	}
	claimed := func() *queue.Job {
		job()
		jobs, err := e.q.JobClaim(owner, e.Tenant, q, &queue.ClaimOptions{Limit: 1})
		if err != nil || len(jobs) != 1 {
			t.Fatalf("claim: %v %v", jobs, err)
		}
		return jobs[0]
	}
	dead := func() queue.JobID {
		p, _ := e.q.JobPush(owner, e.Tenant, q, queue.JobInput{Kind: "d", MaxAttempts: 1})
		for {
			jobs, _ := e.q.JobClaim(owner, e.Tenant, q, &queue.ClaimOptions{Limit: 10})
			if len(jobs) == 0 {
				break
			}
			for _, j := range jobs {
				_, _ = e.q.JobFail(owner, e.Tenant, q, j.Claim(), "x", &queue.FailOptions{Dead: true})
			}
		}
		return p.ID
	}
	job()
	const (
		read = iota
		write
		admin
	)
	// Each op prepares what it needs (as the owner) and returns the call to make.
	ops := []struct {
		name string
		perm int
		prep func() func(ctx context.Context) error
	}{
		{"push", write, noPrep(func(ctx context.Context) error {
			_, err := e.q.JobPush(ctx, e.Tenant, q, queue.JobInput{Kind: "k"})
			return err
		})},
		{"push many", write, noPrep(func(ctx context.Context) error {
			_, err := e.q.JobPushMany(ctx, e.Tenant, q, []queue.JobInput{{Kind: "k"}, {Kind: "k"}})
			return err
		})},
		{"push tx", write, noPrep(func(ctx context.Context) error {
			tx, err := e.Pool.Begin(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := e.q.JobPushTx(ctx, tx, e.Tenant, q, queue.JobInput{Kind: "k"}); err != nil {
				return err
			}
			return tx.Commit(ctx)
		})},
		{"claim", write, func() func(context.Context) error {
			job()
			return func(ctx context.Context) error {
				_, err := e.q.JobClaim(ctx, e.Tenant, q, nil)
				return err
			}
		}},
		{"complete", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error { return e.q.JobComplete(ctx, e.Tenant, q, j.Claim(), nil) }
		}},
		{"fail", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error {
				_, err := e.q.JobFail(ctx, e.Tenant, q, j.Claim(), "x", nil)
				return err
			}
		}},
		{"snooze", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error { return e.q.JobSnooze(ctx, e.Tenant, q, j.Claim(), time.Second) }
		}},
		{"heartbeat", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error {
				_, err := e.q.JobHeartbeat(ctx, e.Tenant, q, []queue.Claim{j.Claim()}, 0)
				return err
			}
		}},
		{"release", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error {
				_, err := e.q.JobRelease(ctx, e.Tenant, q, []queue.Claim{j.Claim()})
				return err
			}
		}},
		{"complete tx", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error {
				tx, err := e.Pool.Begin(ctx)
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback(ctx) }()
				if err := e.q.JobCompleteTx(ctx, tx, e.Tenant, q, j.Claim(), nil); err != nil {
					return err
				}
				return tx.Commit(ctx)
			}
		}},
		{"cancel tx", write, func() func(context.Context) error {
			id := job()
			return func(ctx context.Context) error {
				tx, err := e.Pool.Begin(ctx)
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback(ctx) }()
				if err := e.q.JobCancelTx(ctx, tx, e.Tenant, q, id); err != nil {
					return err
				}
				return tx.Commit(ctx)
			}
		}},
		{"cancel", write, func() func(context.Context) error {
			id := job()
			return func(ctx context.Context) error { return e.q.JobCancel(ctx, e.Tenant, q, id) }
		}},
		{"get", read, func() func(context.Context) error {
			id := job()
			return func(ctx context.Context) error {
				_, err := e.q.JobGet(ctx, e.Tenant, q, id)
				return err
			}
		}},
		{"list", read, noPrep(func(ctx context.Context) error {
			_, err := e.q.JobList(ctx, e.Tenant, q, nil)
			return err
		})},
		{"queue list", read, noPrep(func(ctx context.Context) error {
			_, err := e.q.QueueList(ctx, e.Tenant)
			return err
		})},
		{"queue get", read, noPrep(func(ctx context.Context) error {
			_, err := e.q.QueueGet(ctx, e.Tenant, q)
			return err
		})},
		{"queue pause", admin, noPrep(func(ctx context.Context) error {
			_, err := e.q.QueuePause(ctx, e.Tenant, q)
			if err == nil {
				_, err = e.q.QueueResume(ctx, e.Tenant, q)
			}
			return err
		})},
		{"queue update", admin, noPrep(func(ctx context.Context) error {
			n := 0
			_, err := e.q.QueueUpdate(ctx, e.Tenant, q, queue.QueueSettings{MaxRunning: &n})
			return err
		})},
		{"dead list", read, noPrep(func(ctx context.Context) error {
			_, err := e.q.DeadList(ctx, e.Tenant, q, 10, "")
			return err
		})},
		{"dead retry", write, func() func(context.Context) error {
			id := dead()
			return func(ctx context.Context) error {
				_, err := e.q.DeadRetry(ctx, e.Tenant, q, []queue.JobID{id})
				return err
			}
		}},
		{"dead purge", admin, func() func(context.Context) error {
			id := dead()
			return func(ctx context.Context) error {
				_, err := e.q.DeadPurge(ctx, e.Tenant, q, []queue.JobID{id})
				return err
			}
		}},
		{"schedule set", admin, noPrep(func(ctx context.Context) error {
			_, _, err := e.q.ScheduleSet(ctx, e.Tenant, q, "s", queue.ScheduleInput{Spec: "@hourly", Kind: "k"})
			return err
		})},
		{"schedule list", read, noPrep(func(ctx context.Context) error {
			_, err := e.q.ScheduleList(ctx, e.Tenant, q)
			return err
		})},
		{"schedule delete", admin, func() func(context.Context) error {
			if _, _, err := e.q.ScheduleSet(owner, e.Tenant, q, "gone", queue.ScheduleInput{Spec: "@hourly", Kind: "k"}); err != nil {
				t.Fatal(err)
			}
			return func(ctx context.Context) error { return e.q.ScheduleDelete(ctx, e.Tenant, q, "gone") }
		}},
		{"fail tx", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error {
				return inTx(ctx, e, func(tx pgx.Tx) error {
					_, err := e.q.JobFailTx(ctx, tx, e.Tenant, q, j.Claim(), "x", nil)
					return err
				})
			}
		}},
		{"snooze tx", write, func() func(context.Context) error {
			j := claimed()
			return func(ctx context.Context) error {
				return inTx(ctx, e, func(tx pgx.Tx) error { return e.q.JobSnoozeTx(ctx, tx, e.Tenant, q, j.Claim(), time.Second) })
			}
		}},
		{"queue update tx", admin, noPrep(func(ctx context.Context) error {
			n := 0
			return inTx(ctx, e, func(tx pgx.Tx) error {
				return e.q.QueueUpdateTx(ctx, tx, e.Tenant, q, queue.QueueSettings{MaxRunning: &n})
			})
		})},
		{"dead retry tx", write, func() func(context.Context) error {
			id := dead()
			return func(ctx context.Context) error {
				return inTx(ctx, e, func(tx pgx.Tx) error {
					_, err := e.q.DeadRetryTx(ctx, tx, e.Tenant, q, []queue.JobID{id})
					return err
				})
			}
		}},
		{"dead purge tx", admin, func() func(context.Context) error {
			id := dead()
			return func(ctx context.Context) error {
				return inTx(ctx, e, func(tx pgx.Tx) error {
					_, err := e.q.DeadPurgeTx(ctx, tx, e.Tenant, q, []queue.JobID{id})
					return err
				})
			}
		}},
		{"schedule set tx", admin, noPrep(func(ctx context.Context) error {
			return inTx(ctx, e, func(tx pgx.Tx) error {
				_, _, err := e.q.ScheduleSetTx(ctx, tx, e.Tenant, q, "stx", queue.ScheduleInput{Spec: "@hourly", Kind: "k"})
				return err
			})
		})},
		{"schedule delete tx", admin, func() func(context.Context) error {
			if _, _, err := e.q.ScheduleSet(owner, e.Tenant, q, "gonetx", queue.ScheduleInput{Spec: "@hourly", Kind: "k"}); err != nil {
				t.Fatal(err)
			}
			return func(ctx context.Context) error {
				return inTx(ctx, e, func(tx pgx.Tx) error { return e.q.ScheduleDeleteTx(ctx, tx, e.Tenant, q, "gonetx") })
			}
		}},
		{"worker start", write, noPrep(func(ctx context.Context) error {
			w := e.q.NewWorker(queue.WorkerConfig{Tenant: e.Tenant, Queues: map[string]int{"wall-worker": 1}})
			if err := w.Start(ctx); err != nil {
				return err
			}
			return w.Stop(context.Background())
		})},
	}
	for _, op := range ops {
		for _, role := range testworld.Roles() {
			var want int // 0: allowed
			switch role {
			case "":
				want = 401
			case testworld.Outsider:
				want = 404
			case testworld.Viewer, testworld.Member, testworld.APIKey:
				if op.perm > read {
					want = 403
				}
			}
			call := op.prep()
			before := e.digest(t)
			err := call(e.As(role))
			var p *problem.Error
			switch {
			case want == 0 && err != nil:
				t.Errorf("%s as %q: %v", op.name, role, err)
			case want != 0 && (!errors.As(err, &p) || p.Status != want):
				t.Errorf("%s as %q: %v, want %d", op.name, role, err, want)
			case want != 0 && e.digest(t) != before:
				t.Errorf("%s as %q: refused, yet something changed", op.name, role)
			}
		}
	}
	// Another tenant's job is not found through one's own tenant.
	id := job()
	if _, err := e.q.JobPush(e.As(testworld.Outsider), e.Other, q, queue.JobInput{Kind: "k"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.q.JobGet(e.As(testworld.Outsider), e.Other, q, id)
	wantProblem(t, err, 404, "job_not_found")
	wantProblem(t, e.q.JobCancel(e.As(testworld.Outsider), e.Other, q, id), 404, "job_not_found")
	jobs, err := e.q.JobClaim(e.As(testworld.Outsider), e.Other, q, &queue.ClaimOptions{Limit: 1000})
	for _, j := range jobs {
		if j.ID == id || j.Tenant != e.Other {
			t.Fatalf("the other tenant claimed job %d of tenant %s", j.ID, j.Tenant)
		}
	}
	if err != nil || len(jobs) != 1 {
		t.Fatalf("other tenant's claim: %d %v", len(jobs), err)
	}
}

// inTx runs fn in a transaction of the test's pool and commits it.
func inTx(ctx context.Context, e *env, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, e.Pool, fn)
}

func noPrep(call func(context.Context) error) func() func(context.Context) error {
	return func() func(context.Context) error { return call }
}

// digest fingerprints every queue table, to prove a refused call changed nothing.
func (e *env) digest(t *testing.T) string {
	t.Helper()
	var d string
	err := e.Pool.QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'j' || id || state || attempt || max_attempts || coalesce(owner, '') || run_at || coalesce(lease_until::text, '') FROM jobs
		UNION ALL SELECT 'h' || id || state FROM job_history
		UNION ALL SELECT 'q' || id || name || paused || coalesce(max_running, 0) || coalesce(max_starts_per_second, 0) FROM queues
		UNION ALL SELECT 's' || name || spec || updated_at FROM queue_schedules) d(x)`).Scan(&d)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

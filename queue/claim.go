package queue

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// ClaimOptions tune JobClaim. Nil means defaults.
type ClaimOptions struct {
	// Limit is the most jobs to claim: 1 to 1000. Default 1.
	Limit int
	// Wait is how long to wait for a job when none is runnable (a long poll); woken by a
	// push from any node within milliseconds. Zero answers at once.
	Wait time.Duration
	// Lease is how long the claim holds the jobs without a heartbeat: 1s to 1h.
	// Default Config.Lease (30s).
	Lease time.Duration
	// Worker labels the claim in the jobs' records (a host name, a process). At most 100
	// characters; optional.
	Worker string
}

// maxClaim is the most jobs one claim may take.
const maxClaim = 1000

// JobClaim claims up to Limit runnable jobs of a queue (write on the queue): highest
// priority (lowest number) first, then oldest run_at. Each job comes back running, with
// a lease token and its attempt, which JobHeartbeat, JobComplete, JobFail and JobSnooze
// require. None are claimed from a paused queue, and none beyond its limits. With Wait
// it blocks until a job is claimed, Wait passes or ctx ends; it answers an empty slice
// when nothing was claimed.
func (c *Client) JobClaim(ctx context.Context, tenant, queue string, o *ClaimOptions) ([]*Job, error) {
	if o == nil {
		o = &ClaimOptions{}
	}
	if err := c.authorize(ctx, tenant, queue, auth.PermWrite); err != nil {
		return nil, err
	}
	limit := o.Limit
	switch {
	case limit == 0:
		limit = 1
	case limit < 0 || limit > maxClaim:
		return nil, problem.Unprocessable("invalid_limit", "a claim takes 1 to %d jobs", maxClaim).WithField("limit", "out of range")
	}
	lease := o.Lease
	switch {
	case lease == 0:
		lease = c.cfg.Lease
	case lease < time.Second || lease > time.Hour:
		return nil, problem.Unprocessable("invalid_lease", "a lease is 1s to 1h").WithField("lease", "out of range")
	}
	if len(o.Worker) > 100 {
		return nil, problem.Unprocessable("invalid_worker", "a worker label is at most 100 characters").WithField("worker", "too long")
	}
	ref, err := c.queues.get(ctx, tenant, queue, true)
	if err != nil {
		return nil, err
	}
	owner := newOwner(o.Worker)
	deadline := time.Now().Add(o.Wait)
	for {
		wake := c.hub.waitID(ref.ID)
		jobs, err := c.claim(ctx, ref, limit, owner, lease)
		if err != nil || len(jobs) > 0 {
			return jobs, db.Translate(err, "job")
		}
		left := time.Until(deadline)
		if left <= 0 {
			return []*Job{}, nil
		}
		timer := time.NewTimer(min(left, c.pollInterval()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return []*Job{}, nil
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// newOwner returns a lease token: the worker label, if any, and 80 random bits.
func newOwner(label string) string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	tok := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
	if label == "" {
		return tok
	}
	return label + "/" + tok
}

const claimSQL = `SELECT id, kind, priority, attempt, max_attempts, payload, created_at, run_at,
	unique_key, group_key, errors, started_at, lease_until FROM queue_claim($1, $2, $3, $4)`

// claim claims up to n jobs of one queue for owner.
func (c *Client) claim(ctx context.Context, ref queueRef, n int, owner string, lease time.Duration) ([]*Job, error) {
	rows, err := c.pool.Query(ctx, claimSQL, ref.ID, n, owner, lease)
	if err != nil {
		return nil, err
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Job, error) {
		j := &Job{Tenant: ref.Tenant, Queue: ref.Name, State: StateRunning, Lease: owner}
		var prio int16
		var unique, group *string
		var errs []byte
		err := r.Scan(&j.ID, &j.Kind, &prio, &j.Attempt, &j.MaxAttempts, &j.Payload, &j.CreatedAt, &j.RunAt,
			&unique, &group, &errs, &j.StartedAt, &j.LeaseUntil)
		j.Priority = int(prio)
		if unique != nil {
			j.UniqueKey = *unique
		}
		if group != nil {
			j.GroupKey = *group
		}
		if len(errs) > 0 {
			_ = json.Unmarshal(errs, &j.Errors)
		}
		return j, err
	})
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if j.StartedAt != nil {
			c.metrics.claimed(ref, j.StartedAt.Sub(j.RunAt))
		}
	}
	return jobs, nil
}

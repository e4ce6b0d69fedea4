package queue

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// leaseLost is the answer to a transition from a claim that no longer holds its job.
func leaseLost(id JobID) error {
	return problem.Conflict("lease_lost", "job %d is no longer held by this lease: its lease ran out and it was re-delivered, "+
		"it was cancelled, or it was already settled", id)
}

func jobNotFound(id JobID) error {
	return problem.NotFound("job_not_found", "job %d not found", id)
}

// settlement is one job to move out of the hot table.
type settlement struct {
	id      int64
	attempt int32
	owner   string
	result  []byte // completion result, or nil
	errJSON []byte // an attempt error to append, or nil
	group   *string
	queueID int64
	ref     queueRef // for metrics
}

// settled is a job moved out of the hot table.
type settled struct {
	id      int64
	queueID int64
	group   *string
	ran     time.Duration
}

const finishKeepSQL = `
WITH d AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[]) AS d(id, attempt, owner, result, error)
), gone AS (
    DELETE FROM jobs j USING d
    WHERE j.id = d.id AND j.attempt = d.attempt AND j.owner = d.owner AND j.state = 'running'
    RETURNING j.*, d.result AS result, d.error AS error
), hist AS (
    INSERT INTO job_history (id, queue_id, tenant_id, state, kind, priority, attempt, max_attempts, owner, unique_key,
        group_key, payload, result, errors, created_at, run_at, started_at)
    SELECT id, queue_id, tenant_id, $6, kind, priority, attempt, max_attempts, owner, unique_key,
        group_key, payload, result, CASE WHEN error IS NULL THEN errors ELSE queue_errors_append(errors, error) END,
        created_at, run_at, started_at
    FROM gone
)
SELECT id, queue_id, group_key, coalesce(now() - started_at, '0') FROM gone`

const finishDropSQL = `
WITH d AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[]) AS d(id, attempt, owner, result, error)
)
DELETE FROM jobs j USING d
WHERE j.id = d.id AND j.attempt = d.attempt AND j.owner = d.owner AND j.state = 'running' AND $6::text <> ''
RETURNING j.id, j.queue_id, j.group_key, coalesce(now() - j.started_at, '0')`

// finish moves running jobs still held by their claims out of the hot table as state
// ("completed" or "dead"), into the history, and returns those it moved. Jobs of FIFO
// groups have their groups locked first and their successors promoted, in one
// transaction; a batch without groups is one statement.
func (c *Client) finish(ctx context.Context, state string, items []settlement) ([]settled, error) {
	return c.finishIn(ctx, nil, state, items)
}

// finishIn is finish within tx, or in its own transaction (or statement) when tx is nil.
func (c *Client) finishIn(ctx context.Context, tx pgx.Tx, state string, items []settlement) ([]settled, error) {
	n := len(items)
	ids, attempts, owners := make([]int64, n), make([]int32, n), make([]string, n)
	results, errs := make([][]byte, n), make([][]byte, n)
	queues, groups := make([]int64, n), make([]*string, n)
	anyGroup := false
	for i, it := range items {
		ids[i], attempts[i], owners[i], results[i], errs[i] = it.id, it.attempt, it.owner, it.result, it.errJSON
		queues[i], groups[i] = it.queueID, it.group
		anyGroup = anyGroup || it.group != nil
	}
	sql := finishDropSQL
	if c.keep || state == "dead" {
		sql = finishKeepSQL
	}
	run := func(q interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	}) ([]settled, error) {
		rows, err := q.Query(ctx, sql, ids, attempts, owners, results, errs, state)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, func(r pgx.CollectableRow) (settled, error) {
			var s settled
			err := r.Scan(&s.id, &s.queueID, &s.group, &s.ran)
			return s, err
		})
	}
	if !anyGroup && tx == nil {
		return run(c.pool)
	}
	grouped := func(tx pgx.Tx) ([]settled, error) {
		if !anyGroup {
			return run(tx)
		}
		qs, gs := uniqueGroups(queues, groups)
		if err := lockGroupPairs(ctx, tx, qs, gs); err != nil {
			return nil, err
		}
		out, err := run(tx)
		if err != nil {
			return nil, err
		}
		_, err = promote(ctx, tx, qs, gs)
		return out, err
	}
	if tx != nil {
		return grouped(tx)
	}
	var out []settled
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var err error
		out, err = grouped(tx)
		return err
	})
	return out, err
}

// attemptError is the JSON of a failed attempt, as appended to a job's errors.
func attemptError(attempt int, msg string) []byte {
	if len(msg) > 4000 {
		msg = msg[:4000] + "…"
	}
	b, _ := json.Marshal(AttemptError{Attempt: attempt, At: time.Now().UTC(), Error: msg})
	return b
}

// settleTarget resolves a job's queue for a settling call and authorizes write on it.
func (c *Client) settleTarget(ctx context.Context, tenant, queue string) (queueRef, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermWrite); err != nil {
		return queueRef{}, err
	}
	return c.queues.get(ctx, tenant, queue, false)
}

// lookupGroup reads a live job's queue and group, scoped to the queue.
func (c *Client) lookupGroup(ctx context.Context, ref queueRef, id JobID) (*string, bool, error) {
	var g *string
	err := c.pool.QueryRow(ctx, `SELECT group_key FROM jobs WHERE id = $1 AND queue_id = $2`, id, ref.ID).Scan(&g)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	return g, err == nil, err
}

// lost answers a transition that matched nothing: 404 when the queue never had the job,
// 409 lease_lost otherwise.
func (c *Client) lost(ctx context.Context, ref queueRef, id JobID) error {
	return lostIn(ctx, c.pool, ref, id)
}

// lostIn is lost, querying through q.
func lostIn(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, ref queueRef, id JobID) error {
	var exists bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND queue_id = $2)
		OR EXISTS (SELECT 1 FROM job_history WHERE id = $1 AND queue_id = $2)`, id, ref.ID).Scan(&exists)
	if err != nil {
		return db.Translate(err, "job")
	}
	if !exists {
		return jobNotFound(id)
	}
	return leaseLost(id)
}

// JobComplete records a claimed job's success with an optional JSON result (write on the
// queue) and moves it to the history. Only the claim holding the job can: otherwise 409
// lease_lost, and nothing changes — so one completion is recorded per job.
func (c *Client) JobComplete(ctx context.Context, tenant, queue string, cl Claim, result json.RawMessage) error {
	ref, err := c.settleTarget(ctx, tenant, queue)
	if err != nil {
		return err
	}
	if len(result) > 0 && (!json.Valid(result) || len(result) > c.cfg.MaxPayloadBytes) {
		return problem.Unprocessable("invalid_result", "a result is JSON of at most %d bytes", c.cfg.MaxPayloadBytes).WithField("result", "invalid")
	}
	group, ok, err := c.lookupGroup(ctx, ref, cl.ID)
	if err != nil {
		return db.Translate(err, "job")
	}
	if !ok {
		return c.lost(ctx, ref, cl.ID)
	}
	done, err := c.finish(ctx, "completed", []settlement{{id: int64(cl.ID), attempt: int32(cl.Attempt), owner: cl.Lease,
		result: result, group: group, queueID: ref.ID}})
	if err != nil {
		return db.Translate(err, "job")
	}
	if len(done) == 0 {
		return c.lost(ctx, ref, cl.ID)
	}
	c.metrics.finished(ref, "completed", done[0].ran)
	c.slotFreed(ref)
	return nil
}

// JobCompleteTx is JobComplete inside the caller's transaction: the completion (and the
// next job of its FIFO group becoming runnable) takes effect only if tx commits, so a
// handler's own writes and its job's completion commit together or not at all. If tx
// rolls back the job stays running under its claim, to be completed, failed or, once its
// lease runs out, re-delivered. A Worker's handler may call it with its job's Tenant,
// Queue and Claim() and then return nil: the worker's own completion then changes nothing.
// Metrics count the completion when the call returns, whether or not tx commits.
func (c *Client) JobCompleteTx(ctx context.Context, tx pgx.Tx, tenant, queue string, cl Claim, result json.RawMessage) error {
	ref, err := c.settleTarget(ctx, tenant, queue)
	if err != nil {
		return err
	}
	if len(result) > 0 && (!json.Valid(result) || len(result) > c.cfg.MaxPayloadBytes) {
		return problem.Unprocessable("invalid_result", "a result is JSON of at most %d bytes", c.cfg.MaxPayloadBytes).WithField("result", "invalid")
	}
	var group *string
	err = tx.QueryRow(ctx, `SELECT group_key FROM jobs WHERE id = $1 AND queue_id = $2`, cl.ID, ref.ID).Scan(&group)
	if errors.Is(err, pgx.ErrNoRows) {
		return lostIn(ctx, tx, ref, cl.ID)
	}
	if err != nil {
		return db.Translate(err, "job")
	}
	done, err := c.finishIn(ctx, tx, "completed", []settlement{{id: int64(cl.ID), attempt: int32(cl.Attempt), owner: cl.Lease,
		result: result, group: group, queueID: ref.ID}})
	if err != nil {
		return db.Translate(err, "job")
	}
	if len(done) == 0 {
		return lostIn(ctx, tx, ref, cl.ID)
	}
	// A limited queue's workers are woken when the commit opens a running slot. (Every
	// statement here goes through tx: a handler holding a pool connection for tx must not
	// need a second one, or handlers filling the pool would wait on each other forever.)
	_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2) FROM queues
		WHERE id = $3 AND (max_running IS NOT NULL OR max_starts_per_second IS NOT NULL)`, channelJobs, notifyPayload(ref.ID, ref.Name), ref.ID)
	if err != nil {
		return db.Translate(err, "job")
	}
	c.metrics.finished(ref, "completed", done[0].ran)
	return nil
}

// slotFreed wakes the workers of a limited queue on every node when one of its jobs
// stopped running: a running slot opened.
func (c *Client) slotFreed(ref queueRef) {
	if ref.ID != 0 && c.queues.limited(context.Background(), ref.ID) {
		c.notify(ref)
	}
}

// FailOptions tune JobFail. Nil means defaults.
type FailOptions struct {
	// RetryIn overrides the backoff before the next attempt (zero: the exponential
	// backoff with jitter). Negative retries at once.
	RetryIn time.Duration
	// Dead dead-letters the job now, whatever attempts it has left.
	Dead bool
}

// JobFail records a claimed job's failed attempt with an error message (write on the
// queue): the job waits for its next attempt with exponential backoff and jitter, or,
// out of attempts, becomes a dead letter. It reports whether the job was dead-lettered.
// Only the claim holding the job can: otherwise 409 lease_lost.
func (c *Client) JobFail(ctx context.Context, tenant, queue string, cl Claim, msg string, o *FailOptions) (dead bool, err error) {
	ref, err := c.settleTarget(ctx, tenant, queue)
	if err != nil {
		return false, err
	}
	group, ok, err := c.lookupGroup(ctx, ref, cl.ID)
	if err != nil {
		return false, db.Translate(err, "job")
	}
	if !ok {
		return false, c.lost(ctx, ref, cl.ID)
	}
	dead, held, err := c.fail(ctx, ref, cl, group, msg, o)
	if err != nil {
		return false, db.Translate(err, "job")
	}
	c.slotFreed(ref)
	if !held {
		return false, c.lost(ctx, ref, cl.ID)
	}
	return dead, nil
}

// JobFailTx is JobFail inside the caller's transaction: the failed attempt is recorded
// (a retry or a dead letter) only if tx commits; a rollback leaves the job running under
// its claim. Metrics count it when the call returns, whether or not tx commits.
func (c *Client) JobFailTx(ctx context.Context, tx pgx.Tx, tenant, queue string, cl Claim, msg string, o *FailOptions) (dead bool, err error) {
	ref, err := c.settleTarget(ctx, tenant, queue)
	if err != nil {
		return false, err
	}
	var group *string
	err = tx.QueryRow(ctx, `SELECT group_key FROM jobs WHERE id = $1 AND queue_id = $2`, cl.ID, ref.ID).Scan(&group)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, lostIn(ctx, tx, ref, cl.ID)
	}
	if err != nil {
		return false, db.Translate(err, "job")
	}
	dead, held, err := c.failIn(ctx, tx, ref, cl, group, msg, o)
	if err != nil {
		return false, db.Translate(err, "job")
	}
	if !held {
		return false, lostIn(ctx, tx, ref, cl.ID)
	}
	_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2) FROM queues
		WHERE id = $3 AND (max_running IS NOT NULL OR max_starts_per_second IS NOT NULL)`, channelJobs, notifyPayload(ref.ID, ref.Name), ref.ID)
	return dead, db.Translate(err, "job")
}

// backoff is the wait before the attempt after failed attempt n: min(base·2^(n-1), max),
// less up to half of it at random.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.RetryMax
	if n < 40 {
		d = min(c.cfg.RetryBase<<max(n-1, 0), c.cfg.RetryMax)
	}
	return d - rand.N(d/2+1) //nolint:gosec // jitter needs no cryptographic randomness
}

const retrySQL = `
WITH u AS (
    UPDATE jobs SET state = 'available', owner = NULL, lease_until = NULL, run_at = now() + $4::interval,
        errors = queue_errors_append(errors, $5)
    WHERE id = $1 AND attempt = $2 AND owner = $3 AND state = 'running' AND attempt < max_attempts
    RETURNING queue_id, run_at <= now() AS ready
)
SELECT (SELECT count(pg_notify($6, $7)) FROM u WHERE ready), (SELECT count(*) FROM u)`

// fail records a failed attempt of a job held by cl: a retry when attempts remain (and
// not o.Dead), else a dead letter. held is false when the claim no longer held it.
func (c *Client) fail(ctx context.Context, ref queueRef, cl Claim, group *string, msg string, o *FailOptions) (dead, held bool, err error) {
	return c.failIn(ctx, nil, ref, cl, group, msg, o)
}

// failIn is fail within tx, or outside any transaction when tx is nil.
func (c *Client) failIn(ctx context.Context, tx pgx.Tx, ref queueRef, cl Claim, group *string, msg string, o *FailOptions) (dead, held bool, err error) {
	if o == nil {
		o = &FailOptions{}
	}
	errJSON := attemptError(cl.Attempt, msg)
	if !o.Dead {
		wait := o.RetryIn
		if wait == 0 {
			wait = c.backoff(cl.Attempt)
		}
		wait = max(wait, 0)
		var q interface {
			QueryRow(context.Context, string, ...any) pgx.Row
		} = c.pool
		if tx != nil {
			q = tx
		}
		var notified, n int
		err := q.QueryRow(ctx, retrySQL, cl.ID, cl.Attempt, cl.Lease, wait, errJSON, channelJobs, notifyPayload(ref.ID, ref.Name)).
			Scan(&notified, &n)
		if err != nil || n == 1 {
			if n == 1 {
				c.metrics.finished(ref, "failed", 0)
			}
			return false, n == 1, err
		}
	}
	// Out of attempts (or told so): a dead letter — if the claim still holds the job.
	done, err := c.finishIn(ctx, tx, "dead", []settlement{{id: int64(cl.ID), attempt: int32(cl.Attempt), owner: cl.Lease, errJSON: errJSON,
		group: group, queueID: ref.ID}})
	if err != nil || len(done) == 0 {
		return false, false, err
	}
	c.metrics.finished(ref, "failed", 0)
	c.metrics.finished(ref, "dead", done[0].ran)
	return true, true, nil
}

const requeueSQL = `
WITH d AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[]) AS d(id, attempt, owner)
), u AS (
    UPDATE jobs j SET state = 'available', owner = NULL, lease_until = NULL, attempt = j.attempt - 1,
        run_at = now() + $4::interval
    FROM d WHERE j.id = d.id AND j.attempt = d.attempt AND j.owner = d.owner AND j.state = 'running'
    RETURNING j.id, j.queue_id, j.run_at <= now() AS ready
)
SELECT u.id, (SELECT count(pg_notify($5, q.id || ':' || q.name)) FROM queues q
              WHERE q.id IN (SELECT queue_id FROM u WHERE ready))
FROM u`

// requeue puts jobs held by their claims back to wait for delay without counting the
// attempt (snooze, release), and returns those it requeued.
func (c *Client) requeue(ctx context.Context, cls []Claim, delay time.Duration) ([]JobID, error) {
	return requeueIn(ctx, c.pool, cls, delay)
}

// requeueIn is requeue, querying through q.
func requeueIn(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, cls []Claim, delay time.Duration) ([]JobID, error) {
	ids, attempts, owners := make([]int64, len(cls)), make([]int32, len(cls)), make([]string, len(cls))
	for i, cl := range cls {
		ids[i], attempts[i], owners[i] = int64(cl.ID), int32(cl.Attempt), cl.Lease
	}
	rows, err := q.Query(ctx, requeueSQL, ids, attempts, owners, delay, channelJobs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (JobID, error) {
		var id, n int64
		err := r.Scan(&id, &n)
		return JobID(id), err
	})
}

// JobSnooze puts a claimed job back to wait for delay (write on the queue) without
// counting the attempt: for work that is not ready yet. Only the claim holding the job
// can: otherwise 409 lease_lost.
func (c *Client) JobSnooze(ctx context.Context, tenant, queue string, cl Claim, delay time.Duration) error {
	ref, err := c.settleTarget(ctx, tenant, queue)
	if err != nil {
		return err
	}
	if delay < 0 || delay > 365*24*time.Hour {
		return problem.Unprocessable("invalid_delay", "a snooze is 0 to 365 days").WithField("delay", "out of range")
	}
	ids, err := c.requeue(ctx, []Claim{cl}, delay)
	if err != nil {
		return db.Translate(err, "job")
	}
	if len(ids) == 0 {
		return c.lost(ctx, ref, cl.ID)
	}
	return nil
}

// JobSnoozeTx is JobSnooze inside the caller's transaction: the job goes back to wait
// only if tx commits; a rollback leaves it running under its claim.
func (c *Client) JobSnoozeTx(ctx context.Context, tx pgx.Tx, tenant, queue string, cl Claim, delay time.Duration) error {
	ref, err := c.settleTarget(ctx, tenant, queue)
	if err != nil {
		return err
	}
	if delay < 0 || delay > 365*24*time.Hour {
		return problem.Unprocessable("invalid_delay", "a snooze is 0 to 365 days").WithField("delay", "out of range")
	}
	ids, err := requeueIn(ctx, tx, []Claim{cl}, delay)
	if err != nil {
		return db.Translate(err, "job")
	}
	if len(ids) == 0 {
		return lostIn(ctx, tx, ref, cl.ID)
	}
	return nil
}

// JobRelease gives claimed jobs back at once without counting their attempts (write on
// the queue), for a worker that stops before running them. It returns the ids released;
// jobs no longer held are skipped.
func (c *Client) JobRelease(ctx context.Context, tenant, queue string, cls []Claim) ([]JobID, error) {
	if _, err := c.settleTarget(ctx, tenant, queue); err != nil {
		return nil, err
	}
	ids, err := c.requeue(ctx, cls, 0)
	return ids, db.Translate(err, "job")
}

const heartbeatSQL = `
UPDATE jobs j SET lease_until = now() + $4::interval
FROM unnest($1::bigint[], $2::int[], $3::text[]) AS d(id, attempt, owner)
WHERE j.id = d.id AND j.attempt = d.attempt AND j.owner = d.owner AND j.state = 'running'
RETURNING j.id`

// heartbeat extends the leases of jobs held by their claims and returns those extended.
func (c *Client) heartbeat(ctx context.Context, cls []Claim, lease time.Duration) ([]JobID, error) {
	ids, attempts, owners := make([]int64, len(cls)), make([]int32, len(cls)), make([]string, len(cls))
	for i, cl := range cls {
		ids[i], attempts[i], owners[i] = int64(cl.ID), int32(cl.Attempt), cl.Lease
	}
	rows, err := c.pool.Query(ctx, heartbeatSQL, ids, attempts, owners, lease)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (JobID, error) {
		var id int64
		err := r.Scan(&id)
		return JobID(id), err
	})
}

// JobHeartbeat extends the leases of claimed jobs by lease (zero: Config.Lease) from now
// (write on the queue) and returns the ids still held; a job missing from the answer
// was lost (re-delivered after its lease ran out, or cancelled): stop working on it.
func (c *Client) JobHeartbeat(ctx context.Context, tenant, queue string, cls []Claim, lease time.Duration) ([]JobID, error) {
	if _, err := c.settleTarget(ctx, tenant, queue); err != nil {
		return nil, err
	}
	if lease == 0 {
		lease = c.cfg.Lease
	}
	if lease < time.Second || lease > time.Hour {
		return nil, problem.Unprocessable("invalid_lease", "a lease is 1s to 1h").WithField("lease", "out of range")
	}
	if len(cls) > maxClaim {
		return nil, problem.Unprocessable("too_many_jobs", "a heartbeat covers at most %d jobs", maxClaim)
	}
	ids, err := c.heartbeat(ctx, cls, lease)
	return ids, db.Translate(err, "job")
}

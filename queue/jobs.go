package queue

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

const liveColumns = `id, tenant_id, kind, state::text, priority, attempt, max_attempts, unique_key, group_key, payload,
	NULL::jsonb, errors, created_at, run_at, started_at, NULL::timestamptz, lease_until, run_at > now()`

const historyColumns = `id, tenant_id, kind, state, priority, attempt, max_attempts, unique_key, group_key, payload,
	result, errors, created_at, run_at, started_at, finished_at, NULL::timestamptz, false`

// scanJob reads a row of liveColumns or historyColumns.
func scanJob(queue string) pgx.RowToFunc[*Job] {
	return func(r pgx.CollectableRow) (*Job, error) {
		j := &Job{Queue: queue}
		var prio int16
		var unique, group *string
		var errs []byte
		var future bool
		err := r.Scan(&j.ID, &j.Tenant, &j.Kind, &j.State, &prio, &j.Attempt, &j.MaxAttempts, &unique, &group, &j.Payload,
			&j.Result, &errs, &j.CreatedAt, &j.RunAt, &j.StartedAt, &j.FinishedAt, &j.LeaseUntil, &future)
		if err != nil {
			return nil, err
		}
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
		if j.State == StateAvailable && future {
			j.State = StateScheduled
			if j.Attempt > 0 {
				j.State = StateRetryable
			}
		}
		return j, nil
	}
}

// JobGet returns a job of a queue, live or finished (read on the queue). Finished jobs
// are kept for Config.HistoryRetention (dead letters for DeadRetention).
func (c *Client) JobGet(ctx context.Context, tenant, queue string, id JobID) (*Job, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermRead); err != nil {
		return nil, err
	}
	ref, err := c.queues.get(ctx, tenant, queue, false)
	if err != nil {
		return nil, err
	}
	rows, err := c.pool.Query(ctx, `SELECT `+liveColumns+` FROM jobs WHERE id = $1 AND queue_id = $2
		UNION ALL SELECT `+historyColumns+` FROM job_history WHERE id = $1 AND queue_id = $2 LIMIT 1`, id, ref.ID)
	if err != nil {
		return nil, db.Translate(err, "job")
	}
	j, err := pgx.CollectExactlyOneRow(rows, scanJob(queue))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, jobNotFound(id)
	}
	return j, db.Translate(err, "job")
}

// JobFilter narrows JobList. Nil means every live job.
type JobFilter struct {
	// State is one of the job states; empty means every live (not finished) job.
	State string
	// Limit is the page size: 1 to 1000. Default 50.
	Limit int
	// Cursor is the NextCursor of the previous page.
	Cursor string
}

// JobPage is a page of jobs.
type JobPage struct {
	Items      []*Job `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

func invalidCursor() error {
	return problem.Invalid("invalid_cursor", "this cursor was not returned by this listing").WithField("query.cursor", "invalid")
}

// JobList lists a queue's jobs (read on the queue): live ones oldest first; finished
// ones (completed, cancelled, dead) newest first.
func (c *Client) JobList(ctx context.Context, tenant, queue string, f *JobFilter) (JobPage, error) {
	if f == nil {
		f = &JobFilter{}
	}
	if err := c.authorize(ctx, tenant, queue, auth.PermRead); err != nil {
		return JobPage{}, err
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 50
	}
	var after int64
	if f.Cursor != "" {
		v, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || v <= 0 {
			return JobPage{}, invalidCursor()
		}
		after = v
	}
	ref, err := c.queues.get(ctx, tenant, queue, false)
	if err != nil {
		return JobPage{}, err
	}
	var sql string
	switch f.State {
	case "":
		sql = `SELECT ` + liveColumns + ` FROM jobs WHERE queue_id = $1 AND id > $2 ORDER BY id LIMIT $3`
	case StateAvailable:
		sql = `SELECT ` + liveColumns + ` FROM jobs WHERE queue_id = $1 AND id > $2 AND state = 'available' AND run_at <= now() ORDER BY id LIMIT $3`
	case StateScheduled:
		sql = `SELECT ` + liveColumns + ` FROM jobs WHERE queue_id = $1 AND id > $2 AND state = 'available' AND run_at > now() AND attempt = 0 ORDER BY id LIMIT $3`
	case StateRetryable:
		sql = `SELECT ` + liveColumns + ` FROM jobs WHERE queue_id = $1 AND id > $2 AND state = 'available' AND run_at > now() AND attempt > 0 ORDER BY id LIMIT $3`
	case StateBlocked, StateRunning:
		sql = `SELECT ` + liveColumns + ` FROM jobs WHERE queue_id = $1 AND id > $2 AND state = '` + f.State + `' ORDER BY id LIMIT $3`
	case StateCompleted, StateCancelled, StateDead:
		if after == 0 {
			after = 1<<63 - 1
		}
		sql = `SELECT ` + historyColumns + ` FROM job_history WHERE queue_id = $1 AND id < $2 AND state = '` + f.State + `' ORDER BY id DESC LIMIT $3`
	default:
		return JobPage{}, problem.Invalid("invalid_state", "state is one of available, scheduled, retryable, blocked, running, completed, cancelled, dead").
			WithField("query.state", "invalid")
	}
	rows, err := c.pool.Query(ctx, sql, ref.ID, after, limit+1)
	if err != nil {
		return JobPage{}, db.Translate(err, "jobs")
	}
	jobs, err := pgx.CollectRows(rows, scanJob(queue))
	if err != nil {
		return JobPage{}, db.Translate(err, "jobs")
	}
	page := JobPage{Items: jobs}
	if len(jobs) > limit {
		page.Items = jobs[:limit]
		page.NextCursor = jobs[limit-1].ID.String()
	}
	return page, nil
}

const cancelSQL = `
WITH gone AS (
    DELETE FROM jobs WHERE id = $1 AND queue_id = $2 RETURNING *
), hist AS (
    INSERT INTO job_history (id, queue_id, tenant_id, state, kind, priority, attempt, max_attempts, owner, unique_key,
        group_key, payload, errors, created_at, run_at, started_at)
    SELECT id, queue_id, tenant_id, 'cancelled', kind, priority, attempt, max_attempts, owner, unique_key,
        group_key, payload, errors, created_at, run_at, started_at
    FROM gone WHERE $3
)
SELECT state::text FROM gone`

// JobCancel cancels a live job (write on the queue): waiting, scheduled, blocked or
// running, it leaves the queue as cancelled at once; the worker running it loses its
// lease (its next heartbeat or settling call says so). A finished job answers 409
// job_finished.
func (c *Client) JobCancel(ctx context.Context, tenant, queue string, id JobID) error {
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error { return c.JobCancelTx(ctx, tx, tenant, queue, id) })
	return db.Translate(err, "job")
}

// JobCancelTx is JobCancel inside the caller's transaction: the job is cancelled (and
// the next job of its FIFO group becomes runnable) only if tx commits; until then the
// job's row stays locked. The cancellation is audited in tx. Metrics count it when the
// call returns, whether or not tx commits.
func (c *Client) JobCancelTx(ctx context.Context, tx pgx.Tx, tenant, queue string, id JobID) error {
	if err := c.authorize(ctx, tenant, queue, auth.PermWrite); err != nil {
		return err
	}
	ref, err := c.queues.get(ctx, tenant, queue, false)
	if err != nil {
		return err
	}
	var group *string
	err = tx.QueryRow(ctx, `SELECT group_key FROM jobs WHERE id = $1 AND queue_id = $2`, id, ref.ID).Scan(&group)
	if errors.Is(err, pgx.ErrNoRows) {
		return notLiveIn(ctx, tx, ref, id)
	}
	if err != nil {
		return db.Translate(err, "job")
	}
	if group != nil {
		if err := lockGroups(ctx, tx, ref.ID, []string{*group}); err != nil {
			return db.Translate(err, "job")
		}
	}
	var state string
	err = tx.QueryRow(ctx, cancelSQL, id, ref.ID, c.keep).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return notLiveIn(ctx, tx, ref, id)
	}
	if err != nil {
		return db.Translate(err, "job")
	}
	if group != nil {
		if _, err := promote(ctx, tx, []int64{ref.ID}, []string{*group}); err != nil {
			return db.Translate(err, "job")
		}
	}
	err = audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "queue.job_cancel", ResourceType: "queue", ResourceID: queue,
		Details: map[string]any{"job": id.String(), "state": state}})
	if err != nil {
		return db.Translate(err, "job")
	}
	c.metrics.finished(ref, "cancelled", 0)
	return nil
}

// notLiveIn answers for a job not in the hot table, querying through q: 409 job_finished
// or 404.
func notLiveIn(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, ref queueRef, id JobID) error {
	var state string
	err := q.QueryRow(ctx, `SELECT state FROM job_history WHERE id = $1 AND queue_id = $2`, id, ref.ID).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return jobNotFound(id)
	}
	if err != nil {
		return db.Translate(err, "job")
	}
	return problem.Conflict("job_finished", "job %d already finished (%s)", id, state)
}

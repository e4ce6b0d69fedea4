package queue

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// DeadList lists a queue's dead letters, newest first (read on the queue).
func (c *Client) DeadList(ctx context.Context, tenant, queue string, limit int, cursor string) (JobPage, error) {
	return c.JobList(ctx, tenant, queue, &JobFilter{State: StateDead, Limit: limit, Cursor: cursor})
}

// maxDeadBatch bounds how many dead letters one retry or purge moves.
const maxDeadBatch = 10000

const deadRetrySQL = `
WITH picked AS (
    SELECT * FROM job_history
    WHERE queue_id = $1 AND state = 'dead' AND ($2::bigint[] IS NULL OR id = ANY($2))
    ORDER BY id LIMIT $3 FOR UPDATE
), ins AS (
    INSERT INTO jobs (id, queue_id, tenant_id, state, kind, priority, run_at, attempt, max_attempts, unique_key, group_key,
        payload, errors, created_at)
    SELECT id, queue_id, tenant_id, CASE WHEN group_key IS NULL THEN 'available' ELSE 'blocked' END::job_state,
        kind, priority, now(), 0, max_attempts, unique_key, group_key, payload, errors, created_at
    FROM picked ORDER BY id
    ON CONFLICT DO NOTHING
    RETURNING id
), del AS (
    DELETE FROM job_history h USING ins WHERE h.id = ins.id RETURNING h.id
)
SELECT count(*), (SELECT count(*) FROM picked) FROM del`

// DeadRetry puts dead letters of a queue back to wait with fresh attempts (write on the
// queue): those with the given ids, or with none given every one (up to 10,000 a
// call). A dead letter whose unique key a live job holds stays dead. It returns how many
// were requeued.
func (c *Client) DeadRetry(ctx context.Context, tenant, queue string, ids []JobID) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var err error
		n, err = c.DeadRetryTx(ctx, tx, tenant, queue, ids)
		return err
	})
	if err != nil {
		return 0, db.Translate(err, "dead letters")
	}
	if ref, err := c.queues.get(ctx, tenant, queue, false); err == nil && n > 0 {
		c.hub.wake(ref.ID, ref.Name) // this node's waiting claims, without waiting for the notification
	}
	return n, nil
}

// DeadRetryTx is DeadRetry inside the caller's transaction: the dead letters are
// requeued, audited in tx, and workers on every node woken, only if tx commits.
func (c *Client) DeadRetryTx(ctx context.Context, tx pgx.Tx, tenant, queue string, ids []JobID) (int, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermWrite); err != nil {
		return 0, err
	}
	if len(ids) > maxDeadBatch {
		return 0, problem.Unprocessable("too_many_jobs", "at most %d jobs a call", maxDeadBatch)
	}
	ref, err := c.queues.get(ctx, tenant, queue, false)
	if err != nil {
		return 0, err
	}
	var idArg any
	if ids != nil {
		idArg = ids
	}
	var n int
	err = func() error {
		var groups []string
		rows, err := tx.Query(ctx, `SELECT DISTINCT group_key FROM job_history
			WHERE queue_id = $1 AND state = 'dead' AND group_key IS NOT NULL AND ($2::bigint[] IS NULL OR id = ANY($2))`, ref.ID, idArg)
		if err != nil {
			return err
		}
		if groups, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(groups) > 0 {
			if err := lockGroups(ctx, tx, ref.ID, groups); err != nil {
				return err
			}
		}
		var picked int
		if err := tx.QueryRow(ctx, deadRetrySQL, ref.ID, idArg, maxDeadBatch).Scan(&n, &picked); err != nil {
			return err
		}
		if len(groups) > 0 {
			if _, err := promote(ctx, tx, []int64{ref.ID}, groups); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channelJobs, notifyPayload(ref.ID, ref.Name)); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "queue.dead_retry", ResourceType: "queue", ResourceID: queue,
			Details: map[string]any{"requeued": n, "skipped": picked - n}})
	}()
	if err != nil {
		return 0, db.Translate(err, "dead letters")
	}
	return n, nil
}

// DeadPurge deletes dead letters of a queue (admin on the queue): those with the given
// ids, or with none given every one. It returns how many were deleted.
func (c *Client) DeadPurge(ctx context.Context, tenant, queue string, ids []JobID) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var err error
		n, err = c.DeadPurgeTx(ctx, tx, tenant, queue, ids)
		return err
	})
	if err != nil {
		return 0, db.Translate(err, "dead letters")
	}
	return n, nil
}

// DeadPurgeTx is DeadPurge inside the caller's transaction: the dead letters are
// deleted, audited in tx, only if tx commits.
func (c *Client) DeadPurgeTx(ctx context.Context, tx pgx.Tx, tenant, queue string, ids []JobID) (int64, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermAdmin); err != nil {
		return 0, err
	}
	if len(ids) > maxDeadBatch {
		return 0, problem.Unprocessable("too_many_jobs", "at most %d jobs a call", maxDeadBatch)
	}
	ref, err := c.queues.get(ctx, tenant, queue, false)
	if err != nil {
		return 0, err
	}
	var idArg any
	if ids != nil {
		idArg = ids
	}
	tag, err := tx.Exec(ctx, `DELETE FROM job_history WHERE queue_id = $1 AND state = 'dead' AND ($2::bigint[] IS NULL OR id = ANY($2))`,
		ref.ID, idArg)
	if err != nil {
		return 0, db.Translate(err, "dead letters")
	}
	n := tag.RowsAffected()
	err = audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "queue.dead_purge", ResourceType: "queue", ResourceID: queue,
		Details: map[string]any{"deleted": n}})
	if err != nil {
		return 0, db.Translate(err, "dead letters")
	}
	return n, nil
}

package queue

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// withLock runs fn in a transaction holding the advisory lock key, unless another node
// holds it (then it does nothing).
func (c *Client) withLock(ctx context.Context, key int64, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, key).Scan(&got); err != nil || !got {
			return err
		}
		return fn(tx)
	})
}

const reapRetrySQL = `
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_until < now() AND attempt < max_attempts
    ORDER BY lease_until LIMIT 1000
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE jobs j SET state = 'available', owner = NULL, lease_until = NULL, run_at = now(),
        errors = queue_errors_append(j.errors, jsonb_build_object('attempt', j.attempt, 'at', now(),
            'error', 'lease expired: the worker stopped heart-beating'))
    FROM expired WHERE j.id = expired.id
    RETURNING j.queue_id
)
SELECT count(*), (SELECT count(pg_notify($1, q.id || ':' || q.name)) FROM queues q WHERE q.id IN (SELECT queue_id FROM u))
FROM u`

// reap re-delivers the jobs whose lease ran out (their worker stopped heart-beating):
// back to waiting for their next attempt at once, or out of attempts, dead-lettered. One
// node at a time does it.
func (c *Client) reap(ctx context.Context) error {
	for {
		var n, notified int
		err := c.withLock(ctx, reapLock, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, reapRetrySQL, channelJobs).Scan(&n, &notified)
		})
		if err != nil {
			return err
		}
		if n > 0 {
			c.log.Info("re-delivered jobs whose lease expired", "jobs", n)
		}
		if n < 1000 {
			break
		}
	}
	// Out of attempts: dead letters, settled like a failure under the expired claim.
	rows, err := c.pool.Query(ctx, `SELECT id, attempt, owner, group_key, queue_id FROM jobs
		WHERE state = 'running' AND lease_until < now() AND attempt >= max_attempts LIMIT 1000`)
	if err != nil {
		return err
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (settlement, error) {
		var s settlement
		err := r.Scan(&s.id, &s.attempt, &s.owner, &s.group, &s.queueID)
		s.errJSON = attemptError(int(s.attempt), "lease expired: the worker stopped heart-beating")
		return s, err
	})
	if err != nil || len(items) == 0 {
		return err
	}
	done, err := c.finish(ctx, "dead", items)
	if err == nil && len(done) > 0 {
		c.log.Info("dead-lettered jobs whose last lease expired", "jobs", len(done))
	}
	return err
}

// Housekeep deletes finished jobs past Config.HistoryRetention and dead letters past
// Config.DeadRetention, and repairs FIFO groups left without a runnable head. Run does it
// every minute on one node at a time; call it to do it now.
func (c *Client) Housekeep(ctx context.Context) error {
	if err := c.prune(ctx, `state <> 'dead'`, c.cfg.HistoryRetention); err != nil {
		return err
	}
	if err := c.prune(ctx, `state = 'dead'`, c.cfg.DeadRetention); err != nil {
		return err
	}
	return c.repairGroups(ctx)
}

// prune deletes history rows matching cond that finished more than keep ago, in
// batches, each under the housekeeping lock.
func (c *Client) prune(ctx context.Context, cond string, keep time.Duration) error {
	if keep <= 0 {
		keep = 0
	}
	for {
		var n int64
		err := c.withLock(ctx, houseLock, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM job_history WHERE ctid = ANY(ARRAY(
				SELECT ctid FROM job_history WHERE finished_at < now() - $1::interval AND `+cond+` LIMIT 10000))`, keep)
			n = tag.RowsAffected()
			return err
		})
		if err != nil || n < 10000 {
			return err
		}
	}
}

// repairGroups promotes the head of any FIFO group whose jobs are all blocked: left so
// by a process that died between finishing a group's job and promoting the next.
func (c *Client) repairGroups(ctx context.Context) error {
	rows, err := c.pool.Query(ctx, `SELECT queue_id, group_key FROM jobs WHERE group_key IS NOT NULL
		GROUP BY queue_id, group_key HAVING bool_and(state = 'blocked') LIMIT 1000`)
	if err != nil {
		return err
	}
	var qs []int64
	var gs []string
	var q int64
	var g string
	if _, err := pgx.ForEachRow(rows, []any{&q, &g}, func() error {
		qs, gs = append(qs, q), append(gs, g)
		return nil
	}); err != nil || len(qs) == 0 {
		return err
	}
	return pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		if err := lockGroupPairs(ctx, tx, qs, gs); err != nil {
			return err
		}
		_, err := promote(ctx, tx, qs, gs)
		return err
	})
}

// vacuumAt is how many dead rows, at least, make the hot table worth vacuuming.
const vacuumAt = 2000

// vacuum vacuums the hot table when its dead rows reach a quarter of its live ones (and
// vacuumAt), so claims do not wade through the dead index entries of finished jobs and
// freed space is reused at once. One node at a time does it.
func (c *Client) vacuum(ctx context.Context) error {
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var dead, live int64
	err = conn.QueryRow(ctx, `SELECT pg_stat_get_dead_tuples('jobs'::regclass), pg_stat_get_live_tuples('jobs'::regclass)`).Scan(&dead, &live)
	if err != nil || dead < max(vacuumAt, live/4) {
		return err
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, vacuumLock).Scan(&got); err != nil || !got {
		return err
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, vacuumLock); err != nil {
			conn.Conn().PgConn().Close(context.Background()) // drop the session, and its lock, with it
		}
	}()
	_, err = conn.Exec(ctx, `VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) jobs`)
	return err
}

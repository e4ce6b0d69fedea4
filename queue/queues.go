package queue

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// QueueInfo is a queue with its settings and what it holds now.
type QueueInfo struct {
	Name               string    `json:"name"`
	Paused             bool      `json:"paused"`
	MaxRunning         *int      `json:"max_running,omitempty" doc:"At most this many of its jobs run at once, across all nodes."`
	MaxStartsPerSecond *int      `json:"max_starts_per_second,omitempty" doc:"At most this many of its jobs start in any one-second window, across all nodes."`
	Available          int64     `json:"available" doc:"Jobs runnable now."`
	Scheduled          int64     `json:"scheduled" doc:"Jobs waiting for their run_at: delayed, or retrying after a failure."`
	Blocked            int64     `json:"blocked" doc:"Jobs waiting behind an earlier job of their FIFO group."`
	Running            int64     `json:"running"`
	Dead               int64     `json:"dead" doc:"Dead letters kept."`
	OldestWaiting      float64   `json:"oldest_waiting_seconds" doc:"How long the oldest runnable job has waited; 0 when none."`
	CreatedAt          time.Time `json:"created_at"`
	tenant             string
	id                 int64
}

const queueStatsSQL = `
SELECT q.id, q.tenant_id, q.name, q.paused, q.max_running, q.max_starts_per_second, q.created_at,
    coalesce(a.available, 0), coalesce(a.scheduled, 0), coalesce(extract(epoch FROM now() - a.oldest), 0)::float8,
    (SELECT count(*) FROM jobs j WHERE j.queue_id = q.id AND j.state = 'blocked' AND j.group_key IS NOT NULL),
    (SELECT count(*) FROM jobs j WHERE j.queue_id = q.id AND j.state = 'running'),
    (SELECT count(*) FROM job_history h WHERE h.queue_id = q.id AND h.state = 'dead')
FROM queues q
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE j.run_at <= now()) AS available, count(*) FILTER (WHERE j.run_at > now()) AS scheduled,
        min(j.run_at) FILTER (WHERE j.run_at <= now()) AS oldest
    FROM jobs j WHERE j.queue_id = q.id AND j.state = 'available'
) a ON true`

func scanQueue(r pgx.CollectableRow) (QueueInfo, error) {
	var q QueueInfo
	err := r.Scan(&q.id, &q.tenant, &q.Name, &q.Paused, &q.MaxRunning, &q.MaxStartsPerSecond, &q.CreatedAt,
		&q.Available, &q.Scheduled, &q.OldestWaiting, &q.Blocked, &q.Running, &q.Dead)
	return q, err
}

// QueueList lists the tenant's queues with their counts (read on queue:*), by name.
// Queues come into being at their first push or claim.
func (c *Client) QueueList(ctx context.Context, tenant string) ([]QueueInfo, error) {
	if _, err := c.auth.Authorize(ctx, tenant, "queue:*", auth.PermRead); err != nil {
		return nil, err
	}
	rows, err := c.pool.Query(ctx, queueStatsSQL+` WHERE q.tenant_id = $1 ORDER BY q.name`, tenant)
	if err != nil {
		return nil, db.Translate(err, "queues")
	}
	qs, err := pgx.CollectRows(rows, scanQueue)
	return qs, db.Translate(err, "queues")
}

// QueueGet returns one queue with its counts (read on the queue).
func (c *Client) QueueGet(ctx context.Context, tenant, queue string) (QueueInfo, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermRead); err != nil {
		return QueueInfo{}, err
	}
	return c.queueGet(ctx, tenant, queue)
}

func (c *Client) queueGet(ctx context.Context, tenant, queue string) (QueueInfo, error) {
	rows, err := c.pool.Query(ctx, queueStatsSQL+` WHERE q.tenant_id = $1 AND q.name = $2`, tenant, queue)
	if err != nil {
		return QueueInfo{}, db.Translate(err, "queue")
	}
	q, err := pgx.CollectExactlyOneRow(rows, scanQueue)
	if errors.Is(err, pgx.ErrNoRows) {
		return q, queueNotFound(queue)
	}
	return q, db.Translate(err, "queue")
}

// QueueSettings changes a queue's settings; nil fields stay as they are.
type QueueSettings struct {
	// Paused stops (true) or resumes (false) claims from the queue on every node. Running
	// jobs finish; claims already executing when the pause commits may still start theirs.
	Paused *bool `json:"paused,omitempty"`
	// MaxRunning caps how many of the queue's jobs run at once across all nodes; 0
	// removes the cap.
	MaxRunning *int `json:"max_running,omitempty" minimum:"0" maximum:"1000000"`
	// MaxStartsPerSecond caps how many of the queue's jobs start in any one-second window
	// across all nodes; 0 removes the cap.
	MaxStartsPerSecond *int `json:"max_starts_per_second,omitempty" minimum:"0" maximum:"1000000"`
}

// QueueUpdate changes a queue's settings (admin on the queue), creating the queue if it
// does not exist yet, and answers the queue. Every node applies the change to its next
// claim.
func (c *Client) QueueUpdate(ctx context.Context, tenant, queue string, s QueueSettings) (QueueInfo, error) {
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error { return c.QueueUpdateTx(ctx, tx, tenant, queue, s) })
	if err != nil {
		return QueueInfo{}, db.Translate(err, "queue")
	}
	if s.Paused != nil && !*s.Paused {
		if ref, err := c.queues.get(ctx, tenant, queue, false); err == nil {
			c.hub.wake(ref.ID, ref.Name) // this node's waiting claims, without waiting for the notification
		}
	}
	return c.queueGet(ctx, tenant, queue)
}

// QueueUpdateTx is QueueUpdate inside the caller's transaction: the settings change,
// audited in tx, only if tx commits, and every node applies them from then on. Read the
// queue with QueueGet after committing. (The queue itself is created at once, outside
// tx, when it does not exist yet.)
func (c *Client) QueueUpdateTx(ctx context.Context, tx pgx.Tx, tenant, queue string, s QueueSettings) error {
	if err := c.authorize(ctx, tenant, queue, auth.PermAdmin); err != nil {
		return err
	}
	for _, v := range []struct {
		p *int
		f string
	}{{s.MaxRunning, "max_running"}, {s.MaxStartsPerSecond, "max_starts_per_second"}} {
		if v.p != nil && (*v.p < 0 || *v.p > 1000000) {
			return problem.Unprocessable("invalid_limit", "%s is 0 (none) to 1000000", v.f).WithField(v.f, "out of range")
		}
	}
	ref, err := c.queues.get(ctx, tenant, queue, true)
	if err != nil {
		return err
	}
	limit := func(p *int) (set bool, v *int) {
		if p == nil {
			return false, nil
		}
		if *p == 0 {
			return true, nil
		}
		return true, p
	}
	setRun, run := limit(s.MaxRunning)
	setRate, rate := limit(s.MaxStartsPerSecond)
	err = func() error {
		tag, err := tx.Exec(ctx, `UPDATE queues SET paused = coalesce($2, paused),
				max_running = CASE WHEN $3 THEN $4 ELSE max_running END,
				max_starts_per_second = CASE WHEN $5 THEN $6 ELSE max_starts_per_second END,
				updated_at = now()
			WHERE id = $1`, ref.ID, s.Paused, setRun, run, setRate, rate)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 { // deleted (with its tenant) since the cache named it
			c.queues.forgetRef(ref)
			return queueNotFound(queue)
		}
		details := map[string]any{}
		if s.Paused != nil {
			details["paused"] = *s.Paused
		}
		if setRun {
			details["max_running"] = s.MaxRunning
		}
		if setRate {
			details["max_starts_per_second"] = s.MaxStartsPerSecond
		}
		action := "queue.update"
		if s.Paused != nil && !setRun && !setRate {
			action = map[bool]string{true: "queue.pause", false: "queue.resume"}[*s.Paused]
		}
		if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: action, ResourceType: "queue", ResourceID: queue,
			Details: details}); err != nil {
			return err
		}
		if s.Paused != nil && !*s.Paused { // resumed: wake every node's workers
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channelJobs, notifyPayload(ref.ID, ref.Name))
		}
		return err
	}()
	return db.Translate(err, "queue")
}

// QueuePause stops claims from a queue on every node (admin on the queue).
func (c *Client) QueuePause(ctx context.Context, tenant, queue string) (QueueInfo, error) {
	t := true
	return c.QueueUpdate(ctx, tenant, queue, QueueSettings{Paused: &t})
}

// QueueResume lets claims from a queue start again on every node (admin on the queue).
func (c *Client) QueueResume(ctx context.Context, tenant, queue string) (QueueInfo, error) {
	f := false
	return c.QueueUpdate(ctx, tenant, queue, QueueSettings{Paused: &f})
}

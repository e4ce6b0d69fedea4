package queue

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/robfig/cron/v3"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// ScheduleInput defines a periodic job.
type ScheduleInput struct {
	// Spec is the cron schedule, in UTC unless it starts with CRON_TZ=<zone>: five fields
	// (minute hour day-of-month month day-of-week), six with leading seconds, or a
	// descriptor (@hourly, @daily, @every 10m). Ticks at least a second apart.
	Spec string `json:"spec" minLength:"1" maxLength:"200" example:"*/5 * * * *"`
	// Kind, Payload, Priority and MaxAttempts are those of each job pushed.
	Kind        string          `json:"kind" minLength:"1" maxLength:"200"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	Priority    int             `json:"priority,omitempty" minimum:"-1000" maximum:"1000"`
	MaxAttempts int             `json:"max_attempts,omitempty" minimum:"0" maximum:"1000" doc:"0: the default."`
	// Paused keeps the schedule without pushing jobs.
	Paused bool `json:"paused,omitempty"`
}

// Schedule is a periodic job's definition and state.
type Schedule struct {
	Queue       string          `json:"queue"`
	Name        string          `json:"name"`
	Spec        string          `json:"spec"`
	Kind        string          `json:"kind"`
	Payload     json.RawMessage `json:"payload"`
	Priority    int             `json:"priority"`
	MaxAttempts int             `json:"max_attempts"`
	Paused      bool            `json:"paused"`
	NextRunAt   time.Time       `json:"next_run_at"`
	LastRunAt   *time.Time      `json:"last_run_at,omitempty"`
	LastJobID   *JobID          `json:"last_job_id,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
}

var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parseSpec parses a cron spec and checks its ticks are at least a second apart.
func parseSpec(spec string) (cron.Schedule, error) {
	s, err := cronParser.Parse(spec)
	if err != nil {
		return nil, problem.Unprocessable("invalid_schedule", "the schedule cannot be read: %v", err).WithField("spec", "invalid")
	}
	now := time.Now()
	a := s.Next(now)
	if a.IsZero() {
		return nil, problem.Unprocessable("invalid_schedule", "the schedule never fires").WithField("spec", "never fires")
	}
	if s.Next(a).Sub(a) < time.Second {
		return nil, problem.Unprocessable("invalid_schedule", "a schedule's ticks are at least one second apart").WithField("spec", "too frequent")
	}
	return s, nil
}

const scheduleColumns = `queue, name, spec, kind, payload, priority, max_attempts, paused, next_run_at, last_run_at, last_job_id, created_at, updated_at`

func scanSchedule(r pgx.CollectableRow) (Schedule, error) {
	var s Schedule
	var prio int16
	err := r.Scan(&s.Queue, &s.Name, &s.Spec, &s.Kind, &s.Payload, &prio, &s.MaxAttempts, &s.Paused, &s.NextRunAt, &s.LastRunAt,
		&s.LastJobID, &s.CreatedAt, &s.UpdatedAt)
	s.Priority = int(prio)
	return s, err
}

// ScheduleSet creates or replaces a queue's periodic job (admin on the queue): from its
// next tick on, one job per tick is pushed across all nodes. A tick missed while no node
// ran is pushed once, late; older missed ticks are skipped. created reports a new one.
func (c *Client) ScheduleSet(ctx context.Context, tenant, queue, name string, in ScheduleInput) (Schedule, bool, error) {
	var s Schedule
	var created bool
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		var err error
		s, created, err = c.ScheduleSetTx(ctx, tx, tenant, queue, name, in)
		return err
	})
	if err != nil {
		return Schedule{}, false, db.Translate(err, "schedule")
	}
	return s, created, nil
}

// ScheduleSetTx is ScheduleSet inside the caller's transaction: the schedule changes,
// audited in tx, only if tx commits. (The queue itself is created at once, outside tx,
// when it does not exist yet.)
func (c *Client) ScheduleSetTx(ctx context.Context, tx pgx.Tx, tenant, queue, name string, in ScheduleInput) (Schedule, bool, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermAdmin); err != nil {
		return Schedule{}, false, err
	}
	if !nameRE.MatchString(name) {
		return Schedule{}, false, problem.Unprocessable("invalid_schedule_name", "a schedule name is 1 to 128 letters, digits or _ . -").
			WithField("name", "invalid")
	}
	sched, err := parseSpec(in.Spec)
	if err != nil {
		return Schedule{}, false, err
	}
	r, err := c.prepare(-1, JobInput{Kind: in.Kind, Payload: in.Payload, Priority: in.Priority, MaxAttempts: in.MaxAttempts}, time.Now())
	if err != nil {
		return Schedule{}, false, err
	}
	if _, err := c.queues.get(ctx, tenant, queue, true); err != nil {
		return Schedule{}, false, err
	}
	var s Schedule
	var created bool
	err = func() error {
		rows, err := tx.Query(ctx, `INSERT INTO queue_schedules (tenant_id, queue, name, spec, kind, payload, priority, max_attempts, paused, next_run_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (tenant_id, queue, name) DO UPDATE SET spec = $4, kind = $5, payload = $6, priority = $7, max_attempts = $8,
				paused = $9, next_run_at = $10, updated_at = now()
			RETURNING `+scheduleColumns+`, xmax = 0`, tenant, queue, name, in.Spec, r.kind, r.payload, r.priority, r.maxAttempts, in.Paused,
			sched.Next(time.Now()))
		if err != nil {
			return err
		}
		s, err = pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (Schedule, error) {
			var s Schedule
			var prio int16
			err := row.Scan(&s.Queue, &s.Name, &s.Spec, &s.Kind, &s.Payload, &prio, &s.MaxAttempts, &s.Paused, &s.NextRunAt,
				&s.LastRunAt, &s.LastJobID, &s.CreatedAt, &s.UpdatedAt, &created)
			s.Priority = int(prio)
			return s, err
		})
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "queue.schedule_set", ResourceType: "queue", ResourceID: queue,
			Details: map[string]any{"schedule": name, "spec": in.Spec, "kind": in.Kind, "paused": in.Paused}})
	}()
	if err != nil {
		return Schedule{}, false, db.Translate(err, "schedule")
	}
	return s, created, nil
}

// ScheduleList lists a queue's periodic jobs by name (read on the queue).
func (c *Client) ScheduleList(ctx context.Context, tenant, queue string) ([]Schedule, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermRead); err != nil {
		return nil, err
	}
	rows, err := c.pool.Query(ctx, `SELECT `+scheduleColumns+` FROM queue_schedules WHERE tenant_id = $1 AND queue = $2 ORDER BY name`,
		tenant, queue)
	if err != nil {
		return nil, db.Translate(err, "schedules")
	}
	out, err := pgx.CollectRows(rows, scanSchedule)
	return out, db.Translate(err, "schedules")
}

// ScheduleDelete deletes a queue's periodic job (admin on the queue); jobs it pushed
// stay.
func (c *Client) ScheduleDelete(ctx context.Context, tenant, queue, name string) error {
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error { return c.ScheduleDeleteTx(ctx, tx, tenant, queue, name) })
	return db.Translate(err, "schedule")
}

// ScheduleDeleteTx is ScheduleDelete inside the caller's transaction: the schedule is
// deleted, audited in tx, only if tx commits.
func (c *Client) ScheduleDeleteTx(ctx context.Context, tx pgx.Tx, tenant, queue, name string) error {
	if err := c.authorize(ctx, tenant, queue, auth.PermAdmin); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM queue_schedules WHERE tenant_id = $1 AND queue = $2 AND name = $3`, tenant, queue, name)
	if err != nil {
		return db.Translate(err, "schedule")
	}
	if tag.RowsAffected() == 0 {
		return problem.NotFound("schedule_not_found", "schedule %q not found", name)
	}
	return db.Translate(audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "queue.schedule_delete", ResourceType: "queue",
		ResourceID: queue, Details: map[string]any{"schedule": name}}), "schedule")
}

// schedule pushes one job for each due tick of every schedule, and moves the schedule
// to its next tick in the same transaction: once per tick across all nodes.
func (c *Client) schedule(ctx context.Context) error {
	for {
		n := 0
		err := c.withLock(ctx, scheduleLock, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT tenant_id, queue, name, spec, kind, payload, priority, max_attempts FROM queue_schedules
				WHERE NOT paused AND next_run_at <= now() ORDER BY next_run_at LIMIT 100 FOR UPDATE SKIP LOCKED`)
			if err != nil {
				return err
			}
			type due struct {
				tenant, queue, name, spec string
				r                         row
			}
			dues, err := pgx.CollectRows(rows, func(rw pgx.CollectableRow) (due, error) {
				var d due
				err := rw.Scan(&d.tenant, &d.queue, &d.name, &d.spec, &d.r.kind, &d.r.payload, &d.r.priority, &d.r.maxAttempts)
				return d, err
			})
			if err != nil {
				return err
			}
			n = len(dues)
			for _, d := range dues {
				next := time.Now().Add(time.Hour)
				if s, err := cronParser.Parse(d.spec); err == nil {
					next = s.Next(time.Now())
				}
				ref, err := c.queues.get(ctx, d.tenant, d.queue, true)
				if err != nil {
					return err
				}
				out, err := c.insert(ctx, tx, ref, []row{d.r}, nil, false, true)
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `UPDATE queue_schedules SET next_run_at = $4, last_run_at = now(), last_job_id = $5
					WHERE tenant_id = $1 AND queue = $2 AND name = $3`, d.tenant, d.queue, d.name, next, out[0].ID); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil || n < 100 {
			if errors.Is(err, errQueueGone) {
				return nil
			}
			return err
		}
	}
}

package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
)

// JobInput is a job to push.
type JobInput struct {
	// Kind names the handler that runs the job ("email.send"): 1 to 200 characters.
	Kind string
	// Payload is the job's JSON argument. Nil means {}.
	Payload json.RawMessage
	// Priority orders runnable jobs of a queue: lower runs first. -1000 to 1000;
	// default 0.
	Priority int
	// RunAt delays the job until then. Zero means now (or after Delay).
	RunAt time.Time
	// Delay delays the job by this long from now when RunAt is zero.
	Delay time.Duration
	// MaxAttempts is how many attempts the job gets before it is dead-lettered: 1 to
	// 1000. Zero means the queue's default (Config.MaxAttempts, 20).
	MaxAttempts int
	// UniqueKey, when set, makes the push return the existing job's id instead of adding
	// one while a job with this key is waiting, running or waiting to retry in the queue.
	// At most 500 characters.
	UniqueKey string
	// GroupKey, when set, puts the job in a FIFO group: the group's jobs run one at a
	// time, in push order (a failed job retries before the next starts). At most 500
	// characters.
	GroupKey string
}

// JobID identifies a job. It is written in JSON as a string ("42"), as Strata writes
// every id.
type JobID int64

// String writes the id in decimal.
func (id JobID) String() string { return strconv.FormatInt(int64(id), 10) }

// MarshalText writes the id in decimal.
func (id JobID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads a decimal id.
func (id *JobID) UnmarshalText(b []byte) error {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || v <= 0 {
		return fmt.Errorf("%q is not a job id", b)
	}
	*id = JobID(v)
	return nil
}

// Pushed is the answer to a push.
type Pushed struct {
	ID       JobID `json:"id" doc:"The job's id."`
	Existing bool  `json:"existing,omitempty" doc:"True when a job holding the unique key already existed; id is that job's."`
}

// AttemptError is a failed attempt, as recorded with the job.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Error   string    `json:"error"`
}

// Job states as reported by JobGet and listings.
const (
	StateAvailable = "available" // runnable now
	StateScheduled = "scheduled" // waiting for its run_at (a delay)
	StateRetryable = "retryable" // waiting for its run_at after a failed attempt
	StateBlocked   = "blocked"   // behind an earlier job of its FIFO group
	StateRunning   = "running"
	StateCompleted = "completed"
	StateCancelled = "cancelled"
	StateDead      = "dead" // out of attempts: a dead letter
)

// Job is a job as a worker receives it and as listings show it.
type Job struct {
	ID          JobID           `json:"id"`
	Tenant      string          `json:"tenant"`
	Queue       string          `json:"queue"`
	Kind        string          `json:"kind"`
	State       string          `json:"state" enum:"available,scheduled,retryable,blocked,running,completed,cancelled,dead"`
	Payload     json.RawMessage `json:"payload"`
	Priority    int             `json:"priority"`
	Attempt     int             `json:"attempt" doc:"Attempts started so far; while running, the current one."`
	MaxAttempts int             `json:"max_attempts"`
	UniqueKey   string          `json:"unique_key,omitempty"`
	GroupKey    string          `json:"group_key,omitempty"`
	Errors      []AttemptError  `json:"errors,omitempty" doc:"Failed attempts, oldest first (the last 20)."`
	Result      json.RawMessage `json:"result,omitempty" doc:"What the worker returned on completion."`
	CreatedAt   time.Time       `json:"created_at"`
	RunAt       time.Time       `json:"run_at" doc:"When the job became (or becomes) runnable."`
	StartedAt   *time.Time      `json:"started_at,omitempty" doc:"When the current or last attempt started."`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	// Lease is the claim's token: settling calls must present it with Attempt. Set on
	// claimed jobs only.
	Lease      string     `json:"lease,omitempty" doc:"The claim's lease token; present it with attempt to settle the job."`
	LeaseUntil *time.Time `json:"lease_until,omitempty" doc:"When the lease runs out without a heartbeat."`
}

// Claim identifies one claim of a job: a transition applies only while the job is still
// running under this lease token and attempt.
type Claim struct {
	ID      JobID  `json:"id"`
	Lease   string `json:"lease" minLength:"1" maxLength:"200"`
	Attempt int    `json:"attempt" minimum:"1"`
}

// Claim returns the job's claim, for settling it.
func (j *Job) Claim() Claim { return Claim{ID: j.ID, Lease: j.Lease, Attempt: j.Attempt} }

// Bind decodes the job's payload into v.
func (j *Job) Bind(v any) error { return json.Unmarshal(j.Payload, v) }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// checkQueueName validates a queue (or schedule) name.
func checkQueueName(name string) error {
	if !nameRE.MatchString(name) {
		return problem.Unprocessable("invalid_queue_name", "a queue name is 1 to 128 letters, digits or _ . -, starting with a letter or digit").
			WithField("queue", "invalid")
	}
	return nil
}

func resource(queue string) string { return "queue:" + queue }

// row is a validated job ready to insert.
type row struct {
	kind        string
	payload     []byte
	priority    int16
	runAt       *time.Time
	maxAttempts int32
	uniqueKey   *string
	groupKey    *string
}

var emptyObject = []byte(`{}`)

// prepare validates in (the i-th of a batch, for error locations).
func (c *Client) prepare(i int, in JobInput, now time.Time) (row, error) {
	at := func(field string) string {
		if i < 0 {
			return field
		}
		return fmt.Sprintf("jobs[%d].%s", i, field)
	}
	r := row{kind: in.Kind, payload: in.Payload, priority: int16(in.Priority), maxAttempts: int32(in.MaxAttempts)}
	if in.Kind == "" || len(in.Kind) > 200 || !utf8.ValidString(in.Kind) {
		return r, problem.Unprocessable("invalid_kind", "a job's kind is 1 to 200 characters").WithField(at("kind"), "invalid")
	}
	if len(r.payload) == 0 {
		r.payload = emptyObject
	}
	if len(r.payload) > c.cfg.MaxPayloadBytes {
		return r, problem.TooLarge("payload_too_large", "a job's payload is at most %d bytes", c.cfg.MaxPayloadBytes).WithField(at("payload"), "too large")
	}
	if !json.Valid(r.payload) || bytes.Contains(r.payload, []byte(`\u0000`)) {
		return r, problem.Unprocessable("invalid_payload", "a job's payload must be JSON (without \\u0000)").WithField(at("payload"), "invalid")
	}
	if in.Priority < -1000 || in.Priority > 1000 {
		return r, problem.Unprocessable("invalid_priority", "priority is -1000 to 1000 (lower runs first)").WithField(at("priority"), "out of range")
	}
	if in.MaxAttempts == 0 {
		r.maxAttempts = int32(c.cfg.MaxAttempts)
	} else if in.MaxAttempts < 1 || in.MaxAttempts > 1000 {
		return r, problem.Unprocessable("invalid_max_attempts", "max_attempts is 1 to 1000").WithField(at("max_attempts"), "out of range")
	}
	switch {
	case !in.RunAt.IsZero():
		t := in.RunAt
		r.runAt = &t
	case in.Delay < 0:
		return r, problem.Unprocessable("invalid_delay", "a delay cannot be negative").WithField(at("delay"), "negative")
	case in.Delay > 0:
		t := now.Add(in.Delay)
		r.runAt = &t
	}
	for _, k := range []struct {
		v   string
		dst **string
		f   string
	}{{in.UniqueKey, &r.uniqueKey, "unique_key"}, {in.GroupKey, &r.groupKey, "group_key"}} {
		if k.v == "" {
			continue
		}
		if len(k.v) > 500 || !utf8.ValidString(k.v) || bytes.IndexByte([]byte(k.v), 0) >= 0 {
			return r, problem.Unprocessable("invalid_"+k.f, "%s is at most 500 characters of UTF-8", k.f).WithField(at(k.f), "invalid")
		}
		s := k.v
		*k.dst = &s
	}
	return r, nil
}

// authorize checks perm on the queue for the principal in ctx.
func (c *Client) authorize(ctx context.Context, tenant, queue string, perm auth.Permission) error {
	if err := checkQueueName(queue); err != nil {
		if _, aerr := c.auth.Access(ctx, tenant); aerr != nil {
			return aerr
		}
		return err
	}
	_, err := c.auth.Authorize(ctx, tenant, resource(queue), perm)
	return err
}

package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/queue"
)

// QueuePath is embedded by operations on one queue.
type QueuePath struct {
	TenantPath
	Queue string `path:"queue" maxLength:"128" doc:"Queue name: letters, digits, _ . -; queues come into being at their first push or claim."`
}

// JobPath is embedded by operations on one job.
type JobPath struct {
	QueuePath
	ID string `path:"id" doc:"Job id."`
}

func (p JobPath) id() (queue.JobID, error) {
	var id queue.JobID
	if err := id.UnmarshalText([]byte(p.ID)); err != nil {
		return 0, problem.NotFound("job_not_found", "job %q not found", p.ID)
	}
	return id, nil
}

// jobSpec is a job to push, as JSON.
type jobSpec struct {
	Kind        string          `json:"kind" minLength:"1" maxLength:"200" doc:"Names the handler that runs the job." example:"email.send"`
	Payload     json.RawMessage `json:"payload,omitempty" doc:"The job's JSON argument; {} when absent."`
	Priority    int             `json:"priority,omitempty" minimum:"-1000" maximum:"1000" doc:"Lower runs first; default 0."`
	RunAt       *time.Time      `json:"run_at,omitempty" doc:"Run no earlier than this."`
	DelayMS     int64           `json:"delay_ms,omitempty" minimum:"0" doc:"Run no earlier than this many milliseconds from now."`
	MaxAttempts int             `json:"max_attempts,omitempty" minimum:"0" maximum:"1000" doc:"Attempts before the job is dead-lettered; 0: the default (20)."`
	UniqueKey   string          `json:"unique_key,omitempty" maxLength:"500" doc:"While a job with this key waits, runs or retries in the queue, pushing another answers its id."`
	GroupKey    string          `json:"group_key,omitempty" maxLength:"500" doc:"FIFO group: its jobs run one at a time, in push order."`
}

func (j jobSpec) input() queue.JobInput {
	in := queue.JobInput{Kind: j.Kind, Payload: j.Payload, Priority: j.Priority, MaxAttempts: j.MaxAttempts, UniqueKey: j.UniqueKey,
		GroupKey: j.GroupKey, Delay: time.Duration(j.DelayMS) * time.Millisecond}
	if j.RunAt != nil {
		in.RunAt = *j.RunAt
	}
	return in
}

type jobPushIn struct {
	QueuePath
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Retrying with the same key returns the first answer instead of pushing again."`
	Body           jobSpec
}

type jobPushOut struct {
	Status int
	Body   queue.Pushed
}

type jobBatchIn struct {
	QueuePath
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255"`
	Body           struct {
		Jobs []jobSpec `json:"jobs" minItems:"1" maxItems:"10000"`
	}
}

type jobBatchOut struct {
	Status int
	Body   struct {
		Items []queue.Pushed `json:"items" doc:"One answer per job, in order."`
	}
}

type jobListIn struct {
	QueuePath
	PageQuery
	State string `query:"state" enum:"available,scheduled,retryable,blocked,running,completed,cancelled,dead" doc:"Only jobs in this state; absent: every live job."`
}

type jobPageOut struct{ Body queue.JobPage }

type jobOut struct{ Body *queue.Job }

type claimIn struct {
	QueuePath
	Body struct {
		Limit   int    `json:"limit,omitempty" minimum:"0" maximum:"1000" doc:"Most jobs to claim; default 1."`
		WaitMS  int    `json:"wait_ms,omitempty" minimum:"0" maximum:"30000" doc:"Wait up to this long for a job when none is runnable (a long poll)."`
		LeaseMS int    `json:"lease_ms,omitempty" minimum:"0" maximum:"3600000" doc:"How long the claim holds its jobs without a heartbeat; default 30000, at least 1000."`
		Worker  string `json:"worker,omitempty" maxLength:"100" doc:"A label for the worker, kept with the jobs."`
	}
}

type claimOut struct {
	Body struct {
		Items []*queue.Job `json:"items" doc:"The claimed jobs, running under their lease; empty when none was runnable in time."`
	}
}

// LeaseBody is the claim a settling call presents.
type LeaseBody struct {
	Lease   string `json:"lease" minLength:"1" maxLength:"200" doc:"The lease token the claim answered."`
	Attempt int    `json:"attempt" minimum:"1" doc:"The attempt the claim answered."`
}

type completeIn struct {
	JobPath
	Body struct {
		LeaseBody
		Result json.RawMessage `json:"result,omitempty" doc:"What the job produced, kept with it."`
	}
}

type failIn struct {
	JobPath
	Body struct {
		LeaseBody
		Error     string `json:"error" maxLength:"4000" doc:"What went wrong, kept with the attempt."`
		RetryInMS *int64 `json:"retry_in_ms,omitempty" minimum:"0" doc:"Retry after this long instead of the exponential backoff."`
		Dead      bool   `json:"dead,omitempty" doc:"Dead-letter the job now, whatever attempts it has left."`
	}
}

type failOut struct {
	Body struct {
		Dead bool `json:"dead" doc:"True when the job became a dead letter."`
	}
}

type snoozeIn struct {
	JobPath
	Body struct {
		LeaseBody
		DelayMS int64 `json:"delay_ms" minimum:"0" doc:"Wait this long before the job runs again; the attempt is not counted."`
	}
}

// ClaimsBody lists claimed jobs.
type ClaimsBody struct {
	Jobs []queue.Claim `json:"jobs" minItems:"1" maxItems:"1000"`
}

type heartbeatIn struct {
	QueuePath
	Body struct {
		ClaimsBody
		LeaseMS int `json:"lease_ms,omitempty" minimum:"0" maximum:"3600000" doc:"Extend each lease to this long from now; default 30000."`
	}
}

type heartbeatOut struct {
	Body struct {
		Held []queue.JobID `json:"held" doc:"Jobs still held: their leases were extended."`
		Lost []queue.JobID `json:"lost" doc:"Jobs no longer held (re-delivered after their lease ran out, or cancelled): stop working on them."`
	}
}

type releaseIn struct {
	QueuePath
	Body ClaimsBody
}

type releaseOut struct {
	Body struct {
		Released []queue.JobID `json:"released"`
	}
}

type queueListOut struct {
	Body struct {
		Items []queue.QueueInfo `json:"items"`
	}
}

type queueOut struct{ Body queue.QueueInfo }

type queueUpdateIn struct {
	QueuePath
	Body queue.QueueSettings
}

type deadIDsIn struct {
	QueuePath
	Body struct {
		IDs []queue.JobID `json:"ids,omitempty" maxItems:"10000" doc:"These dead letters; absent: every one."`
	}
}

type deadRetryOut struct {
	Body struct {
		Requeued int `json:"requeued"`
	}
}

type deadPurgeOut struct {
	Body struct {
		Deleted int64 `json:"deleted"`
	}
}

// SchedulePath is embedded by operations on one periodic job.
type SchedulePath struct {
	QueuePath
	Name string `path:"name" maxLength:"128" doc:"Schedule name."`
}

type schedulePutIn struct {
	SchedulePath
	Body queue.ScheduleInput
}

type scheduleOut struct {
	Status int
	Body   queue.Schedule
}

type scheduleListOut struct {
	Body struct {
		Items []queue.Schedule `json:"items"`
	}
}

func ms(v int) time.Duration { return time.Duration(v) * time.Millisecond }

func (s *Server) routesQueue() {
	q := s.deps.Queue
	if q == nil {
		return
	}
	s.metrics.reg.MustRegister(q.Collector())
	tags := []string{"Queues"}
	base := "/v1/t/{tenant}/queues/{queue}"
	huma.Register(s.api, huma.Operation{
		OperationID: "queue-list", Method: http.MethodGet, Path: "/v1/t/{tenant}/queues", Tags: tags,
		Summary: "List queues with their counts", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *TenantPath) (*queueListOut, error) {
		qs, err := q.QueueList(ctx, in.Tenant)
		out := &queueListOut{}
		out.Body.Items = qs
		if out.Body.Items == nil {
			out.Body.Items = []queue.QueueInfo{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "queue-get", Method: http.MethodGet, Path: base, Tags: tags,
		Summary:  "A queue: settings, counts by state, oldest waiting job's age",
		Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *QueuePath) (*queueOut, error) {
		info, err := q.QueueGet(ctx, in.Tenant, in.Queue)
		return &queueOut{Body: info}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "queue-update", Method: http.MethodPatch, Path: base, Tags: tags,
		Summary: "Pause or resume a queue, or set its limits (admin)",
		Description: "max_running caps the jobs running at once and max_starts_per_second the starts in any one-second window, " +
			"across all nodes; 0 removes a limit. Absent fields are unchanged.",
		Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *queueUpdateIn) (*queueOut, error) {
		info, err := q.QueueUpdate(ctx, in.Tenant, in.Queue, in.Body)
		return &queueOut{Body: info}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "queue-pause", Method: http.MethodPost, Path: base + "/pause", Tags: tags,
		Summary: "Pause a queue on every node (admin): no job starts until it is resumed", Security: signedIn,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *QueuePath) (*queueOut, error) {
		info, err := q.QueuePause(ctx, in.Tenant, in.Queue)
		return &queueOut{Body: info}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "queue-resume", Method: http.MethodPost, Path: base + "/resume", Tags: tags,
		Summary: "Resume a paused queue on every node (admin)", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *QueuePath) (*queueOut, error) {
		info, err := q.QueueResume(ctx, in.Tenant, in.Queue)
		return &queueOut{Body: info}, err
	})

	jtags := []string{"Jobs"}
	huma.Register(s.api, huma.Operation{
		OperationID: "job-push", Method: http.MethodPost, Path: base + "/jobs", Tags: jtags,
		Summary: "Push a job (write)",
		Description: "201 with the new job's id; 200 with the existing job's id (and existing: true) when its unique key is held " +
			"by a job that is waiting, running or waiting to retry. Workers on every node are woken within milliseconds.",
		Security: signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 413, 422},
	}, func(ctx context.Context, in *jobPushIn) (*jobPushOut, error) {
		out, _, err := q.JobPushManyOnce(ctx, in.Tenant, in.Queue, in.IdempotencyKey, []queue.JobInput{in.Body.input()})
		if err != nil {
			return nil, err
		}
		status := http.StatusCreated
		if out[0].Existing {
			status = http.StatusOK
		}
		return &jobPushOut{Status: status, Body: out[0]}, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-push-batch", Method: http.MethodPost, Path: base + "/jobs/batch", Tags: jtags,
		Summary:     "Push up to 10,000 jobs in one transaction (write)",
		Description: "All or none are pushed. Each answer says whether a held unique key returned an existing job.",
		Security:    signedIn, DefaultStatus: http.StatusCreated, Errors: []int{401, 403, 404, 413, 422},
	}, func(ctx context.Context, in *jobBatchIn) (*jobBatchOut, error) {
		jobs := make([]queue.JobInput, len(in.Body.Jobs))
		for i, j := range in.Body.Jobs {
			jobs[i] = j.input()
		}
		pushed, _, err := q.JobPushManyOnce(ctx, in.Tenant, in.Queue, in.IdempotencyKey, jobs)
		out := &jobBatchOut{Status: http.StatusCreated}
		out.Body.Items = pushed
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-list", Method: http.MethodGet, Path: base + "/jobs", Tags: jtags,
		Summary:     "List a queue's jobs",
		Description: "Live jobs oldest first; finished ones (completed, cancelled, dead) newest first.",
		Security:    signedIn, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *jobListIn) (*jobPageOut, error) {
		p, err := q.JobList(ctx, in.Tenant, in.Queue, &queue.JobFilter{State: in.State, Limit: in.Limit, Cursor: in.Cursor})
		if p.Items == nil {
			p.Items = []*queue.Job{}
		}
		return &jobPageOut{Body: p}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-get", Method: http.MethodGet, Path: base + "/jobs/{id}", Tags: jtags,
		Summary: "A job, live or finished: state, attempts, errors, result", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *JobPath) (*jobOut, error) {
		id, err := in.id()
		if err != nil {
			return nil, err
		}
		j, err := q.JobGet(ctx, in.Tenant, in.Queue, id)
		return &jobOut{Body: j}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-cancel", Method: http.MethodPost, Path: base + "/jobs/{id}/cancel", Tags: jtags,
		Summary:     "Cancel a live job (write)",
		Description: "A running job's worker loses its lease: its next heartbeat or settling call answers so. 409 job_finished when it already ended.",
		Security:    signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 409},
	}, func(ctx context.Context, in *JobPath) (*struct{}, error) {
		id, err := in.id()
		if err != nil {
			return nil, err
		}
		return nil, q.JobCancel(ctx, in.Tenant, in.Queue, id)
	})

	wtags := []string{"Workers"}
	huma.Register(s.api, huma.Operation{
		OperationID: "job-claim", Method: http.MethodPost, Path: base + "/claim", Tags: wtags,
		Summary: "Claim jobs to run (write); long-polls with wait_ms",
		Description: "Jobs come back running under a lease: heartbeat before it runs out, then complete, fail or snooze each, " +
			"presenting its lease and attempt. A job whose lease runs out is re-delivered to another worker. " +
			"With wait_ms the call waits for a push (from any node, within milliseconds) when nothing is runnable.",
		Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *claimIn) (*claimOut, error) {
		jobs, err := q.JobClaim(ctx, in.Tenant, in.Queue, &queue.ClaimOptions{Limit: in.Body.Limit, Wait: ms(in.Body.WaitMS),
			Lease: ms(in.Body.LeaseMS), Worker: in.Body.Worker})
		out := &claimOut{}
		out.Body.Items = jobs
		if out.Body.Items == nil {
			out.Body.Items = []*queue.Job{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-complete", Method: http.MethodPost, Path: base + "/jobs/{id}/complete", Tags: wtags,
		Summary:     "Complete a claimed job, with an optional result (write)",
		Description: "409 lease_lost, changing nothing, when the lease no longer holds the job.",
		Security:    signedIn, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *completeIn) (*struct{}, error) {
		id, err := in.id()
		if err != nil {
			return nil, err
		}
		return nil, q.JobComplete(ctx, in.Tenant, in.Queue, queue.Claim{ID: id, Lease: in.Body.Lease, Attempt: in.Body.Attempt}, in.Body.Result)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-fail", Method: http.MethodPost, Path: base + "/jobs/{id}/fail", Tags: wtags,
		Summary: "Fail a claimed job's attempt (write)",
		Description: "The job retries after an exponential backoff with jitter (or retry_in_ms), or, out of attempts, " +
			"becomes a dead letter. 409 lease_lost when the lease no longer holds the job.",
		Security: signedIn, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *failIn) (*failOut, error) {
		id, err := in.id()
		if err != nil {
			return nil, err
		}
		o := &queue.FailOptions{Dead: in.Body.Dead}
		if in.Body.RetryInMS != nil {
			o.RetryIn = time.Duration(*in.Body.RetryInMS) * time.Millisecond
			if o.RetryIn == 0 {
				o.RetryIn = -1 // at once
			}
		}
		dead, err := q.JobFail(ctx, in.Tenant, in.Queue, queue.Claim{ID: id, Lease: in.Body.Lease, Attempt: in.Body.Attempt}, in.Body.Error, o)
		out := &failOut{}
		out.Body.Dead = dead
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-snooze", Method: http.MethodPost, Path: base + "/jobs/{id}/snooze", Tags: wtags,
		Summary: "Put a claimed job back to wait, without counting the attempt (write)", Security: signedIn,
		DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404, 409, 422},
	}, func(ctx context.Context, in *snoozeIn) (*struct{}, error) {
		id, err := in.id()
		if err != nil {
			return nil, err
		}
		return nil, q.JobSnooze(ctx, in.Tenant, in.Queue, queue.Claim{ID: id, Lease: in.Body.Lease, Attempt: in.Body.Attempt},
			time.Duration(in.Body.DelayMS)*time.Millisecond)
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-heartbeat", Method: http.MethodPost, Path: base + "/heartbeat", Tags: wtags,
		Summary: "Extend the leases of claimed jobs (write)", Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *heartbeatIn) (*heartbeatOut, error) {
		held, err := q.JobHeartbeat(ctx, in.Tenant, in.Queue, in.Body.Jobs, ms(in.Body.LeaseMS))
		if err != nil {
			return nil, err
		}
		keep := map[queue.JobID]bool{}
		for _, id := range held {
			keep[id] = true
		}
		out := &heartbeatOut{}
		out.Body.Held, out.Body.Lost = held, []queue.JobID{}
		for _, c := range in.Body.Jobs {
			if !keep[c.ID] {
				out.Body.Lost = append(out.Body.Lost, c.ID)
			}
		}
		return out, nil
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "job-release", Method: http.MethodPost, Path: base + "/release", Tags: wtags,
		Summary: "Give claimed jobs back at once, without counting their attempts (write)", Security: signedIn,
		Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *releaseIn) (*releaseOut, error) {
		ids, err := q.JobRelease(ctx, in.Tenant, in.Queue, in.Body.Jobs)
		out := &releaseOut{}
		out.Body.Released = ids
		if ids == nil {
			out.Body.Released = []queue.JobID{}
		}
		return out, err
	})

	dtags := []string{"Dead letters"}
	huma.Register(s.api, huma.Operation{
		OperationID: "dead-list", Method: http.MethodGet, Path: base + "/dead", Tags: dtags,
		Summary: "List a queue's dead letters, newest first", Security: signedIn, Errors: []int{400, 401, 403, 404},
	}, func(ctx context.Context, in *struct {
		QueuePath
		PageQuery
	}) (*jobPageOut, error) {
		p, err := q.DeadList(ctx, in.Tenant, in.Queue, in.Limit, in.Cursor)
		if p.Items == nil {
			p.Items = []*queue.Job{}
		}
		return &jobPageOut{Body: p}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "dead-retry", Method: http.MethodPost, Path: base + "/dead/retry", Tags: dtags,
		Summary:     "Requeue dead letters with fresh attempts (write)",
		Description: "The given ids, or every dead letter (up to 10,000 a call). One whose unique key a live job holds stays dead.",
		Security:    signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *deadIDsIn) (*deadRetryOut, error) {
		n, err := q.DeadRetry(ctx, in.Tenant, in.Queue, in.Body.IDs)
		out := &deadRetryOut{}
		out.Body.Requeued = n
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "dead-purge", Method: http.MethodPost, Path: base + "/dead/purge", Tags: dtags,
		Summary: "Delete dead letters: the given ids, or every one (admin)", Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *deadIDsIn) (*deadPurgeOut, error) {
		n, err := q.DeadPurge(ctx, in.Tenant, in.Queue, in.Body.IDs)
		out := &deadPurgeOut{}
		out.Body.Deleted = n
		return out, err
	})

	stags := []string{"Periodic jobs"}
	huma.Register(s.api, huma.Operation{
		OperationID: "schedule-list", Method: http.MethodGet, Path: base + "/schedules", Tags: stags,
		Summary: "List a queue's periodic jobs", Security: signedIn, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *QueuePath) (*scheduleListOut, error) {
		list, err := q.ScheduleList(ctx, in.Tenant, in.Queue)
		out := &scheduleListOut{}
		out.Body.Items = list
		if out.Body.Items == nil {
			out.Body.Items = []queue.Schedule{}
		}
		return out, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "schedule-put", Method: http.MethodPut, Path: base + "/schedules/{name}", Tags: stags,
		Summary: "Create or replace a periodic job (admin)",
		Description: "A cron schedule (five fields, six with seconds, or @hourly, @every 10m…; UTC unless CRON_TZ=Zone) " +
			"pushes one job per tick, once across all nodes. 201 when created, 200 when replaced.",
		Security: signedIn, Errors: []int{401, 403, 404, 422},
	}, func(ctx context.Context, in *schedulePutIn) (*scheduleOut, error) {
		sc, created, err := q.ScheduleSet(ctx, in.Tenant, in.Queue, in.Name, in.Body)
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		return &scheduleOut{Status: status, Body: sc}, err
	})
	huma.Register(s.api, huma.Operation{
		OperationID: "schedule-delete", Method: http.MethodDelete, Path: base + "/schedules/{name}", Tags: stags,
		Summary: "Delete a periodic job (admin)", Security: signedIn, DefaultStatus: http.StatusNoContent,
		Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *SchedulePath) (*struct{}, error) {
		return nil, q.ScheduleDelete(ctx, in.Tenant, in.Queue, in.Name)
	})
}

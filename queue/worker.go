package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
)

// HandlerFunc runs one job. Returning nil completes the job; returning an error fails
// the attempt (a retry after exponential backoff with jitter, or a dead letter when out
// of attempts) — see also Snooze, RetryIn and Discard. A panic fails the attempt with
// the panic and its stack. ctx ends when the job is cancelled, its lease is lost, or the
// worker's shutdown grace runs out; it carries the values (such as the principal) of the
// context given to Start.
type HandlerFunc func(ctx context.Context, j *Job) error

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	// Tenant is the tenant whose queues the worker works. Empty works the queues of
	// these names in every tenant (for platform background work; Start then needs a
	// platform administrator, such as auth.System(ctx)).
	Tenant string
	// Queues maps each queue name to work to how many of its jobs run at once in this
	// worker (0 means 10).
	Queues map[string]int
	// Lease is how long each claim holds its jobs; heartbeats renew it every third of
	// it. Default Config.Lease (30s).
	Lease time.Duration
	// Name labels the worker's claims in job records. Default host:pid.
	Name string
	// Logger receives handler failures and connection trouble. Nil uses the client's.
	Logger *slog.Logger
}

// Worker runs jobs of some queues with registered handlers, until stopped. Register
// handlers with Handle before Start.
type Worker struct {
	c        *Client
	cfg      WorkerConfig
	log      *slog.Logger
	owner    string
	lease    time.Duration
	handlers map[string]HandlerFunc

	lanes   []*lane
	base    context.Context // handlers' parent: the values of Start's context
	hard    context.CancelFunc
	fetch   context.Context // claims' parent: ends when Stop is called
	unfetch context.CancelFunc
	stop    chan struct{}
	fetches sync.WaitGroup
	jobs    sync.WaitGroup
	bg      sync.WaitGroup
	done    chan settlement
	quit    chan struct{} // completers drain what is left and stop
	started atomic.Bool   // Start was called
	running atomic.Bool   // Start succeeded
	stopped atomic.Bool

	mu       sync.Mutex
	inflight map[JobID]*inflight
}

// inflight is a job being run.
type inflight struct {
	job    *Job
	ref    queueRef
	cancel context.CancelFunc
	lost   atomic.Bool
}

// NewWorker returns a worker of this client's queues.
func (c *Client) NewWorker(cfg WorkerConfig) *Worker {
	host, _ := os.Hostname()
	cfg.Name = cmp.Or(cfg.Name, host+":"+strconv.Itoa(os.Getpid()))
	w := &Worker{c: c, cfg: cfg, log: cmp.Or(cfg.Logger, c.log), lease: cmp.Or(cfg.Lease, c.cfg.Lease),
		handlers: map[string]HandlerFunc{}, stop: make(chan struct{}), done: make(chan settlement, 4096), quit: make(chan struct{}),
		inflight: map[JobID]*inflight{}}
	w.owner = newOwner(cfg.Name)
	return w
}

// Handle registers fn for jobs of kind. A claimed job whose kind has no handler fails its
// attempt. Call before Start.
func (w *Worker) Handle(kind string, fn HandlerFunc) {
	if w.started.Load() {
		panic("queue: Handle after Start")
	}
	w.handlers[kind] = fn
}

// snooze, retryIn and discard are the errors a handler returns to steer its job.
type snoozeError struct{ d time.Duration }

func (e *snoozeError) Error() string { return fmt.Sprintf("snoozed for %s", e.d) }

type retryError struct {
	d   time.Duration
	err error
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

type discardError struct{ err error }

func (e *discardError) Error() string { return e.err.Error() }
func (e *discardError) Unwrap() error { return e.err }

// Snooze is what a handler returns to put its job back to wait for d without counting
// the attempt: for work that is not ready yet.
func Snooze(d time.Duration) error { return &snoozeError{d} }

// RetryIn is what a handler returns to fail the attempt and retry after d instead of the
// exponential backoff.
func RetryIn(d time.Duration, err error) error { return &retryError{d, err} }

// Discard is what a handler returns to dead-letter its job now, without further
// attempts: for errors no retry can fix.
func Discard(err error) error { return &discardError{err} }

// Start authorizes the worker against its queues (write on each; every tenant's needs a
// platform administrator) with the principal in ctx, and starts claiming and running
// jobs. Handlers' contexts carry ctx's values; ctx's cancellation does not stop the
// worker: Stop does.
func (w *Worker) Start(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("queue: worker already started")
	}
	if err := w.prepare(ctx); err != nil {
		w.lanes = nil
		w.started.Store(false)
		return err
	}
	base, hard := context.WithCancel(context.WithoutCancel(ctx))
	w.base, w.hard = base, hard
	w.fetch, w.unfetch = context.WithCancel(base)
	for _, l := range w.lanes {
		w.fetches.Go(l.run)
	}
	for range 2 {
		w.bg.Go(w.complete)
	}
	w.bg.Go(w.beat)
	w.running.Store(true)
	return nil
}

// prepare authorizes the worker and builds its lanes.
func (w *Worker) prepare(ctx context.Context) error {
	if len(w.cfg.Queues) == 0 {
		return problem.Unprocessable("no_queues", "a worker needs at least one queue")
	}
	if w.lease < time.Second {
		return problem.Unprocessable("invalid_lease", "a lease is at least 1s")
	}
	for name, n := range w.cfg.Queues {
		if err := checkQueueName(name); err != nil {
			return err
		}
		l := &lane{w: w, name: name, conc: cmp.Or(n, 10), freed: make(chan struct{}, 1)}
		if w.cfg.Tenant == "" {
			if p := auth.PrincipalFrom(ctx); p == nil || !p.PlatformAdmin {
				return problem.Forbidden("forbidden", "a worker of every tenant's queues needs a platform administrator (auth.System)")
			}
		} else {
			if err := w.c.authorize(ctx, w.cfg.Tenant, name, auth.PermWrite); err != nil {
				return err
			}
			ref, err := w.c.queues.get(ctx, w.cfg.Tenant, name, true)
			if err != nil {
				return err
			}
			l.ref = &ref
		}
		w.lanes = append(w.lanes, l)
	}
	return nil
}

// Stop stops claiming, lets running jobs finish until ctx ends, then cancels the
// handlers still running and releases their jobs (back to waiting, the attempt not
// counted), records the completions not yet written, and returns. It returns ctx's error
// when jobs had to be released.
func (w *Worker) Stop(ctx context.Context) error {
	if !w.running.Load() || !w.stopped.CompareAndSwap(false, true) {
		return nil
	}
	close(w.stop)
	w.unfetch()
	w.fetches.Wait()
	finished := make(chan struct{})
	go func() { w.jobs.Wait(); close(finished) }()
	var err error
	select {
	case <-finished:
	case <-ctx.Done():
		err = ctx.Err()
		w.releaseInflight()
		w.hard()
		select { // handlers that heed their context return at once; others are abandoned
		case <-finished:
		case <-time.After(time.Second):
		}
	}
	w.hard()
	close(w.quit)
	w.bg.Wait()
	return err
}

// releaseInflight gives every running job back without counting its attempt.
func (w *Worker) releaseInflight() {
	w.mu.Lock()
	byRef := map[queueRef][]Claim{}
	for _, f := range w.inflight {
		f.lost.Store(true) // whatever the handler returns now, its job is given back
		byRef[f.ref] = append(byRef[f.ref], f.job.Claim())
	}
	w.mu.Unlock()
	for _, cls := range byRef {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ids, err := w.c.requeue(ctx, cls, 0)
		cancel()
		if err != nil {
			w.log.Warn("releasing jobs at shutdown failed; their leases will run out", "jobs", len(cls), "err", err)
		} else if len(ids) > 0 {
			w.log.Info("released jobs still running at shutdown", "jobs", len(ids))
		}
	}
}

// lane claims and runs the jobs of one queue name.
type lane struct {
	w      *Worker
	name   string
	conc   int
	ref    *queueRef // the tenant's queue; nil for every tenant's
	active atomic.Int64
	freed  chan struct{}
	next   int // round-robin start among every tenant's queues
}

// fetchCooldown lets slots freed in quick succession be refilled by one claim.
const fetchCooldown = time.Millisecond

// limitedRetry is how soon a lane of a limited queue tries again after a short claim.
const limitedRetry = 20 * time.Millisecond

func (l *lane) run() {
	w := l.w
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		free := l.conc - int(l.active.Load())
		if free <= 0 {
			select {
			case <-w.stop:
				return
			case <-l.freed:
				time.Sleep(fetchCooldown)
			}
			continue
		}
		var wake <-chan struct{}
		if l.ref != nil {
			wake = w.c.hub.waitID(l.ref.ID)
		} else {
			wake = w.c.hub.waitName(l.name)
		}
		ctx, cancel := context.WithTimeout(w.fetch, 30*time.Second)
		got, full, err := l.fetch(ctx, free)
		cancel()
		if err != nil && w.fetch.Err() != nil {
			return // stopping
		}
		if err != nil {
			w.log.Warn("claiming jobs failed; retrying", "queue", l.name, "err", err, "retry_in", backoff)
			select {
			case <-w.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if full || (got > 0 && l.ref == nil) {
			continue // there may be more right away
		}
		wait := w.c.pollInterval()
		if l.ref != nil && w.c.queues.limited(w.fetch, l.ref.ID) {
			// A limit may be what held the claim back: a rate frees up as time passes,
			// running slots as jobs end (which wake this lane on every node).
			wait = min(wait, limitedRetry)
		}
		timer := time.NewTimer(wait)
		select {
		case <-w.stop:
			timer.Stop()
			return
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// fetch claims up to free jobs and starts them; full reports that every claim filled.
func (l *lane) fetch(ctx context.Context, free int) (got int, full bool, err error) {
	refs := []queueRef{}
	if l.ref != nil {
		refs = append(refs, *l.ref)
	} else if refs, err = l.withWork(ctx); err != nil {
		return 0, false, err
	}
	full = len(refs) > 0
	for i := range refs {
		if free <= 0 {
			break
		}
		ref := refs[(l.next+i)%len(refs)]
		jobs, err := l.w.c.claim(ctx, ref, free, l.w.owner, l.w.lease)
		if err != nil {
			return got, false, err
		}
		if len(jobs) < free {
			full = false
		}
		free -= len(jobs)
		got += len(jobs)
		for _, j := range jobs {
			l.start(ref, j)
		}
	}
	l.next++
	return got, full, nil
}

// withWork returns every tenant's queues of the lane's name that have runnable jobs.
func (l *lane) withWork(ctx context.Context) ([]queueRef, error) {
	rows, err := l.w.c.pool.Query(ctx, `SELECT q.id, q.tenant_id FROM queues q
		WHERE q.name = $1 AND NOT q.paused
		  AND EXISTS (SELECT 1 FROM jobs j WHERE j.queue_id = q.id AND j.state = 'available' AND j.run_at <= now())
		ORDER BY q.id`, l.name)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (queueRef, error) {
		ref := queueRef{Name: l.name}
		err := r.Scan(&ref.ID, &ref.Tenant)
		return ref, err
	})
}

// start runs a claimed job in its own goroutine.
func (l *lane) start(ref queueRef, j *Job) {
	w := l.w
	ctx, cancel := context.WithCancel(w.base)
	f := &inflight{job: j, ref: ref, cancel: cancel}
	w.mu.Lock()
	w.inflight[j.ID] = f
	w.mu.Unlock()
	l.active.Add(1)
	w.jobs.Go(func() {
		defer cancel()
		err := w.call(ctx, j)
		w.mu.Lock()
		delete(w.inflight, j.ID)
		w.mu.Unlock()
		if !f.lost.Load() {
			w.settle(ref, j, err)
		}
		l.active.Add(-1)
		select {
		case l.freed <- struct{}{}:
		default:
		}
	})
}

// call runs the job's handler, turning a panic into an error.
func (w *Worker) call(ctx context.Context, j *Job) (err error) {
	h, ok := w.handlers[j.Kind]
	if !ok {
		return fmt.Errorf("no handler registered for kind %q", j.Kind)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return h(ctx, j)
}

// settle records a job's outcome: completions in batches, everything else at once.
func (w *Worker) settle(ref queueRef, j *Job, err error) {
	if err == nil {
		var g *string
		if j.GroupKey != "" {
			g = &j.GroupKey
		}
		select {
		case w.done <- settlement{id: int64(j.ID), attempt: int32(j.Attempt), owner: j.Lease, group: g, queueID: ref.ID, ref: ref}:
		case <-w.quit: // abandoned past shutdown: its lease runs out and it runs again
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sn *snoozeError
	if errors.As(err, &sn) {
		if _, rerr := w.c.requeue(ctx, []Claim{j.Claim()}, sn.d); rerr != nil {
			w.log.Warn("snoozing a job failed; its lease will run out", "job", j.ID, "err", rerr)
		}
		w.c.slotFreed(ref)
		return
	}
	o := &FailOptions{}
	var re *retryError
	var de *discardError
	switch {
	case errors.As(err, &de):
		o.Dead = true
	case errors.As(err, &re):
		o.RetryIn = re.d
		if o.RetryIn == 0 {
			o.RetryIn = -1
		}
	}
	var g *string
	if j.GroupKey != "" {
		g = &j.GroupKey
	}
	w.log.Warn("job failed", "queue", ref.Name, "kind", j.Kind, "job", j.ID, "attempt", j.Attempt, "err", err)
	if _, _, ferr := w.c.fail(ctx, ref, j.Claim(), g, err.Error(), o); ferr != nil {
		w.log.Warn("recording a failed attempt failed; its lease will run out", "job", j.ID, "err", ferr)
	}
	w.c.slotFreed(ref)
}

// complete writes completions in batches: whatever piled up while the previous batch was
// being written, so one statement settles many jobs under load and one at idle.
func (w *Worker) complete() {
	const maxBatch = 2000
	batch := make([]settlement, 0, maxBatch)
	for {
		var first settlement
		select {
		case first = <-w.done:
		case <-w.quit:
			for { // what is left, then stop
				batch = batch[:0]
			rest:
				for len(batch) < maxBatch {
					select {
					case s := <-w.done:
						batch = append(batch, s)
					default:
						break rest
					}
				}
				if len(batch) == 0 {
					return
				}
				w.flush(batch)
			}
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxBatch {
			select {
			case s := <-w.done:
				batch = append(batch, s)
			default:
				break drain
			}
		}
		w.flush(batch)
	}
}

// flush records a batch of completions, retrying while the database is unreachable (a
// completion whose lease ran out meanwhile changes nothing: its job was re-delivered).
func (w *Worker) flush(batch []settlement) {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		done, err := w.c.finish(ctx, "completed", batch)
		cancel()
		if err == nil {
			refs := make(map[int64]queueRef, len(batch))
			for _, s := range batch {
				refs[s.id] = s.ref
			}
			freed := map[queueRef]bool{}
			for _, d := range done {
				ref := refs[d.id]
				w.c.metrics.finished(ref, "completed", d.ran)
				freed[ref] = true
			}
			for ref := range freed {
				w.c.slotFreed(ref)
			}
			return
		}
		if attempt >= 100 {
			w.log.Error("recording completions failed; their leases will run out and the jobs run again", "jobs", len(batch), "err", err)
			return
		}
		w.log.Warn("recording completions failed; retrying", "jobs", len(batch), "err", err, "retry_in", backoff)
		time.Sleep(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

// beat renews the leases of running jobs every third of the lease, and cancels the
// handlers of jobs found lost (cancelled, or re-delivered after a lease ran out).
func (w *Worker) beat() {
	t := time.NewTicker(w.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-w.base.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		cls := make([]Claim, 0, len(w.inflight))
		for _, f := range w.inflight {
			cls = append(cls, f.job.Claim())
		}
		w.mu.Unlock()
		if len(cls) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(w.base, w.lease/3)
		held, err := w.c.heartbeat(ctx, cls, w.lease)
		cancel()
		if err != nil {
			if w.base.Err() == nil {
				w.log.Warn("heartbeat failed; retrying", "jobs", len(cls), "err", err)
			}
			continue
		}
		keep := make(map[JobID]bool, len(held))
		for _, id := range held {
			keep[id] = true
		}
		w.mu.Lock()
		for _, cl := range cls {
			if f, ok := w.inflight[cl.ID]; ok && !keep[cl.ID] && f.job.Attempt == cl.Attempt {
				f.lost.Store(true)
				f.cancel()
			}
		}
		w.mu.Unlock()
	}
}

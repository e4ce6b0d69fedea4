// Package queue is Strata's durable job queue on PostgreSQL: named queues per tenant;
// jobs pushed one by one, in batches (COPY or unnest) or inside the caller's transaction
// (an outbox: the job exists only if the transaction commits); claims in batches with
// FOR UPDATE SKIP LOCKED and a lease; wake-ups by LISTEN/NOTIFY from any node with a
// polling fallback; heartbeats, completion with a result, failure with exponential
// backoff and jitter until a dead letter, cancellation and snoozing — every transition
// guarded by the lease's owner and attempt, so a worker that lost its lease changes
// nothing. A reaper elected across nodes re-delivers the jobs of crashed workers as soon
// as their lease runs out. Queues can be paused, limited in running jobs and in starts
// per second (across all nodes), and run FIFO groups one job at a time in push order.
// Periodic jobs follow cron schedules, once per tick across all nodes.
//
// Finished jobs leave the hot table at once (into a history kept for a configurable
// time), so claims stay fast and the table stays small however much traffic went
// through.
//
// Producers call JobPush, JobPushMany or their …Tx twins; Go workers register handlers
// on a Worker; workers in other languages use the HTTP API through JobClaim and the
// settling calls. Every operation authorizes the principal in its context against the
// queue's resource, "queue:<name>": read to look, write to push, work and cancel, admin
// to pause, limit, purge and schedule.
package queue

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the queue module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "queue", FS: migrate.Dir(migrations, "migrations"),
	Requires: []*migrate.Module{auth.Schema, idem.Schema}}

// Config tunes the queue. Zero values mean the defaults.
type Config struct {
	// Lease is how long a claim holds a job without a heartbeat before the reaper
	// re-delivers it. Default 30s. Claims may ask for another.
	Lease time.Duration
	// ReapInterval is how often the elected reaper looks for expired leases: a crashed
	// worker's job is re-delivered at most this long after its lease ran out. Default 1s.
	ReapInterval time.Duration
	// PollInterval is how often waiting claims look for jobs without being notified:
	// the bound on how late a delayed or retried job starts, and the fallback when
	// notifications are lost. Default 1s (100ms while the notification connection is down).
	PollInterval time.Duration
	// MaxAttempts is a job's default number of attempts before it is dead-lettered.
	// Default 20.
	MaxAttempts int
	// RetryBase and RetryMax shape the backoff after a failed attempt n:
	// min(RetryBase·2^(n-1), RetryMax), less up to half of it at random (jitter).
	// Defaults 1s and 1h.
	RetryBase, RetryMax time.Duration
	// HistoryRetention is how long completed and cancelled jobs are kept in the history.
	// Default 7 days; negative keeps no history (finished jobs are only deleted).
	HistoryRetention time.Duration
	// DeadRetention is how long dead-lettered jobs are kept for inspection and retry.
	// Default 30 days.
	DeadRetention time.Duration
	// VacuumInterval is how often the elected node looks at the hot table's dead rows
	// and vacuums it when they pile up (VACUUM (SKIP_LOCKED)): autovacuum wakes at most
	// once a minute, while a busy queue turns over its rows many times a second, and
	// dead entries at the head of the claim index slow every claim. Default 2s; negative
	// leaves the table to autovacuum alone.
	VacuumInterval time.Duration
	// MaxPayloadBytes bounds a job's payload. Default 1 MiB.
	MaxPayloadBytes int
	// Logger receives background-work warnings. Nil is quiet.
	Logger *slog.Logger
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	c.Lease = cmp.Or(c.Lease, 30*time.Second)
	c.ReapInterval = cmp.Or(c.ReapInterval, time.Second)
	c.PollInterval = cmp.Or(c.PollInterval, time.Second)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 20)
	c.RetryBase = cmp.Or(c.RetryBase, time.Second)
	c.RetryMax = cmp.Or(c.RetryMax, time.Hour)
	c.HistoryRetention = cmp.Or(c.HistoryRetention, 7*24*time.Hour)
	c.DeadRetention = cmp.Or(c.DeadRetention, 30*24*time.Hour)
	c.MaxPayloadBytes = cmp.Or(c.MaxPayloadBytes, 1<<20)
	c.VacuumInterval = cmp.Or(c.VacuumInterval, 2*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Client is the queue's Go API: producers, workers and administration. It is safe for
// concurrent use; one per process is enough.
type Client struct {
	pool     *pgxpool.Pool
	auth     *auth.Service
	listener *db.Listener
	cfg      Config
	log      *slog.Logger
	keep     bool // keep a history of finished jobs
	hub      *hub
	queues   *queueCache
	metrics  *metrics
	notifier *notifier
}

// Notification channels: jobs became runnable in a queue ("<id>:<name>"), and a queue's
// settings changed or it went away ("<id>").
const (
	channelJobs   = "strata_queue"
	channelConfig = "strata_queue_config"
)

// Advisory lock keys (one bigint each), so one node at a time does each task.
const (
	reapLock     int64 = 0x5374726174615152 // "StrataQR"
	scheduleLock int64 = 0x5374726174615153 // "StrataQS"
	houseLock    int64 = 0x5374726174615148 // "StrataQH"
	vacuumLock   int64 = 0x5374726174615156 // "StrataQV"
)

// New returns the client. listener carries wake-ups and settings changes between nodes;
// the caller starts it. Run does the background work.
func New(pool *pgxpool.Pool, a *auth.Service, listener *db.Listener, cfg Config) *Client {
	cfg = cfg.withDefaults()
	c := &Client{pool: pool, auth: a, listener: listener, cfg: cfg, log: cfg.Logger, keep: cfg.HistoryRetention > 0,
		hub: newHub(), metrics: newMetrics()}
	c.queues = newQueueCache(pool)
	c.notifier = newNotifier(c)
	listener.Handle(channelJobs, c.hub.notified)
	listener.Handle(channelConfig, c.queues.forget)
	listener.OnReset(func() {
		c.queues.forgetAll()
		c.hub.wakeAll()
	})
	return c
}

// Run does the queue's background work until ctx ends: re-delivering expired leases,
// pushing periodic jobs, vacuuming the hot table, and housekeeping (history and
// dead-letter retention). Every node
// runs it; advisory locks elect one node per task at a time.
func (c *Client) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.notifier.run(ctx) })
	wg.Go(func() { c.every(ctx, c.cfg.ReapInterval, "re-delivering expired leases", c.reap) })
	wg.Go(func() { c.every(ctx, time.Second, "pushing periodic jobs", c.schedule) })
	wg.Go(func() { c.every(ctx, time.Minute, "housekeeping", c.Housekeep) })
	if c.cfg.VacuumInterval > 0 {
		wg.Go(func() { c.every(ctx, c.cfg.VacuumInterval, "vacuuming the jobs table", c.vacuum) })
	}
	wg.Wait()
}

// every runs fn every interval until ctx ends, logging its failures.
func (c *Client) every(ctx context.Context, interval time.Duration, what string, fn func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := fn(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			c.log.Warn(what+" failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollInterval is PollInterval, or 100ms while notifications may be lost.
func (c *Client) pollInterval() time.Duration {
	if !c.listener.Healthy() {
		return min(c.cfg.PollInterval, 100*time.Millisecond)
	}
	return c.cfg.PollInterval
}

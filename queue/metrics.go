package queue

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the queue's Prometheus series, per tenant and queue: counters and
// histograms of what this node did, and gauges of what the database holds.
type metrics struct {
	done   *prometheus.CounterVec
	wait   *prometheus.HistogramVec
	run    *prometheus.HistogramVec
	mu     sync.Mutex
	cached []QueueInfo
	at     time.Time
}

var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}

func newMetrics() *metrics {
	labels := []string{"tenant", "queue"}
	return &metrics{
		done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_queue_jobs_total",
			Help: "Jobs settled by this node, by outcome: completed, failed (an attempt), dead (dead-lettered), cancelled.",
		}, append(labels, "outcome")),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_queue_wait_seconds",
			Help:    "Time from a job becoming runnable to its claim, for claims made on this node.",
			Buckets: latencyBuckets,
		}, labels),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_queue_run_seconds",
			Help:    "Time from a job's claim to its completion, for completions recorded on this node.",
			Buckets: latencyBuckets,
		}, labels),
	}
}

func (m *metrics) claimed(ref queueRef, waited time.Duration) {
	m.wait.WithLabelValues(ref.Tenant, ref.Name).Observe(max(waited, 0).Seconds())
}

func (m *metrics) finished(ref queueRef, outcome string, ran time.Duration) {
	m.done.WithLabelValues(ref.Tenant, ref.Name, outcome).Inc()
	if outcome == "completed" {
		m.run.WithLabelValues(ref.Tenant, ref.Name).Observe(max(ran, 0).Seconds())
	}
}

var (
	descJobs = prometheus.NewDesc("strata_queue_jobs",
		"Jobs in each queue now, by state: available, scheduled (delayed or retrying), blocked (FIFO), running, dead.",
		[]string{"tenant", "queue", "state"}, nil)
	descOldest = prometheus.NewDesc("strata_queue_oldest_waiting_seconds",
		"How long the oldest runnable job of each queue has waited.", []string{"tenant", "queue"}, nil)
	descPaused = prometheus.NewDesc("strata_queue_paused", "1 when the queue is paused.", []string{"tenant", "queue"}, nil)
)

// collector exports the metrics; the gauges are read from the database at most every
// 5 seconds, whatever the scrape rate.
type collector struct{ c *Client }

// Collector returns the queue's Prometheus collector: per tenant and queue, jobs by
// state, the oldest waiting job's age, pause state, settled jobs by outcome, and wait and
// run time histograms. Register it with the server's registry.
func (c *Client) Collector() prometheus.Collector { return collector{c} }

func (k collector) Describe(ch chan<- *prometheus.Desc) {
	k.c.metrics.done.Describe(ch)
	k.c.metrics.wait.Describe(ch)
	k.c.metrics.run.Describe(ch)
	ch <- descJobs
	ch <- descOldest
	ch <- descPaused
}

func (k collector) Collect(ch chan<- prometheus.Metric) {
	m := k.c.metrics
	m.done.Collect(ch)
	m.wait.Collect(ch)
	m.run.Collect(ch)
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Since(m.at) > 5*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if rows, err := k.c.pool.Query(ctx, queueStatsSQL); err == nil {
			if qs, err := pgx.CollectRows(rows, scanQueue); err == nil {
				m.cached, m.at = qs, time.Now()
			}
		}
	}
	for _, q := range m.cached {
		for state, n := range map[string]int64{"available": q.Available, "scheduled": q.Scheduled, "blocked": q.Blocked,
			"running": q.Running, "dead": q.Dead} {
			ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), q.tenant, q.Name, state)
		}
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, q.OldestWaiting, q.tenant, q.Name)
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(descPaused, prometheus.GaugeValue, paused, q.tenant, q.Name)
	}
}

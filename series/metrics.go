package series

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the module's Prometheus metrics; Collector exposes them with the broker's
// and the pipeline's gauges.
type metrics struct {
	messages      *prometheus.CounterVec
	readings      *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	duplicates    prometheus.Counter
	queued        prometheus.Counter
	queueFull     prometheus.Counter
	commitErrors  prometheus.Counter
	cacheErrors   prometheus.Counter
	batchRows     prometheus.Histogram
	commitSeconds prometheus.Histogram
	lag           prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_series_messages_total",
			Help: "Messages stored (committed and acknowledged), by source (mqtt, broker, redis, http)."}, []string{"source"}),
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_series_readings_total",
			Help: "Readings (metric values) stored, by source."}, []string{"source"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_series_rejected_total",
			Help: "Messages rejected (never stored), by source and reason."}, []string{"source", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_series_dropped_total",
			Help: "Messages dropped without being stored or rejected, by where (mqtt_forward: the embedded broker's queue to a slow " +
				"subscriber; live: a slow live-stream subscriber; unacknowledged: not committed at shutdown, to be resent by their sender)."},
			[]string{"where"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_series_duplicates_total",
			Help: "Readings of redelivered messages that were already stored, and so skipped."}),
		queued: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_series_queued_total",
			Help: "Messages queued for commit."}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_series_backpressure_total",
			Help: "Times a receiver found the queue full and had to wait (backpressure)."}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_series_commit_errors_total",
			Help: "Failed commit attempts (the batch is held and retried)."}),
		cacheErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_series_cache_errors_total",
			Help: "Failed Redis cache operations (reads are then served from PostgreSQL)."}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_series_batch_readings",
			Help: "Readings per committed batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_series_commit_seconds",
			Help: "Time to commit a batch.", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12)}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "strata_series_ingest_lag_seconds",
			Help: "Time from receiving a message to acknowledging it (after its commit).", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)}),
	}
	for _, where := range []string{"mqtt_forward", "live", "unacknowledged"} {
		m.dropped.WithLabelValues(where) // exported from the start, at 0
	}
	return m
}

var (
	descQueue       = prometheus.NewDesc("strata_series_queue_messages", "Messages waiting for commit now, and the queue's capacity (state=capacity).", []string{"state"}, nil)
	descClients     = prometheus.NewDesc("strata_series_mqtt_clients", "Clients connected to the embedded MQTT broker.", nil, nil)
	descBroker      = prometheus.NewDesc("strata_series_external_broker_up", "1 while this node is connected to the external MQTT broker and subscribed.", nil, nil)
	descBrokerDrops = prometheus.NewDesc("strata_series_external_broker_dropped",
		"Messages the external broker reports having dropped ($SYS/broker/publish/messages/dropped: its queue limits), as last reported.", nil, nil)
)

type collector struct{ s *Service }

// Collector returns the module's Prometheus metrics, for the /metrics registry.
func (s *Service) Collector() prometheus.Collector { return collector{s} }

func (c collector) all() []prometheus.Collector {
	m := c.s.metrics
	return []prometheus.Collector{m.messages, m.readings, m.rejected, m.dropped, m.duplicates, m.queued, m.queueFull, m.commitErrors,
		m.cacheErrors, m.batchRows, m.commitSeconds, m.lag}
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, x := range c.all() {
		x.Describe(ch)
	}
	ch <- descQueue
	ch <- descClients
	ch <- descBroker
	ch <- descBrokerDrops
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.s.syncDrops()
	for _, x := range c.all() {
		x.Collect(ch)
	}
	ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(len(c.s.pipe.ch)), "waiting")
	ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(cap(c.s.pipe.ch)), "capacity")
	clients := 0.0
	if c.s.broker != nil {
		clients = float64(c.s.broker.clients())
	}
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, clients)
	up := 0.0
	if c.s.external != nil && c.s.external.up.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descBroker, prometheus.GaugeValue, up)
	if c.s.external != nil {
		if n := c.s.external.brokerDrops.Load(); n >= 0 {
			ch <- prometheus.MustNewConstMetric(descBrokerDrops, prometheus.GaugeValue, float64(n))
		}
	}
}

// syncDrops brings the drop counters up to date with the counts kept elsewhere (the
// embedded broker's, the live streams').
func (s *Service) syncDrops() {
	if s.broker != nil {
		s.broker.syncDrops(s.metrics.dropped.WithLabelValues("mqtt_forward"))
	}
}
